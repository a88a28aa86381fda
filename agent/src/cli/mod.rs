//! The command line: one file per command. Each parses its arguments, calls
//! the library and renders the result; errors are printed here, once,
//! with the exit status they map to.

mod run;

use clap::{Parser, Subcommand};

/// A container enforcement agent: containers from namespaces and cgroups,
/// with per-container policy enforced by eBPF.
#[derive(Debug, Parser)]
#[command(name = "palisade", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Run(run::RunArgs),
}

/// Exit status for bad input: a bad flag, name or policy file.
pub const EXIT_BAD_INPUT: i32 = 2;

/// Parses the command line, runs the command, returns the exit status.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run::execute(args),
    }
}

/// Prints an error the way every command does.
pub(crate) fn report(error: &dyn std::fmt::Display) {
    eprintln!("palisade: {error}");
}
