//! cgroup/sock_create: socket-type restriction.
//!
//! Attach point: the container's cgroup v2 directory
//! (BPF_CGROUP_INET_SOCK_CREATE, run for AF_INET and AF_INET6 sockets
//! only, so packet sockets are refused by the container's seccomp filter
//! instead). Reads `CGROUP_POLICY`; writes nothing. Minimum kernel 4.10.
//! Returning 0 makes `socket()` fail with EPERM.
//!
//! Like the connect hooks, every palisade policy from the root cgroup down
//! to the caller's is consulted and one refusal is enough; finding none
//! (programs attached, maps not written) refuses: fail closed.

use aya_ebpf::{
    helpers::generated::bpf_get_current_ancestor_cgroup_id, macros::cgroup_sock,
    programs::SockContext,
};
use palisade_common::DENY_RAW;

use crate::maps::CGROUP_POLICY;

const ALLOW: i32 = 1;
const DENY: i32 = 0;
const SOCK_RAW: u32 = 3;
/// Deepest cgroup level searched for policies, as in `sock_addr`.
const MAX_LEVELS: i32 = 16;

#[cgroup_sock(sock_create)]
pub fn sock_create(ctx: SockContext) -> i32 {
    // SAFETY: the kernel hands every cgroup/sock_create program a valid
    // bpf_sock; the verifier checks each field access.
    let kind = unsafe { (*ctx.sock).type_ };
    let refused = if kind == SOCK_RAW { DENY_RAW } else { 0 };
    let mut found = false;
    for level in 0..MAX_LEVELS {
        // SAFETY: the helper has no preconditions; past the caller's own
        // level it returns 0.
        let cgroup = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if cgroup == 0 {
            break;
        }
        if let Some(policy) = CGROUP_POLICY.get_ptr(&cgroup) {
            found = true;
            // SAFETY: a non-null pointer to a map value, only read. The
            // volatile read keeps the compiler from hoisting it above the
            // null check, which the verifier would refuse.
            let sockets = unsafe { core::ptr::read_volatile(&(*policy).sockets) };
            if sockets & refused != 0 {
                return DENY;
            }
        }
    }
    if found { ALLOW } else { DENY }
}
