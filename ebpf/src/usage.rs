//! Accounting: finding (or making) the `USAGE` record a container's
//! packet, call or task is counted in.
//!
//! Everything is counted under the cgroup that did it (the socket's, the
//! task's own), never an enclosing container's, and only for cgroups that
//! are palisade containers of this object: a `CGROUP_POLICY` entry for the
//! cgroup itself or one of its ancestors. A record is only ever created
//! right after such a check, so a container that is gone (its policy
//! deleted) gets no new record from a late packet or task.

use aya_ebpf::helpers::{bpf_get_current_cgroup_id, generated::bpf_get_current_ancestor_cgroup_id};
use palisade_common::Usage;

use crate::{
    maps::{CGROUP_POLICY, USAGE},
    policy::MAX_LEVELS,
};

/// `BPF_NOEXIST`: insert only if the key is not there (another CPU may
/// have just made it; its record is as good).
const NOEXIST: u64 = 1;

/// True if the cgroup whose ancestors `ancestor(level)` gives (0 past its
/// own level) is a palisade container of this object, or inside one.
#[inline(always)]
pub fn is_palisade(ancestor: impl Fn(i32) -> u64) -> bool {
    for level in 0..MAX_LEVELS {
        let cgroup = ancestor(level);
        if cgroup == 0 {
            break;
        }
        if CGROUP_POLICY.get_ptr(cgroup).is_some() {
            return true;
        }
    }
    false
}

/// This CPU's usage record of `cgroup`, made on first use if `cgroup`
/// (with ancestors `ancestor(level)`) is a palisade container; `None`
/// otherwise. One hash lookup once the record exists.
#[inline(always)]
pub fn record(cgroup: u64, ancestor: impl Fn(i32) -> u64) -> Option<*mut Usage> {
    if let Some(u) = USAGE.get_ptr_mut(cgroup) {
        return Some(u);
    }
    if !is_palisade(ancestor) {
        return None;
    }
    let _ = USAGE.insert(cgroup, Usage::default(), NOEXIST);
    USAGE.get_ptr_mut(cgroup)
}

/// The calling task's cgroup id.
#[inline(always)]
pub fn current_cgroup() -> u64 {
    // SAFETY: no preconditions.
    unsafe { bpf_get_current_cgroup_id() }
}

/// The calling task's ancestor cgroup at `level` (0 past its own level).
#[inline(always)]
pub fn current_ancestor(level: i32) -> u64 {
    // SAFETY: no preconditions; past the caller's own level it returns 0.
    unsafe { bpf_get_current_ancestor_cgroup_id(level) }
}

/// This CPU's usage record of the calling task's cgroup, if it is a
/// palisade container.
#[inline(always)]
pub fn of_current_task() -> Option<*mut Usage> {
    record(current_cgroup(), current_ancestor)
}

/// Adds `n` to a counter that a program in process context and one in
/// softirq context may both be adding to on this CPU (a socket sends from
/// both): an atomic add (BPF_ATOMIC | BPF_ADD), so neither is lost. The
/// target has no compare-and-swap, so core's atomics offer no `fetch_add`
/// here; the instruction is written out.
#[inline(always)]
pub fn add(counter: *mut u64, n: u64) {
    // SAFETY: `counter` points into a map value this program holds (a
    // non-null lookup result), 8-byte aligned as every field of `Usage`;
    // the instruction only adds `n` to it.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({counter} + 0) += {n}",
            counter = in(reg) counter,
            n = in(reg) n,
        );
    }
}
