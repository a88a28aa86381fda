//! The lifecycle commands on an existing container: ps, kill, wait, rm and
//! logs. They read the state the monitor keeps and act on the container's
//! first process through a pidfd, after checking it is still the
//! container's (a pid can be reused once its process is gone).

use std::{
    os::fd::OwnedFd,
    thread,
    time::{Duration, Instant},
};

use nix::{errno::Errno, sys::signal::Signal};

use super::{
    RuntimeError,
    cleanup::{claim, clean_up, reconcile, release_root_if_idle},
    journal::{self, Record, What},
    state::{State, StateError, StateRoot, Status},
};
use crate::sys::pidfd;

/// Every container in the state root, as it is now: one whose creator or
/// monitor died is `dead` (see `cleanup::reconcile`).
pub fn ps(root: &StateRoot) -> Result<Vec<State>, RuntimeError> {
    Ok(root
        .list()?
        .into_iter()
        .map(|s| reconcile(root, s))
        .collect())
}

/// The error for a container that is not running, saying why.
fn not_running(state: &State) -> RuntimeError {
    RuntimeError::WrongStatus {
        name: state.name.clone(),
        status: match state.dead_reason {
            Some(why) => format!("{} ({why}), not running", state.status),
            None => state.status.to_string(),
        },
    }
}

/// Whether process `pid` exists and is neither a zombie nor dead
/// (/proc/PID/stat).
pub(super) fn not_dead(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ")
        .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
}

/// A pidfd for the container's first process, if it is still running (not
/// a zombie) and still in the container's cgroup.
pub(super) fn container_process(state: &State) -> Result<OwnedFd, RuntimeError> {
    let pid = match (state.status, state.pid) {
        (Status::Running | Status::Created, Some(pid)) => pid,
        _ => return Err(not_running(state)),
    };
    let fd = pidfd::open(pid).map_err(|_| not_running(state))?;
    // Checked after opening the pidfd: if this is the container's process
    // now, the pidfd refers to it for good.
    if !not_dead(pid) || !crate::cgroups::pid_is_in(pid, &state.cgroup_path()) {
        return Err(RuntimeError::WrongStatus {
            name: state.name.clone(),
            status: format!("{} but its first process (pid {pid}) is gone", state.status),
        });
    }
    Ok(fd)
}

/// Sends `signal` to the container's first process.
pub fn kill(root: &StateRoot, name: &str, signal: Signal) -> Result<(), RuntimeError> {
    let state = reconcile(root, root.load(name)?);
    let fd = container_process(&state)?;
    pidfd::send_signal(&fd, signal).map_err(|errno| RuntimeError::Setup {
        step: "signal the container",
        errno,
    })
}

/// Waits until the container has exited; returns its exit status.
pub fn wait(root: &StateRoot, name: &str) -> Result<State, RuntimeError> {
    loop {
        let state = root.load(name)?;
        if state.caller_reaps {
            return Err(RuntimeError::WrongStatus {
                name: name.to_string(),
                status: format!(
                    "{} through `create`: its exit status goes to the process that created it",
                    state.status
                ),
            });
        }
        match state.status {
            Status::Exited => return Ok(state),
            _ if !root.creator_alive(&state) => {
                // The monitor may have saved the exit and gone since the
                // state was read (found in the 6.1 guest: `wait` failed).
                let now = root.load(name)?;
                if now.status == Status::Exited {
                    return Ok(now);
                }
                return Err(RuntimeError::WrongStatus {
                    name: name.to_string(),
                    status: format!(
                        "{} but its monitor (pid {}) is gone",
                        now.status, now.monitor_pid
                    ),
                });
            }
            _ => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// How long `rm` waits for a live monitor to see its container's end
/// and clean up after it. The monitor does it in milliseconds on an idle
/// host; a loaded or emulated one (seconds per exit under qemu TCG) needs
/// the margin, and a monitor that is gone is not waited for at all.
const MONITOR_WAIT: Duration = Duration::from_secs(60);

/// Removes a container. One that runs is refused unless `force`, which
/// kills it first and waits for its monitor to clean up. One whose creator
/// or monitor died (`dead`, or killed half-way through its start) is
/// cleaned up here: its processes, link pins, map entries, traffic class,
/// address and cgroups. The state root's pins go with its last container.
pub fn remove(root: &StateRoot, name: &str, force: bool) -> Result<(), RuntimeError> {
    let state = match root.load(name) {
        Ok(s) => Some(reconcile(root, s)),
        // A directory with no state: an older palisade's half-made one.
        Err(StateError::NotFound(_)) if root.container_dir(name).is_dir() => None,
        Err(e) => return Err(e.into()),
    };
    if state.as_ref().is_some_and(|s| s.caller_reaps) {
        return super::oci::delete(root, name, force);
    }
    if let Some(state) = &state
        && matches!(state.status, Status::Creating | Status::Running)
    {
        if !force {
            let why = if root.creator_alive(state) {
                ""
            } else {
                ", without its monitor"
            };
            return Err(RuntimeError::WrongStatus {
                name: name.to_string(),
                status: format!(
                    "{}{why} (stop it first, or use `palisade rm -f {name}`)",
                    state.status
                ),
            });
        }
        if root.creator_alive(state) {
            stop_and_wait(root, state)?;
        }
    }
    // A monitor that has just saved its container's exit may not have
    // exited itself yet.
    let deadline = Instant::now() + MONITOR_WAIT;
    let (_lock, state) = loop {
        match claim(root, name) {
            Ok(Some(claimed)) => break claimed,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                return Err(RuntimeError::WrongStatus {
                    name: name.to_string(),
                    status: "still being created or run by a live palisade process".to_string(),
                });
            }
            // Removed meanwhile (a foreground container's monitor, on exit).
            Err(RuntimeError::State(StateError::Io { source, .. }))
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    };
    match &state {
        Some(s) if s.status == Status::Exited => root.remove(name)?,
        _ => clean_up(root, name, state.as_ref())?,
    }
    release_root_if_idle(root, false);
    journal::note(root, Record::now(name, What::Removed));
    Ok(())
}

/// Kills a container whose monitor is alive and waits until the monitor
/// has cleaned up after it (or is gone).
fn stop_and_wait(root: &StateRoot, state: &State) -> Result<(), RuntimeError> {
    let name = &state.name;
    if let Ok(fd) = container_process(state) {
        let _ = pidfd::send_signal(&fd, Signal::SIGKILL);
    }
    let deadline = Instant::now() + MONITOR_WAIT;
    loop {
        match root.load(name) {
            // A foreground container's monitor removes it on exit.
            Err(StateError::NotFound(_)) => return Ok(()),
            Ok(s) if s.status == Status::Exited || !root.creator_alive(&s) => return Ok(()),
            Ok(s) if s.status == Status::Running => {
                // A first process started meanwhile (it was creating).
                if let Ok(fd) = container_process(&s) {
                    let _ = pidfd::send_signal(&fd, Signal::SIGKILL);
                }
            }
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        if Instant::now() > deadline {
            return Err(RuntimeError::Setup {
                step: "wait for the container to exit",
                errno: Errno::ETIMEDOUT,
            });
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The container's log (output of a detached container).
pub fn logs(root: &StateRoot, name: &str) -> Result<Vec<u8>, RuntimeError> {
    root.load(name)?;
    let path = root.log_path(name);
    match std::fs::read(&path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(RuntimeError::io("read the log", &e)),
    }
}
