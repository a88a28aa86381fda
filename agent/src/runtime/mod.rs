//! The container runtime: namespaces, filesystem, the container's first
//! process, its supervision, and the lifecycle commands.
//!
//! Owns the order in which a container comes to life: name reserved in the
//! state root, cgroups created, policy written and programs attached, then
//! the process forked into new namespaces, moved into the cgroups, and only
//! then allowed to exec. It never decides policy (that is `spec`) nor
//! builds BPF maps itself (`enforce`).

pub mod adopt;
mod checkpoint;
mod cleanup;
mod console;
mod devices;
mod events;
mod exec;
mod hooks;
mod init;
pub mod journal;
mod launch;
mod lifecycle;
pub mod limits;
mod monitor;
pub mod net;
pub mod oci;
pub mod oom;
mod policy;
pub mod probe;
pub mod rootfs;
pub mod security;
pub mod shaping;
pub mod state;
mod supervise;
pub mod userns;
pub mod view;

use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

pub use crate::spec::{BindMount, DeviceRequest, Launch, NetMode, RECIPE_VERSION, Recipe};
pub use checkpoint::{checkpoint_container, running_pid};
pub use cleanup::{Pruned, prune, reconcile};
pub use devices::DeviceNode;
pub use events::{DeviceView, EventView, KernelEvents, events};
pub use exec::{ExecSpec, exec};
pub use lifecycle::{kill, logs, ps, remove, wait};
pub use monitor::monitor_exited;
use nix::errno::Errno;
pub use policy::{EgressShown, Shown, apply_policy, open_loaded, show_policy};
pub use rootfs::RootfsSpec;
pub use state::{BundleRecord, State, StateError, StateRoot, Status};
use thiserror::Error;

use crate::{
    cgroups::{CgroupError, LimitError},
    enforce::EnforceError,
    spec::Policy,
};

/// Exit status when palisade itself fails before the command could start.
pub const EXIT_SETUP_FAILED: i32 = crate::exit::SETUP_FAILED;
/// Exit status when the command exists but cannot be executed.
pub const EXIT_NOT_EXECUTABLE: i32 = crate::exit::NOT_EXECUTABLE;
/// Exit status when the command is not found.
pub const EXIT_NOT_FOUND: i32 = crate::exit::NOT_FOUND;

/// The container's PATH unless `--env PATH=…` says otherwise.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to run and how.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub name: String,
    pub command: Vec<String>,
    pub policy: Policy,
    /// Keep running after the CLI exits; output goes to the log.
    pub detach: bool,
    /// `K=V` pairs added to (or replacing) the default environment.
    pub env: Vec<String>,
    pub workdir: Option<PathBuf>,
    /// Defaults to the name.
    pub hostname: Option<String>,
    pub net: NetMode,
    pub rootfs: Option<PathBuf>,
    pub read_only: bool,
    pub mounts: Vec<BindMount>,
    /// Host devices bound into the container's /dev, each with the rule
    /// that grants its access (`--device`, a bundle's `linux.devices`).
    pub devices: Vec<DeviceNode>,
    /// Device rules beyond the policy's and the devices' own (a bundle's
    /// `linux.resources.devices`).
    pub device_rules: Vec<crate::spec::DeviceRule>,
    /// Capabilities of the container's processes (see `security`).
    pub caps: security::CapSet,
    /// Run as this user instead of root.
    pub user: Option<security::User>,
    /// Nest the container in this running container: its cgroups go
    /// inside the parent's (whose limits bound it) and the parent's
    /// connect policy applies too.
    pub parent: Option<String>,
    /// Run in a user namespace: the container's root is an unprivileged
    /// host uid (see `userns`).
    pub userns: bool,
    /// Masked and read-only paths beyond the defaults (an OCI bundle's).
    pub extra_masked: Vec<PathBuf>,
    pub extra_read_only: Vec<PathBuf>,
    /// Kept in the state for a later checkpoint's restore.
    pub recipe: Option<Recipe>,
    /// Instead of running the command, restore this checkpoint image
    /// (read and checked before anything was created) into the new
    /// container.
    pub restore: Option<crate::checkpoint::image::Handoff>,
    /// The OCI bundle it comes from (its hooks run).
    pub bundle: Option<BundleRecord>,
    /// Resource limits of the command (a bundle's `process.rlimits`).
    pub rlimits: Vec<crate::spec::Rlimit>,
    /// Made by `create`, the runc contract: see [`Contract`].
    pub contract: Option<Contract>,
}

