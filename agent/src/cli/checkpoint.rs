//! `palisade checkpoint` and `palisade restore`: a container, or a
//! process tree, to an image directory and back, with the same pids.

use std::{
    io::IsTerminal,
    path::PathBuf,
    time::{Duration, Instant},
};

use clap::Args;

use crate::{
    checkpoint::{self, CheckpointError, DumpOptions, image, imagedir::ImageDir, sign::ImageKey},
    runtime::StateRoot,
};

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
    /// Where to write the image: a new directory (made with mode 0700)
    /// or an empty one; never a symbolic link.
    #[arg(long, value_name = "DIR", required_unless_present = "stop_tracking")]
    pub dir: Option<PathBuf>,
    /// Copy the memory while the process runs on, and track what it
    /// writes next: the image is a pre-dump, the parent of the next step.
    /// The process is stopped only while tracking starts.
    #[arg(long)]
    pub pre_dump: bool,
    /// The last pre-dump of the chain: with --pre-dump, copy only what
    /// changed since it; without, finish the chain (the usual checkpoint,
    /// copying only the last changes and the rest of the state).
    #[arg(long, value_name = "DIR")]
    pub parent: Option<PathBuf>,
    /// How a chain's first pre-dump tracks writes: ebpf, pagemap-scan,
    /// soft-dirty or full (default: the first of ebpf, pagemap-scan and
    /// full this kernel offers; `palisade check` lists them).
    #[arg(long, value_name = "BACKEND", requires = "pre_dump")]
    pub track: Option<String>,
    /// End the tracking of the pre-dump chain of the container or --pid,
    /// leaving no trace of it in the processes; writes nothing.
    #[arg(long, conflicts_with_all = ["dir", "pre_dump", "parent", "leave_running"])]
    pub stop_tracking: bool,
    /// Tests: stop the tree while a pre-dump reads its written pages, and
    /// check the eBPF recorder's set against PAGEMAP_SCAN's.
    #[arg(long, hide = true, requires = "pre_dump")]
    pub cross_check: bool,
    /// Let the process continue unchanged after the dump instead of
    /// killing it.
    #[arg(long)]
    pub leave_running: bool,
    /// The key that signs the image (made, 32 random bytes, mode 0600,
    /// if missing).
    #[arg(
        long,
        env = checkpoint::sign::KEY_ENV,
        value_name = "FILE",
        default_value = checkpoint::sign::DEFAULT_KEY
    )]
    pub image_key: PathBuf,
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
    /// The key the image must be signed with.
    #[arg(
        long,
        env = checkpoint::sign::KEY_ENV,
        value_name = "FILE",
        default_value = checkpoint::sign::DEFAULT_KEY
    )]
    pub image_key: PathBuf,
    /// Restore an image that is unsigned or signed by another key,
    /// trusting its contents (recipe, policy, memory) as they are; its
    /// checksums are still checked.
    #[arg(long)]
    pub trust_image: bool,
}

/// Reports a checkpoint or restore error; returns its exit status.
fn failed(e: &CheckpointError) -> i32 {
    super::report(e);
    e.exit_status()
}

