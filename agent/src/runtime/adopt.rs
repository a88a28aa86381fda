//! What the agent does at start with what it finds pinned: the link pins
//! of containers that are gone (no state, or dead) are removed, and a running container whose
//! link pins are missing (so whose programs are detached) is reported and
//! policed again under the policy it recorded.

use std::collections::HashSet;
use std::path::Path;

use serde::Serialize;

use super::{
    RuntimeError, cleanup,
    state::{State, StateRoot, Status},
};
use crate::{
    enforce::{Enforcer, Pins},
    spec::Policy,
};

/// What [`adopt`] found and did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Adopted {
    /// Containers whose link pins were removed: their state is gone, or
    /// they are dead (their state stays for `ps` and `rm`).
    pub removed: Vec<String>,
    /// Running containers whose programs were detached, attached again.
    pub reattached: Vec<String>,
    /// What could not be put right, with the reason.
    pub problems: Vec<String>,
}

/// Reconciles the state root's pins with its state directory.
pub fn adopt(root: &StateRoot) -> Result<Adopted, RuntimeError> {
    let mut adopted = Adopted::default();
    let pins = Pins::for_state_root(root.dir());
    let names: HashSet<String> = root.names().into_iter().collect();
    // Gone: no state, or dead (its processes ended without a monitor to
    // clean up; its state stays for `ps` and `rm`).
    let dead = |name: &String| {
        root.load(name)
            .is_ok_and(|s| cleanup::reconcile(root, s).status == Status::Dead)
    };
    let orphans: Vec<String> = pins
        .linked_containers()
        .into_iter()
        .filter(|n| !names.contains(n) || dead(n))
        .collect();
    if !orphans.is_empty() {
        let _lock = cleanup::lock_bpf(root)?;
        for name in orphans {
            // Named again meanwhile: its start owns the pins now.
            if root.container_dir(&name).exists() && !dead(&name) {
                continue;
            }
            match pins.remove_links(&name) {
                Ok(()) => adopted.removed.push(name),
                Err(e) => adopted.problems.push(format!("{name}: {e}")),
            }
        }
    }
    for state in root.list()? {
        let state = cleanup::reconcile(root, state);
        let Some(dir) = detached(&pins, &state) else {
            continue;
        };
        match reattach(root, &pins, &state, &dir) {
            Ok(()) => adopted.reattached.push(state.name.clone()),
            Err(why) => adopted.problems.push(format!(
                "{}: programs detached, not attached again: {why}",
                state.name
            )),
        }
    }
    Ok(adopted)
}

/// The cgroup directory of a running top-level container whose link pins
/// are not all there. A nested container's programs are its outermost
/// container's.
fn detached(pins: &Pins, state: &State) -> Option<std::path::PathBuf> {
    if !matches!(state.status, Status::Running | Status::Created) || !state.enclosing.is_empty() {
        return None;
    }
    let dir = cleanup::own_unified(state)?;
    (!pins.links_complete(&state.name)).then(|| dir.to_path_buf())
}

fn reattach(root: &StateRoot, pins: &Pins, state: &State, dir: &Path) -> Result<(), String> {
    let policy = written_policy(state)?;
    let id = state.cgroup_id.ok_or("no cgroup id recorded")?;
    let _lock = cleanup::lock_bpf(root).map_err(|e| e.to_string())?;
    let mut enforcer = Enforcer::open(pins.clone()).map_err(|e| e.to_string())?;
    enforcer
        .police(&state.name, dir, id, &policy)
        .map_err(|e| e.to_string())
}

/// The policy a container's rules were written from: the recorded one
/// with the device rules its `--device` nodes added.
pub(crate) fn written_policy(state: &State) -> Result<Policy, String> {
    recorded_policy(state).map(|p| as_written(p, state))
}

/// Every policy whose rule entries may be in the maps for the container
/// of `state`: the one recorded in force, and any that a `policy apply`
/// was writing when it was interrupted. `None` if one cannot be read (a
/// state an older palisade wrote): then only a search of the maps finds
/// the container's entries.
pub(crate) fn written_policies(state: &State) -> Option<Vec<Policy>> {
    let mut policies = vec![written_policy(state).ok()?];
    for text in &state.policies_pending {
        let policy = Policy::parse(Path::new("<pending policy>"), text).ok()?;
        policies.push(as_written(policy, state));
    }
    Some(policies)
}

/// The policy the container's rules in force were written from, if it is
/// known: not while an interrupted `policy apply` may have switched to
/// its own (see [`written_policies`]).
pub(crate) fn in_force_policy(state: &State) -> Option<Policy> {
    if state.policies_pending.is_empty() {
        written_policy(state).ok()
    } else {
        None
    }
}

/// `policy` as it is written for the container of `state`: with the
/// device rules its `--device` nodes (and bundle) added.
pub(crate) fn as_written(mut policy: Policy, state: &State) -> Policy {
    policy
        .devices
        .allow
        .extend(state.device_rules.iter().copied());
    policy
}

/// The network, device and security policy a container recorded as in
/// force (see [`Recipe::policy_in_force`]). An error if the container
/// recorded nothing (an older palisade's), since guessing would police it
/// differently.
pub(crate) fn recorded_policy(state: &State) -> Result<Policy, String> {
    state
        .recipe
        .as_ref()
        .ok_or("it recorded no policy (made by an older palisade)")?
        .policy_in_force()
        .map_err(|e| e.to_string())
}