/// How `create` differs from `run`: it returns once the first process is
/// ready and stopped before the command (`start` lets it go), and leaves
/// no monitor: the caller reaps the process.
#[derive(Debug, Clone, Default)]
pub struct Contract {
    /// Where to write the first process's pid.
    pub pid_file: Option<PathBuf>,
    /// A Unix socket to send the master of the command's terminal to.
    pub console_socket: Option<PathBuf>,
    /// Descriptors 3.. 3+N-1 of the caller passed on to the command.
    pub preserve_fds: u32,
}

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}; the container was not started")]
    Enforce(#[from] EnforceError),
    #[error("{0}; the container was not started")]
    Limits(#[from] LimitError),
    #[error("{0}; the container was not started")]
    Net(#[from] net::NetError),
    #[error("{0}; the container was not started")]
    Security(#[from] security::SecurityError),
    #[error("{0}; the policy in force did not change")]
    Apply(EnforceError),
    #[error("{source} (policing {}); the container was not started", cgroup.display())]
    Load {
        cgroup: PathBuf,
        source: EnforceError,
    },
    #[error(
        "invalid container name {0:?}: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
    )]
    Name(String),
    #[error("invalid {what} {value:?}: {why}")]
    Invalid {
        what: &'static str,
        value: String,
        why: &'static str,
    },
    /// Input that cannot be used as it is (a bundle's device, a
    /// checkpoint's recipe), with why.
    #[error("{0}")]
    BadInput(String),
    #[error(
        "container {container:?}: {list} names {count} address prefixes, more than the {bound} one container may have in a rule list (merge addresses into wider prefixes)"
    )]
    TooManyPrefixes {
        container: String,
        list: &'static str,
        count: usize,
        bound: u32,
    },
    #[error("{0}")]
    BadMount(String),
    #[error("no command given")]
    NoCommand,
    #[error("command argument {0:?} contains a NUL byte")]
    NulInArgument(String),
    #[error("cannot {step}: {errno}")]
    Setup { step: &'static str, errno: Errno },
    /// A failed setup step whose error carries no errno.
    #[error("cannot {step}: {reason}")]
    SetupIo { step: &'static str, reason: String },
    #[error("cannot {step}: {source}")]
    Fork {
        step: &'static str,
        source: crate::sys::process::ForkError,
    },
    /// The container's process reported a failure before exec.
    #[error("{message}")]
    Start { status: i32, message: String },
    #[error("container {name:?} is {status}")]
    WrongStatus { name: String, status: String },
}

impl RuntimeError {
    /// A failed setup step, from the I/O error that stopped it.
    pub(crate) fn io(step: &'static str, e: &std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(code) => RuntimeError::Setup {
                step,
                errno: Errno::from_raw(code),
            },
            None => RuntimeError::SetupIo {
                step,
                reason: e.to_string(),
            },
        }
    }

    /// The exit status palisade ends with for this error.
    pub fn exit_status(&self) -> i32 {
        match self {
            RuntimeError::Start { status, .. } => *status,
            RuntimeError::Name(_)
            | RuntimeError::NoCommand
            | RuntimeError::NulInArgument(_)
            | RuntimeError::TooManyPrefixes { .. }
            | RuntimeError::BadMount(_)
            | RuntimeError::Invalid { .. }
            | RuntimeError::BadInput(_)
            | RuntimeError::State(StateError::NotFound(_)) => crate::exit::BAD_INPUT,
            _ => EXIT_SETUP_FAILED,
        }
    }
}

