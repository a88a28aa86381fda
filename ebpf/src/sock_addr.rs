//! Address hooks on the container's cgroup v2 directory:
//! - cgroup/connect4, connect6 (BPF_CGROUP_INET{4,6}_CONNECT, Linux 4.17):
//!   `connect()`;
//! - cgroup/sendmsg4, sendmsg6 (BPF_CGROUP_UDP{4,6}_SENDMSG, 4.18): UDP
//!   datagrams sent to an address on an unconnected socket;
//!   both judged by the `connect` rules;
//! - cgroup/bind4, bind6 (BPF_CGROUP_INET{4,6}_BIND, 4.17): `bind()` to an
//!   explicit port, judged by the `bind` rules (a bind to port 0 is judged
//!   once the kernel has picked the port, by post_bind in `sock`).
//!
//! Reads `CGROUP_POLICY` and `CONNECT_RULES`; writes `USAGE` (a connect
//! allowed is counted for the caller's own cgroup). Returning 0 makes the
//! call fail with EPERM; 1 lets it proceed.

use aya_ebpf::{
    helpers::bpf_get_current_cgroup_id, macros::cgroup_sock_addr, programs::SockAddrContext,
};
use palisade_common::{FAMILY_V4, FAMILY_V6, HOOK_BIND, HOOK_CONNECT, HOOK_SENDMSG};

use crate::{
    events::{Refusal, conclude},
    policy::{ALLOW, DENY, List, decide, normalise},
    usage::of_current_task,
};

/// The address, port (host order) and protocol of the call.
#[inline(always)]
fn v4(ctx: &SockAddrContext) -> ([u32; 4], u16, u8) {
    // SAFETY: the kernel hands every cgroup sock_addr program a valid
    // bpf_sock_addr; the verifier checks each field access.
    let (ip, port, proto) = unsafe {
        let sa = &*ctx.sock_addr;
        (sa.user_ip4, sa.user_port, sa.protocol)
    };
    ([ip, 0, 0, 0], u16::from_be(port as u16), proto as u8)
}

#[inline(always)]
fn v6(ctx: &SockAddrContext) -> ([u32; 4], u16, u8) {
    // SAFETY: as in v4; user_ip6 is read one 32-bit word at a time, the
    // only access the verifier allows.
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
    (ip, u16::from_be(port as u16), proto as u8)
}

/// Decides by `list` for the calling task and reports the outcome; the
/// program's return value.
#[inline(always)]
pub(crate) fn judged(
    list: List,
    hook: u32,
    family: u32,
    (addr, port, proto): ([u32; 4], u16, u8),
) -> i32 {
    let (family, addr) = normalise(family, addr);
    let decision = decide(list, family, addr, port, proto);
    // SAFETY: no preconditions.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    let refusal = Refusal {
        cgroup,
        hook,
        verdict: 0,
        family,
        addr,
        port,
        proto,
        task: true,
    };
    // Spelled out so the verifier sees a return value of 0 or 1.
    if conclude(decision, refusal) == 1 {
        ALLOW
    } else {
        DENY
    }
}

/// The calls whose allowed count `USAGE` keeps.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Allowed {
    Connect,
    Bind,
}

/// Counts an allowed call in the caller's own cgroup's usage; passes the
/// verdict on (ALLOW or DENY).
#[inline(always)]
pub(crate) fn counted(verdict: i32, call: Allowed) -> i32 {
    if verdict != ALLOW {
        return DENY;
    }
    if let Some(usage) = of_current_task() {
        // SAFETY: a non-null per-CPU map value, this CPU's copy; connect
        // and bind hooks run in process context and do not nest.
        unsafe {
            match call {
                Allowed::Connect => (*usage).connects_allowed += 1,
                Allowed::Bind => (*usage).binds_allowed += 1,
            }
        }
    }
    ALLOW
}

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    let verdict = judged(List::Connect, HOOK_CONNECT, FAMILY_V4, v4(&ctx));
    counted(verdict, Allowed::Connect)
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    let verdict = judged(List::Connect, HOOK_CONNECT, FAMILY_V6, v6(&ctx));
    counted(verdict, Allowed::Connect)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    judged(List::Connect, HOOK_SENDMSG, FAMILY_V4, v4(&ctx))
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    judged(List::Connect, HOOK_SENDMSG, FAMILY_V6, v6(&ctx))
}

#[cgroup_sock_addr(bind4)]
pub fn bind4(ctx: SockAddrContext) -> i32 {
    let call = v4(&ctx);
    // Port 0: the kernel picks one; post_bind4 judges that.
    if call.1 == 0 {
        ALLOW
    } else {
        judged(List::Bind, HOOK_BIND, FAMILY_V4, call)
    }
}

#[cgroup_sock_addr(bind6)]
pub fn bind6(ctx: SockAddrContext) -> i32 {
    let call = v6(&ctx);
    if call.1 == 0 {
        ALLOW
    } else {
        judged(List::Bind, HOOK_BIND, FAMILY_V6, call)
    }
}
