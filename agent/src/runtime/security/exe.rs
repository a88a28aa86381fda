//! What the container's process must not inherit from palisade: its open
//! descriptors (CVE-2024-21626 class) and a writable path to its binary
//! through /proc/PID/exe (CVE-2019-5736 class).
//!
//! For the second, palisade re-executes itself, before it goes near a
//! container, from a file nothing can write: its own binary seen through a
//! read-only overlay that no path reaches, or where that overlay cannot be
//! made, a sealed memfd copy. It never runs a container from a writable
//! binary: if neither can be made, the command fails.

use std::{
    ffi::{CStr, CString, OsStr},
    fs::File,
    io::{self, Write},
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

use nix::{
    errno::Errno,
    fcntl::{FcntlArg, OFlag, SealFlag, fcntl, open, openat},
    sys::{
        memfd::{MFdFlags, memfd_create},
        stat::{FileStat, Mode, fstat},
        statfs::fstatfs,
        statvfs::FsFlags,
    },
    unistd::{fexecve, geteuid},
};

use super::SecurityError;
use crate::sys::{fs as sysfs, security as sys};

/// The empty directory palisade makes as its overlay's second layer (an
/// overlay without an upper layer needs two lower ones).
const EMPTY_LAYER: &str = "/run/palisade-exe";

/// Closes every descriptor >= 3 but those in `keep`: close_range(2)
/// between the kept ones, or one by one from /proc/self/fd where the
/// kernel lacks it. Call between fork and exec.
pub fn close_inherited_fds(keep: &[RawFd]) -> Result<(), String> {
    end_fds_except(keep, Ending::Close)
}

/// Marks every descriptor >= 3 but those in `keep` close-on-exec, so that
/// a program this process execs inherits only what it is given (whatever
/// palisade's caller left open included), while this process, should the
/// exec fail, still has them all.
pub fn close_on_exec_except(keep: &[RawFd]) -> Result<(), String> {
    end_fds_except(keep, Ending::OnExec)
}

/// What [`end_fds_except`] does to a descriptor.
#[derive(Clone, Copy)]
enum Ending {
    Close,
    OnExec,
}

impl Ending {
    fn range(self, lo: u32, hi: u32) -> nix::Result<()> {
        match self {
            Ending::Close => sys::close_range(lo, hi),
            Ending::OnExec => sys::cloexec_range(lo, hi),
        }
    }

    fn one(self, fd: i32) -> nix::Result<()> {
        match self {
            Ending::Close => sys::close_raw(fd),
            Ending::OnExec => sys::cloexec_raw(fd),
        }
    }

    fn what(self) -> &'static str {
        match self {
            Ending::Close => "close",
            Ending::OnExec => "mark close-on-exec",
        }
    }
}

/// Ends every descriptor >= 3 but those in `keep` as `how` says:
/// close_range(2) between the kept ones, or one by one from
/// /proc/self/fd where the kernel lacks it (close_range before 5.9, its
/// CLOSE_RANGE_CLOEXEC before 5.11).
fn end_fds_except(keep: &[RawFd], how: Ending) -> Result<(), String> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|&fd| u32::try_from(fd).ok())
        .filter(|&fd| fd >= 3)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut first = 3u32;
    let mut ranges = Vec::with_capacity(keep.len() + 1);
    for &k in &keep {
        if k > first {
            ranges.push((first, k - 1));
        }
        first = k + 1;
    }
    ranges.push((first, u32::MAX));
    for (i, &(lo, hi)) in ranges.iter().enumerate() {
        match how.range(lo, hi) {
            Ok(()) => {}
            Err(nix::errno::Errno::ENOSYS | nix::errno::Errno::EINVAL) if i == 0 => {
                return end_by_listing(&keep, how);
            }
            Err(e) => {
                return Err(format!(
                    "cannot {} inherited descriptors {lo}-{hi}: {e}",
                    how.what()
                ));
            }
        }
    }
    Ok(())
}

/// Fallback for kernels without the close_range(2) `how` needs.
fn end_by_listing(keep: &[u32], how: Ending) -> Result<(), String> {
    let listed: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| format!("cannot list /proc/self/fd: {e}"))?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // The listing's own descriptor is closed by now and shows up as EBADF.
    for fd in listed {
        if fd >= 3 && !keep.contains(&(fd as u32)) {
            how.one(fd)
                .map_err(|e| format!("cannot {} inherited descriptor {fd}: {e}", how.what()))?;
        }
    }
    Ok(())
}

/// The seals that make a memfd immutable for good.
fn required_seals() -> SealFlag {
    SealFlag::F_SEAL_SEAL | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE
}

/// A sealed, close-on-exec, in-memory copy of the file at `path`: nothing
/// can write, grow, shrink or unseal it, whoever gets hold of it.
pub fn sealed_copy_of(path: &Path) -> Result<OwnedFd, SecurityError> {
    let io_err = |step: &'static str| {
        move |source: io::Error| SecurityError::Io {
            step,
            path: path.to_path_buf(),
            source,
        }
    };
    let mut source = File::open(path).map_err(io_err("open"))?;
    let mut copy = sealable(c"palisade")?;
    io::copy(&mut source, &mut copy).map_err(io_err("copy into a memfd"))?;
    seal(copy)
}

