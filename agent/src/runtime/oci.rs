//! The runc command-line contract on palisade's containers: what `start`,
//! `state`, `kill --all`, `delete`, `pause`, `resume`, `update` and `ps ID`
//! do. `create` itself is the launch (see `monitor::create`), stopped
//! before the command at a FIFO in the container's directory that `start`
//! opens, as runc does.
//!
//! A created container has no palisade monitor: its first process is a
//! child of whoever ran `create` (conmon, containerd's shim, which reap it
//! and learn its exit status), and its state says `running` until that
//! process is gone, then `stopped`. `delete` removes everything.

use std::{
    io::Read,
    os::{
        fd::{AsFd, OwnedFd},
        unix::fs::{OpenOptionsExt, PermissionsExt},
    },
    path::{Path, PathBuf},
    time::Duration,
};

use nix::{
    errno::Errno,
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::{signal::Signal, stat::Mode},
    unistd::{Pid, mkfifo},
};
use serde_json::json;

use super::{
    RuntimeError, cleanup, hooks,
    journal::{self, Record, What},
    lifecycle,
    state::{State, StateError, StateRoot, Status},
};
use crate::{cgroups, spec::ResourceLimits};

/// The runtime-spec version palisade implements.
pub const OCI_VERSION: &str = "1.2.0";

/// The FIFO a created container's first process waits at.
const GATE: &str = "exec.fifo";

/// Makes the container's start FIFO and returns an `O_PATH` descriptor of
/// it for the first process (which reopens it for writing through
/// /proc/self/fd once it is in the container's mount namespace).
pub(super) fn make_gate(container_dir: &Path) -> Result<OwnedFd, RuntimeError> {
    let path = container_dir.join(GATE);
    let io = |step| move |e: std::io::Error| RuntimeError::io(step, &e);
    mkfifo(&path, Mode::from_bits_truncate(0o600)).map_err(|errno| RuntimeError::Setup {
        step: "create the container's start FIFO",
        errno,
    })?;
    // Writable by anyone: the first process may have dropped to another
    // user by the time it opens it. Only a reader (root's `start`) starts
    // the container.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o622))
        .map_err(io("set the start FIFO's mode"))?;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&path)
        .map(OwnedFd::from)
        .map_err(io("open the container's start FIFO"))
}

/// A process's start time in clock ticks after boot.
pub(super) fn start_time(pid: i32) -> Option<u64> {
    crate::checkpoint::proc::start_time(pid).ok()
}

/// Whether a created container's first process still runs: the same
/// process (same start time) and not a zombie.
pub(super) fn first_process_alive(state: &State) -> bool {
    let Some(pid) = state.pid else {
        return false;
    };
    lifecycle::not_dead(pid) && state.pid_start.is_some() && start_time(pid) == state.pid_start
}

/// The OCI state of a container, as `state` prints it and hooks read it.
pub fn state_json(state: &State) -> serde_json::Value {
    let status = match state.status {
        Status::Creating => "creating",
        Status::Created => "created",
        Status::Running if state.paused => "paused",
        Status::Running => "running",
        Status::Exited | Status::Dead => "stopped",
    };
    let pid = match state.status {
        Status::Exited | Status::Dead => 0,
        _ => state.pid.unwrap_or(0),
    };
    let bundle = state.bundle.as_ref();
    let created = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_secs(state.created),
    )
    .to_string();
    let mut v = json!({
        "ociVersion": OCI_VERSION,
        "id": state.name,
        "status": status,
        "pid": pid,
        "bundle": bundle.map(|b| b.dir.display().to_string()).unwrap_or_default(),
        "created": created,
        "owner": "",
    });
    if let Some(b) = bundle.filter(|b| !b.annotations.is_empty()) {
        v["annotations"] = json!(b.annotations);
    }
    if let Some(rootfs) = state.recipe.as_ref().and_then(|r| r.launch.rootfs.as_ref()) {
        v["rootfs"] = json!(rootfs);
    }
    v
}

