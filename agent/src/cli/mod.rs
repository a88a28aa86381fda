//! The command line: one file per command. Each parses its arguments, calls
//! the library and renders the result; errors are printed here, once,
//! with the exit status they map to.

mod agent;
mod check;
mod checkpoint;
mod debug;
mod events;
mod exec;
mod lifecycle;
mod oci;
mod policy;
mod run;
mod stats;
mod system;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::runtime::StateRoot;

/// A container enforcement agent: containers from namespaces and cgroups,
/// with per-container policy enforced by eBPF.
#[derive(Debug, Parser)]
#[command(name = "palisade", version = VERSION, about, propagate_version = true)]
pub struct Cli {
    /// State directory: one subdirectory per container. BPF pins go to
    /// /sys/fs/bpf/palisade/<a key made from this path>.
    #[arg(
        long,
        global = true,
        env = "PALISADE_ROOT",
        default_value = "/run/palisade",
        value_name = "DIR"
    )]
    pub root: PathBuf,

    /// Also write errors and warnings to this file (appended), as conmon
    /// and containerd's shim expect of a runc-compatible runtime.
    #[arg(long, global = true, value_name = "FILE")]
    pub log: Option<PathBuf>,

    /// The --log file's format: `text`, or `json` (one object a line).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,

    /// runc's systemd cgroup driver: not supported, refused (configure the
    /// caller with the cgroupfs driver).
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,

    /// Accepted for runc compatibility; palisade's messages are the same
    /// with or without it.
    #[arg(long, global = true)]
    pub debug: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// `--version`, in runc's shape (podman shows it as the runtime's version).
const VERSION: &str = concat!("version ", env!("CARGO_PKG_VERSION"), "\nspec: 1.2.0");

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Run(Box<run::RunArgs>),
    Exec(exec::ExecArgs),
    Ps(lifecycle::PsArgs),
    Kill(lifecycle::KillArgs),
    Rm(lifecycle::RmArgs),
    Wait(lifecycle::WaitArgs),
    Logs(lifecycle::LogsArgs),
    Policy(policy::PolicyArgs),
    Events(events::EventsArgs),
    Stats(stats::StatsArgs),
    Agent(agent::AgentArgs),
    Checkpoint(checkpoint::CheckpointArgs),
    Restore(checkpoint::RestoreArgs),
    Check(check::CheckArgs),
    System(system::SystemArgs),
    Create(oci::CreateArgs),
    Start(oci::StartArgs),
    State(oci::StateArgs),
    Delete(oci::DeleteArgs),
    Pause(oci::PauseArgs),
    Resume(oci::ResumeArgs),
    Update(oci::UpdateArgs),
    Features(oci::FeaturesArgs),
    #[command(hide = true)]
    Debug(debug::DebugArgs),
    #[command(name = "monitor-exited", hide = true)]
    MonitorExited(run::MonitorExitedArgs),
}

/// Exit status for bad input (see [`crate::exit`]).
pub const EXIT_BAD_INPUT: i32 = crate::exit::BAD_INPUT;

/// Parses the command line, runs the command, returns the exit status.
pub fn main() -> i32 {
    let cli = Cli::parse();
    if let Some(log) = &cli.log
        && let Err(e) = crate::report::log_to(log, cli.log_format == LogFormat::Json)
    {
        report(&format!("--log {}: {e}", log.display()));
        return EXIT_BAD_INPUT;
    }
    if cli.systemd_cgroup {
        report(
            &"--systemd-cgroup: the systemd cgroup driver is not supported; configure the caller with the cgroupfs driver (podman: cgroup_manager = \"cgroupfs\"; containerd: SystemdCgroup = false)",
        );
        return EXIT_BAD_INPUT;
    }
    if !cli.root.is_absolute() {
        report(&format!(
            "--root {}: must be an absolute path",
            cli.root.display()
        ));
        return EXIT_BAD_INPUT;
    }
    let root = StateRoot::new(cli.root);
    // Commands that put palisade's own process into a container run from
    // an unwritable image of the binary (a private read-only overlay, or a
    // sealed copy), which the container cannot overwrite through
    // /proc/PID/exe (the CVE-2019-5736 class).
    if matches!(
        cli.command,
        Command::Run(_) | Command::Exec(_) | Command::Restore(_) | Command::Create(_)
    ) && let Err(e) = crate::runtime::security::ensure_unwritable_self()
    {
        report(&e);
        return crate::runtime::EXIT_SETUP_FAILED;
    }
    match cli.command {
        Command::Run(args) => run::execute(&root, *args),
        Command::Exec(args) => exec::execute(&root, args),
        Command::Ps(args) => lifecycle::ps(&root, args),
        Command::Kill(args) => lifecycle::kill(&root, args),
        Command::Rm(args) => lifecycle::rm(&root, args),
        Command::Wait(args) => lifecycle::wait(&root, args),
        Command::Logs(args) => lifecycle::logs(&root, args),
        Command::Policy(args) => policy::execute(&root, args),
        Command::Events(args) => events::execute(&root, args),
        Command::Stats(args) => stats::execute(&root, args),
        Command::Agent(args) => agent::execute(&root, args, cli.log_format == LogFormat::Json),
        Command::Checkpoint(args) => checkpoint::checkpoint(&root, args),
        Command::Restore(args) => checkpoint::restore(&root, args),
        Command::Check(args) => check::execute(args),
        Command::System(args) => system::execute(&root, args),
        Command::Create(args) => oci::create(&root, args),
        Command::Start(args) => oci::start(&root, args),
        Command::State(args) => oci::state(&root, args),
        Command::Delete(args) => oci::delete(&root, args),
        Command::Pause(args) => oci::pause(&root, args),
        Command::Resume(args) => oci::resume(&root, args),
        Command::Update(args) => oci::update(&root, args),
        Command::Features(args) => oci::features(args),
        Command::Debug(args) => debug::execute(&root, args),
        Command::MonitorExited(args) => run::monitor_exited(&root, args),
    }
}

/// Prints an error the way every command does.
pub(crate) fn report(error: &dyn std::fmt::Display) {
    crate::report::error(error);
}

/// Prints a runtime error and returns its exit status.
pub(crate) fn failed(error: crate::runtime::RuntimeError) -> i32 {
    report(&error);
    error.exit_status()
}
