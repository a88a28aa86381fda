//! Dump: seize and stop the process, refuse what this slice cannot
//! restore, record everything into the image, then end the original (or
//! let it continue unchanged with `--leave-running`).

use std::time::{Duration, Instant};

use nix::{sys::signal::Signal, unistd::Pid};

use super::{
    CheckpointError, files,
    image::{self, Image, Process, Registers},
    imagedir::ImageDir,
    pages::PageWriter,
    proc,
    remote::resume_regs,
    sign::ImageKey,
};
use crate::sys::ptrace;

pub(super) mod process;

#[derive(Debug, Clone, Copy)]
pub struct DumpOptions {
    pub leave_running: bool,
}

/// Where a dump goes: an image directory made for it, and the key that
/// signs the image.
#[derive(Clone, Copy)]
pub struct ImageTarget<'a> {
    pub dir: &'a ImageDir,
    pub key: &'a ImageKey,
}

/// What a dump did, for the CLI to report.
#[derive(Debug, Clone)]
pub struct DumpReport {
    pub pid: i32,
    pub processes: usize,
    pub threads: usize,
    pub vmas: usize,
    pub pages: u64,
    pub image_bytes: u64,
    /// Seizing and stopping every task.
    pub freeze: Duration,
    /// Reading everything, the pages streamed into pages.img meanwhile.
    pub dump: Duration,
    /// Flushing pages.img, writing files.img and meta.json.
    pub write: Duration,
}

/// The image's registers and ptrace's `user_regs_struct` have the same
/// fields; one list converts both ways.
macro_rules! same_registers {
    ($($field:ident),* $(,)?) => {
        impl From<ptrace::Regs> for Registers {
            fn from(r: ptrace::Regs) -> Self {
                Registers { $($field: r.$field),* }
            }
        }

        impl From<Registers> for ptrace::Regs {
            fn from(r: Registers) -> Self {
                ptrace::Regs { $($field: r.$field),* }
            }
        }
    };
}

same_registers!(
    r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8, rax, rcx, rdx, rsi, rdi, orig_rax, rip, cs,
    eflags, rsp, ss, fs_base, gs_base, ds, es, fs, gs,
);

/// A task we seized and stopped, with the registers it stopped with.
pub(super) struct Stopped {
    pub(super) tid: i32,
    pub(super) regs: ptrace::Regs,
    /// Signals that arrived while we drove it with remote syscalls; sent
    /// again when it is let go.
    deferred: Vec<i32>,
}

/// A process of the frozen tree.
pub(super) struct Member {
    pub(super) pid: i32,
    parent: i32,
    /// Wait status, for a zombie (which cannot be seized).
    pub(super) zombie: Option<i32>,
    /// Its threads, the main thread first; empty for a zombie.
    pub(super) threads: Vec<Stopped>,
    /// It was in a group stop (SIGSTOP…) before we seized it.
    stopped: bool,
}

/// The process tree under `root`, every thread of it stopped.
pub(super) struct Frozen {
    pub(super) members: Vec<Member>,
}

