//! `policy apply` and `policy show` on a running container: its network
//! and device policy replaced atomically in the kernel maps, or read back
//! from them (with what the container consumed), and its outbound rate
//! changed or read back from traffic control.

use serde::Serialize;

use super::{
    RuntimeError, State, StateRoot, Status,
    shaping::{self, ClassStats, Netns, Shaping},
};
use crate::{
    enforce::{Enforcer, InForce, Pins, Usage},
    spec::{DisplayRate, Egress, Policy},
};

/// What `policy show` reports: the maps' view and the shaper's.
#[derive(Debug, Clone, Serialize)]
pub struct Shown {
    #[serde(flatten)]
    pub kernel: InForce,
    /// `None`: the container's outbound traffic is not shaped.
    pub egress: Option<EgressShown>,
    /// What the container consumed so far, as the kernel programs counted it.
    pub usage: Usage,
}

/// The outbound rate limit in force and what the kernel counted for it.
#[derive(Debug, Clone, Serialize)]
pub struct EgressShown {
    /// As written: `10mbit`.
    pub rate: String,
    pub rate_bits_per_second: u64,
    pub burst_bytes: u64,
    /// The traffic class, `1a5e:N`, and its counts on each device.
    pub class: String,
    pub devices: Vec<ClassStats>,
}

/// Opens the pinned programs and maps of this build, loading and pinning
/// them if needed; one process at a time (a lock file in the state root),
/// so concurrent first runs do not both pin.
pub(crate) fn open_enforcer(root: &StateRoot, pins: &Pins) -> Result<Enforcer, RuntimeError> {
    let _lock = super::cleanup::lock_bpf(root)?;
    Ok(Enforcer::open(pins.clone())?)
}

/// Opens the pinned programs and maps of this build for a command that
/// only reads or changes running containers' entries: never loads (a root
/// with no container has none pinned, and must not get them).
pub fn open_loaded(root: &StateRoot, pins: &Pins) -> Result<Enforcer, RuntimeError> {
    let _lock = super::cleanup::lock_bpf(root)?;
    Enforcer::open_existing(pins.clone())?.ok_or_else(no_pins)
}

/// The error of a state root with no BPF pins.
fn no_pins() -> RuntimeError {
    RuntimeError::Setup {
        step: "open the state root's BPF pins (no container runs in it)",
        errno: nix::errno::Errno::ENOENT,
    }
}

/// The cgroup id of a running container (or a created one: its policy is
/// in force from creation).
fn running_cgroup(root: &StateRoot, name: &str) -> Result<(u64, super::State), RuntimeError> {
    let state = super::cleanup::reconcile(root, root.load(name)?);
    match (state.status, state.cgroup_id) {
        (Status::Running | Status::Created, Some(id)) => Ok((id, state)),
        _ => Err(RuntimeError::WrongStatus {
            name: name.to_string(),
            status: state.status.to_string(),
        }),
    }
}

/// Replaces the network and device policy of a running container with
/// `policy` (parsed from `text`), and records `text` as the policy in
/// force. The file has been validated completely before this is called;
/// nothing changes on error. The container's own device rules (`--device`,
/// its bundle's) stay. Resource limits are set when a container starts;
/// `[resources]` in the file is not applied (the caller says so).
///
/// The state root's lock is held throughout, so two applies do not write
/// the same generation at once, and `text` is recorded as pending before
/// any entry is written: an apply interrupted at any point leaves every
/// entry of the container known by key (see [`Enforcer::update`]).
pub fn apply_policy(
    root: &StateRoot,
    name: &str,
    policy: &Policy,
    text: &str,
) -> Result<(), RuntimeError> {
    let _lock = super::cleanup::lock_bpf(root)?;
    let (cgroup_id, mut state) = running_cgroup(root, name)?;
    super::check_prefix_bound(name, policy)?;
    if state.exec.denied_families != policy.network.sockets.seccomp_families() {
        return Err(RuntimeError::Invalid {
            what: "network.sockets",
            value: "packet / deny_families".into(),
            why: "cannot change on a running container (its seccomp filter enforces them)",
        });
    }
    if state.exec.io_uring != policy.security.io_uring {
        return Err(RuntimeError::Invalid {
            what: "security.io_uring",
            value: policy.security.io_uring.to_string(),
            why: "cannot change on a running container (its seccomp filter, installed at start, allows or refuses io_uring: run the container again under the new policy)",
        });
    }
    // A view is bound at start and stays (the caller says so when the new
    // policy does not ask for it); one cannot be added.
    if policy.view.proc && !state.proc_view {
        return Err(RuntimeError::Invalid {
            what: "view.proc",
            value: policy.view.proc.to_string(),
            why: "cannot be turned on for a running container (its /proc view is bound when it starts: run the container again under the new policy)",
        });
    }
    if policy.network.egress.is_some() && state.shaping.is_none() {
        refuse_new_shaping(&state)?;
    }
    let policy = super::adopt::as_written(policy.clone(), &state);
    let mut enforcer =
        Enforcer::open_existing(Pins::for_state_root(root.dir()))?.ok_or_else(no_pins)?;
    let written = super::adopt::written_policies(&state);
    state.policies_pending.push(text.to_string());
    root.save(&state)?;
    if let Err(e) = enforcer.update(cgroup_id, written.as_deref(), &policy) {
        // Nothing switched and what was written is gone again.
        state.policies_pending.pop();
        root.save(&state)?;
        return Err(RuntimeError::Apply(e));
    }
    // A checkpoint of the container restores it under this policy.
    if let Some(recipe) = state.recipe.as_mut() {
        recipe.applied_policy = Some(text.to_string());
    }
    state.policies_pending.clear();
    root.save(&state)?;
    reshape(root, &mut enforcer, cgroup_id, state, policy.network.egress)?;
    super::limits::policy_applied(root, name, &policy)
}

