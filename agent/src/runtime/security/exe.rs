//! What the container's process must not inherit from palisade: its open
//! descriptors (CVE-2024-21626 class) and a writable path to its binary
//! through /proc/PID/exe (CVE-2019-5736 class).

use std::{
    ffi::CString,
    fs::File,
    io,
    os::{
        fd::{AsFd, OwnedFd, RawFd},
        unix::ffi::OsStrExt,
    },
    path::Path,
};

use nix::{
    fcntl::{FcntlArg, SealFlag, fcntl},
    sys::memfd::{MFdFlags, memfd_create},
    unistd::fexecve,
};

use super::SecurityError;
use crate::sys::security as sys;

/// Closes every descriptor >= 3 but those in `keep`: close_range(2)
/// between the kept ones, or one by one from /proc/self/fd where the
/// kernel lacks it. Call between fork and exec.
pub fn close_inherited_fds(keep: &[RawFd]) -> Result<(), String> {
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
        match sys::close_range(lo, hi) {
            Ok(()) => {}
            Err(nix::errno::Errno::ENOSYS) if i == 0 => return close_by_listing(&keep),
            Err(e) => return Err(format!("cannot close inherited descriptors {lo}-{hi}: {e}")),
        }
    }
    Ok(())
}

/// Fallback for kernels before 5.9.
fn close_by_listing(keep: &[u32]) -> Result<(), String> {
    let listed: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| format!("cannot list /proc/self/fd: {e}"))?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // The listing's own descriptor is closed by now and shows up as EBADF.
    for fd in listed {
        if fd >= 3 && !keep.contains(&(fd as u32)) {
            sys::close_raw(fd)
                .map_err(|e| format!("cannot close inherited descriptor {fd}: {e}"))?;
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
    let sys_err = |step: &'static str| move |errno| SecurityError::Sys { step, errno };
    let mut source = File::open(path).map_err(io_err("open"))?;
    let memfd = memfd_create(
        c"palisade",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(sys_err("create a memfd for the sealed copy of palisade"))?;
    let mut copy = File::from(memfd);
    io::copy(&mut source, &mut copy).map_err(io_err("copy into a memfd"))?;
    fcntl(copy.as_fd(), FcntlArg::F_ADD_SEALS(required_seals()))
        .map_err(sys_err("seal the copy of palisade"))?;
    Ok(copy.into())
}

/// Whether the running executable is a memfd carrying every required seal.
fn running_sealed() -> Result<bool, SecurityError> {
    let exe = Path::new("/proc/self/exe");
    let file = File::open(exe).map_err(|source| SecurityError::Io {
        step: "open",
        path: exe.to_path_buf(),
        source,
    })?;
    // Only memfds carry seals; any other file answers EINVAL.
    Ok(match fcntl(file.as_fd(), FcntlArg::F_GET_SEALS) {
        Ok(bits) => SealFlag::from_bits_truncate(bits).contains(required_seals()),
        Err(_) => false,
    })
}

/// True when palisade was started from a read-only mount: opening its
/// binary for writing through /proc/PID/exe then fails with EROFS anyway,
/// and the copy (milliseconds for a binary this size) can be skipped.
fn on_read_only_mount() -> bool {
    nix::sys::statvfs::statvfs("/proc/self/exe")
        .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

/// Makes sure palisade runs from a sealed memfd, so a container reaching
/// /proc/PID/exe of a palisade process finds nothing it can write: if it
/// does not yet, re-executes the same argv and environment from a sealed
/// copy (this call then returns only in the new image, at most once).
/// Unless palisade runs from a read-only mount, which protects it already.
pub fn ensure_sealed_self() -> Result<(), SecurityError> {
    if running_sealed()? || on_read_only_mount() {
        return Ok(());
    }
    let copy = sealed_copy_of(Path::new("/proc/self/exe"))?;
    let to_c = |s: &std::ffi::OsStr| CString::new(s.as_bytes()).map_err(|_| SecurityError::Nul);
    let argv = std::env::args_os()
        .map(|a| to_c(&a))
        .collect::<Result<Vec<_>, _>>()?;
    let env = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).map_err(|_| SecurityError::Nul)
        })
        .collect::<Result<Vec<_>, _>>()?;
    // glibc's fexecve is execveat(fd, "", AT_EMPTY_PATH): fine for a
    // close-on-exec memfd holding an ELF binary.
    let errno = fexecve(copy.as_fd(), &argv, &env).unwrap_err();
    Err(SecurityError::Sys {
        step: "re-execute palisade from its sealed copy",
        errno,
    })
}
