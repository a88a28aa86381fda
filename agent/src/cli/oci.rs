//! The runc command-line contract, as podman (through conmon) and
//! containerd's runc shim call it: `create`, `start`, `state`, `delete`,
//! `pause`, `resume`, `update` and `features` (`kill`, `ps` and `exec` take
//! runc's arguments in their own files). Containers made this way are
//! palisade containers like any other: `palisade ps`, `stats` and `policy
//! show` see them.

use std::path::PathBuf;

use clap::Args;

use crate::{
    runtime::{self, Contract, RunSpec, StateRoot},
    spec::{Policy, RECIPE_VERSION, Recipe, load_bundle, load_resources, policy_from_annotations},
};

#[derive(Debug, Args)]
#[command(
    about = "Create a container from an OCI bundle, stopped before its command (runc contract; `start` runs it)"
)]
pub struct CreateArgs {
    /// The bundle directory (its config.json); default: the current one.
    #[arg(short, long, value_name = "DIR", default_value = ".")]
    pub bundle: PathBuf,
    /// Write the first process's host pid here.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Unix socket to send the master of the command's terminal to
    /// (required when the bundle's process.terminal is true).
    #[arg(long, value_name = "SOCKET")]
    pub console_socket: Option<PathBuf>,
    /// Accepted for runc compatibility: palisade always pivots into the
    /// root filesystem (with it, runc would not).
    #[arg(long)]
    pub no_pivot: bool,
    /// Accepted for runc compatibility: palisade makes no session keyring.
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass descriptors 3 to 3+N-1 on to the command.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub preserve_fds: u32,
    /// The container's id (its name).
    pub id: String,
}

#[derive(Debug, Args)]
#[command(about = "Start a created container's command (runc contract)")]
pub struct StartArgs {
    pub id: String,
}

#[derive(Debug, Args)]
#[command(about = "Print a container's OCI state as JSON (runc contract)")]
pub struct StateArgs {
    pub id: String,
}

#[derive(Debug, Args)]
#[command(
    about = "Remove a container and everything made for it (runc contract; like `rm`, and with --force an unknown id is not an error)"
)]
pub struct DeleteArgs {
    /// Kill the container if it runs; an unknown id is not an error.
    #[arg(short, long)]
    pub force: bool,
    pub id: String,
}

#[derive(Debug, Args)]
#[command(about = "Freeze every process of a running container (cgroup freezer)")]
pub struct PauseArgs {
    pub id: String,
}

#[derive(Debug, Args)]
#[command(about = "Resume a paused container")]
pub struct ResumeArgs {
    pub id: String,
}

#[derive(Debug, Args)]
#[command(
    about = "Change a running container's resource limits, all or none (OCI linux.resources JSON)"
)]
pub struct UpdateArgs {
    /// The new limits as OCI `linux.resources` JSON; `-` reads stdin.
    #[arg(short, long, value_name = "FILE|-")]
    pub resources: PathBuf,
    pub id: String,
}

#[derive(Debug, Args)]
#[command(about = "Print what this palisade supports, as OCI features JSON")]
pub struct FeaturesArgs {}

pub fn create(root: &StateRoot, args: CreateArgs) -> i32 {
    match create_spec(args) {
        Ok(spec) => super::run::outcome(&spec.name.clone(), runtime::run(root, &spec)),
        Err(status) => status,
    }
}

/// The run spec a `create` asks for, or the exit status of bad input
/// (reported): nothing has been made yet.
fn create_spec(args: CreateArgs) -> Result<RunSpec, i32> {
    let bad = |e: &dyn std::fmt::Display| {
        super::report(e);
        super::EXIT_BAD_INPUT
    };
    runtime::validate_name(&args.id).map_err(|e| bad(&e))?;
    let bundle = load_bundle(&args.bundle).map_err(|e| bad(&e))?;
    if bundle.terminal && args.console_socket.is_none() {
        return Err(bad(&format!(
            "{}: process.terminal is true: a terminal needs --console-socket to send it to",
            args.bundle.join("config.json").display()
        )));
    }
    if !bundle.terminal && args.console_socket.is_some() {
        return Err(bad(
            &"--console-socket given, but the bundle's process.terminal is false",
        ));
    }
    for warning in &bundle.warnings {
        runtime::warn(warning);
    }
    let (policy, text) = match policy_from_annotations(&bundle.annotations) {
        Ok(Some((policy, text))) => (policy, Some(text)),
        Ok(None) => (Policy::default(), None),
        Err(e) => return Err(bad(&e)),
    };
    // The policy's resources over the bundle's (as `run --bundle --policy`).
    let mut policy = policy;
    policy.resources = bundle.resources.clone().overlaid_with(policy.resources);
    let mut spec = RunSpec::from_bundle(args.id, bundle, policy, true).map_err(|e| bad(&e))?;
    spec.contract = Some(Contract {
        pid_file: args.pid_file,
        console_socket: args.console_socket,
        preserve_fds: args.preserve_fds,
    });
    spec.recipe = Some(Recipe {
        version: RECIPE_VERSION,
        launch: spec.launch(),
        policy: text,
        applied_policy: None,
    });
    Ok(spec)
}

pub fn start(root: &StateRoot, args: StartArgs) -> i32 {
    runtime::oci::start(root, &args.id).map_or_else(super::failed, |()| 0)
}

pub fn state(root: &StateRoot, args: StateArgs) -> i32 {
    match runtime::oci::current(root, &args.id) {
        Ok(state) => {
            let json = runtime::oci::state_json(&state);
            println!("{}", serde_json::to_string_pretty(&json).expect("json"));
            0
        }
        Err(e) => super::failed(e),
    }
}

pub fn delete(root: &StateRoot, args: DeleteArgs) -> i32 {
    match runtime::oci::delete(root, &args.id, args.force) {
        Ok(()) => 0,
        // What containerd's shim asks after the container is gone.
        Err(runtime::RuntimeError::State(runtime::StateError::NotFound(_))) if args.force => 0,
        Err(e) => super::failed(e),
    }
}

pub fn pause(root: &StateRoot, args: PauseArgs) -> i32 {
    runtime::oci::set_paused(root, &args.id, true).map_or_else(super::failed, |()| 0)
}

pub fn resume(root: &StateRoot, args: ResumeArgs) -> i32 {
    runtime::oci::set_paused(root, &args.id, false).map_or_else(super::failed, |()| 0)
}

pub fn update(root: &StateRoot, args: UpdateArgs) -> i32 {
    let (limits, warnings) = match load_resources(&args.resources) {
        Ok(l) => l,
        Err(e) => {
            super::report(&e);
            return super::EXIT_BAD_INPUT;
        }
    };
    for warning in &warnings {
        runtime::warn(warning);
    }
    runtime::oci::update(root, &args.id, &limits).map_or_else(super::failed, |()| 0)
}

pub fn features(_args: FeaturesArgs) -> i32 {
    println!(
        "{}",
        serde_json::to_string_pretty(&runtime::oci::features()).expect("json")
    );
    0
}
