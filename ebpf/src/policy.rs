//! The decision every hook shares: a peer (or local) address, port and
//! protocol against the rule lists of every palisade container from the
//! root cgroup down to the caller's. One deny is enough; finding no
//! policy at all (programs attached, maps not written) denies.

use aya_ebpf::helpers::generated::bpf_get_current_ancestor_cgroup_id;
use palisade_common::{
    FAMILY_V4, GENERATION_BIT, KEY_HEADER_BITS, LIST_OPEN, MAX_PORT_RULES, MODE_AUDIT, PROTO_ANY,
    RuleKey, TABLE_ACCEPT, TABLE_BIND, VERDICT_ALLOW,
};

use crate::maps::{CGROUP_POLICY, CONNECT_RULES};

pub const ALLOW: i32 = 1;
pub const DENY: i32 = 0;
/// ORed into ALLOW when a policy in audit mode would have refused.
pub const AUDITED: i32 = 2;
/// Deepest cgroup level searched for policies (the container's own and
/// its enclosing containers', for `--parent`).
pub const MAX_LEVELS: i32 = 16;
/// The third word of `::ffff:0:0/96` as it sits in memory.
pub const V4_MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// Which rule list decides.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum List {
    Connect,
    Bind,
    Accept,
}

/// IPv4-mapped IPv6 addresses are judged as IPv4: an AF_INET6 socket must
/// not step around the IPv4 rules.
#[inline(always)]
pub fn normalise(family: u32, addr: [u32; 4]) -> (u32, [u32; 4]) {
    if family != FAMILY_V4 && addr[0] == 0 && addr[1] == 0 && addr[2] == V4_MAPPED_WORD {
        (FAMILY_V4, [addr[3], 0, 0, 0])
    } else {
        (family, addr)
    }
}

/// ALLOW (possibly with AUDITED) or DENY for `addr` (memory order words), `port` (host order) and
/// IP protocol `proto`, for the calling task's cgroup.
#[inline(always)]
pub fn decide(list: List, family: u32, addr: [u32; 4], port: u16, proto: u8) -> i32 {
    // SAFETY: the helper has no preconditions; past the caller's own level
    // it returns 0.
    decide_for(
        |level| unsafe { bpf_get_current_ancestor_cgroup_id(level) },
        list,
        family,
        addr,
        port,
        proto,
    )
}

/// As [`decide`], for the cgroup whose ancestors `ancestor(level)` gives
/// (0 past its own level): a packet's socket's cgroup, say.
#[inline(always)]
pub fn decide_for(
    ancestor: impl Fn(i32) -> u64,
    list: List,
    family: u32,
    addr: [u32; 4],
    port: u16,
    proto: u8,
) -> i32 {
    let mut found = false;
    let mut audited = false;
    for level in 0..MAX_LEVELS {
        let cgroup = ancestor(level);
        if cgroup == 0 {
            break;
        }
        let Some(policy) = CGROUP_POLICY.get_ptr(cgroup) else {
            continue;
        };
        found = true;
        // SAFETY: a non-null pointer to a map value, only read. Volatile
        // keeps the compiler from hoisting the read above the null check,
        // which the verifier would refuse.
        let (mode, generation, audit) = unsafe {
            let mode = match list {
                List::Connect => core::ptr::read_volatile(&(*policy).connect),
                List::Bind => core::ptr::read_volatile(&(*policy).bind),
                List::Accept => core::ptr::read_volatile(&(*policy).accept),
            };
            (
                mode,
                core::ptr::read_volatile(&(*policy).generation),
                core::ptr::read_volatile(&(*policy).mode) == MODE_AUDIT,
            )
        };
        let list_bits = match list {
            List::Connect => 0,
            List::Bind => TABLE_BIND,
            List::Accept => TABLE_ACCEPT,
        };
        let table = if generation == 0 {
            list_bits
        } else {
            list_bits | GENERATION_BIT
        };
        if mode != LIST_OPEN && judge(cgroup, table, family, addr, port, proto) == DENY {
            if !audit {
                return DENY;
            }
            audited = true;
        }
    }
    match (found, audited) {
        (false, _) => DENY,
        (true, false) => ALLOW,
        (true, true) => ALLOW | AUDITED,
    }
}

/// DENY when a packet that cannot be judged (an IPv6 extension header
/// chain too long or malformed) must be dropped: some container over the
/// cgroup whose ancestors `ancestor(level)` gives has `bind` or `accept`
/// rules in enforce mode, or no policy is found; ALLOW otherwise.
#[inline(always)]
pub fn unjudged_inbound(ancestor: impl Fn(i32) -> u64) -> i32 {
    let mut found = false;
    for level in 0..MAX_LEVELS {
        let cgroup = ancestor(level);
        if cgroup == 0 {
            break;
        }
        let Some(policy) = CGROUP_POLICY.get_ptr(cgroup) else {
            continue;
        };
        found = true;
        // SAFETY: a non-null pointer to a map value, only read; volatile
        // keeps the reads below the null check for the verifier.
        let (bind, accept, audit) = unsafe {
            (
                core::ptr::read_volatile(&(*policy).bind),
                core::ptr::read_volatile(&(*policy).accept),
                core::ptr::read_volatile(&(*policy).mode) == MODE_AUDIT,
            )
        };
        if (bind != LIST_OPEN || accept != LIST_OPEN) && !audit {
            return DENY;
        }
    }
    if found { ALLOW } else { DENY }
}

/// One container's rule list (`table`: list and generation bits) applied.
#[inline(always)]
fn judge(cgroup: u64, table: u32, family: u32, addr: [u32; 4], port: u16, proto: u8) -> i32 {
    let max_bits = if family == FAMILY_V4 { 32 } else { 128 };
    let key = aya_ebpf::maps::lpm_trie::Key::new(
        KEY_HEADER_BITS + max_bits,
        RuleKey::new(cgroup, family | table, addr),
    );
    // No entry means the policy lost its catch-all: deny.
    let Some(rules) = CONNECT_RULES.get(&key) else {
        return DENY;
    };
    let count = rules.count as usize;
    for i in 0..MAX_PORT_RULES {
        if i >= count {
            break;
        }
        let rule = &rules.rules[i];
        if (rule.proto == PROTO_ANY || rule.proto == proto)
            && port >= rule.port_lo
            && port <= rule.port_hi
        {
            return if rule.verdict == VERDICT_ALLOW {
                ALLOW
            } else {
                DENY
            };
        }
    }
    DENY
}
