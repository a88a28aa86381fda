//! A container's view of its own `/proc` (`[view] proc = true`,
//! `--proc-view`): where the resident agent serves it (a FUSE filesystem
//! on `ROOT/.view`, a directory per container), binding its files over
//! the container's at start or, for a container started while no agent
//! ran, later from the agent; taking them out again when the agent stops;
//! and whether a container has them now (for `ps`).
//!
//! A container whose files no agent serves reads the host's: at start
//! when no agent runs, and again after an agent that stopped cleanly took
//! them out. An agent killed outright cannot: until one starts again, the
//! container's view files fail with ENOTCONN ("Transport endpoint is not
//! connected"), never a stale copy, and `ps` says so.

use std::{
    fs::File,
    io,
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
};

use nix::{
    errno::Errno,
    fcntl::OFlag,
    mount::{MntFlags, umount2},
    sys::stat::{Mode, fstat},
};
use serde::Serialize;

use super::{State, StateRoot, Status};
use crate::{
    spec::ViewFile,
    sys::{fs, ns},
};

/// The agent's mount point in a state root (no container name starts
/// with a dot).
pub const MOUNT_DIR: &str = ".view";

pub fn mount_point(root: &StateRoot) -> PathBuf {
    root.dir().join(MOUNT_DIR)
}

/// The directory of `name`'s files under the agent's mount point.
pub fn files_of(root: &StateRoot, name: &str) -> PathBuf {
    mount_point(root).join(name)
}

/// The device number of the view filesystem an agent serves on `root`,
/// if one does (a FUSE mount that answers).
pub fn served(root: &StateRoot) -> Option<u64> {
    let fd = nix::fcntl::open(
        &mount_point(root),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    fs::is_fuse(fd.as_fd())
        .ok()?
        .then(|| fstat(&fd).ok().map(|st| st.st_dev))?
}

/// Opens `dir`'s view files (`O_PATH`) for binding into a new container;
/// `None` unless every one is on a FUSE filesystem that answers (no agent
/// serves the view).
pub fn open_files(dir: &Path) -> Option<Vec<(ViewFile, OwnedFd)>> {
    ViewFile::ALL
        .into_iter()
        .map(|file| {
            let fd = nix::fcntl::open(
                &dir.join(file.name()),
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .ok()?;
            fs::is_fuse(fd.as_fd()).ok()?.then_some((file, fd))
        })
        .collect()
}

/// The mount attributes of every view file bound into a container: it is
/// read-only, and nothing on it is a device, set-id or executable.
pub fn bind_attrs() -> fs::MountAttrs {
    fs::MountAttrs::READ_ONLY
        | fs::MountAttrs::NO_SUID
        | fs::MountAttrs::NO_DEV
        | fs::MountAttrs::NO_EXEC
}

/// Whether a container has its view now, as `ps` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ViewState {
    /// Not asked for: the host's files, as in any container.
    Off,
    /// Its files are the agent's, served now.
    Served,
    /// Asked for, but it reads the host's files: no agent serves the view
    /// (or one just started and has not bound them yet).
    HostFiles,
    /// Its files belong to an agent that is gone: they fail (ENOTCONN)
    /// until an agent starts again.
    Failing,
}

impl ViewState {
    pub fn as_str(self) -> &'static str {
        match self {
            ViewState::Off => "off",
            ViewState::Served => "served",
            ViewState::HostFiles => "host-files",
            ViewState::Failing => "failing",
        }
    }
}

/// What a running container that asked for the view reads now: its
/// `/proc/meminfo`, reached inside its own root, is the agent's live
/// filesystem, a dead one, or the host's.
pub fn state_of(state: &State, served_dev: Option<u64>) -> ViewState {
    let Some(pid) = state.pid.filter(|_| state.proc_view) else {
        return ViewState::Off;
    };
    if !matches!(state.status, Status::Running | Status::Created) {
        return ViewState::Off;
    }
    let container_root = PathBuf::from(format!("/proc/{pid}/root"));
    let Ok(fd) = fs::open_in_root(&container_root, Path::new(ViewFile::Meminfo.covers())) else {
        return ViewState::HostFiles;
    };
    match fs::is_fuse(fd.as_fd()) {
        Err(Errno::ENOTCONN) => ViewState::Failing,
        Ok(true) => match fstat(&fd) {
            Ok(st) if Some(st.st_dev) == served_dev => ViewState::Served,
            _ => ViewState::Failing,
        },
        _ => ViewState::HostFiles,
    }
}