impl Frozen {
    /// Puts back every register our remote syscalls changed, lets every
    /// task go on and re-sends the signals held back meanwhile.
    pub(super) fn release(&self) -> Result<(), CheckpointError> {
        let mut first_error = None;
        for m in &self.members {
            for t in &m.threads {
                let r = ptrace::set_regs(t.tid, &resume_regs(t.regs))
                    .map_err(CheckpointError::sys(t.tid, "restore registers"))
                    .and_then(|_| {
                        ptrace::detach(t.tid, None)
                            .map_err(CheckpointError::sys(t.tid, "ptrace detach"))
                    });
                if let Err(e) = r {
                    first_error.get_or_insert(e);
                }
                for sig in &t.deferred {
                    if let Ok(sig) = Signal::try_from(*sig) {
                        let _ = nix::sys::signal::kill(Pid::from_raw(m.pid), sig);
                    }
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Seizes and stops every thread of `root` and of its descendants. Tasks
/// that appear meanwhile (a fork or a thread start racing with us) are
/// caught by scanning again until a scan finds nothing new: once every
/// task is stopped, nothing can create another.
pub(super) fn freeze(root: i32) -> Result<Frozen, CheckpointError> {
    let mut frozen = Frozen {
        members: Vec::new(),
    };
    let result = freeze_into(root, &mut frozen);
    match result {
        Ok(()) => Ok(frozen),
        Err(e) => {
            let _ = frozen.release();
            Err(e)
        }
    }
}

fn freeze_into(root: i32, frozen: &mut Frozen) -> Result<(), CheckpointError> {
    if !proc::path(root, "").exists() {
        return Err(CheckpointError::Process {
            pid: root,
            what: "no such process".into(),
        });
    }
    loop {
        let mut found_new = false;
        for (pid, parent) in proc::tree(root) {
            let stat = match proc::Stat::read(pid) {
                Ok(s) => s,
                Err(_) => continue,
            };
            let index = match frozen.members.iter().position(|m| m.pid == pid) {
                Some(i) => i,
                None => {
                    found_new = true;
                    frozen.members.push(Member {
                        pid,
                        parent: if pid == root { 0 } else { parent },
                        zombie: None,
                        threads: Vec::new(),
                        stopped: stat.state() == 'T',
                    });
                    frozen.members.len() - 1
                }
            };
            let tids = proc::tids(pid);
            if stat.state() == 'Z' {
                if tids.len() > 1 {
                    return Err(CheckpointError::Unsupported {
                        pid,
                        what: "its main thread has exited while other threads run".into(),
                    });
                }
                if pid == root {
                    return Err(CheckpointError::Process {
                        pid,
                        what: "it is a zombie".into(),
                    });
                }
                frozen.members[index].zombie = Some(stat.field(52) as i32);
                continue;
            }
            for tid in tids {
                if frozen.members[index].threads.iter().any(|t| t.tid == tid) {
                    continue;
                }
                found_new = true;
                let tracer = task_status(pid, tid, "TracerPid:").unwrap_or(0);
                if tracer != 0 {
                    return Err(CheckpointError::Unsupported {
                        pid: tid,
                        what: format!(
                            "it is traced by pid {tracer} (a debugger or another tracer): only one tracer can hold a task"
                        ),
                    });
                }
                // Under seccomp (strict mode or filters) the remote calls
                // we inject would be refused or kill the task: suspended.
                let seccomp = task_status(pid, tid, "Seccomp:").is_some_and(|v| v != 0);
                let options = libc::PTRACE_O_TRACESYSGOOD
                    | if seccomp {
                        ptrace::O_SUSPEND_SECCOMP
                    } else {
                        0
                    };
                match ptrace::seize(tid, options) {
                    Ok(()) => {}
                    // It ended between the listing and now.
                    Err(nix::errno::Errno::ESRCH) => continue,
                    Err(nix::errno::Errno::EPERM) if seccomp => {
                        return Err(CheckpointError::Unsupported {
                            pid: tid,
                            what: "it runs under seccomp, and suspending seccomp while it is checkpointed (PTRACE_O_SUSPEND_SECCOMP) needs CAP_SYS_ADMIN, which palisade lacks here".into(),
                        });
                    }
                    Err(e) => return Err(CheckpointError::sys(tid, "ptrace seize")(e)),
                }
                let status = ptrace::interrupt(tid)
                    .and_then(|_| ptrace::wait(tid))
                    .map_err(CheckpointError::sys(tid, "ptrace interrupt"))?;
                if !libc::WIFSTOPPED(status) {
                    // It ended while being stopped: the next scan sees.
                    continue;
                }
                let regs =
                    ptrace::get_regs(tid).map_err(CheckpointError::sys(tid, "read registers"))?;
                let m = &mut frozen.members[index];
                let stopped = Stopped {
                    tid,
                    regs,
                    deferred: Vec::new(),
                };
                // The main thread first.
                if tid == pid {
                    m.threads.insert(0, stopped);
                } else {
                    m.threads.push(stopped);
                }
            }
        }
        if !found_new {
            break;
        }
    }
    // Processes and threads that ended while we froze the rest.
    frozen
        .members
        .retain(|m| m.zombie.is_some() || !m.threads.is_empty() || proc::path(m.pid, "").exists());
    for m in &frozen.members {
        if m.zombie.is_none() && m.threads.first().map(|t| t.tid) != Some(m.pid) {
            return Err(CheckpointError::Process {
                pid: m.pid,
                what: "ended while the tree was being stopped".into(),
            });
        }
    }
    Ok(())
}

/// A number of thread `tid`'s status (`key` with its colon).
fn task_status(pid: i32, tid: i32, key: &str) -> Option<i64> {
    std::fs::read_to_string(proc::path(pid, &format!("task/{tid}/status")))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
}

/// Checkpoints process `pid` and all its descendants into `dir`, signed
/// with `key`; `progress` is called with the bytes of pages written so
/// far.
pub fn checkpoint_pid(
    pid: i32,
    dir: &ImageDir,
    key: &ImageKey,
    opts: DumpOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<DumpReport, CheckpointError> {
    let t0 = Instant::now();
    let frozen = freeze(pid)?;
    let freeze = t0.elapsed();
    let target = ImageTarget { dir, key };
    dump_into(pid, frozen, target, opts, progress, freeze, None, |image| {
        refuse_pdeathsig(pid, image)
    })
}

/// The final checkpoint of `pid`'s pre-dump chain `chain`: like
/// [`checkpoint_pid`], but the pages the chain holds unchanged are named
/// in the image, not copied; the chain's tracking ends once it is
/// written. On failure the tree runs on, still tracked.
pub fn checkpoint_pid_chained(
    pid: i32,
    dir: &ImageDir,
    key: &ImageKey,
    opts: DumpOptions,
    progress: &mut dyn FnMut(u64),
    chain: crate::checkpoint::track::Chain,
) -> Result<DumpReport, CheckpointError> {
    let t0 = Instant::now();
    let frozen = freeze(pid)?;
    let freeze = t0.elapsed();
    let target = ImageTarget { dir, key };
    let report = dump_into(
        pid,
        frozen,
        target,
        opts,
        progress,
        freeze,
        Some(&chain),
        |image| refuse_pdeathsig(pid, image),
    )?;
    chain.finish();
    Ok(report)
}

fn refuse_pdeathsig(pid: i32, image: &Image) -> Result<(), CheckpointError> {
    let sig = image.processes[0].state.pdeathsig;
    if sig != 0 {
        return Err(CheckpointError::Unsupported {
            pid,
            what: format!(
                "parent-death signal {sig} (PR_SET_PDEATHSIG): the restored process has another parent, and the restorer's exit would send it"
            ),
        });
    }
    Ok(())
}

/// Dumps the frozen tree under `root` into `dir` — its pages streamed
/// into pages.img as they are read — with `check` given the image first
/// (to refuse it, or complete it), then ends the tree or, with
/// `leave_running`, lets it go on. With the pre-dump `chain` it ends, the
/// pages the chain holds unchanged are named, not copied, and the image
/// names its parent. On any failure every task goes on unchanged and
/// nothing of the image is left.
// The steps' inputs, each from a different caller's stage; a struct of
// them would only be unpacked again here.
#[allow(clippy::too_many_arguments)]
pub(super) fn dump_into(
    root: i32,
    mut frozen: Frozen,
    ImageTarget { dir, key }: ImageTarget,
    opts: DumpOptions,
    progress: &mut dyn FnMut(u64),
    freeze: Duration,
    chain: Option<&crate::checkpoint::track::Chain>,
    check: impl FnOnce(&mut Image) -> Result<(), CheckpointError>,
) -> Result<DumpReport, CheckpointError> {
    let t1 = Instant::now();
    let discard = || dir.discard();
    let collected = image::create_pages(dir, progress).and_then(|mut pages| {
        if let Some(c) = chain {
            pages.set_prior(c.prior()?);
        }
        let mut dumped = collect_tree(root, &mut frozen, &mut pages)?;
        dumped.image.parent = chain.map(|c| c.parent().clone());
        check(&mut dumped.image)?;
        Ok((dumped, pages))
    });
    let (Dumped { image, files }, pages) = match collected {
        Ok(v) => v,
        Err(e) => {
            let _ = frozen.release();
            discard();
            return Err(e);
        }
    };
    let dump = t1.elapsed();
    let t2 = Instant::now();
    let written = pages
        .finish()
        .map_err(|e| {
            CheckpointError::Write(format!("{}: {e}", dir.path().join(image::PAGES).display()))
        })
        .and_then(|digests| image::write(dir, &image, &files, digests, key));
    if let Err(e) = written {
        let _ = frozen.release();
        discard();
        return Err(e);
    }
    let write = t2.elapsed();
    if opts.leave_running {
        frozen.release()?;
    } else {
        end(&frozen)?;
    }
    Ok(DumpReport::of(root, &image, [freeze, dump, write]))
}

impl DumpReport {
    pub(super) fn of(pid: i32, image: &Image, [freeze, dump, write]: [Duration; 3]) -> Self {
        DumpReport {
            pid,
            processes: image.processes.len(),
            threads: image.processes.iter().map(|p| p.threads.len()).sum(),
            vmas: image.processes.iter().map(|p| p.vmas.len()).sum(),
            pages: image.pages_len / 4096,
            image_bytes: image.pages_len,
            freeze,
            dump,
            write,
        }
    }
}

/// SIGKILLs every stopped process of the tree, reaps our traces, and
/// waits (up to 10 s) for their parents to free the pids.
pub(super) fn end(frozen: &Frozen) -> Result<(), CheckpointError> {
    for m in frozen.members.iter().rev().filter(|m| m.zombie.is_none()) {
        nix::sys::signal::kill(Pid::from_raw(m.pid), Signal::SIGKILL)
            .map_err(CheckpointError::sys(m.pid, "kill"))?;
    }
    // Our traces of their exits are collected in whatever order they
    // come: a thread group leader's is reported only after its other
    // threads', and a pid namespace's init waits for its children.
    let mut pending: Vec<i32> = frozen
        .members
        .iter()
        .flat_map(|m| m.threads.iter().map(|t| t.tid))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pending.is_empty() && Instant::now() < deadline {
        pending.retain(|tid| match ptrace::wait_nohang(*tid) {
            Ok(Some(status)) => !(libc::WIFEXITED(status) || libc::WIFSIGNALED(status)),
            Ok(None) => true,
            Err(_) => false,
        });
        std::thread::sleep(Duration::from_millis(1));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for m in &frozen.members {
        while proc::path(m.pid, "").exists() {
            if Instant::now() > deadline {
                let parent = proc::Stat::read(m.pid).map(|s| s.field(4)).unwrap_or(0);
                return Err(CheckpointError::Process {
                    pid: m.pid,
                    what: format!(
                        "killed after the dump, but its parent (pid {parent}) has not reaped it: the pid is not free yet"
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Ok(())
}

/// A dumped tree: its metadata and files.img (its pages went to the
/// page writer).
pub(super) struct Dumped {
    pub image: Image,
    pub files: Vec<u8>,
}

/// Dumps every process of the frozen tree.
pub(super) fn collect_tree(
    root: i32,
    frozen: &mut Frozen,
    pages: &mut PageWriter,
) -> Result<Dumped, CheckpointError> {
    let mut image = Image {
        root,
        processes: Vec::new(),
        shared_memory: Vec::new(),
        files: Vec::new(),
        pages_len: 0,
        container: None,
        parent: None,
    };
    let mut table = files::Table::default();
    for m in &mut frozen.members {
        let stat = proc::Stat::read(m.pid).map_err(CheckpointError::file(
            m.pid,
            "read",
            proc::path(m.pid, "stat"),
        ))?;
        let mut p = Process {
            pid: m.pid,
            parent: m.parent,
            pgid: stat.field(5) as i32,
            sid: stat.field(6) as i32,
            zombie: m.zombie,
            comm: String::new(),
            exe: String::new(),
            cwd: String::new(),
            root: "/".into(),
            sigactions: Vec::new(),
            mm: Default::default(),
            auxv: Vec::new(),
            vmas: Vec::new(),
            fds: Vec::new(),
            state: Default::default(),
            threads: Vec::new(),
        };
        if m.zombie.is_none() {
            // A terminal is not restored: the process would come back
            // without it, and /dev/tty would fail to open.
            let tty = stat.field(7);
            if tty != 0 {
                return Err(CheckpointError::Unsupported {
                    pid: m.pid,
                    what: format!(
                        "it has a controlling terminal (device {}:{}): terminals are not restored",
                        (tty >> 8) & 0xfff,
                        (tty & 0xff) | ((tty >> 12) & 0xfff00)
                    ),
                });
            }
            p.fds = table.dump(m.pid)?;
            p.mm = stat.mm();
            process::collect(m, &mut p, &mut image.shared_memory, pages)?;
            p.state.stopped = m.stopped;
        }
        image.processes.push(p);
    }
    check_groups(&image)?;
    check_sharing(&image)?;
    let all_fds = image.all_fds();
    let mapped: Vec<u64> = image.shared_memory.iter().map(|o| o.inode).collect();
    let (objects, files) = table.finish(root, &all_fds, &mapped)?;
    image.files = objects;
    image.pages_len = pages.len();
    Ok(Dumped { image, files })
}

/// Processes of the tree are restored each with its own address space,
/// fd table, filesystem context and signal handlers: refuse two that
/// share one (made by clone with CLONE_VM, CLONE_FILES, CLONE_FS or
/// CLONE_SIGHAND without CLONE_THREAD).
fn check_sharing(image: &Image) -> Result<(), CheckpointError> {
    use crate::sys::fds::{Shared, shares};
    let live: Vec<i32> = image
        .processes
        .iter()
        .filter(|p| p.zombie.is_none())
        .map(|p| p.pid)
        .collect();
    for (i, &a) in live.iter().enumerate() {
        for &b in &live[i + 1..] {
            for (what, name) in [
                (Shared::Vm, "its address space (CLONE_VM)"),
                (Shared::Files, "its fd table (CLONE_FILES)"),
                (Shared::Fs, "its cwd, root and umask (CLONE_FS)"),
                (Shared::Sighand, "its signal handlers (CLONE_SIGHAND)"),
            ] {
                if shares(a, b, what).map_err(CheckpointError::sys(b, "kcmp"))? {
                    return Err(CheckpointError::Unsupported {
                        pid: b,
                        what: format!("it shares {name} with pid {a}"),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Sessions and process groups restore by setsid/setpgid from inside
/// the tree, in creation order: refuse the layouts that cannot.
fn check_groups(image: &Image) -> Result<(), CheckpointError> {
    let by_pid = |pid: i32| image.processes.iter().position(|p| p.pid == pid);
    for (i, p) in image.processes.iter().enumerate() {
        let unsupported = |what: String| CheckpointError::Unsupported { pid: p.pid, what };
        let parent = by_pid(p.parent).map(|j| &image.processes[j]);
        if let Some(parent) = parent
            && p.sid != p.pid
            && p.sid != parent.sid
        {
            return Err(unsupported(format!(
                "it is in session {} while its parent {} is in session {}",
                p.sid, parent.pid, parent.sid
            )));
        }
        if p.pgid == p.pid || parent.is_none_or(|q| q.pgid == p.pgid) {
            continue;
        }
        match by_pid(p.pgid) {
            Some(j) if j < i && image.processes[j].sid == p.sid => {}
            _ => {
                return Err(unsupported(format!(
                    "its process group {} is led by a process outside the tree or created after it",
                    p.pgid
                )));
            }
        }
    }
    Ok(())
}