impl RunSpec {
    /// The run an OCI bundle describes, under `policy` (whose resources the
    /// caller has already merged with the bundle's).
    pub fn from_bundle(
        name: String,
        bundle: crate::spec::Bundle,
        policy: Policy,
        detach: bool,
    ) -> Result<Self, RuntimeError> {
        if bundle.user_namespace {
            return Err(RuntimeError::Invalid {
                what: "bundle",
                value: "linux.namespaces: user".into(),
                why: "user namespaces from bundles are not supported yet",
            });
        }
        let caps = match &bundle.capabilities {
            None => security::default_caps(),
            Some(names) => names
                .iter()
                .map(|n| security::parse_cap(n))
                .collect::<Result<security::CapSet, _>>()?,
        };
        Ok(RunSpec {
            name,
            command: bundle.args,
            policy,
            detach,
            env: bundle.env,
            workdir: Some(bundle.cwd),
            hostname: bundle.hostname,
            net: if bundle.net_none {
                NetMode::None
            } else {
                NetMode::Host
            },
            rootfs: Some(bundle.rootfs),
            read_only: bundle.read_only,
            mounts: bundle.mounts,
            devices: bundle
                .devices
                .iter()
                .map(|(request, expected)| DeviceNode::resolve_as(request, expected))
                .collect::<Result<_, _>>()
                .map_err(|why| RuntimeError::BadInput(format!("bundle: linux.devices: {why}")))?,
            device_rules: bundle.device_rules,
            caps,
            user: bundle.user.map(|(uid, gid)| security::User { uid, gid }),
            userns: false,
            parent: None,
            extra_masked: bundle.masked_paths,
            extra_read_only: bundle.readonly_paths,
            recipe: None,
            restore: None,
            bundle: Some(BundleRecord {
                dir: bundle.dir,
                annotations: bundle.annotations,
                hooks: bundle.hooks,
            }),
            rlimits: bundle.rlimits,
            contract: None,
        })
    }
}

/// A warning: something done differently from what was asked.
pub(crate) fn warn(message: &dyn std::fmt::Display) {
    crate::report::warning(message);
}

/// Checks a container name: it becomes a directory name and a hostname.
pub fn validate_name(name: &str) -> Result<(), RuntimeError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::Name(name.to_string()))
    }
}

/// Checks that each of `policy`'s rule lists fits in the share of the
/// kernel's rule map one container may take.
pub(crate) fn check_prefix_bound(container: &str, policy: &Policy) -> Result<(), RuntimeError> {
    let bound = palisade_common::MAX_LIST_PREFIXES;
    match policy
        .network
        .prefix_counts()
        .into_iter()
        .find(|&(_, count)| count > bound as usize)
    {
        Some((list, count)) => Err(RuntimeError::TooManyPrefixes {
            container: container.to_string(),
            list,
            count,
            bound,
        }),
        None => Ok(()),
    }
}

