//! Placeholder until the eBPF recorder lands (helper-dirtybpf).
use std::os::fd::{BorrowedFd, OwnedFd};

#[derive(Debug)]
pub struct TrackError(String);
impl std::fmt::Display for TrackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
#[derive(Debug, Default)]
pub struct Drained {
    pub pages: Vec<(u64, u32)>,
    pub overflowed: bool,
}
pub struct DirtyMapFds<'a> {
    pub dirty: BorrowedFd<'a>,
    pub tracked: BorrowedFd<'a>,
    pub lost: BorrowedFd<'a>,
}
pub struct EbpfDirty(OwnedFd);
impl EbpfDirty {
    pub fn load() -> Result<Self, TrackError> {
        Err(TrackError("not built".into()))
    }
    pub fn from_map_fds(d: OwnedFd, _: OwnedFd, _: OwnedFd) -> Result<Self, TrackError> {
        Ok(EbpfDirty(d))
    }
    pub fn map_fds(&self) -> DirtyMapFds<'_> {
        use std::os::fd::AsFd;
        DirtyMapFds { dirty: self.0.as_fd(), tracked: self.0.as_fd(), lost: self.0.as_fd() }
    }
    pub fn track(&mut self, _: i32) -> Result<(), TrackError> {
        Ok(())
    }
    pub fn drain(&mut self, _: i32) -> Result<Drained, TrackError> {
        Ok(Drained::default())
    }
}
pub fn available() -> Result<(), String> {
    Err("not built".into())
}
