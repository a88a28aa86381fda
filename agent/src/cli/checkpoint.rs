//! `palisade checkpoint` and `palisade restore`: a process to an image
//! directory and back, with the same pid.

use std::path::PathBuf;

use clap::Args;

use crate::checkpoint::{self, DumpOptions};

/// Exit status when checkpoint or restore fails.
const EXIT_FAILED: i32 = 1;

#[derive(Debug, Args)]
#[command(about = "Checkpoint a process into an image directory (then end it)")]
pub struct CheckpointArgs {
    /// The process to checkpoint, with all its threads and descendants.
    #[arg(long, value_name = "PID")]
    pub pid: i32,
    /// Where to write the image (meta.json and pages.img).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Let the process continue unchanged after the dump instead of
    /// killing it.
    #[arg(long)]
    pub leave_running: bool,
}

#[derive(Debug, Args)]
#[command(about = "Restore a checkpointed process with its old pid and let it run")]
pub struct RestoreArgs {
    /// The image directory written by `palisade checkpoint`.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}

pub fn checkpoint(args: CheckpointArgs) -> i32 {
    let opts = DumpOptions {
        leave_running: args.leave_running,
    };
    match checkpoint::checkpoint_pid(args.pid, &args.dir, opts) {
        Ok(r) => {
            println!(
                "checkpointed pid {} ({} processes, {} threads) into {}: {} vmas, {} pages ({:.1} MiB); freeze {:?}, dump {:?}, write {:?}; original {}",
                r.pid,
                r.processes,
                r.threads,
                args.dir.display(),
                r.vmas,
                r.pages,
                r.image_bytes as f64 / (1 << 20) as f64,
                r.freeze,
                r.dump,
                r.write,
                if args.leave_running {
                    "left running"
                } else {
                    "killed"
                }
            );
            0
        }
        Err(e) => {
            super::report(&e);
            EXIT_FAILED
        }
    }
}

pub fn restore(args: RestoreArgs) -> i32 {
    match checkpoint::restore(&args.dir) {
        Ok(pid) => {
            println!("{pid}");
            0
        }
        Err(e) => {
            super::report(&e);
            EXIT_FAILED
        }
    }
}