/// A sealed, close-on-exec memfd named `name` holding `bytes` (the small
/// monitor's image, embedded in palisade).
pub fn sealed_memfd(name: &CStr, bytes: &[u8]) -> Result<OwnedFd, SecurityError> {
    let mut file = sealable(name)?;
    file.write_all(bytes).map_err(|source| SecurityError::Io {
        step: "write into a memfd",
        path: Path::new("memfd:").join(name.to_string_lossy().as_ref()),
        source,
    })?;
    seal(file)
}

/// A new close-on-exec memfd that may be sealed.
fn sealable(name: &CStr) -> Result<File, SecurityError> {
    let memfd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).map_err(
        |errno| SecurityError::Sys {
            step: "create a memfd",
            errno,
        },
    )?;
    Ok(File::from(memfd))
}

/// `file` with every required seal: immutable for good.
fn seal(file: File) -> Result<OwnedFd, SecurityError> {
    fcntl(file.as_fd(), FcntlArg::F_ADD_SEALS(required_seals())).map_err(|errno| {
        SecurityError::Sys {
            step: "seal a memfd",
            errno,
        }
    })?;
    Ok(file.into())
}

/// An `O_PATH` descriptor of the image this process runs from, which a
/// program it execs inherits (not close-on-exec): the small monitor runs
/// palisade through it once the container has ended, the very image even
/// if the binary's path has been replaced meanwhile.
pub fn inheritable_own_image() -> Result<OwnedFd, SecurityError> {
    open("/proc/self/exe", OFlag::O_PATH, Mode::empty()).map_err(|errno| SecurityError::Sys {
        step: "open palisade's own image",
        errno,
    })
}

/// Whether `exe` is a memfd carrying every required seal.
fn is_sealed(exe: &File) -> bool {
    // Only memfds carry seals; any other file answers EINVAL.
    fcntl(exe.as_fd(), FcntlArg::F_GET_SEALS)
        .is_ok_and(|bits| SealFlag::from_bits_truncate(bits).contains(required_seals()))
}

/// Whether `exe` is on a read-only mount, where opening it for writing
/// through /proc/PID/exe fails with EROFS: palisade installed on a
/// read-only `/usr` or bind mount, or palisade's own overlay once it has
/// re-executed from it. The kernel answers from the mount the running
/// image was opened through; nothing in the process's environment counts.
fn on_read_only_mount(exe: &File) -> bool {
    fstatfs(exe.as_fd()).is_ok_and(|s| s.flags().contains(FsFlags::ST_RDONLY))
}

/// Makes sure palisade runs from a binary no container can write through
/// /proc/PID/exe: if it runs from a writable one, re-executes the same
/// argv and environment from its own binary seen through a private
/// read-only overlay, or from a sealed memfd copy where the overlay cannot
/// be made (this call then returns only in the new image, at most once:
/// both are already safe). Nothing happens where palisade already runs
/// from a read-only mount or a sealed memfd.
pub fn ensure_unwritable_self() -> Result<(), SecurityError> {
    let path = Path::new("/proc/self/exe");
    let exe = File::open(path).map_err(|source| SecurityError::Io {
        step: "open",
        path: path.to_path_buf(),
        source,
    })?;
    if on_read_only_mount(&exe) || is_sealed(&exe) {
        return Ok(());
    }
    // Any reason the overlay cannot be had (no new mount API, no
    // overlayfs, a layer it refuses, too deep a stack of overlays) leaves
    // the copy, which is slower but as safe.
    let image = match overlay_view_of(&exe) {
        Ok(image) => image,
        Err(_) => sealed_copy_of(path)?,
    };
    drop(exe);
    reexec(image)
}

