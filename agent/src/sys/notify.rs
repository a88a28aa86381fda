//! Kernel notification descriptors: eventfd(2) (what cgroup v1 signals a
//! memory event on) and inotify(7) (how a cgroup v2 `memory.events` says
//! it changed). Both are made non-blocking and close-on-exec, for an event
//! loop to wait on; reading drains them.

use std::{
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
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

/// A new inotify instance (non-blocking) watching `path` for `events`.
pub fn inotify(path: &Path, events: AddWatchFlags) -> nix::Result<OwnedFd> {
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
    inotify.add_watch(path, events)?;
    Ok(inotify.into())
}

/// A new inotify instance with no watch (non-blocking), for many watches
/// at once: the host allows each user few instances
/// (`fs.inotify.max_user_instances`, 128 by default) and many watches.
pub fn inotify_instance() -> nix::Result<OwnedFd> {
    Ok(Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?.into())
}

/// Adds a watch on `path` for modification and removal to instance `fd`;
/// returns its watch descriptor.
pub fn inotify_watch_modify(fd: BorrowedFd<'_>, path: &Path) -> nix::Result<i32> {
    let path =
        std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)?;
    let mask = libc::IN_MODIFY | libc::IN_DELETE_SELF;
    // SAFETY: an inotify fd, a live NUL-terminated path the kernel only
    // reads, and a mask.
    Errno::result(unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) })
}

/// Removes watch `wd` from instance `fd` (one already gone is fine).
pub fn inotify_unwatch(fd: BorrowedFd<'_>, wd: i32) -> nix::Result<()> {
    // SAFETY: an inotify fd and a watch descriptor; nothing is shared.
    match Errno::result(unsafe { libc::inotify_rm_watch(fd.as_raw_fd(), wd) }) {
        Ok(_) | Err(Errno::EINVAL) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Reads every pending event of instance `fd`, as what each watch saw.
pub fn inotify_drain_by_watch(fd: BorrowedFd<'_>) -> nix::Result<Vec<(i32, Inotified)>> {
    let mut seen: Vec<(i32, Inotified)> = Vec::new();
    each_event(fd, |wd, mask| {
        let at = match seen.iter().position(|(w, _)| *w == wd) {
            Some(at) => at,
            None => {
                seen.push((wd, Inotified::default()));
                seen.len() - 1
            }
        };
        seen[at].1.add(mask);
    })?;
    Ok(seen)
}

/// What draining an inotify fd found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inotified {
    pub modified: bool,
    /// The watched file is gone (deleted, or its file system unmounted).
    pub gone: bool,
}

impl Inotified {
    fn add(&mut self, mask: u32) {
        self.modified |= mask & libc::IN_MODIFY != 0;
        self.gone |= mask & (libc::IN_DELETE_SELF | libc::IN_IGNORED | libc::IN_UNMOUNT) != 0;
    }
}

/// Reads every pending event of inotify `fd` (none pending is not an error).
pub fn inotify_drain(fd: &OwnedFd) -> nix::Result<Inotified> {
    let mut seen = Inotified::default();
    each_event(fd.as_fd(), |_, mask| seen.add(mask))?;
    Ok(seen)
}

/// Calls `f(wd, mask)` for every pending event of inotify `fd`.
fn each_event(fd: BorrowedFd<'_>, mut f: impl FnMut(i32, u32)) -> nix::Result<()> {
    // Room for many events (each is 16 bytes plus a name; watches on files
    // have no name).
    let mut buf = [0u8; 4096];
    loop {
        let n = match nix::unistd::read(fd, &mut buf) {
            Ok(n) => n,
            Err(Errno::EAGAIN) => return Ok(()),
            Err(e) => return Err(e),
        };
        let header = std::mem::size_of::<libc::inotify_event>();
        let mut at = 0;
        while at + header <= n {
            // The struct is four 32-bit words (wd, mask, cookie, the
            // name's length), then the name.
            let word = |i: usize| {
                let b = &buf[at + 4 * i..at + 4 * i + 4];
                u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
            };
            f(word(0) as i32, word(1));
            at += header + word(3) as usize;
        }
    }
}