/// The container's state as it is now (see `cleanup::reconcile`).
pub fn current(root: &StateRoot, name: &str) -> Result<State, RuntimeError> {
    Ok(cleanup::reconcile(root, root.load(name)?))
}

/// `start`: lets a created container's first process run its command.
pub fn start(root: &StateRoot, name: &str) -> Result<(), RuntimeError> {
    let state = current(root, name)?;
    if state.status != Status::Created {
        return Err(RuntimeError::WrongStatus {
            name: name.to_string(),
            status: format!("{} (only a created container can be started)", state.status),
        });
    }
    let gate = root.container_dir(name).join(GATE);
    let fifo = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&gate)
        .map_err(|e| RuntimeError::io("open the container's start FIFO", &e))?;
    // The first process opens the FIFO for writing (it blocks until this
    // reader exists) and writes one byte just before exec.
    loop {
        let mut fds = [PollFd::new(fifo.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(0) | Err(Errno::EINTR) => {}
            Ok(_) => break,
            Err(errno) => {
                return Err(RuntimeError::Setup {
                    step: "wait for the container's first process",
                    errno,
                });
            }
        }
        if !first_process_alive(&state) {
            return Err(RuntimeError::WrongStatus {
                name: name.to_string(),
                status: "stopped (its first process exited before it was started)".into(),
            });
        }
    }
    let mut byte = [0u8; 1];
    let got = (&fifo).read(&mut byte);
    if !matches!(got, Ok(1)) {
        return Err(RuntimeError::WrongStatus {
            name: name.to_string(),
            status: "stopped (its first process exited before it was started)".into(),
        });
    }
    let _ = std::fs::remove_file(&gate);
    let mut state = root.load(name)?;
    state.status = Status::Running;
    root.save(&state)?;
    if let Some(pid) = state.pid {
        journal::note(root, Record::now(name, What::Started { pid }));
    }
    if let Some(bundle) = &state.bundle
        && let Err(e) = hooks::run("poststart", &bundle.hooks.poststart, &state)
    {
        crate::runtime::warn(&e);
    }
    Ok(())
}

/// `delete`: removes a container made by `create`. A running one is
/// refused unless `force`, which kills it; a created one (never started)
/// or a stopped one goes at once. Its poststop hooks run afterwards.
pub fn delete(root: &StateRoot, name: &str, force: bool) -> Result<(), RuntimeError> {
    let state = match root.load(name) {
        Ok(s) => cleanup::reconcile(root, s),
        Err(StateError::NotFound(_)) if root.container_dir(name).is_dir() => {
            return lifecycle::remove(root, name, force);
        }
        Err(e) => return Err(e.into()),
    };
    if !state.caller_reaps {
        return lifecycle::remove(root, name, force);
    }
    if state.status == Status::Running && !force {
        return Err(RuntimeError::WrongStatus {
            name: name.to_string(),
            status: format!(
                "{} (stop it first, or use `delete --force {name}`)",
                if state.paused { "paused" } else { "running" }
            ),
        });
    }
    let Some((_lock, claimed)) = cleanup::claim(root, name)? else {
        return Err(RuntimeError::WrongStatus {
            name: name.to_string(),
            status: "still being created by a live palisade process".to_string(),
        });
    };
    cleanup::clean_up(root, name, claimed.as_ref())?;
    cleanup::release_root_if_idle(root, false);
    journal::note(root, Record::now(name, What::Removed));
    let mut stopped = state;
    stopped.status = Status::Exited;
    if let Some(bundle) = &stopped.bundle
        && let Err(e) = hooks::run("poststop", &bundle.hooks.poststop, &stopped)
    {
        crate::runtime::warn(&e);
    }
    Ok(())
}

/// The container's cgroup v2 directory, if it is still its own (the id
/// recorded at creation).
fn own_unified(state: &State) -> Result<PathBuf, RuntimeError> {
    let gone = || RuntimeError::WrongStatus {
        name: state.name.clone(),
        status: format!("{} (its cgroup is gone)", state.status),
    };
    cleanup::own_unified(state)
        .map(Path::to_path_buf)
        .ok_or_else(gone)
}

