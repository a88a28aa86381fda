//! Context switches of a container's threads that exit.
//!
//! The kernel counts every task's switches (`nvcsw`, `nivcsw`) and shows
//! them in /proc while the task lives; a reader sums them for the live
//! threads of a container's cgroup. What it cannot read is a thread that
//! has gone, so this program, on `sched_process_exit` (a raw tracepoint,
//! run by the exiting task itself, after it is marked exiting and while
//! it is still in its cgroup), adds that thread's two counts to its
//! container's `USAGE` record and counts the exit, having first
//! remembered the thread in `EXITED`, so that a reader counts it once
//! whether /proc still lists it or not (see `ExitedThread`).
//!
//! This replaces a program on `sched_switch`, which ran on every context
//! switch of every task of the host: this one runs once per thread exit,
//! and a task outside palisade costs it a cgroup lookup or two (its
//! ancestors in `CGROUP_POLICY`), no write.
//!
//! `task_struct` offsets are the object's read-only globals, set by the
//! loader from the kernel's BTF (`palisade_common::task_offset`).
//! Reads `CGROUP_POLICY`; writes `USAGE`, `EXITED`.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_smp_processor_id,
        bpf_probe_read_kernel,
    },
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use palisade_common::ExitedThread;

use crate::{
    maps::EXITED,
    usage::{current_ancestor, current_cgroup, record},
};

/// Offset of `task_struct.nvcsw`, set at load time.
#[unsafe(no_mangle)]
static TASK_NVCSW: u64 = 0;
/// Offset of `task_struct.nivcsw`, set at load time.
#[unsafe(no_mangle)]
static TASK_NIVCSW: u64 = 0;
/// Offset of `task_struct.start_boottime`, set at load time.
#[unsafe(no_mangle)]
static TASK_START_BOOTTIME: u64 = 0;

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn task_exit(_ctx: RawTracePointContext) -> i32 {
    let Some(usage) = record(current_cgroup(), current_ancestor) else {
        return 0;
    };
    // SAFETY: no preconditions; the result is only used as an address to
    // read from with bpf_probe_read_kernel, which checks it.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let (Some(nvcsw), Some(nivcsw), Some(start)) = (
        read_field(task, &TASK_NVCSW),
        read_field(task, &TASK_NIVCSW),
        read_field(task, &TASK_START_BOOTTIME),
    ) else {
        return 0;
    };
    // The thread id in the host's pid namespace, as /proc lists it.
    let tid = bpf_get_current_pid_tgid() as u32;
    let switches = nvcsw + nivcsw;
    // SAFETY: a non-null per-CPU map value, this CPU's copy. Only this
    // program writes these two fields, with preemption off (tracepoints
    // run so), so nothing else changes them meanwhile.
    let seq = unsafe { core::ptr::read_volatile(&(*usage).exited_threads) } + 1;
    // SAFETY: no preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    // Remembered before it is counted (see `ExitedThread`): a reader that
    // finds the entry but a smaller count on this CPU adds `switches`.
    let _ = EXITED.insert(
        tid,
        ExitedThread {
            start_boottime_ns: start,
            switches,
            seq,
            cpu,
            _pad: 0,
        },
        0,
    );
    // SAFETY: as above.
    unsafe {
        core::ptr::write_volatile(
            &mut (*usage).exited_switches,
            (*usage).exited_switches + switches,
        );
        core::ptr::write_volatile(&mut (*usage).exited_threads, seq);
    }
    0
}

/// The u64 at the offset `offset` (a load-time global) of `task`.
#[inline(always)]
fn read_field(task: *const u8, offset: &u64) -> Option<u64> {
    // SAFETY: a read of a read-only global; volatile so the compiler does
    // not fold in the initial 0 the loader replaces.
    let offset = unsafe { core::ptr::read_volatile(offset) };
    if offset == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one is an
    // error, never a fault.
    unsafe { bpf_probe_read_kernel(task.wrapping_add(offset as usize) as *const u64) }.ok()
}
