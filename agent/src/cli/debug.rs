//! `palisade debug`: hidden commands that tell the tests and xtask what
//! palisade computes, so they never recompute it.

use clap::{Args, Subcommand};

use crate::{enforce::Pins, runtime::StateRoot};

#[derive(Debug, Args)]
#[command(about = "Internals, for the tests and xtask")]
pub struct DebugArgs {
    #[command(subcommand)]
    pub command: DebugCommand,
}

#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Print the bpffs directory that holds the state root's pins (it may
    /// not exist).
    PinDir,
}

pub fn execute(root: &StateRoot, args: DebugArgs) -> i32 {
    match args.command {
        DebugCommand::PinDir => {
            println!("{}", Pins::for_state_root(root.dir()).dir().display());
            0
        }
    }
}
