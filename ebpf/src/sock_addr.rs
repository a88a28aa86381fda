//! cgroup/connect4, connect6, sendmsg4 and sendmsg6: outbound connect
//! policy, for `connect()` and for UDP datagrams sent to an address
//! (`sendto`/`sendmsg` on an unconnected socket), judged by the same rules.
//!
//! Attach point: the container's cgroup v2 directory (BPF_CGROUP_INET4_CONNECT,
//! BPF_CGROUP_INET6_CONNECT). Reads `CGROUP_POLICY` and `CONNECT_RULES`;
//! writes nothing. Minimum kernel 4.17 (bounded loops need 5.3).
//!
//! Returning 0 makes the kernel fail `connect()` with EPERM; 1 lets it
//! proceed. A cgroup with no policy entry is denied: fail closed.

use aya_ebpf::{
    helpers::generated::bpf_get_current_ancestor_cgroup_id, macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use palisade_common::{
    CONNECT_OPEN, FAMILY_V4, FAMILY_V6, KEY_HEADER_BITS, MAX_PORT_RULES, PROTO_ANY, RuleKey,
    VERDICT_ALLOW,
};

use crate::maps::{CGROUP_POLICY, CONNECT_RULES};

const ALLOW: i32 = 1;
const DENY: i32 = 0;
/// The third word of `::ffff:0:0/96` as it sits in memory.
const V4_MAPPED_WORD: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    match try_connect4(&ctx) {
        // Spelled out so the verifier sees a return value of 0 or 1.
        Ok(ALLOW) => ALLOW,
        _ => DENY,
    }
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    match try_connect6(&ctx) {
        // Spelled out so the verifier sees a return value of 0 or 1.
        Ok(ALLOW) => ALLOW,
        _ => DENY,
    }
}

/// Attach point BPF_CGROUP_UDP4_SENDMSG (Linux 4.18); as connect4.
#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    match try_connect4(&ctx) {
        // Spelled out so the verifier sees a return value of 0 or 1.
        Ok(ALLOW) => ALLOW,
        _ => DENY,
    }
}

/// Attach point BPF_CGROUP_UDP6_SENDMSG (Linux 4.18); as connect6.
#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    match try_connect6(&ctx) {
        // Spelled out so the verifier sees a return value of 0 or 1.
        Ok(ALLOW) => ALLOW,
        _ => DENY,
    }
}

#[inline(always)]
fn try_connect4(ctx: &SockAddrContext) -> Result<i32, ()> {
    // SAFETY: the kernel hands every cgroup/connect4 program a valid
    // bpf_sock_addr; the verifier checks each field access.
    let (ip, port, proto) = unsafe {
        let sa = &*ctx.sock_addr;
        (sa.user_ip4, sa.user_port, sa.protocol)
    };
    decide(FAMILY_V4, [ip, 0, 0, 0], port, proto)
}

#[inline(always)]
fn try_connect6(ctx: &SockAddrContext) -> Result<i32, ()> {
    // SAFETY: as in try_connect4; user_ip6 is read one 32-bit word at a
    // time, the only access the verifier allows.
    let (ip, port, proto) = unsafe {
        let sa = &*ctx.sock_addr;
        (
            [
                sa.user_ip6[0],
                sa.user_ip6[1],
                sa.user_ip6[2],
                sa.user_ip6[3],
            ],
            sa.user_port,
            sa.protocol,
        )
    };
    // ::ffff:a.b.c.d reaches IPv4 peers; judge it by the IPv4 rules so an
    // AF_INET6 socket cannot step around them.
    if ip[0] == 0 && ip[1] == 0 && ip[2] == V4_MAPPED_WORD {
        return decide(FAMILY_V4, [ip[3], 0, 0, 0], port, proto);
    }
    decide(FAMILY_V6, ip, port, proto)
}

/// Deepest cgroup level searched for policies (the container's own and its
/// enclosing containers', for `--parent`).
const MAX_LEVELS: i32 = 16;

/// The verdict of every palisade policy on the path from the root cgroup
/// to the caller's: one deny is enough. A container nested in another
/// (`--parent`) is thus bound by its parent's policy too. Finding no policy
/// at all (programs attached, maps not written) denies.
#[inline(always)]
fn decide(family: u32, addr: [u32; 4], user_port: u32, proto: u32) -> Result<i32, ()> {
    let mut found = false;
    for level in 0..MAX_LEVELS {
        // SAFETY: the helper has no preconditions; past the caller's own
        // level it returns 0.
        let cgroup = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if cgroup == 0 {
            break;
        }
        // SAFETY: the map value is plain data and only read here.
        let Some(policy) = (unsafe { CGROUP_POLICY.get(&cgroup) }) else {
            continue;
        };
        found = true;
        if policy.connect != CONNECT_OPEN && judge(cgroup, family, addr, user_port, proto)? == DENY
        {
            return Ok(DENY);
        }
    }
    if found { Ok(ALLOW) } else { Err(()) }
}

/// One container's connect rules applied to one connect.
#[inline(always)]
fn judge(cgroup: u64, family: u32, addr: [u32; 4], user_port: u32, proto: u32) -> Result<i32, ()> {
    let max_bits = if family == FAMILY_V4 { 32 } else { 128 };
    let key = aya_ebpf::maps::lpm_trie::Key::new(
        KEY_HEADER_BITS + max_bits,
        RuleKey::new(cgroup, family, addr),
    );
    // No entry means the policy lost its catch-all: deny.
    let rules = CONNECT_RULES.get(&key).ok_or(())?;
    let port = u16::from_be(user_port as u16);
    let proto = proto as u8;
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
            return Ok(if rule.verdict == VERDICT_ALLOW {
                ALLOW
            } else {
                DENY
            });
        }
    }
    Ok(DENY)
}
