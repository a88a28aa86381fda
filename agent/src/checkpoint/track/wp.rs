//! Write-protection of a process's memory with a userfaultfd in
//! WP_ASYNC mode, and its dirty pages as PAGEMAP_SCAN reports them.
//!
//! The userfaultfd is created in the target (it is tied to the address
//! space of the process that creates it) by a remote syscall, taken with
//! pidfd_getfd, and closed in the target again: the target keeps no fd
//! of ours. In WP_ASYNC mode nobody reads the fd: the kernel resolves a
//! write fault on a protected page by itself, clearing the page's
//! protection, which is what PAGEMAP_SCAN's PAGE_IS_WRITTEN then reports.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::index::Ranges;
use crate::{
    checkpoint::{
        CheckpointError,
        dump::Stopped,
        proc,
        remote::{Remote, resume_regs},
    },
    sys::{fds, pidfd, uffd},
};

/// Creates a userfaultfd in the stopped process `t` belongs to (`pid`),
/// takes it, and closes the target's copy; then enables write-protection
/// in asynchronous mode.
pub fn userfaultfd_of(pid: i32, t: &Stopped) -> Result<OwnedFd, CheckpointError> {
    let vdso = proc::maps(pid)
        .ok()
        .and_then(|m| m.into_iter().find(|l| l.path == "[vdso]"))
        .map(|l| (l.start, l.end));
    let mut r: Remote = super::super::dump::process::remote_for(t, vdso)?;
    // User-mode-only: what an unprivileged process may create (a
    // container's has no CAP_SYS_PTRACE), and all asynchronous
    // write-protection needs — the kernel resolves even its own faults
    // on protected pages without the fd.
    let n = r
        .call(
            libc::SYS_userfaultfd,
            &[(libc::O_CLOEXEC | libc::O_NONBLOCK | uffd::USER_MODE_ONLY) as u64],
        )
        .map_err(CheckpointError::remote(pid, "userfaultfd"))?;
    let taken = pidfd::open(pid)
        .and_then(|p| fds::getfd(p.as_fd(), n as i32))
        .map_err(CheckpointError::sys(
            pid,
            "take its userfaultfd (pidfd_getfd)",
        ));
    let closed = r
        .call(libc::SYS_close, &[n])
        .map_err(CheckpointError::remote(pid, "close its userfaultfd"));
    // Its registers as they were, at once: were we to die before the
    // tree is let go, it would go on from where it stopped, not from our
    // last call.
    let put_back = crate::sys::ptrace::set_regs(t.tid, &resume_regs(t.regs))
        .map_err(CheckpointError::sys(pid, "restore registers"));
    let fd = taken?;
    closed?;
    put_back?;
    uffd::tracking_features()
        .and_then(|features| uffd::api(fd.as_fd(), features))
        .map_err(CheckpointError::sys(
            pid,
            "enable asynchronous write-protection (UFFDIO_API WP_ASYNC)",
        ))?;
    Ok(fd)
}

/// Registers [start, end) for write-protection and protects all of it.
pub fn arm(uffd: BorrowedFd, pid: i32, start: u64, end: u64) -> Result<(), CheckpointError> {
    let what = |w: &str| format!("{w} {start:#x}-{end:#x}");
    uffd::register_wp(uffd, start, end - start).map_err(CheckpointError::sys(
        pid,
        what("register for write-protection"),
    ))?;
    uffd::write_protect(uffd, start, end - start, true)
        .map_err(CheckpointError::sys(pid, what("write-protect")))
}

/// The pages of [start, end) written since they were last protected
/// (reported, not protected again).
pub fn written(
    pagemap: BorrowedFd,
    pid: i32,
    start: u64,
    end: u64,
) -> Result<Ranges, CheckpointError> {
    let regions = uffd::pagemap_scan(pagemap, start, end, &uffd::Scan::written(false)).map_err(
        CheckpointError::sys(pid, format!("PAGEMAP_SCAN {start:#x}-{end:#x}")),
    )?;
    Ok(super::index::coalesce(
        regions.into_iter().map(|r| (r.start, r.end - r.start)),
    ))
}

/// The pages of [start, end) written since they were last protected,
/// each protected again, while the process runs: reported by
/// PAGEMAP_SCAN, then protected with UFFDIO_WRITEPROTECT, range by range.
/// A write between the two is in the copy the caller takes afterwards; a
/// write after faults, and a later step sees it.
///
/// Not PAGEMAP_SCAN's own `PM_SCAN_WP_MATCHING`, which reports and
/// protects in one walk: under a process writing while it walked, it
/// lost writes on this 6.18 kernel (one page in about 12 chains of three
/// pre-dumps under tests/workloads/dirty.c `rate=4` kept its copy from
/// before a write that no later scan reported). UFFDIO_WRITEPROTECT lost
/// none in 120.
pub fn written_and_protected(
    uffd: BorrowedFd,
    pagemap: BorrowedFd,
    pid: i32,
    start: u64,
    end: u64,
) -> Result<Ranges, CheckpointError> {
    let found = written(pagemap, pid, start, end)?;
    for &(s, len) in &found {
        uffd::write_protect(uffd, s, len, true).map_err(CheckpointError::sys(
            pid,
            format!("write-protect {s:#x}-{:#x}", s + len),
        ))?;
    }
    Ok(found)
}

/// Protects the whole of [start, end) again (a mapping copied whole).
pub fn protect(uffd: BorrowedFd, pid: i32, start: u64, end: u64) -> Result<(), CheckpointError> {
    uffd::write_protect(uffd, start, end - start, true).map_err(CheckpointError::sys(
        pid,
        format!("write-protect {start:#x}-{end:#x}"),
    ))
}

/// The pages of [start, end) whose copy in a chain no longer stands:
/// written since their last protection, or the shared zero page (a
/// protected page dropped by MADV_DONTNEED and read again reads zeros
/// without any write).
pub fn changed(
    pagemap: BorrowedFd,
    pid: i32,
    start: u64,
    end: u64,
) -> Result<Ranges, CheckpointError> {
    let scan = uffd::Scan {
        flags: uffd::PM_SCAN_CHECK_WPASYNC,
        category_anyof_mask: uffd::PAGE_IS_WRITTEN | uffd::PAGE_IS_PFNZERO,
        return_mask: uffd::PAGE_IS_WRITTEN | uffd::PAGE_IS_PFNZERO,
        ..uffd::Scan::default()
    };
    let regions = uffd::pagemap_scan(pagemap, start, end, &scan).map_err(CheckpointError::sys(
        pid,
        format!("PAGEMAP_SCAN {start:#x}-{end:#x}"),
    ))?;
    Ok(super::index::coalesce(
        regions.into_iter().map(|r| (r.start, r.end - r.start)),
    ))
}

/// Whether mapping [start, end) is registered for asynchronous
/// write-protection: a checked PAGEMAP_SCAN of its first page only (EPERM
/// if not), so the answer costs one page, not the mapping's page tables
/// as /proc/PID/smaps would.
pub fn registered(pagemap: BorrowedFd, pid: i32, start: u64) -> Result<bool, CheckpointError> {
    match uffd::pagemap_scan(
        pagemap,
        start,
        start + super::index::PAGE,
        &uffd::Scan::written(false),
    ) {
        Ok(_) => Ok(true),
        Err(nix::errno::Errno::EPERM) => Ok(false),
        Err(e) => Err(CheckpointError::sys(
            pid,
            format!("PAGEMAP_SCAN {start:#x}"),
        )(e)),
    }
}
