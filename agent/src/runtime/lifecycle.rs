//! The lifecycle commands on an existing container: ps, kill, wait, rm and
//! logs. They read the state the monitor keeps and act on the container's
//! first process through a pidfd, after checking it is still the
//! container's (a pid can be reused once its process is gone).

use std::{
    os::fd::OwnedFd,
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use nix::{errno::Errno, sys::signal::Signal};

use super::{
    RuntimeError,
    state::{State, StateError, StateRoot, Status},
};
use crate::{enforce::Pins, sys::pidfd};

/// Every container in the state root.
pub fn ps(root: &StateRoot) -> Result<Vec<State>, RuntimeError> {
    Ok(root.list()?)
}

/// Is the monitor process of this state still there?
fn monitor_alive(state: &State) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(state.monitor_pid), None).is_ok()
}

/// A pidfd for the container's first process, if it is still running and
/// still in the container's cgroup.
pub(super) fn container_process(state: &State) -> Result<OwnedFd, RuntimeError> {
    let not_running = || RuntimeError::WrongStatus {
        name: state.name.clone(),
        status: state.status.to_string(),
    };
    let pid = match (state.status, state.pid) {
        (Status::Running, Some(pid)) => pid,
        _ => return Err(not_running()),
    };
    let fd = pidfd::open(pid).map_err(|_| not_running())?;
    // Checked after opening the pidfd: if this is the container's process
    // now, the pidfd refers to it for good.
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let ours = format!("0::{}", state.cgroup_path());
    if !cgroup.lines().any(|l| l == ours) {
        return Err(not_running());
    }
    Ok(fd)
}

/// Sends `signal` to the container's first process.
pub fn kill(root: &StateRoot, name: &str, signal: Signal) -> Result<(), RuntimeError> {
    let state = root.load(name)?;
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
        match state.status {
            Status::Exited => return Ok(state),
            _ if !monitor_alive(&state) => {
                return Err(RuntimeError::WrongStatus {
                    name: name.to_string(),
                    status: format!(
                        "{} but its monitor (pid {}) is gone",
                        state.status, state.monitor_pid
                    ),
                });
            }
            _ => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Removes a container's state. A running container is refused unless
/// `force`, which kills it first and waits for its monitor to clean up.
pub fn remove(root: &StateRoot, name: &str, force: bool) -> Result<(), RuntimeError> {
    let state = root.load(name)?;
    if state.status != Status::Exited && monitor_alive(&state) {
        if !force {
            return Err(RuntimeError::WrongStatus {
                name: name.to_string(),
                status: format!(
                    "{} (stop it first, or use `palisade rm -f {name}`)",
                    state.status
                ),
            });
        }
        if let Ok(fd) = container_process(&state) {
            let _ = pidfd::send_signal(&fd, Signal::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match root.load(name) {
                // A foreground container's monitor removes it on exit.
                Err(StateError::NotFound(_)) => return Ok(()),
                Ok(s) if s.status == Status::Exited || !monitor_alive(&state) => break,
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
    let state = match root.load(name) {
        Err(StateError::NotFound(_)) => return Ok(()),
        other => other?,
    };
    if state.status != Status::Exited {
        // The monitor died without cleaning up: do it here.
        clean_up_after(root, &state)?;
    }
    match root.remove(name) {
        Err(StateError::NotFound(_)) | Ok(()) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// What a monitor does after its container exits, for one that is gone.
fn clean_up_after(root: &StateRoot, state: &State) -> Result<(), RuntimeError> {
    // Kill stragglers (cgroup.kill exists on v2; it takes nested
    // containers too) before the programs that police them are detached.
    for dir in &state.cgroups {
        let _ = std::fs::write(dir.join("cgroup.kill"), "1");
    }
    if let Some(id) = state.cgroup_id {
        let mut enforcer = super::policy::open_enforcer(root, &Pins::for_state_root(root.dir()))?;
        enforcer.release(&state.name, id)?;
    }
    crate::cgroups::remove_dirs(state.cgroups.iter().map(PathBuf::as_path))?;
    super::monitor::release_network(state);
    Ok(())
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
