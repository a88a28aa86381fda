//! `palisade exec`: run a command inside a running container.

use std::path::PathBuf;

use clap::Args;

use crate::runtime::{self, ExecSpec, StateRoot};

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

    /// The command and its arguments.
    #[arg(required = true, last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub fn execute(root: &StateRoot, args: ExecArgs) -> i32 {
    let spec = ExecSpec {
        name: args.name,
        command: args.command,
        env: args.env,
        workdir: args.workdir,
    };
    runtime::exec(root, &spec).unwrap_or_else(super::failed)
}
