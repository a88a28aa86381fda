//! Filesystem facts the agent needs.

use std::path::Path;

use nix::sys::statfs::{FsType, statfs};

/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// True if `path` is the root of a mounted bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == FsType(BPF_FS_MAGIC as _))
}
