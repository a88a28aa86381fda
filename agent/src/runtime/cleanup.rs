//! After a creator or monitor that died: telling a container whose
//! creator is gone from one still being made or run, and removing
//! everything a dead start or a dead monitor left (processes, link pins,
//! map entries, traffic class, address, veth, cgroups), and what a state
//! root pins once it has no container.
//!
//! Nothing here touches a container whose creator still holds its lock
//! (see `state`), and a cgroup is only killed when its id is the one the
//! container recorded: names are shared by every state root, ids are not.

use std::{
    fs::File,
    path::{Path, PathBuf},
    time::Duration,
};

use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;

use super::{
    RuntimeError, monitor, net, shaping,
    state::{CreatorLock, State, StateError, StateRoot, Status},
};
use crate::{
    cgroups::{self, Hierarchies},
    enforce::{self, Enforcer, Pins},
};

/// Why a container is [`Status::Dead`].
pub const CREATOR_DIED: &str = "creator died during start";
pub const MONITOR_DIED: &str = "monitor died";

/// The state root's BPF lock: held while its pins are loaded, used or
/// removed, so a `run` never loses its programs to a concurrent cleanup.
pub(crate) fn lock_bpf(root: &StateRoot) -> Result<Flock<File>, RuntimeError> {
    let io = |step| move |e: std::io::Error| RuntimeError::io(step, &e);
    std::fs::create_dir_all(root.dir()).map_err(io("create the state root"))?;
    let file =
        File::create(root.dir().join(".bpf.lock")).map_err(io("create the state root's lock"))?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| RuntimeError::Setup {
        step: "lock the state root",
        errno,
    })
}

/// The container's cgroup v2 directory, if it exists and is the one the
/// container recorded (same id).
pub(super) fn own_unified(state: &State) -> Option<&Path> {
    let dir = state.cgroups.first()?;
    let id = state.cgroup_id?;
    (cgroups::id_of(dir) == Some(id)).then_some(dir.as_path())
}

/// The state as it is: a container whose creator (or monitor) is gone is
/// `dead` once none of its processes is left. One whose monitor died but
/// whose processes still run stays `running`, with the monitor's death as
/// its reason (`rm -f` ends it).
pub fn reconcile(root: &StateRoot, mut state: State) -> State {
    let state = if state.caller_reaps && matches!(state.status, Status::Created | Status::Running) {
        // No monitor: the first process itself says whether it runs.
        if !super::oci::first_process_alive(&state) {
            state.status = Status::Exited;
        }
        state
    } else {
        reconcile_monitored(root, state)
    };
    with_pause(state)
}

/// A running container's `paused` flag, from its cgroup.
fn with_pause(mut state: State) -> State {
    if state.status == Status::Running {
        state.paused = own_unified(&state).is_some_and(cgroups::is_frozen);
    }
    state
}

fn reconcile_monitored(root: &StateRoot, mut state: State) -> State {
    if !matches!(state.status, Status::Creating | Status::Running) || root.creator_alive(&state) {
        return state;
    }
    let empty = own_unified(&state).is_none_or(cgroups::is_empty);
    match state.status {
        Status::Creating => {
            state.status = Status::Dead;
            state.dead_reason = Some(CREATOR_DIED);
        }
        _ if empty => {
            state.status = Status::Dead;
            state.dead_reason = Some(MONITOR_DIED);
        }
        // It runs on, policed, without its monitor: said, not hidden.
        _ => state.dead_reason = Some(MONITOR_DIED),
    }
    state
}

/// The lock of a container whose creator is gone, for cleaning up after
/// it, with its state (`None`: a directory without one); `None` if its
/// creator is alive.
pub(super) fn claim(
    root: &StateRoot,
    name: &str,
) -> Result<Option<(CreatorLock, Option<State>)>, RuntimeError> {
    let Some(lock) = root.take_over(name)? else {
        return Ok(None);
    };
    match root.load(name) {
        // An older palisade's monitor holds no lock: ask for its pid.
        Ok(state) if !state.creator_lock && root.creator_alive(&state) => Ok(None),
        Ok(state) => Ok(Some((lock, Some(state)))),
        Err(StateError::NotFound(_)) => Ok(Some((lock, None))),
        Err(e) => Err(e.into()),
    }
}

