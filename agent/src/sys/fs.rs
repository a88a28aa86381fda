//! Filesystem facts the agent needs, and files opened relative to a
//! directory fd without following links (checkpoint images).

use std::{
    fs::File,
    os::fd::{BorrowedFd, OwnedFd},
    path::Path,
};

use nix::{
    fcntl::OFlag,
    sys::{
        stat::Mode,
        statfs::{FsType, statfs},
    },
};

/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// True if `path` is the root of a mounted bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == FsType(BPF_FS_MAGIC as _))
}

/// Opens the directory `path` itself for `*at` calls, refusing a symbolic
/// link in its last component (`ELOOP` or `ENOTDIR`).
pub fn open_dir_nofollow(path: &Path) -> nix::Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Makes the directory `path` (its parent must exist) with `mode`.
pub fn mkdir(path: &Path, mode: u32) -> nix::Result<()> {
    nix::unistd::mkdir(path, Mode::from_bits_truncate(mode))
}

/// Creates `name` in `dir` for writing: a new file (`O_EXCL`), never
/// through a symbolic link (`O_NOFOLLOW`), with `mode`.
pub fn create_at(dir: BorrowedFd<'_>, name: &str, mode: u32) -> nix::Result<File> {
    nix::fcntl::openat(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode),
    )
    .map(File::from)
}

/// Opens `name` in `dir` for reading, never through a symbolic link, and
/// without blocking on a FIFO (`O_NONBLOCK`: the caller checks what it
/// opened before reading).
pub fn open_at(dir: BorrowedFd<'_>, name: &str) -> nix::Result<File> {
    nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map(File::from)
}

/// Removes the file `name` of `dir`.
pub fn unlink_at(dir: BorrowedFd<'_>, name: &str) -> nix::Result<()> {
    nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir)
}
