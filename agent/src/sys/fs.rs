//! Filesystem facts the agent needs, path resolution, mount attributes
//! and detached mounts that nix does not wrap (openat2, mount_setattr,
//! fsopen/fsconfig/fsmount), and files opened relative to a directory fd
//! without following links (checkpoint images).

use std::{
    ffi::{CStr, CString, OsString},
    fs::File,
    io,
    os::{
        fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
        unix::ffi::{OsStrExt, OsStringExt},
    },
    path::{Path, PathBuf},
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

/// `CGROUP_SUPER_MAGIC` and `CGROUP2_SUPER_MAGIC` from linux/magic.h.
const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// True if `path` is on a cgroup filesystem (v1 or v2), by its
/// filesystem's type, whatever the path is called.
pub fn is_cgroupfs(path: &Path) -> io::Result<bool> {
    let kind = statfs(path).map_err(io::Error::from)?.filesystem_type();
    Ok(kind == FsType(CGROUP_SUPER_MAGIC as _) || kind == FsType(CGROUP2_SUPER_MAGIC as _))
}

/// Every mount this process sees: (mount point, filesystem type), from
/// /proc/self/mountinfo.
pub fn mounts() -> io::Result<Vec<(PathBuf, String)>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = left.split(' ').nth(4)?;
            let fstype = right.split(' ').next()?;
            Some((PathBuf::from(unescape_mountinfo(point)), fstype.to_string()))
        })
        .collect())
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> OsString {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    OsString::from_vec(out)
}