/// Removes everything of a container whose creator is gone (the caller
/// holds its lock), then its directory. What is already gone is fine.
pub(super) fn clean_up(
    root: &StateRoot,
    name: &str,
    state: Option<&State>,
) -> Result<(), RuntimeError> {
    let hierarchies = Hierarchies::detect()?;
    let enclosing: Vec<&str> = state
        .map(|s| s.enclosing.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let planned = hierarchies.planned(&enclosing, name);
    let pins = Pins::for_state_root(root.dir());
    let id = state.and_then(|s| s.cgroup_id);
    let ours = state.and_then(own_unified).is_some();
    if ours {
        // Processes first (cgroup.kill takes nested containers too), before
        // the programs that police them are detached.
        for dir in planned.iter().rev() {
            cgroups::kill_all(dir);
        }
        cgroups::wait_empty(&planned[0], Duration::from_secs(5));
    }
    pins.remove_links(name)?;
    if let Some(id) = id {
        let _lock = lock_bpf(root)?;
        if let Some(mut enforcer) = Enforcer::open_existing(pins.clone())? {
            let written = state.and_then(super::adopt::written_policies);
            enforcer.release(name, id, written.as_deref())?;
        }
    }
    if let Some(state) = state {
        monitor::release_network(state);
    }
    release_owned_network(root, name);
    if ours {
        // v1 first: with the v2 directory gone, no start of this name can
        // be half-way (it makes the v2 one first).
        cgroups::remove_dirs(
            planned[1..]
                .iter()
                .chain(&planned[..1])
                .map(PathBuf::as_path),
        )?;
    } else {
        // Not known to be this container's (no id recorded: a start killed
        // before recording it, or an older palisade's; or the v2 directory
        // is another's or gone): empty directories only, never killed, and
        // the v1 ones only once no v2 directory of the name is left.
        if id.is_none() && cgroups::is_empty(&planned[0]) {
            let _ = std::fs::remove_dir(&planned[0]);
        }
        if !planned[0].exists() {
            for dir in planned[1..].iter().filter(|d| cgroups::is_empty(d)) {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
    root.remove(name)?;
    Ok(())
}

/// A traffic class, address or veth reserved under this container's name
/// whose reservation its state does not record (a start killed between
/// reserving and recording).
fn release_owned_network(root: &StateRoot, name: &str) {
    let owner = root.container_dir(name).display().to_string();
    for minor in shaping::owned_by(&owner) {
        shaping::uninstall(shaping::Netns::Host, &shaping::host_devices(), minor);
        shaping::free(minor);
    }
    for addr in net::leases_of(&owner) {
        net::release(addr);
    }
    net::detach(&net::veth_name(&owner));
}

/// After a container is gone: detaches the host's tracepoints if no
/// container of any root is left, and once the state root has no container
/// left, what it still attaches (older builds' tracepoints). With `unpin`
/// (`system prune`), an idle root's pins go altogether; returns them.
pub(super) fn release_root_if_idle(root: &StateRoot, unpin: bool) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    if let Ok(_lock) = lock_bpf(root)
        && root.is_empty()
    {
        let pins = Pins::for_state_root(root.dir());
        if unpin {
            removed = enforce::unpin_root(&pins);
        } else {
            enforce::retire_root(&pins);
        }
    }
    enforce::detach_if_idle();
    removed
}

/// What `system prune` removed.
#[derive(Debug, Default, Serialize)]
pub struct Pruned {
    /// Containers whose creator or monitor died, with their processes gone.
    pub containers: Vec<String>,
    /// Reservations abandoned half-made.
    pub staging: Vec<PathBuf>,
    /// Empty cgroups under `palisade/` that no container owns.
    pub cgroups: Vec<PathBuf>,
    /// bpffs directories (of this root, and the host's tracepoints).
    pub pins: Vec<PathBuf>,
    /// A killed agent's dead `/proc` view filesystem, detached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view_mount: Option<PathBuf>,
}

/// A cgroup younger than this is left to whatever start may be making it.
const CGROUP_GRACE: Duration = Duration::from_secs(60);

/// Removes what the state root holds for no container: dead containers
/// (as `rm` would), abandoned reservations, empty cgroups of containers
/// whose state is gone, and its pins once it has no container.
pub fn prune(root: &StateRoot) -> Result<Pruned, RuntimeError> {
    let mut pruned = Pruned::default();
    for name in root.names() {
        let Some((_lock, state)) = claim(root, &name)? else {
            continue;
        };
        if let Some(state) = &state {
            let now = reconcile_claimed(state);
            if now.status != Status::Dead {
                continue;
            }
        }
        clean_up(root, &name, state.as_ref())?;
        super::journal::note(
            root,
            super::journal::Record::now(&name, super::journal::What::Removed),
        );
        pruned.containers.push(name);
    }
    for dir in root.abandoned_staging() {
        if std::fs::remove_dir_all(&dir).is_ok() {
            pruned.staging.push(dir);
        }
    }
    let names = root.names();
    if let Ok(hierarchies) = Hierarchies::detect() {
        for dir in cgroups::top_level(&hierarchies) {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let young = std::fs::metadata(&dir)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() < CGROUP_GRACE);
            if names.contains(&name)
                || young
                || !cgroups::is_empty(&dir)
                || enforce::any_root_links(&name)
            {
                continue;
            }
            if std::fs::remove_dir(&dir).is_ok() {
                pruned.cgroups.push(dir);
            }
        }
    }
    pruned.pins = release_root_if_idle(root, true);
    match super::view::detach_dead(root) {
        Ok(true) => pruned.view_mount = Some(super::view::mount_point(root)),
        Ok(false) => {}
        Err(e) => return Err(RuntimeError::io("detach a dead agent's /proc view", &e)),
    }
    Ok(pruned)
}

/// `reconcile` for a container whose lock this process holds (so its
/// creator is known to be gone).
pub(super) fn reconcile_claimed(state: &State) -> State {
    let mut state = state.clone();
    if state.caller_reaps && state.status != Status::Creating {
        // Made by `create`: the caller's to `delete`, whatever its process.
        return state;
    }
    if matches!(state.status, Status::Creating | Status::Running)
        && (state.status == Status::Creating || own_unified(&state).is_none_or(cgroups::is_empty))
    {
        state.status = Status::Dead;
    }
    state
}
