//! Registering descriptors with tokio's event loop. tokio's `AsyncFd`
//! needs a promise that the descriptor stays open, and the same file, for
//! as long as it is registered; only types that own their descriptor can
//! keep it, so only those are accepted here.

use std::os::fd::{AsRawFd, OwnedFd};

use tokio::io::{Interest, unix::AsyncFd};

/// A type that owns its descriptor for its whole life: an `OwnedFd`,
/// aya's ring of a taken map, and aya-log's reader of a program's log ring
/// (both hold a `MapData`, which closes its descriptor only on drop).
pub trait Owning: AsRawFd + private::Sealed {}

impl Owning for OwnedFd {}
impl Owning for aya::maps::RingBuf<aya::maps::MapData> {}
impl<T: log::Log> Owning for aya_log::EbpfLogger<T> {}

mod private {
    pub trait Sealed {}
    impl Sealed for std::os::fd::OwnedFd {}
    impl Sealed for aya::maps::RingBuf<aya::maps::MapData> {}
    impl<T: log::Log> Sealed for aya_log::EbpfLogger<T> {}
}

/// `inner`'s descriptor, registered for readability (epoll on a ring
/// buffer map is ready once the kernel has submitted a record).
pub fn readable<T: Owning>(inner: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: `T` owns its descriptor (the `Owning` types are sealed to
    // ones that do), so it stays open and the same file until the AsyncFd,
    // which owns `inner`, is dropped.
    unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) }.map_err(|e| e.into())
}
