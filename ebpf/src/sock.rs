//! Socket hooks on the container's cgroup v2 directory:
//! - cgroup/sock_create (BPF_CGROUP_INET_SOCK_CREATE, Linux 4.10): refuses
//!   raw sockets when the policy says `sockets = { raw = false }`. It runs
//!   for AF_INET and AF_INET6 sockets only, so packet sockets are refused
//!   by the container's seccomp filter instead.
//! - cgroup/post_bind4, post_bind6 (BPF_CGROUP_INET{4,6}_POST_BIND, 4.17):
//!   judge every `bind()` by the `bind` rules once the port is known, so an
//!   ephemeral bind (port 0) is judged by the port the kernel picked.
//!
//! Reads `CGROUP_POLICY` (and `CONNECT_RULES` through `policy`); writes
//! `USAGE`: post_bind counts each bind it allows for the caller's own
//! cgroup (every bind passes it once, whether its port was given or
//! picked, so it is counted here rather than in bind4/bind6, which a bind
//! to port 0 passes unjudged). Returning 0 makes the call fail with EPERM. As everywhere, every
//! palisade policy from the root cgroup down is consulted, one refusal is
//! enough, and finding none refuses: fail closed.

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, generated::bpf_get_current_ancestor_cgroup_id},
    macros::cgroup_sock,
    programs::SockContext,
};
use palisade_common::{DENY_RAW, FAMILY_V4, FAMILY_V6, HOOK_BIND, HOOK_SOCK_CREATE, MODE_AUDIT};

use crate::{
    events::{Refusal, conclude},
    maps::CGROUP_POLICY,
    policy::{ALLOW, AUDITED, DENY, List, MAX_LEVELS},
    sock_addr::{Allowed, counted, judged},
};

const SOCK_RAW: u32 = 3;

#[cgroup_sock(sock_create)]
pub fn sock_create(ctx: SockContext) -> i32 {
    // SAFETY: the kernel hands every cgroup sock program a valid bpf_sock;
    // the verifier checks each field access.
    let kind = unsafe { (*ctx.sock).type_ };
    let refused = if kind == SOCK_RAW { DENY_RAW } else { 0 };
    let mut found = false;
    let mut audited = false;
    for level in 0..MAX_LEVELS {
        // SAFETY: the helper has no preconditions; past the caller's own
        // level it returns 0.
        let cgroup = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if cgroup == 0 {
            break;
        }
        if let Some(policy) = CGROUP_POLICY.get_ptr(cgroup) {
            found = true;
            // SAFETY: a non-null pointer to a map value, only read. The
            // volatile read keeps the compiler from hoisting it above the
            // null check, which the verifier would refuse.
            let (sockets, mode) = unsafe {
                (
                    core::ptr::read_volatile(&(*policy).sockets),
                    core::ptr::read_volatile(&(*policy).mode),
                )
            };
            if sockets & refused != 0 {
                if mode != MODE_AUDIT {
                    found = false;
                    break;
                }
                audited = true;
            }
        }
    }
    let decision = match (found, audited) {
        (false, _) => DENY,
        (true, false) => ALLOW,
        (true, true) => ALLOW | AUDITED,
    };
    // SAFETY: no preconditions.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    let refusal = Refusal {
        cgroup,
        hook: HOOK_SOCK_CREATE,
        verdict: 0,
        family: 0,
        addr: [0; 4],
        port: 0,
        proto: 0,
        task: true,
    };
    if conclude(decision, refusal) == 1 {
        ALLOW
    } else {
        DENY
    }
}

#[cgroup_sock(post_bind4)]
pub fn post_bind4(ctx: SockContext) -> i32 {
    // SAFETY: as in sock_create. src_port is in host byte order.
    let (ip, port, proto) = unsafe {
        let sk = &*ctx.sock;
        (sk.src_ip4, sk.src_port, sk.protocol)
    };
    let verdict = judged(
        List::Bind,
        HOOK_BIND,
        FAMILY_V4,
        ([ip, 0, 0, 0], port as u16, proto as u8),
    );
    counted(verdict, Allowed::Bind)
}

#[cgroup_sock(post_bind6)]
pub fn post_bind6(ctx: SockContext) -> i32 {
    // SAFETY: as in post_bind4; src_ip6 is read one 32-bit word at a time.
    let (ip, port, proto) = unsafe {
        let sk = &*ctx.sock;
        (
            [sk.src_ip6[0], sk.src_ip6[1], sk.src_ip6[2], sk.src_ip6[3]],
            sk.src_port,
            sk.protocol,
        )
    };
    let verdict = judged(
        List::Bind,
        HOOK_BIND,
        FAMILY_V6,
        (ip, port as u16, proto as u8),
    );
    counted(verdict, Allowed::Bind)
}
