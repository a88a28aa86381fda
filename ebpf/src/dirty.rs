//! Dirty-page tracking for incremental checkpoint: records each page a
//! tracked process writes, as the write faults it, and each range whose
//! mapping it moves.
//!
//! Its own object (`palisade-dirty`), so that loading the tracker creates
//! none of the enforcement maps and enforcement never pays for it. The
//! pre-copy engine write-protects the process's memory (userfaultfd
//! `WP_ASYNC`): the first write to each page after each re-protection
//! faults, the kernel resolves it by itself, and these programs see the
//! fault on the way in. A fault that then fails is recorded too: the set
//! may hold a page not written, never lack one written by a fault.
//! Writes that take no fault of this CPU's (another process's
//! `process_vm_writev`, `O_DIRECT` reads, io_uring, anything through
//! get_user_pages) are not seen: the consumer cross-checks with
//! `PAGEMAP_SCAN`.
//!
//! Every record goes into one ring (`DIRTY`, BPF_MAP_TYPE_RINGBUF, Linux
//! 5.8), in order, so that userspace reads what happened since its last
//! read without deleting anything: the cost of a drain is the records,
//! not the map's capacity. A record the ring has no room for is counted
//! in `DIRTY_LOST`, so userspace always learns that what it read is
//! incomplete.
//!
//! ## dirty_user, dirty_kernel
//!
//! Attach points: the raw tracepoints `page_fault_user` and
//! `page_fault_kernel` (x86 exceptions; BPF_PROG_TYPE_RAW_TRACEPOINT,
//! Linux 4.17), run in the faulting task's context. The kernel one sees
//! the kernel writing user memory on the process's behalf (`read()` into
//! a buffer, `copy_to_user`). A fault of an untracked process costs one
//! hash lookup (`TRACKED`) when it is a write, none when it is a read.
//!
//! ## dirty_mremap, dirty_placed
//!
//! A write-protected mapping that `mremap(2)` moves keeps its protection,
//! so at its new place it looks unwritten. These record the ranges a move
//! touches, so that whatever is mapped there is copied again:
//! `dirty_mremap` on the raw tracepoint `sys_enter` (the source range,
//! and the destination of `MREMAP_FIXED`; every system call of the host
//! runs it while it is attached, and it returns at once unless the call is
//! `mremap`); `dirty_placed` on `vm_unmapped_area` (the address the
//! kernel picks for a mapping that moves without `MREMAP_FIXED`, or for a
//! new one: its first page).
//!
//! Minimum kernel: 5.8 (the ring buffer; the tracepoints are older).
#![no_std]
#![no_main]
// The atomic add of `add64`.
#![feature(asm_experimental_arch)]

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::{map, raw_tracepoint},
    maps::{HashMap, RingBuf},
    programs::RawTracePointContext,
};
use palisade_common::{
    DIRTY_MOVED, DIRTY_PAGE_SIZE, DIRTY_WRITE, DirtyEvent, FAULT_WRITE, MAX_DIRTY_RING,
    MAX_LOST_ENTRIES, MAX_TRACKED, MREMAP_FIXED, NR_MREMAP, PAGE_FAULT_ARG_ADDRESS,
    PAGE_FAULT_ARG_ERROR_CODE, PT_REGS_ARG_OFFSETS,
};

#[map(name = "TRACKED")]
static TRACKED: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TRACKED, 0);

/// Sized by the loader (at most `MAX_DIRTY_RING`).
#[map(name = "DIRTY")]
static DIRTY: RingBuf = RingBuf::with_byte_size(MAX_DIRTY_RING, 0);

#[map(name = "DIRTY_LOST")]
static DIRTY_LOST: HashMap<u32, u64> = HashMap::with_max_entries(MAX_LOST_ENTRIES, 0);

#[raw_tracepoint(tracepoint = "page_fault_user")]
pub fn dirty_user(ctx: RawTracePointContext) -> i32 {
    record(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "page_fault_kernel")]
pub fn dirty_kernel(ctx: RawTracePointContext) -> i32 {
    record(&ctx);
    0
}

