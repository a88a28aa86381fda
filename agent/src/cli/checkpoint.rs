//! `palisade checkpoint` and `palisade restore`: a process to an image
//! directory and back, with the same pid.

use std::{
    io::IsTerminal,
    path::PathBuf,
    time::{Duration, Instant},
};

use clap::Args;

use crate::checkpoint::{self, DumpOptions};

/// Exit status when checkpoint or restore fails.
const EXIT_FAILED: i32 = 1;

#[derive(Debug, Args)]
#[command(about = "Checkpoint a process into an image directory (then end it)")]
pub struct CheckpointArgs {
    /// The process to checkpoint (this slice: one single-threaded
    /// process without children).
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
    let mut bar = Progress::new(anon_bytes(args.pid));
    let result =
        checkpoint::checkpoint_pid(args.pid, &args.dir, opts, &mut |done| bar.update(done));
    bar.clear();
    match result {
        Ok(r) => {
            println!(
                "checkpointed pid {} into {}: {} ({} pages in {} vmas); freeze {}, dump {}, write {}; original {}",
                r.pid,
                args.dir.display(),
                size(r.image_bytes),
                r.pages,
                r.vmas,
                ms(r.freeze),
                ms(r.dump),
                ms(r.write),
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
        Ok(r) => {
            // stdout is the pid alone, for scripts; the report goes aside.
            println!("{}", r.pid);
            eprintln!(
                "restored pid {} from {}: {} ({} pages); read+validate {}, create {}, memory {}, release {}",
                r.pid,
                args.dir.display(),
                size(r.image_bytes),
                r.pages,
                ms(r.read),
                ms(r.create),
                ms(r.memory),
                ms(r.release),
            );
            0
        }
        Err(e) => {
            super::report(&e);
            EXIT_FAILED
        }
    }
}

fn size(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// The process's resident anonymous memory (RssAnon), about what a dump
/// writes: the progress bar's 100 %.
fn anon_bytes(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// A one-line progress bar on stderr: only when stderr is a terminal, and
/// only once the dump has taken over a second, redrawn at most ten times
/// a second.
struct Progress {
    total: u64,
    start: Instant,
    last: Option<Instant>,
    tty: bool,
}

impl Progress {
    fn new(total: u64) -> Self {
        Progress {
            total,
            start: Instant::now(),
            last: None,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn update(&mut self, done: u64) {
        let now = Instant::now();
        let elapsed = now - self.start;
        if !self.tty
            || elapsed < Duration::from_secs(1)
            || self
                .last
                .is_some_and(|l| now - l < Duration::from_millis(100))
        {
            return;
        }
        self.last = Some(now);
        let total = self.total.max(done).max(1);
        let filled = (done * 30 / total) as usize;
        eprint!(
            "\r[{}{}] {} of ~{}, {:.0} MB/s ",
            "#".repeat(filled),
            " ".repeat(30 - filled),
            size(done),
            size(total),
            done as f64 / 1e6 / elapsed.as_secs_f64()
        );
    }

    /// Erases the bar, if one was drawn.
    fn clear(&self) {
        if self.last.is_some() {
            eprint!("\r{}\r", " ".repeat(72));
        }
    }
}
