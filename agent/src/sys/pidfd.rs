//! pidfds: signalling a process by a handle that cannot be recycled.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::{errno::Errno, sys::signal::Signal};

/// Opens a pidfd for `pid` (pidfd_open(2), Linux 5.3).
pub fn open(pid: i32) -> nix::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1;
    // no memory is shared with the kernel.
    let fd = Errno::result(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sends `signal` to the process behind `pidfd` (pidfd_send_signal(2)).
pub fn send_signal(pidfd: &OwnedFd, signal: Signal) -> nix::Result<()> {
    // SAFETY: a valid pidfd, a signal number, a null siginfo (the kernel
    // fills in a kill(2)-style one) and no flags.
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as i32,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })?;
    Ok(())
}
