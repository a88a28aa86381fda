//! Incremental checkpoint: pre-dumps copy a running tree's memory and
//! track what it writes next, so each later step copies only what
//! changed, and the final checkpoint stops the tree only for the last
//! changes and the rest of its state.
//!
//! A chain: `--pre-dump` (generation 0) arms tracking and copies every
//! page; `--pre-dump --parent D` copies the pages written since D; a
//! checkpoint with `--parent D` finishes it. Each pre-dump's index says,
//! for every page copied so far, which image of the chain holds its
//! latest copy (`PreDump`); the final image's runs name those images, and
//! restore reads them from the chain.
//!
//! A page's copy in the chain stands for the page only while its mapping
//! is the same mapping (same range, permissions, file and offset, and
//! still registered for write-protection) and the page has not been
//! written since the copy; anything else is copied again. The final
//! checkpoint takes its written set from PAGEMAP_SCAN on the stopped tree
//! whatever the backend: exact, including writes the eBPF recorder cannot
//! see (by other processes through process_vm_writev, or O_DIRECT).

pub mod ebpf;
mod index;
mod session;
mod wp;

use std::{
    collections::HashMap,
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

pub use index::{Ranges, merge as merge_runs};

use super::{
    CheckpointError,
    dump::{self, Frozen},
    image::{self, ParentRef, PreDump, Run, TrackedProcess, TrackedVma},
    imagedir::ImageDir,
    pages::{PageWriter, Source},
    proc,
    sign::ImageKey,
};

/// How the pages written between two steps are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// userfaultfd write-protection; an eBPF program on the page-fault
    /// tracepoints records each first write (cost: the dirty pages).
    Ebpf,
    /// userfaultfd write-protection; PAGEMAP_SCAN finds the written pages
    /// (cost: a walk of the page tables).
    PagemapScan,
    /// The kernel's soft-dirty bit (CONFIG_MEM_SOFT_DIRTY).
    SoftDirty,
    /// Every page, every time.
    Full,
}

impl Backend {
    pub const ALL: [Backend; 4] = [
        Backend::Ebpf,
        Backend::PagemapScan,
        Backend::SoftDirty,
        Backend::Full,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Ebpf => "ebpf",
            Backend::PagemapScan => "pagemap-scan",
            Backend::SoftDirty => "soft-dirty",
            Backend::Full => "full",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Whether this kernel offers the backend, or why not.
    pub fn available(self) -> Result<(), String> {
        match self {
            Backend::Full => Ok(()),
            Backend::PagemapScan => {
                write_protection()?;
                match crate::sys::uffd::move_keeps_protection() {
                    Ok(false) => Ok(()),
                    Ok(true) => Err("this kernel keeps the write-protection of a mapping mremap moves, so PAGEMAP_SCAN alone cannot tell a mapping moved onto another's range from the one that was there; use ebpf, which watches mremap".into()),
                    Err(e) => Err(format!("cannot probe what mremap does to a write-protected mapping: {}", e.desc())),
                }
            }
            Backend::Ebpf => {
                write_protection()?;
                ebpf::available()
            }
            Backend::SoftDirty => {
                if crate::sys::uffd::soft_dirty_works().unwrap_or(false) {
                    Err("the kernel sets the soft-dirty bit, but palisade tracks with userfaultfd; use pagemap-scan or ebpf".into())
                } else {
                    Err(
                        "this kernel never sets the soft-dirty bit (CONFIG_MEM_SOFT_DIRTY is off)"
                            .into(),
                    )
                }
            }
        }
    }

    /// The first of ebpf, pagemap-scan and full this kernel offers.
    pub fn best() -> Backend {
        [Backend::Ebpf, Backend::PagemapScan]
            .into_iter()
            .find(|b| b.available().is_ok())
            .unwrap_or(Backend::Full)
    }

    fn write_protects(self) -> bool {
        matches!(self, Backend::Ebpf | Backend::PagemapScan)
    }
}

/// Whether this kernel's userfaultfd write-protects asynchronously, or why not.
fn write_protection() -> Result<(), String> {
    crate::sys::uffd::tracking_features().map(drop).map_err(|e| {
        format!(
            "this kernel's userfaultfd lacks asynchronous write-protection (WP_ASYNC and WP_UNPOPULATED, Linux 6.7): {}",
            e.desc()
        )
    })
}

/// What a pre-dump is asked for.
pub struct PreDumpOptions<'a> {
    /// `<state root>/tracking`: the sessions.
    pub sessions: &'a Path,
    /// The chain's last image, for every step after the first.
    pub parent: Option<&'a Path>,
    /// For the first step (default [`Backend::best`]).
    pub backend: Option<Backend>,
    /// Tests: stop the tree while the written set is read, and check
    /// the eBPF recorder's set against PAGEMAP_SCAN's, page for page.
    pub cross_check: bool,
}