/// Records the faulting page if the fault is a write by a tracked
/// process to a user address.
#[inline(always)]
fn record(ctx: &RawTracePointContext) {
    // Each argument is read once: a second read of the context is
    // rejected by the verifier once the first value was spilled.
    let error_code: u64 = ctx.arg(PAGE_FAULT_ARG_ERROR_CODE);
    if error_code & FAULT_WRITE == 0 {
        return;
    }
    let Some(tgid) = tracked() else {
        return;
    };
    let address: u64 = ctx.arg(PAGE_FAULT_ARG_ADDRESS);
    // Kernel addresses (the upper half) are the kernel's own faults.
    if address >> 63 != 0 {
        return;
    }
    emit(tgid, DIRTY_WRITE, address, 0);
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn dirty_mremap(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct pt_regs *regs, long id)
    let id: u64 = ctx.arg(1);
    if id != NR_MREMAP {
        return 0;
    }
    let Some(tgid) = tracked() else {
        return 0;
    };
    let regs: u64 = ctx.arg(0);
    let arg = |n: usize| -> u64 {
        // SAFETY: `regs` is the kernel's pt_regs of this system call; the
        // helper reads it safely (a failed read gives an error, which
        // records the widest range below).
        unsafe { bpf_probe_read_kernel((regs as usize + PT_REGS_ARG_OFFSETS[n]) as *const u64) }
            .unwrap_or(u64::MAX)
    };
    let (old, old_len, new_len, flags, new) = (arg(0), arg(1), arg(2), arg(3), arg(4));
    emit(tgid, DIRTY_MOVED, old, old_len);
    if flags & MREMAP_FIXED != 0 {
        emit(tgid, DIRTY_MOVED, new, new_len);
    }
    0
}

#[raw_tracepoint(tracepoint = "vm_unmapped_area")]
pub fn dirty_placed(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(unsigned long addr, struct vm_unmapped_area_info *info)
    let Some(tgid) = tracked() else {
        return 0;
    };
    let addr: u64 = ctx.arg(0);
    // An error (a negative errno) is no address.
    if addr >> 63 == 0 {
        emit(tgid, DIRTY_MOVED, addr, DIRTY_PAGE_SIZE);
    }
    0
}

/// The current process's tgid, if it is tracked.
#[inline(always)]
fn tracked() -> Option<u32> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    TRACKED.get_ptr(tgid).map(|_| tgid)
}

/// Puts an event in the ring, or counts it lost.
#[inline(always)]
fn emit(tgid: u32, kind: u32, address: u64, len: u64) {
    let start = address & !(DIRTY_PAGE_SIZE - 1);
    let event = DirtyEvent {
        tgid,
        kind,
        start,
        len: if kind == DIRTY_WRITE {
            0
        } else {
            // Whole pages, from the page of `address`.
            (address - start)
                .saturating_add(len)
                .saturating_add(DIRTY_PAGE_SIZE - 1)
                & !(DIRTY_PAGE_SIZE - 1)
        },
    };
    if DIRTY.output::<DirtyEvent>(&event, 0).is_ok() {
        return;
    }
    if let Some(lost) = DIRTY_LOST.get_ptr_mut(tgid) {
        add64(lost);
    } else if DIRTY_LOST.insert(tgid, 1, BPF_NOEXIST.into()).is_err()
        && let Some(lost) = DIRTY_LOST.get_ptr_mut(tgid)
    {
        add64(lost);
    }
}

/// Adds one to a counter that other CPUs may be adding to: an atomic add
/// (BPF_ATOMIC | BPF_ADD, 64 bits). The target has no compare-and-swap,
/// so core's atomics offer no `fetch_add`; the instruction is written out.
#[inline(always)]
fn add64(counter: *mut u64) {
    // SAFETY: `counter` is a non-null map value this program holds (a
    // lookup result), 8-byte aligned; the instruction only adds 1 to it.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({counter} + 0) += {n}",
            counter = in(reg) counter,
            n = in(reg) 1u64,
        );
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program that could reach this, so it
    // is never executed; `unreachable_unchecked` just tells the compiler so.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