/// A running (or created) container, or why not.
fn live(root: &StateRoot, name: &str) -> Result<State, RuntimeError> {
    let state = current(root, name)?;
    match state.status {
        Status::Running | Status::Created => Ok(state),
        _ => Err(RuntimeError::WrongStatus {
            name: name.to_string(),
            status: state.status.to_string(),
        }),
    }
}

/// `kill --all`: `signal` to every process of the container.
pub fn kill_all(root: &StateRoot, name: &str, signal: Signal) -> Result<(), RuntimeError> {
    let state = current(root, name)?;
    if matches!(state.status, Status::Exited | Status::Dead) {
        // Nothing left to signal (containerd's shim asks this of a
        // stopped container).
        return Ok(());
    }
    let dir = own_unified(&state)?;
    for pid in processes_in(&dir) {
        // Gone meanwhile is fine; anything else is not.
        match nix::sys::signal::kill(Pid::from_raw(pid), signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(errno) => {
                return Err(RuntimeError::Setup {
                    step: "signal the container's processes",
                    errno,
                });
            }
        }
    }
    Ok(())
}

/// Every process of the cgroup `dir` and the cgroups below it.
fn processes_in(dir: &Path) -> Vec<i32> {
    let mut pids = cgroups::procs(dir);
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            pids.extend(processes_in(&entry.path()));
        }
    }
    pids
}

/// `ps ID`: the host pids of the container's processes, sorted.
pub fn processes(root: &StateRoot, name: &str) -> Result<Vec<i32>, RuntimeError> {
    let state = current(root, name)?;
    let mut pids = match own_unified(&state) {
        Ok(dir) => processes_in(&dir),
        Err(_) => Vec::new(),
    };
    pids.sort_unstable();
    Ok(pids)
}

/// `pause` (`frozen`) or `resume`: the cgroup freezer, on any running
/// container.
pub fn set_paused(root: &StateRoot, name: &str, frozen: bool) -> Result<(), RuntimeError> {
    let state = current(root, name)?;
    let wrong = |why: &str| RuntimeError::WrongStatus {
        name: name.to_string(),
        status: why.to_string(),
    };
    match (state.status, state.paused, frozen) {
        (Status::Running, false, true) | (Status::Running, true, false) => {}
        (Status::Running, true, true) => return Err(wrong("paused already")),
        (Status::Running, false, false) => return Err(wrong("running, not paused")),
        (status, _, _) => return Err(wrong(&format!("{status}, not running"))),
    }
    let dir = own_unified(&state)?;
    cgroups::set_frozen(&dir, frozen)?;
    Ok(())
}

/// `update`: new resource limits for a running container, written into
/// its cgroups at once (all of them or, on failure, none: what was written
/// is put back) and kept for a checkpoint's restore.
pub fn update(root: &StateRoot, name: &str, limits: &ResourceLimits) -> Result<(), RuntimeError> {
    let state = live(root, name)?;
    own_unified(&state)?;
    let existing = cgroups::Hierarchies::detect()?.existing(&state.cgroups)?;
    existing.apply_live(limits)?;
    let mut state = root.load(name)?;
    if let Some(recipe) = &mut state.recipe {
        recipe.launch.resources = recipe
            .launch
            .resources
            .clone()
            .overlaid_with(limits.clone());
    }
    root.save(&state)?;
    Ok(())
}

/// What this palisade supports, in the OCI runtime features format
/// (`features`).
pub fn features() -> serde_json::Value {
    let mut caps: Vec<String> = ::caps::all().iter().map(|c| c.to_string()).collect();
    caps.sort();
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": ["createRuntime", "prestart", "poststart", "poststop"],
        "mountOptions": ["bind", "rbind", "ro", "rw", "private", "rprivate"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "uts"],
            "capabilities": caps,
            "cgroup": {
                "v1": true,
                "v2": true,
                "systemd": false,
                "systemdUser": false,
                "rdma": false,
            },
            "seccomp": {"enabled": false},
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
            "intelRdt": {"enabled": false},
        },
        "annotations": crate::spec::features_annotations(env!("CARGO_PKG_VERSION")),
    })
}