/// What a pre-dump did.
#[derive(Debug, Clone)]
pub struct PreDumpReport {
    pub generation: u32,
    pub backend: Backend,
    pub processes: usize,
    /// Pages found written since the parent (all of them, first time).
    pub dirty_pages: u64,
    /// Pages copied into this image.
    pub copied_pages: u64,
    /// Pages written in this step's interval and the parent's, left
    /// uncopied for a later step (the final one at the latest).
    pub hot_pages: u64,
    pub image_bytes: u64,
    /// How long the tree was stopped.
    pub stopped: Duration,
    /// Finding the written pages and protecting them again.
    pub detect: Duration,
    pub copy: Duration,
    pub write: Duration,
    /// Why this step read PAGEMAP_SCAN instead of the eBPF recorder.
    pub fell_back: Option<String>,
    /// How long the tree wrote the pages this step found (since the
    /// parent protected them); none for the first step.
    pub interval: Option<Duration>,
}

/// Written pages the eBPF recorder saw closer than this are protected
/// again by one PAGEMAP_SCAN over the span between them: walking 64 MiB
/// of page tables costs about what one more ioctl does.
const SPAN_GAP: u64 = 64 << 20;

/// A tracked process at one step: its userfaultfd and page map.
struct Target {
    pid: i32,
    start_time: u64,
    uffd: Option<OwnedFd>,
    pagemap: std::fs::File,
    mem: std::fs::File,
}

impl Target {
    fn open(pid: i32, uffd: Option<OwnedFd>) -> Result<Self, CheckpointError> {
        let open = |name: &str| {
            std::fs::File::open(proc::path(pid, name)).map_err(CheckpointError::file(
                pid,
                "open",
                proc::path(pid, name),
            ))
        };
        Ok(Target {
            pid,
            start_time: proc::start_time(pid).map_err(CheckpointError::file(
                pid,
                "read",
                proc::path(pid, "stat"),
            ))?,
            uffd,
            pagemap: open("pagemap")?,
            mem: open("mem")?,
        })
    }
}

/// The mappings of `pid` a chain copies: private, of a kind the dump
/// copies pages of (anonymous, or a file's copied-on-write pages).
fn trackable(pid: i32) -> Result<Vec<proc::MapLine>, CheckpointError> {
    let maps =
        proc::maps(pid).map_err(CheckpointError::file(pid, "read", proc::path(pid, "maps")))?;
    Ok(maps
        .into_iter()
        .filter(|m| m.perms.as_bytes().get(3) == Some(&b'p'))
        .filter(|m| {
            let p = m.path.as_str();
            anonymous(p) || (p.starts_with('/') && !p.ends_with(" (deleted)"))
        })
        .collect())
}

/// Whether a private mapping named `path` in /proc/PID/maps is anonymous
/// memory (no file behind it).
fn anonymous(path: &str) -> bool {
    path.is_empty() || path == "[heap]" || path == "[stack]" || path.starts_with("[anon:")
}

/// Whether this kernel needs the eBPF recorder to watch mremap: it keeps
/// a moved mapping's write-protection (or that cannot be told). The same
/// probe decides at a chain's first pre-dump and at each later command.
fn moves_watched() -> bool {
    crate::sys::uffd::move_keeps_protection().unwrap_or(true)
}

/// The pages of every trackable mapping of the tree under `pid`.
fn tracked_pages(pid: i32) -> u64 {
    proc::tree(pid)
        .into_iter()
        .filter_map(|(p, _)| trackable(p).ok())
        .flatten()
        .map(|m| (m.end - m.start) / index::PAGE)
        .sum()
}

fn same_mapping(m: &proc::MapLine, v: &TrackedVma) -> bool {
    m.start == v.start
        && m.end == v.end
        && m.perms == v.perms
        && m.offset == v.offset
        && m.inode == v.inode
}

/// The pages of mapping `m` a dump copies (present or swapped, not the
/// file's own).
fn resident(
    pagemap: &std::fs::File,
    pid: i32,
    m: &proc::MapLine,
) -> Result<Ranges, CheckpointError> {
    let (start, end) = (m.start, m.end);
    dump::process::resident_ranges(pagemap, start, end, anonymous(&m.path))
        .map_err(|e| CheckpointError::step(pid)(e.at(format!("{start:#x}-{end:#x}"))))
}

/// Copies `ranges` of `t` into `pages`.
fn copy(
    t: &Target,
    m: &proc::MapLine,
    ranges: &[(u64, u64)],
    pages: &mut PageWriter,
) -> Result<Vec<Run>, CheckpointError> {
    let source = if m.perms.starts_with('r') {
        Source::Process(t.pid)
    } else {
        Source::Mem(&t.mem)
    };
    pages
        .copy(source, ranges)
        .map_err(|e| CheckpointError::step(t.pid)(e.at(format!("{:#x}-{:#x}", m.start, m.end))))
}