/// Checks everything about a spec that can be checked without touching
/// the host.
fn validate(spec: &RunSpec) -> Result<(), RuntimeError> {
    validate_name(&spec.name)?;
    check_prefix_bound(&spec.name, &spec.policy)?;
    spec.policy
        .check_oom(Path::new("the policy"))
        .map_err(|e| RuntimeError::BadInput(e.to_string()))?;
    if let Some(egress) = spec.policy.network.egress {
        let why = if spec.parent.is_some() {
            Some("a sub-container (--parent) is shaped with its parent: set the rate on the parent")
        } else if spec.net == NetMode::None {
            Some("with --net none nothing leaves the container")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(RuntimeError::Invalid {
                what: "egress rate",
                value: crate::spec::DisplayRate(egress.rate).to_string(),
                why,
            });
        }
    }
    if spec.command.is_empty() {
        return Err(RuntimeError::NoCommand);
    }
    for kv in &spec.env {
        match kv.split_once('=') {
            Some((k, _)) if !k.is_empty() => {}
            _ => {
                return Err(RuntimeError::Invalid {
                    what: "--env",
                    value: kv.clone(),
                    why: "expected KEY=VALUE",
                });
            }
        }
    }
    if let Some(h) = &spec.hostname
        && (h.is_empty() || h.len() > 64)
    {
        return Err(RuntimeError::Invalid {
            what: "--hostname",
            value: h.clone(),
            why: "1-64 characters",
        });
    }
    if let Some(w) = &spec.workdir
        && !w.is_absolute()
    {
        return Err(RuntimeError::Invalid {
            what: "--workdir",
            value: w.display().to_string(),
            why: "must be absolute",
        });
    }
    if let Some(r) = &spec.rootfs
        && !r.is_dir()
    {
        return Err(RuntimeError::Invalid {
            what: "--rootfs",
            value: r.display().to_string(),
            why: "not a directory",
        });
    }
    for m in &spec.mounts {
        if m.tmpfs.is_none() && !m.source.exists() {
            return Err(RuntimeError::Invalid {
                what: "--mount",
                value: m.source.display().to_string(),
                why: "source does not exist",
            });
        }
        // Mounts made elsewhere than by `BindMount::parse` are checked too.
        crate::spec::mount_destination(&m.target)
            .map_err(|why| RuntimeError::BadMount(format!("--mount {}: {why}", m.describe())))?;
    }
    Ok(())
}

/// Restores a container's checkpoint image into a new container made
/// from the image's recipe, named `name`.
pub fn restore_container(
    root: &StateRoot,
    recipe: &Recipe,
    name: String,
    detach: bool,
    image: crate::checkpoint::image::Handoff,
) -> Result<RunOutcome, RuntimeError> {
    let mut spec = RunSpec::from_recipe(name, detach, recipe)?;
    spec.restore = Some(image);
    run(root, &spec)
}

impl RunSpec {
    /// What made this container, for its recipe.
    pub fn launch(&self) -> Launch {
        Launch {
            command: self.command.clone(),
            env: self.env.clone(),
            workdir: self.workdir.clone(),
            hostname: self.hostname.clone(),
            net: self.net,
            rootfs: self.rootfs.clone(),
            read_only: self.read_only,
            mounts: self.mounts.clone(),
            devices: self
                .devices
                .iter()
                .map(|d| {
                    let request = DeviceRequest {
                        host: d.host.clone(),
                        container: d.container.clone(),
                        access: d.rule.access,
                    };
                    (request, d.rule)
                })
                .collect(),
            device_rules: self.device_rules.clone(),
            caps: self.caps.bits(),
            user: self.user.map(|u| (u.uid, u.gid)),
            userns: self.userns,
            parent: self.parent.clone(),
            extra_masked: self.extra_masked.clone(),
            extra_read_only: self.extra_read_only.clone(),
            resources: self.policy.resources.clone(),
            egress: self.policy.network.egress,
            rlimits: self.rlimits.clone(),
            proc_view: self.policy.view.proc,
        }
    }

