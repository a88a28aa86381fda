//! Dirty-page tracking for incremental checkpoint: records each page a
//! tracked process writes, as the write faults it.
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
//! ## dirty_user, dirty_kernel
//!
//! Attach points: the raw tracepoints `page_fault_user` and
//! `page_fault_kernel` (x86 exceptions; BPF_PROG_TYPE_RAW_TRACEPOINT,
//! Linux 4.17), run in the faulting task's context. The kernel one sees
//! the kernel writing user memory on the process's behalf (`read()` into
//! a buffer, `copy_to_user`). A fault of an untracked process costs one
//! hash lookup (`TRACKED`) when it is a write, none when it is a read.
//! Reads `TRACKED`; writes `DIRTY` (a new page, or one more write fault
//! of a page already there) and, when `DIRTY` refuses a new page (full,
//! or out of memory), `DIRTY_LOST`, so userspace always learns that the
//! set it drains is incomplete.
//! Minimum kernel: 5.12 (32-bit atomic add), 5.14 for the userspace side
//! (`BPF_MAP_LOOKUP_AND_DELETE_ELEM` on a hash map).
#![no_std]
#![no_main]
// The atomic adds of `add32` and `add64`.
#![feature(asm_experimental_arch)]

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::bpf_get_current_pid_tgid,
    macros::{map, raw_tracepoint},
    maps::HashMap,
    programs::RawTracePointContext,
};
use palisade_common::{
    DIRTY_PAGE_SIZE, DirtyKey, FAULT_WRITE, MAX_DIRTY_PAGES, MAX_LOST_ENTRIES, MAX_TRACKED,
    PAGE_FAULT_ARG_ADDRESS, PAGE_FAULT_ARG_ERROR_CODE,
};

#[map(name = "TRACKED")]
static TRACKED: HashMap<u32, u32> = HashMap::with_max_entries(MAX_TRACKED, 0);

#[map(name = "DIRTY")]
static DIRTY: HashMap<DirtyKey, u32> =
    HashMap::with_max_entries(MAX_DIRTY_PAGES, BPF_F_NO_PREALLOC);

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
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if TRACKED.get_ptr(tgid).is_none() {
        return;
    }
    let address: u64 = ctx.arg(PAGE_FAULT_ARG_ADDRESS);
    // Kernel addresses (the upper half) are the kernel's own faults.
    if address >> 63 != 0 {
        return;
    }
    let key = DirtyKey {
        tgid,
        _pad: 0,
        page: address & !(DIRTY_PAGE_SIZE - 1),
    };
    if let Some(count) = DIRTY.get_ptr_mut(key) {
        add32(count);
        return;
    }
    if DIRTY.insert(key, 1, BPF_NOEXIST.into()).is_ok() {
        return;
    }
    // Another CPU may have just made the entry (EEXIST); if not, the map
    // refused the page and the loss must be known.
    if let Some(count) = DIRTY.get_ptr_mut(key) {
        add32(count);
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

/// Adds one to a counter that faults on other CPUs may be adding to:
/// an atomic add (BPF_ATOMIC | BPF_ADD, 32 bits). The target has no
/// compare-and-swap, so core's atomics offer no `fetch_add`; the
/// instruction is written out.
#[inline(always)]
fn add32(counter: *mut u32) {
    // SAFETY: `counter` is a non-null map value this program holds (a
    // lookup result), 4-byte aligned; the instruction only adds 1 to it.
    unsafe {
        core::arch::asm!(
            "lock *(u32 *)({counter} + 0) += {n}",
            counter = in(reg) counter,
            n = in(reg) 1u64,
        );
    }
}

/// As [`add32`], 64 bits.
#[inline(always)]
fn add64(counter: *mut u64) {
    // SAFETY: as in `add32`, 8-byte aligned.
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