/// The running binary, opened (`O_PATH`) through a fresh overlay whose
/// layers are the binary's directory and palisade's empty directory, and
/// which has no upper layer: read-only for good (overlayfs refuses to
/// make such a mount writable), mounted read-only too, and in no mount
/// namespace, so no path reaches it. The pages are the binary's own page
/// cache: nothing is copied. Fails unless what the overlay shows under the
/// binary's name is the very file palisade started from.
fn overlay_view_of(exe: &File) -> Result<OwnedFd, SecurityError> {
    let sys_err = |step: &'static str| move |errno| SecurityError::Sys { step, errno };
    let target = std::fs::read_link("/proc/self/exe").map_err(|source| SecurityError::Io {
        step: "read the link",
        path: "/proc/self/exe".into(),
        source,
    })?;
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return Err(SecurityError::Sys {
            step: "find the directory of palisade's binary",
            errno: Errno::ENOENT,
        });
    };
    let dir = open(
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys_err("open the directory of palisade's binary"))?;
    let empty = empty_layer()?;
    // Each layer by its descriptor: the very directories opened and
    // checked here, and no path to escape for overlayfs's option syntax.
    // xino=off keeps the lower layers' inode numbers for the check below.
    let lower = format!(
        "/proc/self/fd/{}:/proc/self/fd/{}",
        dir.as_raw_fd(),
        empty.as_raw_fd()
    );
    let lower = CString::new(lower).map_err(|_| SecurityError::Nul)?;
    let mount = sysfs::detached_read_only_mount(
        c"overlay",
        &[(c"lowerdir", lower.as_c_str()), (c"xino", c"off")],
    )
    .map_err(sys_err("make a read-only overlay of palisade's directory"))?;
    let image = openat(
        &mount,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys_err("open palisade's binary in its overlay"))?;
    // The name may have moved to another file since palisade started (an
    // upgrade in progress): re-executing that would run another build
    // with this one's arguments.
    let running = fstat(exe.as_fd()).map_err(sys_err("stat palisade's binary"))?;
    let seen = fstat(image.as_fd()).map_err(sys_err("stat palisade's binary in its overlay"))?;
    if !same_file_contents(&running, &seen) {
        return Err(SecurityError::Sys {
            step: "find palisade's binary under its name",
            errno: Errno::ESTALE,
        });
    }
    Ok(image)
}

/// Whether two stats describe one regular file, unchanged: an overlay
/// gives its files a device of its own, but with xino off it keeps a lower
/// file's inode number, size and times.
fn same_file_contents(a: &FileStat, b: &FileStat) -> bool {
    let key = |s: &FileStat| {
        (
            s.st_mode & libc::S_IFMT,
            s.st_ino,
            s.st_size,
            (s.st_mtime, s.st_mtime_nsec),
            (s.st_ctime, s.st_ctime_nsec),
        )
    };
    a.st_mode & libc::S_IFMT == libc::S_IFREG && key(a) == key(b)
}

/// The overlay's second layer: [`EMPTY_LAYER`], made by palisade if
/// missing, opened without following a symbolic link, and used only if it
/// is a directory of the effective user (root) that no one else may enter
/// and that holds nothing. Anything else and the overlay is not made.
fn empty_layer() -> Result<OwnedFd, SecurityError> {
    let sys_err = |step: &'static str| move |errno| SecurityError::Sys { step, errno };
    let path = Path::new(EMPTY_LAYER);
    match sysfs::mkdir(path, 0o700) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(sys_err("make palisade's empty overlay layer")(e)),
    }
    let dir =
        sysfs::open_dir_nofollow(path).map_err(sys_err("open palisade's empty overlay layer"))?;
    let st = fstat(dir.as_fd()).map_err(sys_err("stat palisade's empty overlay layer"))?;
    if st.st_uid != geteuid().as_raw() || st.st_mode & 0o077 != 0 {
        return Err(SecurityError::Sys {
            step: "trust palisade's empty overlay layer (not its owner's alone)",
            errno: Errno::EPERM,
        });
    }
    let listing = format!("/proc/self/fd/{}", dir.as_raw_fd());
    let mut entries = std::fs::read_dir(&listing).map_err(|source| SecurityError::Io {
        step: "list",
        path: path.to_path_buf(),
        source,
    })?;
    if entries.next().is_some() {
        return Err(SecurityError::Sys {
            step: "use palisade's empty overlay layer (it is not empty)",
            errno: Errno::ENOTEMPTY,
        });
    }
    Ok(dir)
}

/// Re-executes this process's argv and environment from `image`, a
/// close-on-exec descriptor of an ELF binary (a memfd, or an `O_PATH`
/// descriptor). Returns only on failure.
fn reexec(image: OwnedFd) -> Result<(), SecurityError> {
    let to_c = |s: &OsStr| CString::new(s.as_bytes()).map_err(|_| SecurityError::Nul);
    let argv = std::env::args_os()
        .map(|a| to_c(&a))
        .collect::<Result<Vec<_>, _>>()?;
    Err(exec_image(
        image.as_fd(),
        &argv,
        "re-execute palisade from an unwritable image of itself",
    ))
}

/// Executes `image`, a close-on-exec descriptor of an ELF binary (a memfd,
/// or an `O_PATH` descriptor), with `argv` and this process's environment.
/// Returns only on failure, with `step` saying what failed.
pub fn exec_image(image: BorrowedFd<'_>, argv: &[CString], step: &'static str) -> SecurityError {
    let env = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).map_err(|_| SecurityError::Nul)
        })
        .collect::<Result<Vec<_>, _>>();
    let env = match env {
        Ok(env) => env,
        Err(e) => return e,
    };
    // glibc's fexecve is execveat(fd, "", AT_EMPTY_PATH): fine for a
    // close-on-exec descriptor of an ELF binary (a script would need its
    // path after the descriptor is gone).
    let errno = fexecve(image, argv, &env).unwrap_err();
    SecurityError::Sys { step, errno }
}