    /// The container a checkpoint's recipe describes, named `name`: the
    /// recorded spec under the recorded policy (the last applied one if
    /// any, with the resources the container started with). A recipe that
    /// cannot be read or applied as recorded is refused: never a default
    /// policy, never another device.
    pub fn from_recipe(name: String, detach: bool, recipe: &Recipe) -> Result<Self, RuntimeError> {
        let bad = |why: String| RuntimeError::BadInput(format!("the image's recipe: {why}"));
        if recipe.version != RECIPE_VERSION {
            return Err(bad(format!(
                "format {} (this palisade reads {RECIPE_VERSION})",
                recipe.version
            )));
        }
        let launch = &recipe.launch;
        let mut policy = recipe.policy_in_force().map_err(|e| bad(e.to_string()))?;
        // `policy apply` changes the network (egress included), device and
        // security sections; the resources stay as the container started.
        policy.resources = launch.resources.clone();
        // `--proc-view` may have asked for it beside the policy's `[view]`.
        policy.view.proc |= launch.proc_view;
        if recipe.applied_policy.is_none() {
            policy.network.egress = launch.egress;
        }
        let devices = launch
            .devices
            .iter()
            .map(|(request, rule)| DeviceNode::resolve_as(request, rule))
            .collect::<Result<_, _>>()
            .map_err(bad)?;
        let caps = security::CapSet::from_bits(launch.caps);
        if caps.bits() != launch.caps {
            return Err(bad(format!(
                "capabilities {:#x} this host's palisade does not know",
                launch.caps & !caps.bits()
            )));
        }
        Ok(RunSpec {
            name,
            command: launch.command.clone(),
            policy,
            detach,
            env: launch.env.clone(),
            workdir: launch.workdir.clone(),
            hostname: launch.hostname.clone(),
            net: launch.net,
            rootfs: launch.rootfs.clone(),
            read_only: launch.read_only,
            mounts: launch.mounts.clone(),
            devices,
            device_rules: launch.device_rules.clone(),
            caps,
            user: launch.user.map(|(uid, gid)| security::User { uid, gid }),
            userns: launch.userns,
            parent: launch.parent.clone(),
            extra_masked: launch.extra_masked.clone(),
            extra_read_only: launch.extra_read_only.clone(),
            recipe: Some(recipe.clone()),
            restore: None,
            bundle: None,
            rlimits: launch.rlimits.clone(),
            contract: None,
        })
    }

    /// Device rules the container has beyond its policy file's: those of
    /// its devices and its bundle. They stay through `policy apply`.
    pub fn extra_device_rules(&self) -> Vec<crate::spec::DeviceRule> {
        self.devices
            .iter()
            .map(|d| d.rule)
            .chain(self.device_rules.iter().copied())
            .collect()
    }
}

/// The container's environment: defaults, then `--env` in order.
fn environment(spec: &RunSpec) -> Vec<String> {
    let mut env = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!(
            "HOSTNAME={}",
            spec.hostname.as_deref().unwrap_or(&spec.name)
        ),
        "HOME=/root".to_string(),
    ];
    if let Ok(term) = std::env::var("TERM") {
        env.push(format!("TERM={term}"));
    }
    with_env(env, &spec.env)
}

/// `env` with each `KEY=VALUE` of `overrides` replacing any `KEY=` in it,
/// in order.
pub(super) fn with_env(mut env: Vec<String>, overrides: &[String]) -> Vec<String> {
    for kv in overrides {
        let key = kv.split('=').next().unwrap_or_default();
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    env
}

fn cstrings(items: &[String]) -> Result<Vec<CString>, RuntimeError> {
    items
        .iter()
        .map(|a| CString::new(a.as_str()).map_err(|_| RuntimeError::NulInArgument(a.clone())))
        .collect()
}

/// What `run` ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// A foreground container's exit status.
    Exited(i32),
    /// A detached container is running.
    Detached,
    /// `create`: the container waits for `start`; its first process's pid.
    Created(i32),
}

/// Runs a container. In the foreground it waits for it and removes
/// everything created for it; detached, it returns once the command runs,
/// and the container keeps its state until `rm`.
pub fn run(root: &StateRoot, spec: &RunSpec) -> Result<RunOutcome, RuntimeError> {
    validate(spec)?;
    let notes = rootfs::check_mounts(spec.rootfs.as_deref(), &spec.mounts)
        .map_err(RuntimeError::BadMount)?;
    for note in notes {
        eprintln!("palisade: warning: {note}");
    }
    monitor::run(root, spec)
}
