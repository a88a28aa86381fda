//! `palisade run`: start a container in the foreground and wait for it.

use std::path::PathBuf;

use clap::Args;

use crate::{
    runtime::{self, RunSpec},
    spec::Policy,
};

#[derive(Debug, Args)]
#[command(about = "Run a command in a new container, under a policy, until it exits")]
pub struct RunArgs {
    /// Container name: names its cgroups and is its hostname
    /// (default: a generated `run-XXXXXXXX`).
    #[arg(long)]
    pub name: Option<String>,

    /// Policy file (TOML); see the README for the grammar. Without one,
    /// nothing is restricted.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// The command and its arguments.
    #[arg(required = true, last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub fn execute(args: RunArgs) -> i32 {
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
    let spec = RunSpec {
        name: args.name.unwrap_or_else(generated_name),
        command: args.command,
        policy,
    };
    match runtime::run(&spec) {
        Ok(status) => status,
        Err(e) => {
            super::report(&e);
            e.exit_status()
        }
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
