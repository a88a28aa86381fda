//! `palisade run`: start a container, in the foreground or detached.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::{
    runtime::{self, BindMount, NetMode, RunOutcome, RunSpec, StateRoot},
    spec::Policy,
};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Net {
    /// The host's network.
    Host,
    /// A private network namespace with only loopback.
    None,
}

#[derive(Debug, Args)]
#[command(about = "Run a command in a new container, under a policy")]
pub struct RunArgs {
    /// Container name: names its state, cgroups and (by default) hostname
    /// (default: a generated `run-XXXXXXXX`).
    #[arg(long)]
    pub name: Option<String>,

    /// Policy file (TOML); see the README for the grammar. Without one,
    /// nothing is restricted.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// Keep running after palisade exits; output goes to the container's
    /// log (`palisade logs NAME`).
    #[arg(short, long)]
    pub detach: bool,

    /// Root filesystem directory. Without it, the host's root is used,
    /// read-only.
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<PathBuf>,

    /// Mount the --rootfs read-only.
    #[arg(long)]
    pub read_only: bool,

    /// Bind mount SRC (host) on DST (container), read-only with `:ro`.
    /// Repeatable.
    #[arg(long = "mount", value_name = "SRC:DST[:ro]", value_parser = parse_mount)]
    pub mounts: Vec<BindMount>,

    /// Set an environment variable. Repeatable.
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// Working directory inside the container (absolute).
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,

    /// Hostname (default: the name).
    #[arg(long)]
    pub hostname: Option<String>,

    /// Network: host, or none (private namespace, loopback only).
    #[arg(long, value_enum, default_value = "host")]
    pub net: Net,

    /// The command and its arguments.
    #[arg(required = true, last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

fn parse_mount(text: &str) -> Result<BindMount, String> {
    BindMount::parse(text)
}

pub fn execute(root: &StateRoot, args: RunArgs) -> i32 {
    let policy = match &args.policy {
        Some(path) => match Policy::load(path) {
            Ok(p) => p,
            Err(e) => {
                super::report(&e);
                return super::EXIT_BAD_INPUT;
            }
        },
        None => Policy::default(),
    };
    let name = args.name.unwrap_or_else(generated_name);
    let spec = RunSpec {
        name: name.clone(),
        command: args.command,
        policy,
        detach: args.detach,
        env: args.env,
        workdir: args.workdir,
        hostname: args.hostname,
        net: match args.net {
            Net::Host => NetMode::Host,
            Net::None => NetMode::None,
        },
        rootfs: args.rootfs,
        read_only: args.read_only,
        mounts: args.mounts,
    };
    match runtime::run(root, &spec) {
        Ok(RunOutcome::Exited(status)) => status,
        Ok(RunOutcome::Detached) => {
            println!("{name}");
            0
        }
        Err(e) => super::failed(e),
    }
}

fn generated_name() -> String {
    let mut bytes = [0u8; 4];
    // A name only needs to be unlikely to clash; fall back to the pid.
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_err()
    {
        bytes = std::process::id().to_be_bytes();
    }
    format!(
        "run-{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}