/// Why a container that is not shaped cannot become shaped, if it cannot.
fn refuse_new_shaping(state: &State) -> Result<(), RuntimeError> {
    let why = if !state.enclosing.is_empty() {
        "a sub-container (--parent) is shaped with its parent: set the rate on the parent"
    } else if state.veth.is_none() && !shares_host_network(state) {
        "with --net none nothing leaves the container"
    } else {
        return Ok(());
    };
    Err(RuntimeError::Invalid {
        what: "network.egress_rate",
        value: state.name.clone(),
        why,
    })
}

/// Whether the container's first process is in the host's network namespace.
fn shares_host_network(state: &State) -> bool {
    let ns = |pid: &str| std::fs::metadata(format!("/proc/{pid}/ns/net")).ok();
    let inode = |m: std::fs::Metadata| std::os::unix::fs::MetadataExt::ino(&m);
    match (state.pid.and_then(|p| ns(&p.to_string())), ns("self")) {
        (Some(theirs), Some(ours)) => inode(theirs) == inode(ours),
        _ => false,
    }
}

/// Brings the container's traffic class to `wanted`: changes its rate at
/// once, installs one, or removes it (packets leave the class first).
fn reshape(
    root: &StateRoot,
    enforcer: &mut Enforcer,
    cgroup_id: u64,
    mut state: State,
    wanted: Option<Egress>,
) -> Result<(), RuntimeError> {
    match (state.shaping.clone(), wanted) {
        (None, None) => Ok(()),
        (Some(current), Some(egress)) if current.egress() == egress => Ok(()),
        (Some(current), Some(egress)) => {
            let netns = current.netns(state.pid).ok_or_else(|| no_process(&state))?;
            shaping::change(netns, &current.devices, current.minor, egress)?;
            state.shaping = Some(Shaping {
                rate: egress.rate,
                burst: egress.burst,
                ..current
            });
            Ok(root.save(&state)?)
        }
        (None, Some(egress)) => {
            let pid = state.pid.ok_or_else(|| no_process(&state))?;
            let in_container = state.veth.is_some();
            let (netns, devices) = if in_container {
                (Netns::Of(pid), vec!["eth0".to_string()])
            } else {
                (Netns::Host, shaping::host_devices())
            };
            let owner = root.container_dir(&state.name).display().to_string();
            let minor = shaping::allocate(&owner)?;
            let installed = shaping::install(netns, &devices, minor, egress)
                .map_err(RuntimeError::from)
                .and_then(|()| {
                    let class = palisade_common::shaping_class(minor);
                    Ok(enforcer.set_egress_class(cgroup_id, Some(class))?)
                });
            if let Err(e) = installed {
                shaping::uninstall(netns, &devices, minor);
                shaping::free(minor);
                return Err(e);
            }
            state.shaping = Some(Shaping {
                minor,
                devices,
                in_container,
                rate: egress.rate,
                burst: egress.burst,
            });
            Ok(root.save(&state)?)
        }
        (Some(current), None) => {
            enforcer.set_egress_class(cgroup_id, None)?;
            if let Some(netns) = current.netns(state.pid) {
                shaping::uninstall(netns, &current.devices, current.minor);
            }
            shaping::free(current.minor);
            state.shaping = None;
            Ok(root.save(&state)?)
        }
    }
}

/// The policy in force for a running container, from the kernel maps,
/// and its traffic class's counts from traffic control.
pub fn show_policy(root: &StateRoot, name: &str) -> Result<Shown, RuntimeError> {
    let (cgroup_id, state) = running_cgroup(root, name)?;
    let enforcer = open_loaded(root, &Pins::for_state_root(root.dir()))?;
    let written = super::adopt::in_force_policy(&state);
    let kernel = enforcer.show(cgroup_id, written.as_ref())?;
    let usage = enforcer.usage(cgroup_id, &state.cgroups);
    let egress = match &state.shaping {
        None => None,
        Some(s) => {
            let netns = s.netns(state.pid).ok_or_else(|| no_process(&state))?;
            Some(EgressShown {
                rate: DisplayRate(s.rate).to_string(),
                rate_bits_per_second: s.rate,
                burst_bytes: s.burst,
                class: format!("{:x}:{:x}", palisade_common::SHAPER_HANDLE, s.minor),
                devices: shaping::stats(netns, &s.devices, s.minor)?,
            })
        }
    };
    Ok(Shown {
        kernel,
        egress,
        usage,
    })
}

/// A running container's state that names no process (a monitor that died
/// half-way): nothing can be changed in its network namespace.
fn no_process(state: &State) -> RuntimeError {
    RuntimeError::WrongStatus {
        name: state.name.clone(),
        status: "running, but without a known process".into(),
    }
}