/// A view file mounted on `path` in the caller's mount namespace: the
/// descriptor of what is there, and whether it is a view file of the
/// filesystem `dev` (`Some(true)`), of another or dead one
/// (`Some(false)`), or no view file at all (`None`).
fn view_mount_at(path: &Path, dev: u64) -> io::Result<(OwnedFd, Option<bool>)> {
    let fd = fs::open_in_root(Path::new("/"), path)?;
    let ours = match fs::is_fuse(fd.as_fd()) {
        Err(Errno::ENOTCONN) => Some(false),
        Ok(true) => Some(fstat(&fd).is_ok_and(|st| st.st_dev == dev)),
        Ok(false) => None,
        Err(e) => return Err(e.into()),
    };
    Ok((fd, ours))
}

/// Detaches view mounts on `path` (the caller's mount namespace) that are
/// not of the filesystem `keep`, topmost first; whether one of `keep`
/// is left on top.
fn detach_stale(path: &Path, keep: Option<u64>) -> io::Result<bool> {
    // Bound: a mount point holds at most one view file per agent start.
    for _ in 0..64 {
        match view_mount_at(path, keep.unwrap_or(u64::MAX))? {
            (_, Some(true)) => return Ok(true),
            (_, None) => return Ok(false),
            (_, Some(false)) => {
                umount2(path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW)
                    .map_err(io::Error::from)?;
            }
        }
    }
    Err(io::Error::other(format!(
        "{}: too many stale mounts",
        path.display()
    )))
}

fn mount_ns(state: &State) -> io::Result<File> {
    let pid = state
        .pid
        .ok_or_else(|| io::Error::other("no first process"))?;
    File::open(format!("/proc/{pid}/ns/mnt"))
}

/// Binds the view of the running container `state` from the agent's
/// filesystem `dev` on `root` over its files, replacing those of a gone
/// agent. Returns whether it bound any (none if it had them already).
pub fn bind_into(root: &StateRoot, state: &State, dev: u64) -> io::Result<bool> {
    let dir = files_of(root, &state.name);
    let trees = ViewFile::ALL
        .into_iter()
        .map(|f| fs::clone_mount(&dir.join(f.name())).map(|tree| (f, tree)))
        .collect::<io::Result<Vec<_>>>()?;
    ns::in_mount_namespace(&mount_ns(state)?, || {
        let mut bound = false;
        for (file, tree) in &trees {
            let path = Path::new(file.covers());
            if detach_stale(path, Some(dev))? {
                continue;
            }
            let target = fs::open_in_root(Path::new("/"), path)?;
            fs::attach_mount(tree.as_fd(), target.as_fd())?;
            let mounted = fs::open_in_root(Path::new("/"), path)?;
            fs::set_attrs_recursive(mounted.as_fd(), bind_attrs())?;
            bound = true;
        }
        Ok(bound)
    })?
}

/// Takes the view files out of the running container `state`: it reads
/// the host's files again.
pub fn take_out(state: &State) -> io::Result<()> {
    ns::in_mount_namespace(&mount_ns(state)?, || {
        for file in ViewFile::ALL {
            detach_stale(Path::new(file.covers()), None)?;
        }
        Ok(())
    })?
}

/// Detaches the FUSE mounts on the mount point `dir` that `detach` picks
/// (by whether the one on top answers: `Ok(true)` if it is a live FUSE
/// filesystem, `Err(ENOTCONN)` if a dead one), topmost first, until one
/// it does not pick is on top; whether any was detached.
fn detach_from_point(dir: &Path, detach: fn(nix::Result<bool>) -> bool) -> io::Result<bool> {
    let mut detached = false;
    for _ in 0..64 {
        let fd = match nix::fcntl::open(
            dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(detached),
            Err(e) => return Err(e.into()),
        };
        let on_top = fs::is_fuse(fd.as_fd());
        if !detach(on_top) {
            return match on_top {
                Ok(_) | Err(Errno::ENOTCONN) => Ok(detached),
                Err(e) => Err(e.into()),
            };
        }
        umount2(dir, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW).map_err(io::Error::from)?;
        detached = true;
    }
    Err(io::Error::other(format!(
        "{}: too many stale mounts",
        dir.display()
    )))
}

/// Detaches whatever FUSE filesystems are mounted on the mount point
/// `dir` (a dead agent's, as a new one starts).
pub fn unmount_point(dir: &Path) -> io::Result<()> {
    detach_from_point(dir, |on_top| {
        matches!(on_top, Ok(true) | Err(Errno::ENOTCONN))
    })
    .map(drop)
}

/// Detaches a killed agent's dead filesystem from `root`'s mount point
/// (`system prune`), leaving a live agent's; whether there was one.
pub fn detach_dead(root: &StateRoot) -> io::Result<bool> {
    detach_from_point(&mount_point(root), |on_top| on_top == Err(Errno::ENOTCONN))
}
