//! Registering descriptors with tokio's event loop. tokio's `AsyncFd`
//! needs a promise that the descriptor stays open, and the same file, for
//! as long as it is registered; only types that own their descriptor can
//! keep it, so only those are accepted here.

use std::os::fd::{AsRawFd, OwnedFd};

use tokio::io::{Interest, unix::AsyncFd};

/// A type that owns its descriptor for its whole life.
pub trait Owning: AsRawFd + private::Sealed {}

impl Owning for OwnedFd {}

mod private {
    pub trait Sealed {}
    impl Sealed for std::os::fd::OwnedFd {}
}

/// `inner`'s descriptor, registered for readability.
pub fn readable<T: Owning>(inner: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: `T` owns its descriptor (the `Owning` types are sealed to
    // ones that do), so it stays open and the same file until the AsyncFd,
    // which owns `inner`, is dropped.
    unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) }.map_err(|e| e.into())
}

/// Reads and drops whatever a non-blocking descriptor holds (an inotify
/// descriptor's events, when only "something changed" matters).
pub fn drain(fd: &OwnedFd) {
    let mut buf = [0u8; 4096];
    while nix::unistd::read(fd, &mut buf).is_ok_and(|n| n > 0) {}
}
