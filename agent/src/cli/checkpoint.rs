//! `palisade checkpoint` and `palisade restore`: a container, or a
//! process tree, to an image directory and back, with the same pids.

use std::path::PathBuf;

use clap::Args;

use crate::{
    checkpoint::{self, DumpOptions},
    runtime::StateRoot,
};

/// Exit status when checkpoint or restore fails.
const EXIT_FAILED: i32 = 1;

#[derive(Debug, Args)]
#[command(
    about = "Checkpoint a container, or a process tree, into an image directory (then end it)"
)]
pub struct CheckpointArgs {
    /// The container to checkpoint (frozen, dumped whole, then removed).
    #[arg(
        value_name = "NAME",
        required_unless_present = "pid",
        conflicts_with = "pid"
    )]
    pub name: Option<String>,
    /// Instead of a container: the process to checkpoint, with all its
    /// threads and descendants.
    #[arg(long, value_name = "PID")]
    pub pid: Option<i32>,
    /// Where to write the image (meta.json and pages.img).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Let the process continue unchanged after the dump instead of
    /// killing it.
    #[arg(long)]
    pub leave_running: bool,
}

#[derive(Debug, Args)]
#[command(
    about = "Restore a checkpointed container or process tree with its old pids and let it run"
)]
pub struct RestoreArgs {
    /// The image directory written by `palisade checkpoint`.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// A container image: the new container's name (default: the
    /// checkpointed container's).
    #[arg(long)]
    pub name: Option<String>,
    /// A container image: keep running after palisade exits, like `run
    /// -d` (without it, restore waits for the container like `run`).
    #[arg(short, long)]
    pub detach: bool,
}

pub fn checkpoint(root: &StateRoot, args: CheckpointArgs) -> i32 {
    let opts = DumpOptions {
        leave_running: args.leave_running,
    };
    let (what, done) = match (&args.name, args.pid) {
        (Some(name), _) => (
            format!("container {name}"),
            checkpoint::checkpoint_container(root, name, &args.dir, opts),
        ),
        (None, Some(pid)) => (
            format!("pid {pid}"),
            checkpoint::checkpoint_pid(pid, &args.dir, opts),
        ),
        (None, None) => unreachable!("clap requires NAME or --pid"),
    };
    match done {
        Ok(r) => {
            println!(
                "checkpointed {what} ({} processes, {} threads) into {}: {} vmas, {} pages ({:.1} MiB); freeze {:?}, dump {:?}, write {:?}; original {}",
                r.processes,
                r.threads,
                args.dir.display(),
                r.vmas,
                r.pages,
                r.image_bytes as f64 / (1 << 20) as f64,
                r.freeze,
                r.dump,
                r.write,
                match (args.leave_running, args.name.is_some()) {
                    (true, _) => "left running",
                    (false, true) => "ended and removed",
                    (false, false) => "killed",
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

pub fn restore(root: &StateRoot, args: RestoreArgs) -> i32 {
    // A container's image is restored into a new container, made from
    // its recipe; a tree's next to whoever restores it.
    let read = checkpoint::image::read(&args.dir).and_then(|(image, _)| {
        checkpoint::image::read_files(&args.dir, &image)?;
        Ok(image)
    });
    let container = match read {
        Ok(image) => image.container,
        Err(e) => {
            super::report(&e);
            return EXIT_FAILED;
        }
    };
    if let Some(c) = container {
        let name = args.name.unwrap_or(c.name);
        return super::run::restore_container(root, &c.recipe, name, args.detach, args.dir);
    }
    if args.name.is_some() || args.detach {
        super::report(&format!(
            "{}: --name and --detach are for container images; this one is a process tree's (it always runs on, as a daemon)",
            args.dir.display()
        ));
        return super::EXIT_BAD_INPUT;
    }
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
