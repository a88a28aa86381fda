//! Scheduler accounting: CPU time and context switches of each
//! container's tasks. This program is global (a raw tracepoint, not a
//! cgroup hook): attached once per object, it sees every task of the host
//! and counts only those of palisade containers (see `usage`). Page faults
//! are not counted here: the memory controller counts them per cgroup
//! (`memory.stat` pgfault), at no cost to the host's other tasks.
//!
//! ## sched_switch
//!
//! Attach point: the raw tracepoint `sched_switch` (BPF_PROG_TYPE_RAW_TRACEPOINT,
//! Linux 4.17), run in the context of the task being switched away from.
//! The time since the last switch on this CPU (`RUNNING.since_ns`) is that
//! task's slice: it is charged, with one switch, to the task's own cgroup.
//! Then `RUNNING` records the task switched in (argument `next`), with its
//! cgroup as `TASK_CGROUP` remembers it, so userspace can add the slice of
//! a container's task still running when it reads. Knowing the outgoing
//! task from `RUNNING` (it was switched in here), a switch costs one hash
//! lookup (`TASK_CGROUP`, for the incoming task), two when the outgoing
//! task is a container's (`USAGE`); a task's first switch also walks its
//! ancestors in `CGROUP_POLICY`.
//! Reads `CGROUP_POLICY`; writes `RUNNING`, `TASK_CGROUP`, `USAGE`.
//!

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_ktime_get_ns},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use palisade_common::{
    Running, SCHED_SWITCH_ARG_NEXT, TASK_FOREIGN, TASK_OURS, TASK_UNKNOWN, TaskCgroup,
};

use crate::{
    maps::{RUNNING, TASK_CGROUP},
    usage::{current_ancestor, current_cgroup, is_palisade, record},
};

#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn sched_switch(ctx: RawTracePointContext) -> i32 {
    let next: u64 = ctx.arg(SCHED_SWITCH_ARG_NEXT);
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(running) = RUNNING.get_ptr_mut(0) else {
        return 0;
    };
    let cgroup = current_cgroup();
    // SAFETY: a non-null pointer to this CPU's entry of a per-CPU array;
    // tracepoint programs run with preemption off, so nothing else on this
    // CPU touches it meanwhile. Volatile keeps the reads below the null
    // check for the verifier.
    let since = unsafe { core::ptr::read_volatile(&(*running).since_ns) };
    if kind_of_current(running, cgroup) == TASK_OURS
        && let Some(usage) = record(cgroup, current_ancestor)
    {
        // SAFETY: a non-null per-CPU map value, this CPU's copy; only this
        // program writes these two fields, and it does not nest.
        unsafe {
            if since != 0 && now > since {
                (*usage).cpu_ns += now - since;
            }
            (*usage).context_switches += 1;
        }
    }
    let (next_cgroup, next_kind) = match TASK_CGROUP.get_ptr(next) {
        // SAFETY: a non-null pointer to a map value, only read; volatile as
        // above.
        Some(t) => unsafe {
            (
                core::ptr::read_volatile(&(*t).cgroup),
                core::ptr::read_volatile(&(*t).kind),
            )
        },
        None => (0, TASK_UNKNOWN),
    };
    // SAFETY: as above.
    unsafe {
        core::ptr::write_volatile(
            running,
            Running {
                since_ns: now,
                task: next,
                cgroup: next_cgroup,
                kind: next_kind,
                _pad: 0,
            },
        );
    }
    0
}

/// Whether the current task (in `cgroup`) is a container's: from this
/// CPU's `RUNNING` record when it describes the task as it is, else
/// learnt by a walk of its ancestors and remembered, in `RUNNING` and in
/// `TASK_CGROUP` for its next switch in (on any CPU).
#[inline(always)]
fn kind_of_current(running: *mut Running, cgroup: u64) -> u32 {
    // SAFETY: no preconditions; the address is only compared and used as a key.
    let task = unsafe { bpf_get_current_task() };
    // SAFETY: a non-null pointer to this CPU's `RUNNING` entry (see
    // sched_switch); volatile as there.
    let (known_task, known_cgroup, kind) = unsafe {
        (
            core::ptr::read_volatile(&(*running).task),
            core::ptr::read_volatile(&(*running).cgroup),
            core::ptr::read_volatile(&(*running).kind),
        )
    };
    if known_task == task && known_cgroup == cgroup && kind != TASK_UNKNOWN {
        return kind;
    }
    // A task seen for the first time here, or one that changed cgroups.
    let kind = if is_palisade(current_ancestor) {
        TASK_OURS
    } else {
        TASK_FOREIGN
    };
    let _ = TASK_CGROUP.insert(
        task,
        TaskCgroup {
            cgroup,
            kind,
            _pad: 0,
        },
        0,
    );
    if known_task == task {
        // SAFETY: as above.
        unsafe {
            core::ptr::write_volatile(&mut (*running).cgroup, cgroup);
            core::ptr::write_volatile(&mut (*running).kind, kind);
        }
    }
    kind
}
