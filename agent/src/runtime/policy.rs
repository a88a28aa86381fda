//! `policy apply` and `policy show` on a running container: its network
//! and device policy replaced atomically in the kernel maps, or read back
//! from them.

use std::fs::File;

use nix::fcntl::{Flock, FlockArg};

use super::{RuntimeError, StateRoot, Status};
use crate::{
    enforce::{Enforcer, InForce, Pins},
    spec::Policy,
};

/// Opens the pinned programs and maps of this build, loading and pinning
/// them if needed; one process at a time (a lock file in the state root),
/// so concurrent first runs do not both pin.
pub(crate) fn open_enforcer(root: &StateRoot, pins: &Pins) -> Result<Enforcer, RuntimeError> {
    let io = |step| move |e: std::io::Error| RuntimeError::io(step, &e);
    std::fs::create_dir_all(root.dir()).map_err(io("create the state root"))?;
    let lock_file =
        File::create(root.dir().join(".bpf.lock")).map_err(io("create the state root's lock"))?;
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusive).map_err(|(_, errno)| {
        RuntimeError::Setup {
            step: "lock the state root",
            errno,
        }
    })?;
    Ok(Enforcer::open(pins.clone())?)
}

/// The cgroup id of a running container.
fn running_cgroup(root: &StateRoot, name: &str) -> Result<(u64, super::State), RuntimeError> {
    let state = root.load(name)?;
    match (state.status, state.cgroup_id) {
        (Status::Running, Some(id)) => Ok((id, state)),
        _ => Err(RuntimeError::WrongStatus {
            name: name.to_string(),
            status: state.status.to_string(),
        }),
    }
}

/// Replaces the network and device policy of a running container. The
/// file has been validated completely before this is called; nothing
/// changes on error. The container's own device rules (`--device`, its
/// bundle's) stay. Resource limits are set when a container starts;
/// `[resources]` in the file is not applied (the caller says so).
pub fn apply_policy(root: &StateRoot, name: &str, policy: &Policy) -> Result<(), RuntimeError> {
    let (cgroup_id, state) = running_cgroup(root, name)?;
    if state.exec.denied_families != policy.network.sockets.seccomp_families() {
        return Err(RuntimeError::Invalid {
            what: "network.sockets",
            value: "packet / deny_families".into(),
            why: "cannot change on a running container (its seccomp filter enforces them)",
        });
    }
    let mut policy = policy.clone();
    policy
        .devices
        .allow
        .extend(state.device_rules.iter().copied());
    let mut enforcer = open_enforcer(root, &Pins::for_state_root(root.dir()))?;
    Ok(enforcer.update(cgroup_id, &policy)?)
}

/// The policy in force for a running container, from the kernel maps.
pub fn show_policy(root: &StateRoot, name: &str) -> Result<InForce, RuntimeError> {
    let (cgroup_id, _) = running_cgroup(root, name)?;
    let enforcer = open_enforcer(root, &Pins::for_state_root(root.dir()))?;
    Ok(enforcer.show(cgroup_id)?)
}