pub fn checkpoint(root: &StateRoot, args: CheckpointArgs) -> i32 {
    let opts = DumpOptions {
        leave_running: args.leave_running,
    };
    let sessions = root.tracking_dir();
    // A chain is kept by the host pid of the tree's root.
    let chain_pid = || match (&args.name, args.pid) {
        (Some(name), _) => crate::runtime::running_pid(root, name),
        (None, Some(pid)) => Ok(pid),
        (None, None) => unreachable!("clap requires NAME or --pid"),
    };
    if args.stop_tracking {
        let pid = match chain_pid() {
            Ok(p) => p,
            Err(e) => return failed(&e),
        };
        return match checkpoint::track::stop_tracking(&sessions, pid) {
            Ok(()) => {
                println!("stopped tracking pid {pid}: its memory is no longer write-protected");
                0
            }
            Err(e) => failed(&e),
        };
    }
    let backend = match args
        .track
        .as_deref()
        .map(|t| (t, checkpoint::track::Backend::parse(t)))
    {
        None => None,
        Some((_, Some(b))) => Some(b),
        Some((t, None)) => {
            super::report(&format!(
                "--track {t}: not a backend (ebpf, pagemap-scan, soft-dirty or full)"
            ));
            return super::EXIT_BAD_INPUT;
        }
    };
    if args.pre_dump && args.leave_running {
        super::report(&"--leave-running: a pre-dump always leaves the process running");
        return super::EXIT_BAD_INPUT;
    }
    let dir_arg = args.dir.clone().expect("clap requires --dir");
    // The chain is checked before anything is made.
    let chain = match (&args.parent, args.pre_dump) {
        (Some(parent), false) => {
            let opened = chain_pid().and_then(|pid| {
                let key = ImageKey::load(&args.image_key)?;
                checkpoint::track::Chain::open(&sessions, pid, parent, &key)
            });
            match opened {
                Ok(c) => Some(c),
                Err(e) => return failed(&e),
            }
        }
        _ => None,
    };
    // The key and the directory before anything is stopped: a bad one
    // leaves the target untouched.
    // The directory first, so a refused one makes no key on first use; a
    // bad key removes the directory made for it.
    let dir = match ImageDir::create(&dir_arg) {
        Ok(d) => d,
        Err(e) => return failed(&e),
    };
    let key = match ImageKey::load_or_create(&args.image_key) {
        Ok(k) => k,
        Err(e) => {
            dir.discard();
            return failed(&e.into());
        }
    };
    // The progress bar's 100 %: the first process's anonymous memory.
    let first = match (&args.name, args.pid) {
        (Some(name), _) => root.load(name).ok().and_then(|s| s.pid).unwrap_or(0),
        (None, pid) => pid.unwrap_or(0),
    };
    let mut bar = Progress::new(anon_bytes(first));
    let mut progress = |done| bar.update(done);
    if args.pre_dump {
        let pid = match chain_pid() {
            Ok(p) => p,
            Err(e) => {
                dir.discard();
                return failed(&e);
            }
        };
        let opts = checkpoint::track::PreDumpOptions {
            sessions: &sessions,
            parent: args.parent.as_deref(),
            backend,
            cross_check: args.cross_check,
        };
        let what = match &args.name {
            Some(name) => format!("container {name} (pid {pid})"),
            None => format!("pid {pid}"),
        };
        let done = checkpoint::track::pre_dump(pid, &dir, &key, &opts, &mut progress);
        bar.clear();
        return match done {
            Ok(r) => {
                println!(
                    "pre-dumped {what} ({} processes) into {}: generation {}, backend {}: {} pages written since the parent{}, {} copied ({}){}; stopped {}, detect {}, copy {}, write {}; tracking goes on{}",
                    r.processes,
                    dir_arg.display(),
                    r.generation,
                    r.backend.name(),
                    r.dirty_pages,
                    r.interval
                        .filter(|i| !i.is_zero())
                        .map(|i| format!(
                            " (in {}: {:.0} pages/s)",
                            ms(i),
                            r.dirty_pages as f64 / i.as_secs_f64()
                        ))
                        .unwrap_or_default(),
                    r.copied_pages,
                    size(r.image_bytes),
                    if r.hot_pages > 0 {
                        format!(
                            ", {} hot (written in the last two intervals) left for a later step",
                            r.hot_pages
                        )
                    } else {
                        String::new()
                    },
                    ms(r.stopped),
                    ms(r.detect),
                    ms(r.copy),
                    ms(r.write),
                    r.fell_back.map(|w| format!(" ({w})")).unwrap_or_default()
                );
                0
            }
            Err(e) => {
                dir.discard();
                failed(&e)
            }
        };
    }
    let chained = chain.as_ref().map(|c| c.backend().to_string());
    let (what, done) = match (&args.name, args.pid) {
        (Some(name), _) => (
            format!("container {name}"),
            crate::runtime::checkpoint_container(
                root,
                name,
                &dir,
                &key,
                opts,
                &mut progress,
                chain,
            ),
        ),
        (None, Some(pid)) => (
            format!("pid {pid}"),
            match chain {
                Some(chain) => {
                    checkpoint::checkpoint_pid_chained(pid, &dir, &key, opts, &mut progress, chain)
                }
                None => checkpoint::checkpoint_pid(pid, &dir, &key, opts, &mut progress),
            },
        ),
        (None, None) => unreachable!("clap requires NAME or --pid"),
    };
    bar.clear();
    match done {
        Ok(r) => {
            println!(
                "checkpointed {what} ({} processes, {} threads) into {}: {} ({} pages in {} vmas{}); freeze {}, dump {}, write {}; original {}",
                r.processes,
                r.threads,
                dir_arg.display(),
                size(r.image_bytes),
                r.pages,
                r.vmas,
                chained
                    .as_ref()
                    .map(|b| format!(
                        ", the rest kept from its pre-dump chain ({b}); tracking ended"
                    ))
                    .unwrap_or_default(),
                ms(r.freeze),
                ms(r.dump),
                ms(r.write),
                match (args.leave_running, args.name.is_some()) {
                    (true, _) => "left running",
                    (false, true) => "ended and removed",
                    (false, false) => "killed",
                }
            );
            0
        }
        Err(e) => {
            dir.discard();
            failed(&e)
        }
    }
}

pub fn restore(root: &StateRoot, args: RestoreArgs) -> i32 {
    // The whole image is read, authenticated and checked here, before
    // anything is created. A container's image is restored into a new
    // container made from its recipe; a tree's next to whoever restores
    // it.
    let t0 = Instant::now();
    let key = if args.trust_image {
        super::report(&format!(
            "warning: --trust-image: the image in {} is not authenticated; its recipe, policy and memory are used as they are",
            args.dir.display()
        ));
        None
    } else {
        match ImageKey::load(&args.image_key) {
            Ok(k) => Some(k),
            Err(e) => return failed(&e.into()),
        }
    };
    let verified = match image::open(&args.dir, key.as_ref()) {
        Ok(v) => v,
        Err(e) => return failed(&e),
    };
    let read = t0.elapsed();
    if let Some(c) = verified.image.container.clone() {
        let name = args.name.unwrap_or(c.name);
        let handoff = image::Handoff::new(verified);
        let restored =
            crate::runtime::restore_container(root, &c.recipe, name.clone(), args.detach, handoff);
        return super::run::outcome(&name, restored);
    }
    if args.name.is_some() || args.detach {
        super::report(&format!(
            "{}: --name and --detach are for container images; this one is a process tree's (it always runs on, as a daemon)",
            args.dir.display()
        ));
        return super::EXIT_BAD_INPUT;
    }
    match checkpoint::restore(&verified, read) {
        Ok(r) => {
            // stdout is the pid alone, for scripts; the report goes aside.
            println!("{}", r.pid);
            eprintln!(
                "restored pid {} ({} processes) from {}: {} ({} pages); read+validate {}, create {}, rebuild {}, release {}",
                r.pid,
                r.processes,
                args.dir.display(),
                size(r.image_bytes),
                r.pages,
                ms(r.read),
                ms(r.create),
                ms(r.rebuild),
                ms(r.release),
            );
            0
        }
        Err(e) => failed(&e),
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
