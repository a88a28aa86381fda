//! Terminals and resource limits: the two calls `nix` has no safe wrapper
//! for that a container's first process makes before exec.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

/// Makes the terminal `fd` the controlling terminal of the calling
/// process, which must lead a session that has none (`TIOCSCTTY`).
pub fn set_controlling(fd: BorrowedFd<'_>) -> nix::Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument (0: do not steal the
    // terminal from another session); `fd` is a valid open descriptor for
    // the duration of the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) };
    Errno::result(rc).map(drop)
}

/// Sets the calling process's `resource` limit (an `RLIMIT_*` number).
pub fn set_rlimit(resource: i32, soft: u64, hard: u64) -> nix::Result<()> {
    let limit = libc::rlimit64 {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `limit` is a valid rlimit64 for the duration of the call,
    // and a null old-limit pointer asks for nothing back; pid 0 is the
    // caller.
    let rc = unsafe {
        libc::prlimit64(
            0,
            resource as libc::__rlimit_resource_t,
            &limit,
            std::ptr::null_mut(),
        )
    };
    Errno::result(rc).map(drop)
}
