//! Kernel notification descriptors: eventfd(2) (what cgroup v1 signals a
//! memory event on) and inotify(7) (how a cgroup v2 `memory.events` says
//! it changed). Both are made non-blocking and close-on-exec, for an event
//! loop to wait on; reading drains them.

use std::{
    os::fd::{FromRawFd, OwnedFd},
    path::Path,
};

use nix::{
    errno::Errno,
    sys::inotify::{AddWatchFlags, InitFlags, Inotify},
};

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

/// A new inotify instance (non-blocking) watching `path` for
/// modification and removal.
pub fn inotify_modify(path: &Path) -> nix::Result<OwnedFd> {
    inotify(
        path,
        AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_DELETE_SELF,
    )
}

/// A new inotify instance (non-blocking) watching `path` for `events`.
pub fn inotify(path: &Path, events: AddWatchFlags) -> nix::Result<OwnedFd> {
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
    inotify.add_watch(path, events)?;
    Ok(inotify.into())
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