/// `struct open_how` of linux/openat2.h (libc's cannot be built outside it).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens `path` inside `root` (an absolute `path` counts from `root`) as
/// an `O_PATH` descriptor, never leaving `root` and refusing any symlink
/// on the way: a symlink component fails with `ELOOP`.
pub fn open_in_root(root: &Path, path: &Path) -> io::Result<OwnedFd> {
    let dir = std::fs::File::open(root)?;
    let relative = path.strip_prefix("/").unwrap_or(path);
    let relative = if relative.as_os_str().is_empty() {
        Path::new(".")
    } else {
        relative
    };
    let c_path = CString::new(relative.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `dir` is an open descriptor, `c_path` a NUL-terminated string
    // and `how` an `open_how` of the size passed, all alive for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c_path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `struct mount_attr` of linux/mount.h.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `MOUNT_ATTR_RDONLY` of linux/mount.h.
const MOUNT_ATTR_RDONLY: u64 = 0x1;

/// Makes the mount `fd` refers to (as an `O_PATH` descriptor of its root)
/// read-only, and every mount under it too.
pub fn set_read_only_recursive(fd: BorrowedFd<'_>) -> io::Result<()> {
    set_attrs_recursive(fd, MountAttrs::READ_ONLY)
}

/// Mount attributes to set with [`set_attrs_recursive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountAttrs(u64);

impl MountAttrs {
    pub const READ_ONLY: Self = Self(MOUNT_ATTR_RDONLY);
    pub const NO_SUID: Self = Self(0x2);
    pub const NO_DEV: Self = Self(0x4);
    pub const NO_EXEC: Self = Self(0x8);

    pub fn empty() -> Self {
        Self(0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for MountAttrs {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// Sets `attrs` on the mount `fd` refers to (an `O_PATH` descriptor of its
/// root) and on every mount under it.
pub fn set_attrs_recursive(fd: BorrowedFd<'_>, attrs: MountAttrs) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: attrs.0,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `fd` is open, the path is an empty NUL-terminated string
    // (AT_EMPTY_PATH: the descriptor itself) and `attr` a `mount_attr` of
    // the size passed, all alive for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `FSOPEN_CLOEXEC`, `FSMOUNT_CLOEXEC` and the fsconfig(2) commands used
/// here, from linux/mount.h (libc has the syscall numbers only).
const FSOPEN_CLOEXEC: libc::c_uint = 0x1;
const FSMOUNT_CLOEXEC: libc::c_uint = 0x1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
/// `MOUNT_ATTR_NOSUID` and `MOUNT_ATTR_NODEV` of linux/mount.h.
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// Wraps a descriptor the kernel just returned (or the error).
fn owned_fd(rc: libc::c_long) -> nix::Result<OwnedFd> {
    let fd = nix::errno::Errno::result(rc)?;
    // SAFETY: the kernel just returned this descriptor, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A new filesystem of type `fstype`, made with the string `options`
/// (key, value) in order and mounted read-only, nosuid and nodev in no
/// mount namespace at all (fsopen, fsconfig, fsmount: Linux 5.2): no path
/// reaches it, so nothing can remount it, and it lives as long as a
/// descriptor or a file opened through it. Returns a close-on-exec
/// descriptor of its root. `ENOSYS` before 5.2, `ENODEV` without that
/// filesystem, and the filesystem's own refusal of an option (its reason
/// goes to the kernel log).
pub fn detached_read_only_mount(fstype: &CStr, options: &[(&CStr, &CStr)]) -> nix::Result<OwnedFd> {
    // SAFETY: `fstype` is a NUL-terminated string alive for the call.
    let context =
        owned_fd(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) })?;
    let config = |command: libc::c_uint, key: Option<&CStr>, value: Option<&CStr>| {
        let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
        // SAFETY: `context` is an open filesystem context, `key` and
        // `value` are null or NUL-terminated strings alive for the call,
        // and the auxiliary argument is 0 as these two commands require.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                context.as_raw_fd(),
                command,
                ptr(key),
                ptr(value),
                0,
            )
        };
        nix::errno::Errno::result(rc).map(drop)
    };
    for (key, value) in options {
        config(FSCONFIG_SET_STRING, Some(key), Some(value))?;
    }
    config(FSCONFIG_CMD_CREATE, None, None)?;
    let attrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    // SAFETY: `context` holds a created superblock; fsmount takes integers
    // only and touches no memory of ours.
    owned_fd(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            context.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            attrs as libc::c_uint,
        )
    })
}

/// Renames `from` to `to` unless `to` exists (`RENAME_NOREPLACE`, Linux
/// 3.15): `EEXIST` then, and nothing changes.
pub fn rename_noreplace(from: &Path, to: &Path) -> nix::Result<()> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE)
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

/// `FUSE_SUPER_MAGIC` from linux/magic.h.
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Whether `fd` (an `O_PATH` descriptor is enough) is on a FUSE
/// filesystem. A FUSE mount whose server is gone answers `ENOTCONN`.
pub fn is_fuse(fd: BorrowedFd<'_>) -> nix::Result<bool> {
    let fs = nix::sys::statfs::fstatfs(fd)?;
    Ok(fs.filesystem_type() == FsType(FUSE_SUPER_MAGIC as _))
}

/// `OPEN_TREE_CLONE` and `OPEN_TREE_CLOEXEC` of linux/mount.h, and
/// move_mount(2)'s flags.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// A detached copy of the mount at `path` (a bind mount that belongs to
/// no mount namespace yet: open_tree(2) with `OPEN_TREE_CLONE`, Linux
/// 5.2), to be attached elsewhere with [`attach_mount`], even in another
/// mount namespace.
pub fn clone_mount(path: &Path) -> io::Result<OwnedFd> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c_path` is a NUL-terminated string alive for the call; the
    // other arguments are integers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c_path.as_ptr(),
            OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC,
        )
    };
    owned_fd(rc).map_err(io::Error::from)
}

/// Attaches the detached mount `tree` (from [`clone_mount`]) on the file
/// or directory `target` refers to (an `O_PATH` descriptor): the caller's
/// mount namespace must be the one `target` is in.
pub fn attach_mount(tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: both descriptors are open and both paths are empty
    // NUL-terminated strings (the descriptors themselves), alive for the
    // call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(
            unescape_mountinfo(r"/a\040b\134c"),
            OsString::from(r"/a b\c")
        );
        assert_eq!(unescape_mountinfo(r"/plain\0"), OsString::from(r"/plain\0"));
    }

    #[test]
    fn open_in_root_refuses_symlinks_and_stays_inside() {
        let dir = std::env::temp_dir().join(format!("palisade-openat2-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("real/sub")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.join("abs")).unwrap();
        std::os::unix::fs::symlink("real", dir.join("rel")).unwrap();
        assert!(open_in_root(&dir, Path::new("/real/sub")).is_ok());
        assert!(open_in_root(&dir, Path::new("/")).is_ok());
        for path in ["/abs", "/abs/passwd", "/rel/sub"] {
            let e = open_in_root(&dir, Path::new(path)).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{path}");
        }
        let e = open_in_root(&dir, Path::new("/missing")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_detached_mount_is_read_only() {
        use std::os::fd::AsFd;
        let root = detached_read_only_mount(c"tmpfs", &[(c"size", c"64k")]).unwrap();
        let refused = create_at(root.as_fd(), "x", 0o600).unwrap_err();
        assert_eq!(refused, nix::errno::Errno::EROFS);
        let unknown = detached_read_only_mount(c"palisade-no-such-fs", &[]).unwrap_err();
        assert_eq!(unknown, nix::errno::Errno::ENODEV);
        let bad_option = detached_read_only_mount(c"tmpfs", &[(c"size", c"lots")]).unwrap_err();
        assert_eq!(bad_option, nix::errno::Errno::EINVAL);
    }

    #[test]
    fn cgroupfs_is_told_by_type() {
        assert!(!is_cgroupfs(Path::new("/")).unwrap());
        let cgroup = mounts()
            .unwrap()
            .into_iter()
            .find(|(_, fstype)| fstype == "cgroup2" || fstype == "cgroup")
            .expect("a cgroup mount");
        assert!(is_cgroupfs(&cgroup.0).unwrap());
    }
}