/// Starts a chain: arms tracking in every process of the tree under
/// `pid` (stopped only for that), then copies all their pages while they
/// run. On failure tracking is disarmed and nothing is left.
pub fn pre_dump(
    pid: i32,
    dir: &ImageDir,
    key: &ImageKey,
    opts: &PreDumpOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<PreDumpReport, CheckpointError> {
    match opts.parent {
        None => first_pre_dump(pid, dir, key, opts, progress),
        Some(parent) => next_pre_dump(pid, parent, dir, key, opts, progress),
    }
}

fn random_id() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom(&mut b);
    image::hex(&b)
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

fn first_pre_dump(
    pid: i32,
    dir: &ImageDir,
    key: &ImageKey,
    opts: &PreDumpOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<PreDumpReport, CheckpointError> {
    if let Some(r) = session::load(opts.sessions, pid)? {
        return Err(CheckpointError::Chain(format!(
            "pid {pid} is already tracked by a pre-dump chain (last image {}, generation {}): go on with --parent {}, or end it with --stop-tracking",
            r.latest.display(),
            r.generation,
            r.latest.display()
        )));
    }
    let backend = opts.backend.unwrap_or_else(Backend::best);
    backend.available().map_err(|why| {
        CheckpointError::Chain(format!("dirty-tracking backend {}: {why}", backend.name()))
    })?;
    let mut record = session::Record {
        id: random_id(),
        pid,
        start_time: proc::start_time(pid).map_err(|_| CheckpointError::Process {
            pid,
            what: "no such process".into(),
        })?,
        backend: backend.name().into(),
        latest: PathBuf::new(),
        latest_blake3: String::new(),
        generation: 0,
        holder: 0,
        protected_at_ms: 0,
    };
    // The recorder is loaded (the verifier runs) before the tree stops.
    // Its ring holds events for a quarter of the tree's trackable pages
    // (each step maps it whole, a page-table entry per page of the ring):
    // a step that finds more written copies everything again, and says so.
    // It watches mremap only where a moved mapping stays protected (or
    // that cannot be told): elsewhere a step sees the move itself.
    let recorder = match backend {
        Backend::Ebpf => Some(
            ebpf::EbpfDirty::load_for(tracked_pages(pid) / 4, moves_watched())
                .map_err(|e| CheckpointError::Chain(format!("dirty-tracking backend ebpf: {e}")))?,
        ),
        _ => None,
    };
    let t0 = Instant::now();
    let (armed, stopped) = crate::sys::signal::holding_interrupts(|| {
        let frozen = dump::freeze(pid)?;
        let armed = if backend.write_protects() {
            arm_tree(&frozen, recorder)
        } else {
            Ok(Armed {
                uffds: Vec::new(),
                ebpf: None,
            })
        };
        let released = frozen.release();
        let stopped = t0.elapsed();
        let armed = armed?;
        released?;
        Ok::<_, CheckpointError>((armed, stopped))
    })?;
    record.protected_at_ms = session::now_ms();
    // The holder keeps the fds from here on; a failure below stops it.
    let link = if backend.write_protects() {
        let dup = |f: std::os::fd::BorrowedFd| {
            f.try_clone_to_owned()
                .map_err(CheckpointError::file(pid, "dup", "its userfaultfd"))
        };
        let mut held = session::Held {
            uffds: Vec::new(),
            maps: Vec::new(),
        };
        for (p, f) in &armed.uffds {
            held.uffds.push((*p, dup(f.as_fd())?));
        }
        if let Some(e) = &armed.ebpf {
            let m = e.map_fds();
            for f in [m.dirty, m.tracked, m.lost] {
                held.maps.push(dup(f)?);
            }
        }
        Some(session::start_holder(opts.sessions, &mut record, &held)?)
    } else {
        None
    };
    let holder = record.holder;
    let abort = |link: Option<session::Link>| {
        if let Some(l) = link {
            l.stop(holder);
        }
        session::remove(opts.sessions, pid);
    };
    let mut targets = Vec::new();
    for (p, fd) in armed.uffds {
        match Target::open(p, Some(fd)) {
            Ok(t) => targets.push(t),
            Err(e) => {
                abort(link);
                return Err(e);
            }
        }
    }
    if !backend.write_protects() {
        for (p, _) in proc::tree(pid) {
            match Target::open(p, None) {
                Ok(t) => targets.push(t),
                Err(e) => {
                    abort(link);
                    return Err(e);
                }
            }
        }
    }
    let step = Step {
        generation: 0,
        parent: None,
        backend,
        session: record.id.clone(),
    };
    let result = copy_step(&step, &targets, &HashMap::new(), dir, key, progress, None);
    match result {
        Ok((mut report, digest)) => {
            report.stopped = stopped;
            record.latest = canonical(dir.path());
            record.latest_blake3 = digest;
            if let Err(e) = session::save(opts.sessions, &record) {
                abort(link);
                return Err(e);
            }
            match link {
                Some(l) => keep(l, opts.sessions, pid, report),
                None => Ok(report),
            }
        }
        Err(e) => {
            abort(link);
            Err(e)
        }
    }
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Tracking armed in a stopped tree.
struct Armed {
    uffds: Vec<(i32, OwnedFd)>,
    ebpf: Option<ebpf::EbpfDirty>,
}

/// In every live process of the stopped tree: a userfaultfd, every
/// trackable mapping registered and protected; with `recorder`, it
/// follows each before its memory is protected, so no write after the
/// protection goes unseen.
fn arm_tree(frozen: &Frozen, recorder: Option<ebpf::EbpfDirty>) -> Result<Armed, CheckpointError> {
    let mut armed = Armed {
        uffds: Vec::new(),
        ebpf: recorder,
    };
    for m in frozen.members.iter().filter(|m| m.zombie.is_none()) {
        let fd = wp::userfaultfd_of(m.pid, &m.threads[0])?;
        if let Some(e) = armed.ebpf.as_mut() {
            e.track(m.pid).map_err(|e| CheckpointError::Process {
                pid: m.pid,
                what: format!("eBPF recorder: {e}"),
            })?;
        }
        for v in trackable(m.pid)? {
            wp::arm(fd.as_fd(), m.pid, v.start, v.end)?;
        }
        armed.uffds.push((m.pid, fd));
    }
    Ok(armed)
}

/// One step of a chain, as its image records it.
struct Step {
    generation: u32,
    parent: Option<ParentRef>,
    backend: Backend,
    session: String,
}

/// Copies, for each target, the pages of every trackable mapping that
/// `dirty` does not vouch for, into a new pre-dump in `dir`: `prior`
/// holds each process's mappings in the parent, with the pages found
/// written since it (the mapping's pages kept from the chain are the
/// others). Returns the report and the image's manifest digest.
#[allow(clippy::too_many_arguments)]
fn copy_step(
    step: &Step,
    targets: &[Target],
    prior: &HashMap<i32, Vec<(&TrackedVma, Ranges)>>,
    dir: &ImageDir,
    key: &ImageKey,
    progress: &mut dyn FnMut(u64),
    fell_back: Option<String>,
) -> Result<(PreDumpReport, String), CheckpointError> {
    let t0 = Instant::now();
    let mut pages = image::create_pages(dir, progress)?;
    let mut processes = Vec::new();
    let (mut dirty_pages, mut copied, mut deferred) = (0u64, 0u64, 0u64);
    for t in targets {
        let mut vmas = Vec::new();
        let before = prior.get(&t.pid);
        for m in trackable(t.pid)? {
            let kept = before.and_then(|b| b.iter().find(|(v, _)| same_mapping(&m, v)));
            let present = resident(&t.pagemap, t.pid, &m)?;
            let (to_copy, kept_runs) = match kept {
                Some((v, written)) => {
                    let kept_runs = index::runs_outside(&index::inherited(&v.runs), written);
                    dirty_pages += written.iter().map(|r| r.1 / index::PAGE).sum::<u64>();
                    // Present pages with no copy in the chain, or written.
                    let mut to_copy = index::subtract(&present, &index::covered(&kept_runs));
                    // Hot pages (written in the parent's interval too) are
                    // left for a later step, the final one at the latest:
                    // a copy now would likely be stale at once. Generation
                    // 0 copied everything, so it tells nothing.
                    if step.generation >= 2 {
                        let hot = index::intersect(written, &index::covered(&own(&v.runs)));
                        deferred += hot.iter().map(|r| r.1 / index::PAGE).sum::<u64>();
                        to_copy = index::subtract(&to_copy, &hot);
                    }
                    (to_copy, kept_runs)
                }
                None => {
                    dirty_pages += present.iter().map(|r| r.1 / index::PAGE).sum::<u64>();
                    (present, Vec::new())
                }
            };
            copied += to_copy.iter().map(|r| r.1 / index::PAGE).sum::<u64>();
            let runs = copy(t, &m, &to_copy, &mut pages)?;
            vmas.push(TrackedVma {
                start: m.start,
                end: m.end,
                perms: m.perms.clone(),
                offset: m.offset,
                inode: m.inode,
                runs: index::merge(runs, kept_runs),
                runs_at: 0,
                runs_count: 0,
            });
        }
        processes.push(TrackedProcess {
            pid: t.pid,
            start_time: t.start_time,
            vmas,
        });
    }
    let copy_time = t0.elapsed();
    let t1 = Instant::now();
    let pages_len = pages.len();
    let digests = pages.finish().map_err(|e| {
        CheckpointError::Write(format!("{}: {e}", dir.path().join(image::PAGES).display()))
    })?;
    let mut pre = PreDump {
        generation: step.generation,
        parent: step.parent.clone(),
        backend: step.backend.name().into(),
        session: step.session.clone(),
        processes,
        pages_len,
    };
    let digest = image::write_pre_dump(dir, &mut pre, digests, key)?;
    Ok((
        PreDumpReport {
            generation: step.generation,
            backend: step.backend,
            processes: targets.len(),
            dirty_pages,
            copied_pages: copied,
            hot_pages: deferred,
            image_bytes: pages_len,
            stopped: Duration::ZERO,
            detect: Duration::ZERO,
            copy: copy_time,
            write: t1.elapsed(),
            fell_back,
            interval: None,
        },
        digest,
    ))
}

/// The runs a pre-dump copied itself (its pages written in its interval).
fn own(runs: &[Run]) -> Vec<Run> {
    runs.iter().filter(|r| r.from == 0).copied().collect()
}

/// Checks that `parent` is the last image of `pid`'s chain; returns the
/// session, the parent pre-dump and the reference a child records.
fn chain_of(
    sessions: &Path,
    pid: i32,
    parent: &Path,
    key: &ImageKey,
) -> Result<(session::Record, PreDump, ParentRef), CheckpointError> {
    let (pre, digest) = image::read_pre_dump(parent, key)?;
    let record = session::load(sessions, pid)?.ok_or_else(|| {
        CheckpointError::Chain(format!(
            "pid {pid} has no tracking session (never pre-dumped, stopped, or its holder ended): start a chain with --pre-dump and no --parent"
        ))
    })?;
    if pre.session != record.id || digest != record.latest_blake3 {
        return Err(CheckpointError::Chain(format!(
            "--parent {}: not the last image of pid {pid}'s chain (that is {}, generation {})",
            parent.display(),
            record.latest.display(),
            record.generation
        )));
    }
    let reference = ParentRef {
        dir: canonical(parent),
        manifest_blake3: digest,
        generation: pre.generation,
    };
    Ok((record, pre, reference))
}

fn next_pre_dump(
    pid: i32,
    parent: &Path,
    dir: &ImageDir,
    key: &ImageKey,
    opts: &PreDumpOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<PreDumpReport, CheckpointError> {
    let (mut record, pre, reference) = chain_of(opts.sessions, pid, parent, key)?;
    let backend = Backend::parse(&record.backend).unwrap_or(Backend::Full);
    if let Some(b) = opts.backend
        && b != backend
    {
        return Err(CheckpointError::Chain(format!(
            "--track {}: this chain tracks with {} (chosen at its first pre-dump)",
            b.name(),
            backend.name()
        )));
    }
    let step = Step {
        generation: pre.generation + 1,
        parent: Some(reference),
        backend,
        session: record.id.clone(),
    };
    if !backend.write_protects() {
        let targets: Vec<Target> = proc::tree(pid)
            .into_iter()
            .map(|(p, _)| Target::open(p, None))
            .collect::<Result<_, _>>()?;
        let (report, digest) =
            copy_step(&step, &targets, &HashMap::new(), dir, key, progress, None)?;
        advance(opts.sessions, &mut record, dir, digest, &step)?;
        return Ok(report);
    }
    let (link, held) = session::connect(opts.sessions, &record)?;
    let holder = record.holder;
    let result = (|| {
        let ebpf = match backend {
            Backend::Ebpf => {
                let mut e = recorder_of(pid, held.maps)?;
                e.unstash(&session::stash_of(opts.sessions, pid))
                    .map_err(recorder_error(pid))?;
                Some(e)
            }
            _ => None,
        };
        let mut targets = Vec::new();
        for (p, fd) in held.uffds {
            let same = pre
                .processes
                .iter()
                .any(|t| t.pid == p && proc::start_time(p).ok() == Some(t.start_time));
            if same {
                targets.push(Target::open(p, Some(fd))?);
            }
        }
        let t0 = Instant::now();
        let (detected, stopped) = crate::sys::signal::holding_interrupts(|| {
            let frozen = if opts.cross_check {
                Some(dump::freeze(pid)?)
            } else {
                None
            };
            let detected = detect(&targets, &pre, ebpf, opts.cross_check);
            let stopped = t0.elapsed();
            if let Some(f) = frozen {
                f.release()?;
            }
            Ok::<_, CheckpointError>((detected, stopped))
        })?;
        let (prior, fell_back) = detected?;
        let detect_time = t0.elapsed();
        let now = session::now_ms();
        let interval = Duration::from_millis(now.saturating_sub(record.protected_at_ms));
        record.protected_at_ms = now;
        let (mut report, digest) =
            copy_step(&step, &targets, &prior, dir, key, progress, fell_back)?;
        report.detect = detect_time;
        report.interval = Some(interval);
        report.stopped = if opts.cross_check {
            stopped
        } else {
            Duration::ZERO
        };
        advance(opts.sessions, &mut record, dir, digest, &step)?;
        Ok(report)
    })();
    match result {
        Ok(report) => keep(link, opts.sessions, pid, report),
        Err(e) => {
            // The written pages were protected again and not copied: the
            // chain cannot go on. Tracking ends, leaving nothing.
            link.stop(holder);
            session::remove(opts.sessions, pid);
            Err(e)
        }
    }
}

/// A handle on the eBPF recorder a session's holder keeps loaded.
fn recorder_of(pid: i32, maps: Vec<OwnedFd>) -> Result<ebpf::EbpfDirty, CheckpointError> {
    match <[OwnedFd; 3]>::try_from(maps) {
        Ok([dirty, tracked, lost]) => {
            ebpf::EbpfDirty::from_held_map_fds(dirty, tracked, lost).map_err(recorder_error(pid))
        }
        Err(maps) => Err(CheckpointError::Process {
            pid,
            what: format!("its tracking session sent {} eBPF maps, not 3", maps.len()),
        }),
    }
}

fn recorder_error(pid: i32) -> impl Fn(ebpf::TrackError) -> CheckpointError {
    move |e| CheckpointError::Process {
        pid,
        what: format!("eBPF recorder: {e}"),
    }
}

/// Tells the holder the chain goes on; if it is gone meanwhile, so is
/// the session, and the step fails saying so.
fn keep(
    link: session::Link,
    sessions: &Path,
    pid: i32,
    report: PreDumpReport,
) -> Result<PreDumpReport, CheckpointError> {
    link.keep().map(|_| report).map_err(|e| {
        session::remove(sessions, pid);
        CheckpointError::Process {
            pid,
            what: format!("its tracking session ended early: {e}"),
        }
    })
}

/// Records `dir` as the chain's last image.
fn advance(
    sessions: &Path,
    record: &mut session::Record,
    dir: &ImageDir,
    digest: String,
    step: &Step,
) -> Result<(), CheckpointError> {
    record.latest = canonical(dir.path());
    record.latest_blake3 = digest;
    record.generation = step.generation;
    session::save(sessions, record)?;
    // This step took in what a failed final checkpoint left.
    let stash = session::stash_of(sessions, record.pid);
    match std::fs::remove_file(&stash) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CheckpointError::Write(format!(
            "{}: cannot remove: {e}",
            stash.display()
        ))),
        _ => Ok(()),
    }
}

/// For each target, its mappings of the parent that are still the same
/// mapping, each with the pages written since (protected again); a
/// mapping that is new or changed is registered and protected whole (and
/// absent from the result, so all its pages are copied).
#[allow(clippy::type_complexity)]
fn detect<'p>(
    targets: &[Target],
    pre: &'p PreDump,
    mut ebpf: Option<ebpf::EbpfDirty>,
    cross_check: bool,
) -> Result<(HashMap<i32, Vec<(&'p TrackedVma, Ranges)>>, Option<String>), CheckpointError> {
    let mut prior = HashMap::new();
    let mut fell_back = None;
    // Every tracked process's pages in one pass over the recorder's map.
    let mut drained = match ebpf.as_mut() {
        Some(e) => {
            let pids: Vec<i32> = targets.iter().map(|t| t.pid).collect();
            Some(e.drain_all(&pids).map_err(|e| CheckpointError::Process {
                pid: pids.first().copied().unwrap_or(0),
                what: format!("eBPF recorder: {e}"),
            })?)
        }
        None => None,
    };
    for t in targets {
        let uffd = t.uffd.as_ref().expect("a write-protecting backend").as_fd();
        let before = &pre
            .processes
            .iter()
            .find(|p| p.pid == t.pid)
            .expect("checked")
            .vmas;
        // The pages the recorder saw written, and the ranges whose
        // mappings moved; with events lost, nothing is known and every
        // mapping is taken as changed.
        let (recorded, moved) = match drained.as_mut().and_then(|d| d.remove(&t.pid)) {
            Some(d) if d.overflowed => {
                // Where moves are not watched (the kernel drops a moved
                // mapping's registration), only written pages were lost,
                // and PAGEMAP_SCAN finds them; else nothing is known.
                if moves_watched() {
                    fell_back = Some(
                        "the eBPF recorder lost events (its ring filled up): this step protected and copied every mapping again"
                            .to_string(),
                    );
                    (None, None)
                } else {
                    fell_back = Some(
                        "the eBPF recorder's ring filled up: this step read PAGEMAP_SCAN instead"
                            .to_string(),
                    );
                    (None, Some(Vec::new()))
                }
            }
            Some(d) => (Some(index::ranges_of_pages(d.pages)), Some(d.moved)),
            None => (None, Some(Vec::new())),
        };
        let mut mine = Vec::new();
        for m in trackable(t.pid)? {
            let registered = wp::registered(t.pagemap.as_fd(), t.pid, m.start)?;
            let stayed = moved
                .as_ref()
                .is_some_and(|moved| !overlaps(moved, m.start, m.end));
            match before.iter().find(|v| same_mapping(&m, v)) {
                Some(v) if registered && stayed => {
                    let whole = [(m.start, m.end - m.start)];
                    let written = match &recorded {
                        Some(rec) => {
                            let mine = index::intersect(rec, &whole);
                            if cross_check {
                                let scanned =
                                    wp::written(t.pagemap.as_fd(), t.pid, m.start, m.end)?;
                                if scanned != mine {
                                    return Err(CheckpointError::Process {
                                        pid: t.pid,
                                        what: format!(
                                            "cross-check of {:#x}-{:#x}: the eBPF recorder saw {}, PAGEMAP_SCAN {}; only the recorder: {}; only the scan: {}",
                                            m.start,
                                            m.end,
                                            summary(&mine),
                                            summary(&scanned),
                                            summary(&index::subtract(&mine, &scanned)),
                                            summary(&index::subtract(&scanned, &mine)),
                                        ),
                                    });
                                }
                            }
                            // PAGEMAP_SCAN over the spans the recorder
                            // saw written reports every written page in
                            // them (a page written without a fault, by
                            // process_vm_writev, is caught too), and each
                            // found range is protected again. Mappings
                            // with no recorded write are not walked.
                            let mut found = Vec::new();
                            for (s, l) in index::spans(&mine, SPAN_GAP) {
                                found.extend(wp::written_and_protected(
                                    uffd,
                                    t.pagemap.as_fd(),
                                    t.pid,
                                    s,
                                    s + l,
                                )?);
                            }
                            index::coalesce(found)
                        }
                        None => wp::written_and_protected(
                            uffd,
                            t.pagemap.as_fd(),
                            t.pid,
                            m.start,
                            m.end,
                        )?,
                    };
                    mine.push((v, written));
                }
                _ => {
                    // New, changed, moved or no longer registered:
                    // registered and protected whole, then copied whole.
                    if !registered {
                        wp::arm(uffd, t.pid, m.start, m.end)?;
                    } else {
                        wp::protect(uffd, t.pid, m.start, m.end)?;
                    }
                }
            }
        }
        prior.insert(t.pid, mine);
    }
    Ok((prior, fell_back))
}

/// Whether any of `ranges` (start, bytes) meets [start, end).
fn overlaps(ranges: &[(u64, u64)], start: u64, end: u64) -> bool {
    ranges
        .iter()
        .any(|&(s, l)| s < end && s.saturating_add(l) > start)
}

fn summary(r: &[(u64, u64)]) -> String {
    let pages: u64 = r.iter().map(|x| x.1 / index::PAGE).sum();
    let first: Vec<String> = r
        .iter()
        .take(4)
        .map(|(s, l)| format!("{s:#x}+{}", l / index::PAGE))
        .collect();
    format!("{pages} pages ({}…)", first.join(", "))
}

/// A final checkpoint's chain: checked before the tree is stopped.
pub struct Chain {
    record: session::Record,
    pre: PreDump,
    reference: ParentRef,
    sessions: PathBuf,
}

impl Chain {
    /// The chain `parent` ends, for the final checkpoint of `pid`: refused
    /// (nothing touched) unless `parent` is its last image.
    pub fn open(
        sessions: &Path,
        pid: i32,
        parent: &Path,
        key: &ImageKey,
    ) -> Result<Self, CheckpointError> {
        let (record, pre, reference) = chain_of(sessions, pid, parent, key)?;
        Ok(Chain {
            record,
            pre,
            reference,
            sessions: sessions.to_path_buf(),
        })
    }

    pub fn parent(&self) -> &ParentRef {
        &self.reference
    }

    pub fn backend(&self) -> &str {
        &self.record.backend
    }

    /// With the tree stopped: for each process of the chain, its mappings
    /// that are still the same with the runs the chain still holds for
    /// them (the pages written since, from PAGEMAP_SCAN, taken out).
    pub fn prior(&self) -> Result<Prior, CheckpointError> {
        let mut kept = HashMap::new();
        let mut protected = std::collections::HashSet::new();
        let backend = Backend::parse(&self.record.backend);
        let protects = backend.is_some_and(Backend::write_protects);
        // Moves are recorded only where the kernel keeps a moved mapping's
        // protection (as the first pre-dump decided, by the same probe);
        // elsewhere a move shows as a mapping no longer registered, and
        // the recorder's ring is left alone for a later step.
        let watched = backend == Some(Backend::Ebpf) && moves_watched();
        let moved = if watched { Some(self.moved()?) } else { None };
        for p in &self.pre.processes {
            if proc::start_time(p.pid).ok() != Some(p.start_time) {
                continue;
            }
            // Mappings the recorder saw move (or all, if it lost events).
            let moved_here = moved.as_ref().map(|m| m.get(&p.pid));
            let stayed = |start: u64, end: u64| match moved_here {
                None => true,
                Some(None) => false,
                Some(Some(ranges)) => !overlaps(ranges, start, end),
            };
            if protects {
                protected.insert(p.pid);
            }
            let t = Target::open(p.pid, None)?;
            let mut vmas = Vec::new();
            for m in trackable(p.pid)? {
                let registered = protects && wp::registered(t.pagemap.as_fd(), p.pid, m.start)?;
                let Some(v) = p.vmas.iter().find(|v| same_mapping(&m, v)) else {
                    continue;
                };
                // Without protection (`full`, or a mapping no longer
                // registered) nothing is known to be unchanged; nor of a
                // range a mapping moved from or to.
                if !(protects && registered && stayed(m.start, m.end)) {
                    continue;
                }
                let written = wp::changed(t.pagemap.as_fd(), p.pid, m.start, m.end)?;
                vmas.push((
                    m.start,
                    m.end,
                    index::runs_outside(&index::inherited(&v.runs), &written),
                ));
            }
            kept.insert(p.pid, vmas);
        }
        Ok(Prior { kept, protected })
    }

    /// By pid, the ranges the eBPF recorder saw mappings move from or to
    /// since the last step (a process that lost events is absent). They
    /// are read without being consumed: stashed in the session for the
    /// next step, should this checkpoint fail.
    fn moved(&self) -> Result<HashMap<i32, Vec<(u64, u64)>>, CheckpointError> {
        let pid = self.record.pid;
        let (link, held) = session::connect(&self.sessions, &self.record)?;
        let read = (|| {
            let mut e = recorder_of(pid, held.maps)?;
            let stash = session::stash_of(&self.sessions, pid);
            e.unstash(&stash).map_err(recorder_error(pid))?;
            let pids: Vec<i32> = self.pre.processes.iter().map(|p| p.pid).collect();
            e.stash(&stash, &pids).map_err(recorder_error(pid))?;
            Ok(pids
                .into_iter()
                .filter_map(|p| match e.pending(p) {
                    Some(d) if d.overflowed => None,
                    Some(d) => Some((p, d.moved.clone())),
                    None => Some((p, Vec::new())),
                })
                .collect())
        })();
        link.keep().map_err(|e| CheckpointError::Process {
            pid,
            what: format!("its tracking session ended early: {e}"),
        })?;
        read
    }

    /// Ends the chain's tracking once the final image is written.
    pub fn finish(self) {
        stop(&self.sessions, &self.record);
    }
}

/// Runs a final checkpoint takes from its chain instead of copying.
#[derive(Default)]
pub struct Prior {
    /// By pid: (start, end, runs in the chain) of each unchanged mapping.
    kept: HashMap<i32, Vec<(u64, u64, Vec<Run>)>>,
    /// The processes whose write-protection is the chain's own.
    protected: std::collections::HashSet<i32>,
}

impl Prior {
    /// Whether `pid`'s userfaultfd registrations are the chain's.
    pub fn protects(&self, pid: i32) -> bool {
        self.protected.contains(&pid)
    }

    /// Splits `present` (the pages of `pid`'s mapping [start, end) a dump
    /// copies) into those to copy and the runs the chain holds for the
    /// others.
    pub fn split(&self, pid: i32, start: u64, end: u64, present: Ranges) -> (Ranges, Vec<Run>) {
        let Some((_, _, runs)) = self
            .kept
            .get(&pid)
            .and_then(|v| v.iter().find(|(s, e, _)| *s == start && *e == end))
        else {
            return (present, Vec::new());
        };
        let kept = index::runs_inside(runs, &present);
        (index::subtract(&present, &index::covered(&kept)), kept)
    }
}

/// Ends `pid`'s tracking (`checkpoint --stop-tracking`): the holder exits,
/// the kernel drops every protection and the eBPF programs; refused if
/// there is none.
pub fn stop_tracking(sessions: &Path, pid: i32) -> Result<(), CheckpointError> {
    let record = session::load(sessions, pid)?.ok_or_else(|| {
        CheckpointError::Chain(format!("pid {pid} is not tracked by a pre-dump chain"))
    })?;
    stop(sessions, &record);
    Ok(())
}

fn stop(sessions: &Path, record: &session::Record) {
    if record.holder > 0
        && let Ok((link, _)) = session::connect(sessions, record)
    {
        link.stop(record.holder);
    }
    session::remove(sessions, record.pid);
}
