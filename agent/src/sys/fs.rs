//! Filesystem facts the agent needs.

use std::path::Path;

use nix::sys::statfs::{FsType, statfs};

/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// True if `path` is the root of a mounted bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == FsType(BPF_FS_MAGIC as _))
}

/// Renames `from` to `to` unless `to` exists (`RENAME_NOREPLACE`, Linux
/// 3.15): `EEXIST` then, and nothing changes.
pub fn rename_noreplace(from: &Path, to: &Path) -> nix::Result<()> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE)
}
