//! Kernel notification descriptors: eventfd(2) (what cgroup v1 signals a
//! memory event on) and inotify(7) (how a cgroup v2 `memory.events` says
//! it changed). Both are made non-blocking and close-on-exec, for an event
//! loop to wait on; reading drains them.

use std::{
    ffi::CString,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

use nix::errno::Errno;
use tokio::io::{Interest, unix::AsyncFd};

/// A new eventfd, counter 0, non-blocking.
pub fn eventfd() -> nix::Result<OwnedFd> {
    // SAFETY: eventfd takes an initial value and flags and returns a new fd
    // or -1; no memory is shared with the kernel.
    let fd = Errno::result(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads (and so resets) an eventfd's counter: how many times it was
/// signalled since the last read; 0 if it was not (EAGAIN).
pub fn eventfd_take(fd: &OwnedFd) -> nix::Result<u64> {
    let mut count = [0u8; 8];
    match nix::unistd::read(fd, &mut count) {
        Ok(8) => Ok(u64::from_ne_bytes(count)),
        Ok(_) => Err(Errno::EIO),
        Err(Errno::EAGAIN) => Ok(0),
        Err(e) => Err(e),
    }
}

/// `fd` registered with the current tokio runtime's reactor, to await its
/// readiness. Must be called within a tokio runtime.
pub fn async_fd(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the OwnedFd, which owns a valid fd; nothing
    // else can close or replace it while it is registered, and it is
    // deregistered before the OwnedFd closes it on drop.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(|e| e.into_parts().1)
}

/// A new inotify instance, non-blocking.
pub fn inotify() -> nix::Result<OwnedFd> {
    // SAFETY: inotify_init1 takes flags and returns a new fd or -1.
    let fd = Errno::result(unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) })?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Watches `path` for modification (and its removal) on inotify `fd`.
pub fn inotify_watch_modify(fd: &OwnedFd, path: &Path) -> nix::Result<()> {
    let path = CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: a valid inotify fd, a NUL-terminated path that outlives the
    // call, and a mask; the kernel copies the path and returns a watch
    // descriptor or -1.
    Errno::result(unsafe {
        libc::inotify_add_watch(
            fd.as_raw_fd(),
            path.as_ptr(),
            libc::IN_MODIFY | libc::IN_DELETE_SELF,
        )
    })?;
    Ok(())
}

/// What draining an inotify fd found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inotified {
    pub modified: bool,
    /// The watched file is gone (deleted, or its file system unmounted).
    pub gone: bool,
}

/// Reads every pending event of inotify `fd` (none pending is not an error).
pub fn inotify_drain(fd: &OwnedFd) -> nix::Result<Inotified> {
    let mut seen = Inotified::default();
    // Room for many events (each is 16 bytes plus a name; watches on files
    // have no name).
    let mut buf = [0u8; 4096];
    loop {
        let n = match nix::unistd::read(fd, &mut buf) {
            Ok(n) => n,
            Err(Errno::EAGAIN) => return Ok(seen),
            Err(e) => return Err(e),
        };
        let header = std::mem::size_of::<libc::inotify_event>();
        let mut at = 0;
        while at + header <= n {
            // The mask is the second u32 of the header; the name's length
            // the fourth (the struct is four u32s, then the name).
            let word = |i: usize| {
                let b = &buf[at + 4 * i..at + 4 * i + 4];
                u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
            };
            let mask = word(1);
            seen.modified |= mask & libc::IN_MODIFY != 0;
            seen.gone |= mask & (libc::IN_DELETE_SELF | libc::IN_IGNORED | libc::IN_UNMOUNT) != 0;
            at += header + word(3) as usize;
        }
    }
}
