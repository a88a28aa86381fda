//! `palisade system prune`.

use clap::{Args, Subcommand};

use crate::runtime::{self, StateRoot};

#[derive(Debug, Args)]
#[command(about = "Housekeeping of the state root")]
pub struct SystemArgs {
    #[command(subcommand)]
    pub command: SystemCommand,
}

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Remove what the state root holds for no container: dead containers
    /// (creator or monitor died, processes gone), abandoned reservations,
    /// empty cgroups under palisade/ that no container owns (older than a
    /// minute), its BPF pins once it has no container, and a killed
    /// agent's dead /proc view filesystem.
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Print JSON (an object of arrays) instead of lines.
    #[arg(long)]
    pub json: bool,
}

pub fn execute(root: &StateRoot, args: SystemArgs) -> i32 {
    match args.command {
        SystemCommand::Prune(args) => prune(root, args),
    }
}

fn prune(root: &StateRoot, args: PruneArgs) -> i32 {
    let pruned = match runtime::prune(root) {
        Ok(p) => p,
        Err(e) => return super::failed(e),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&pruned).expect("json"));
        return 0;
    }
    for name in &pruned.containers {
        println!("removed container {name}");
    }
    for dir in &pruned.staging {
        println!("removed reservation {}", dir.display());
    }
    for dir in &pruned.cgroups {
        println!("removed cgroup {}", dir.display());
    }
    for dir in &pruned.pins {
        println!("removed pins {}", dir.display());
    }
    if let Some(dir) = &pruned.view_mount {
        println!("detached a dead agent's /proc view from {}", dir.display());
    }
    0
}
