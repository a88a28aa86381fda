//! `palisade exec`: run a command inside a running container — given on
//! the command line, or as an OCI process file (`--process`, the runc
//! contract's form).

use std::path::PathBuf;

use clap::Args;

use crate::{
    runtime::{self, ExecSpec, StateRoot, security},
    spec::load_process,
};

#[derive(Debug, Args)]
#[command(about = "Run a command in a running container: its namespaces, cgroups and policy")]
pub struct ExecArgs {
    /// The container.
    pub name: String,

    /// Set an environment variable (added to the container's). Repeatable.
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// Working directory (default: the container's).
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,

    /// Take the command, environment, working directory, user,
    /// capabilities and resource limits from an OCI process JSON file
    /// (`-`: stdin) instead of the container's.
    #[arg(short, long, value_name = "FILE", conflicts_with_all = ["env", "workdir"])]
    pub process: Option<PathBuf>,

    /// Return once the command runs, without waiting for it (its pid goes
    /// to --pid-file): the caller reaps it.
    #[arg(short, long)]
    pub detach: bool,

    /// Write the command's host pid here.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,

    /// Unix socket to send the master of the command's terminal to.
    #[arg(long, value_name = "SOCKET")]
    pub console_socket: Option<PathBuf>,

    /// Give the command a terminal (needs --console-socket; an OCI process
    /// file says so with "terminal": true).
    #[arg(short, long)]
    pub tty: bool,

    /// Pass descriptors 3 to 3+N-1 on to the command.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub preserve_fds: u32,

    /// The command and its arguments.
    #[arg(required_unless_present = "process", last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub fn execute(root: &StateRoot, args: ExecArgs) -> i32 {
    match spec_from(args) {
        Ok(spec) => runtime::exec(root, &spec).unwrap_or_else(super::failed),
        Err(e) => {
            super::report(&e);
            super::EXIT_BAD_INPUT
        }
    }
}

/// The exec the flags (or the process file) describe.
fn spec_from(args: ExecArgs) -> Result<ExecSpec, String> {
    let mut spec = ExecSpec::new(args.name, args.command);
    let mut terminal = args.tty;
    if let Some(file) = &args.process {
        let p = load_process(file).map_err(|e| e.to_string())?;
        for warning in &p.warnings {
            runtime::warn(warning);
        }
        if !spec.command.is_empty() {
            return Err(
                "give the command in the --process file or on the command line, not both".into(),
            );
        }
        spec.command = p.args;
        spec.full_env = Some(p.env);
        spec.workdir = Some(p.cwd);
        spec.user = Some(p.user.map(|(uid, gid)| security::User { uid, gid }));
        spec.caps = p
            .capabilities
            .map(|names| {
                names
                    .iter()
                    .map(|n| security::parse_cap(n))
                    .collect::<Result<security::CapSet, _>>()
            })
            .transpose()
            .map_err(|e| e.to_string())?;
        spec.rlimits = p.rlimits;
        terminal |= p.terminal;
    } else {
        spec.env = args.env;
        spec.workdir = args.workdir;
    }
    match (terminal, &args.console_socket) {
        (true, None) => {
            return Err("a terminal (--tty, or \"terminal\": true) needs --console-socket".into());
        }
        (false, Some(_)) => {
            return Err(
                "--console-socket needs a terminal (--tty, or \"terminal\": true in --process)"
                    .into(),
            );
        }
        _ => {}
    }
    spec.detach = args.detach;
    spec.pid_file = args.pid_file;
    spec.console_socket = args.console_socket;
    spec.preserve_fds = args.preserve_fds;
    Ok(spec)
}
