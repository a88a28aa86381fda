//! The agent's OOM actions on a container (`[oom]`), through the same
//! paths `kill` and `pause` take, and the record that the container was
//! ended for OOM, which its monitor reads when it sees the exit.
//!
//! The record is `ROOT/NAME/oom-kill`, made (under an exclusive lock)
//! before any signal is sent and unlocked once the agent has journalled
//! its action. The monitor reads it after the first process is gone, so
//! after the kill, and takes a shared lock first: its `exited` record
//! (`oom: true`) therefore follows the agent's `oom_action` in the journal.
//! A lock of an agent that died is dropped by the kernel.

use std::{
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};

use super::{RuntimeError, State, StateRoot, cleanup::own_unified};
use crate::cgroups;

const MARKER: &str = "oom-kill";

/// How long a monitor waits for an agent to finish journalling its kill.
const MARKER_WAIT: Duration = Duration::from_secs(2);

/// An OOM kill in progress: the marker, locked, until dropped.
#[derive(Debug)]
pub struct OomKill {
    _lock: Flock<File>,
    dir: PathBuf,
}

impl OomKill {
    /// The container's cgroup v2 directory, to wait on until it is empty.
    pub fn cgroup(&self) -> &Path {
        &self.dir
    }
}

fn marker(root: &StateRoot, name: &str) -> PathBuf {
    root.container_dir(name).join(MARKER)
}

/// Ends every process of `state`'s container (cgroup.kill, or each pid),
/// recorded as an OOM end first. The kill is signalled when this returns;
/// the processes are gone once the cgroup is empty. Keep the returned
/// value until the action is journalled.
pub fn kill(root: &StateRoot, state: &State) -> Result<OomKill, RuntimeError> {
    let dir = own_unified(state)
        .ok_or_else(|| RuntimeError::WrongStatus {
            name: state.name.clone(),
            status: format!("{} (its cgroup is gone)", state.status),
        })?
        .to_path_buf();
    let io = |step| move |e: std::io::Error| RuntimeError::io(step, &e);
    // Made locked under a temporary name, then renamed into place: whoever
    // finds the marker finds it locked.
    let path = marker(root, &state.name);
    let staging = path.with_extension(format!("{}", std::process::id()));
    let mut file = File::create(&staging).map_err(io("create the OOM marker"))?;
    file.write_all(b"kill\n")
        .map_err(io("write the OOM marker"))?;
    let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        let _ = fs::remove_file(&staging);
        RuntimeError::Setup {
            step: "lock the OOM marker",
            errno,
        }
    })?;
    fs::rename(&staging, &path).map_err(|e| {
        let _ = fs::remove_file(&staging);
        io("place the OOM marker")(e)
    })?;
    cgroups::kill_all(&dir);
    Ok(OomKill { _lock: lock, dir })
}

/// Whether the container was ended by the agent for OOM. Called by its
/// monitor once the first process is gone; waits (up to 2 s) for the
/// agent to finish journalling its kill.
pub fn was_killed(root: &StateRoot, name: &str) -> bool {
    let Ok(mut file) = File::open(marker(root, name)) else {
        return false;
    };
    let deadline = Instant::now() + MARKER_WAIT;
    loop {
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(_) => return true,
            Err((f, Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                file = f;
                thread::sleep(Duration::from_millis(1));
            }
            Err(_) => return true,
        }
    }
}

/// Freezes every process of `state`'s container (the cgroup v2 freezer,
/// as `pause`); returns once the kernel reports it frozen. `palisade kill`
/// and `rm -f` still end it: a fatal signal reaches a frozen process.
/// Whether the container is frozen now (by a `freeze` action, or
/// `pause`).
pub fn is_frozen(state: &State) -> bool {
    own_unified(state).is_some_and(cgroups::is_frozen)
}

pub fn freeze(state: &State) -> Result<(), RuntimeError> {
    let dir = own_unified(state).ok_or_else(|| RuntimeError::WrongStatus {
        name: state.name.clone(),
        status: format!("{} (its cgroup is gone)", state.status),
    })?;
    Ok(cgroups::set_frozen(dir, true)?)
}
