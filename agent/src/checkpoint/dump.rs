//! Dump: seize and stop the process, refuse what this slice cannot
//! restore, record everything into the image, then end the original (or
//! let it continue unchanged with `--leave-running`).

use std::time::{Duration, Instant};

use nix::{sys::signal::Signal, unistd::Pid};

use super::{
    CheckpointError, StepError, StepResult, files,
    image::{
        self, Image, Process, Registers, Rseq, Run, SharedMemory, SigAction, Thread, Vma, VmaKind,
    },
    imagedir::ImageDir,
    pages::{PageWriter, Source},
    proc,
    remote::{Remote, Scratch, find_syscall, resume_regs},
    sign::ImageKey,
    state, vmflags,
};
use crate::sys::ptrace;

/// Longest run of pages (each run has its own checksum).
const BATCH: u64 = 64 << 20;

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
struct Stopped {
    tid: i32,
    regs: ptrace::Regs,
    /// Signals that arrived while we drove it with remote syscalls; sent
    /// again when it is let go.
    deferred: Vec<i32>,
}

/// A process of the frozen tree.
pub(super) struct Member {
    pub(super) pid: i32,
    parent: i32,
    /// Wait status, for a zombie (which cannot be seized).
    zombie: Option<i32>,
    /// Its threads, the main thread first; empty for a zombie.
    threads: Vec<Stopped>,
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
    dump_into(pid, frozen, target, opts, progress, freeze, |image| {
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
    })
}

/// Dumps the frozen tree under `root` into `dir` — its pages streamed
/// into pages.img as they are read — with `check` given the image first
/// (to refuse it, or complete it), then ends the tree or, with
/// `leave_running`, lets it go on. On any failure every task goes on
/// unchanged and nothing of the image is left.
pub(super) fn dump_into(
    root: i32,
    mut frozen: Frozen,
    ImageTarget { dir, key }: ImageTarget,
    opts: DumpOptions,
    progress: &mut dyn FnMut(u64),
    freeze: Duration,
    check: impl FnOnce(&mut Image) -> Result<(), CheckpointError>,
) -> Result<DumpReport, CheckpointError> {
    let t1 = Instant::now();
    let discard = || dir.discard();
    let collected = image::create_pages(dir, progress).and_then(|mut pages| {
        let mut dumped = collect_tree(root, &mut frozen, &mut pages)?;
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

/// pagemap bits: page present, swapped, file-backed (or the zero page).
const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;
const PM_FILE: u64 = 1 << 61;

/// Appends to `pages` the pages of [start, end) that a fresh mapping
/// would not give back — present or swapped and not a file page (nor the
/// shared zero page): touched anonymous memory and copied-on-write pages
/// of private file mappings — and returns them as runs. One pagemap read
/// for the VMA; the pages go in runs of contiguous pages, many to a
/// process_vm_readv.
fn dump_vma(
    source: Source,
    pagemap: &std::fs::File,
    start: u64,
    end: u64,
    pages: &mut PageWriter,
) -> StepResult<Vec<Run>> {
    use std::os::unix::fs::FileExt;
    let npages = ((end - start) / 4096) as usize;
    let mut raw = vec![0u8; npages * 8];
    pagemap
        .read_exact_at(&mut raw, start / 4096 * 8)
        .map_err(StepError::io("read pagemap"))?;
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for (i, entry) in raw.chunks_exact(8).enumerate() {
        let e = u64::from_ne_bytes(entry.try_into().expect("8 bytes"));
        if e & (PM_PRESENT | PM_SWAPPED) == 0 || e & PM_FILE != 0 {
            continue;
        }
        let addr = start + i as u64 * 4096;
        match ranges.last_mut() {
            Some((a, len)) if *a + *len == addr && *len < BATCH => *len += 4096,
            _ => ranges.push((addr, 4096)),
        }
    }
    pages.copy(source, &ranges)
}

/// A remote-syscall driver for stopped task `t`: at the `syscall` it was
/// stopped in (rip-2), else at one in its vdso.
fn remote_for(t: &Stopped, vdso: Option<(u64, u64)>) -> Result<Remote, CheckpointError> {
    let tid = t.tid;
    let regs = t.regs;
    let fail = |what: String| CheckpointError::Process { pid: tid, what };
    let mut two = [0u8; 2];
    let at_rip = (regs.orig_rax as i64) >= 0
        && ptrace::read_memory(tid, regs.rip - 2, &mut two).is_ok()
        && two == [0x0f, 0x05];
    let insn = if at_rip {
        regs.rip - 2
    } else {
        let (start, end) = vdso.ok_or_else(|| {
            fail("no syscall instruction to make remote syscalls with (no vdso)".into())
        })?;
        let mut bytes = vec![0u8; (end - start) as usize];
        ptrace::read_memory(tid, start, &mut bytes)
            .map_err(CheckpointError::sys(tid, "read the vdso"))?;
        find_syscall(&bytes, start)
            .ok_or_else(|| fail("no syscall instruction in the vdso".into()))?
    };
    Ok(Remote::new(tid, insn, regs))
}

/// Every signal disposition that is not the default, by remote
/// rt_sigaction.
fn sigactions(r: &mut Remote, scratch: &Scratch) -> Result<Vec<SigAction>, CheckpointError> {
    let pid = r.pid;
    let mut out = Vec::new();
    for sig in 1..=64i32 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        r.call(libc::SYS_rt_sigaction, &[sig as u64, 0, scratch.addr, 8])
            .map_err(CheckpointError::remote(
                pid,
                format!("remote rt_sigaction({sig})"),
            ))?;
        let b = scratch
            .get(pid, 0, 32)
            .map_err(CheckpointError::remote(pid, "read a sigaction"))?;
        let act = SigAction::from_bytes(sig, &b.try_into().expect("32 bytes"));
        if act.handler != 0 || act.flags != 0 || act.mask != 0 {
            out.push(act);
        }
    }
    Ok(out)
}

/// PR_GET_TID_ADDRESS: the thread's clear_child_tid pointer.
const PR_GET_TID_ADDRESS: u64 = 40;

fn collect_thread(
    pid: i32,
    t: &Stopped,
    r: &mut Remote,
    scratch: &Scratch,
) -> Result<Thread, CheckpointError> {
    let tid = t.tid;
    let xstate = ptrace::get_xstate(tid).map_err(CheckpointError::sys(tid, "read xstate"))?;
    let rseq = ptrace::rseq_config(tid)
        .ok()
        .filter(|c| c.pointer != 0)
        .map(|c| Rseq {
            pointer: c.pointer,
            size: c.size,
            signature: c.signature,
        });
    let task = format!("task/{tid}/");
    let sigmask =
        proc::sigmask_at(&proc::path(pid, &format!("{task}status"))).ok_or_else(|| {
            CheckpointError::Process {
                pid: tid,
                what: "no SigBlk in status".into(),
            }
        })?;
    let comm_path = proc::path(pid, &format!("{task}comm"));
    let comm = std::fs::read_to_string(&comm_path)
        .map_err(CheckpointError::file(tid, "read", &comm_path))?
        .trim_end()
        .to_string();
    let (robust_list, robust_list_len) =
        ptrace::robust_list(tid).map_err(CheckpointError::sys(tid, "get_robust_list"))?;
    r.call(
        libc::SYS_prctl,
        &[PR_GET_TID_ADDRESS, scratch.addr, 0, 0, 0],
    )
    .map_err(CheckpointError::remote(
        tid,
        "remote prctl(PR_GET_TID_ADDRESS)",
    ))?;
    let b = scratch
        .get(tid, 0, 8)
        .map_err(CheckpointError::remote(tid, "read the tid address"))?;
    let tid_address = u64::from_ne_bytes(b.try_into().expect("8 bytes"));
    let state = state::dump_thread(r, scratch)?;
    Ok(Thread {
        tid,
        comm,
        regs: t.regs.into(),
        xstate: image::hex(&xstate),
        sigmask,
        rseq,
        tid_address,
        robust_list,
        robust_list_len,
        state,
    })
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
            collect(m, &mut p, &mut image.shared_memory, pages)?;
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

fn collect(
    m: &mut Member,
    p: &mut Process,
    shared_memory: &mut Vec<SharedMemory>,
    pages: &mut PageWriter,
) -> Result<(), CheckpointError> {
    let pid = m.pid;
    let unsupported = |what: String| CheckpointError::Unsupported { pid, what };
    let io = |what: &str| CheckpointError::file(pid, "read", proc::path(pid, what));
    let mut mm = p.mm;
    let read_link = |name: &str| {
        std::fs::read_link(proc::path(pid, name))
            .map(|p| p.to_string_lossy().into_owned())
            .map_err(io(name))
    };
    let cwd = read_link("cwd")?;
    let root = read_link("root")?;
    let exe = read_link("exe")?;
    let comm = std::fs::read_to_string(proc::path(pid, "comm"))
        .map_err(io("comm"))?
        .trim_end()
        .to_string();
    let auxv = proc::auxv(pid).map_err(io("auxv"))?;

    let mut vmas = Vec::new();
    let pagemap = std::fs::File::open(proc::path(pid, "pagemap")).map_err(io("pagemap"))?;
    // Memory the process made unreadable is read through this.
    let mem = std::fs::File::open(proc::path(pid, "mem")).map_err(io("mem"))?;
    let vm_flags = proc::vm_flags(pid).map_err(io("smaps"))?;
    for m in proc::maps(pid).map_err(io("maps"))? {
        let range = format!("{:x}-{:x} {}", m.start, m.end, m.path);
        let shared = m.perms.as_bytes().get(3) == Some(&b's');
        let flags = vm_flags
            .get(&m.start)
            .ok_or_else(|| CheckpointError::Process {
                pid,
                what: format!("{range}: no VmFlags in smaps"),
            })?;
        let repro = if vmflags::KERNELS.contains(&m.path.as_str()) {
            vmflags::Reproduce::default()
        } else {
            vmflags::classify(flags, shared)
                .map_err(|e| CheckpointError::step(pid)(e.at(format!("mapping {range}"))))?
        };
        let source = if m.perms.as_bytes()[0] == b'r' {
            Source::Process(pid)
        } else {
            Source::Mem(&mem)
        };
        let mut shm = None;
        let kind = match m.path.as_str() {
            // A shared file mapping holds what the file holds. Shared
            // anonymous memory has no such home: its pages are dumped,
            // once per object.
            p if shared
                && p.starts_with('/')
                && !p.ends_with(" (deleted)")
                && !p.starts_with("/dev/")
                && !p.starts_with("/SYSV")
                && !p.starts_with("/memfd:") =>
            {
                VmaKind::SharedFile
            }
            p if shared
                && (p == "/dev/zero (deleted)"
                    || (p.starts_with("/memfd:") && p.ends_with(" (deleted)"))) =>
            {
                shm = Some(
                    shared_object(source, &m, shared_memory, pages).map_err(|e| {
                        CheckpointError::Step {
                            pid,
                            source: e.at(range.as_str()),
                        }
                    })?,
                );
                VmaKind::SharedAnonymous
            }
            _ if shared => return Err(unsupported(format!("shared mapping {range}"))),
            "[vdso]" => VmaKind::Vdso,
            "[vvar]" | "[vvar_vclock]" => VmaKind::Vvar,
            "[vsyscall]" => VmaKind::Vsyscall,
            "" | "[heap]" | "[stack]" => VmaKind::Anonymous,
            p if p.starts_with("[anon:") => VmaKind::Anonymous,
            p if p.starts_with('/') && !p.ends_with(" (deleted)") => VmaKind::File,
            _ => return Err(unsupported(format!("mapping {range}"))),
        };
        if m.path == "[heap]" {
            mm.brk = m.end;
        }
        let perms = m.perms.as_bytes();
        let read = perms[0] == b'r';
        let dumped = matches!(kind, VmaKind::Anonymous | VmaKind::File);
        let runs = if dumped {
            dump_vma(source, &pagemap, m.start, m.end, pages).map_err(|e| {
                CheckpointError::Step {
                    pid,
                    source: e.at(range.as_str()),
                }
            })?
        } else {
            Vec::new()
        };
        vmas.push(Vma {
            start: m.start,
            end: m.end,
            read,
            write: perms[1] == b'w',
            exec: perms[2] == b'x',
            kind,
            path: (!m.path.is_empty()).then(|| m.path.clone()),
            offset: m.offset,
            shared_memory: shm,
            runs,
            may_write: repro.may_write,
            noreserve: repro.noreserve,
            advice: repro.advice,
            file: match kind {
                VmaKind::File | VmaKind::SharedFile => {
                    use std::os::unix::fs::MetadataExt;
                    let f = std::fs::metadata(proc::path(
                        pid,
                        &format!("map_files/{:x}-{:x}", m.start, m.end),
                    ))
                    .map_err(io("map_files"))?;
                    Some((f.size(), f.mtime(), f.mtime_nsec()))
                }
                _ => None,
            },
        });
    }
    let vdso = vmas
        .iter()
        .find(|v| v.kind == VmaKind::Vdso)
        .map(|v| (v.start, v.end));
    // Remote syscalls, in each thread, write into one scratch page of
    // ours, unmapped again whatever happens.
    let busy: Vec<(u64, u64)> = vmas.iter().map(|v| (v.start, v.end)).collect();
    let mut remotes = m
        .threads
        .iter()
        .map(|t| remote_for(t, vdso))
        .collect::<Result<Vec<_>, _>>()?;
    let scratch = Scratch::map(&mut remotes[0], &busy)
        .map_err(CheckpointError::remote(pid, "map a scratch page"))?;
    let read = (|| {
        let actions = sigactions(&mut remotes[0], &scratch)?;
        let process = state::dump_process(&mut remotes[0], &scratch)?;
        let threads = m
            .threads
            .iter()
            .zip(remotes.iter_mut())
            .map(|(t, r)| collect_thread(pid, t, r, &scratch))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((actions, process, threads))
    })();
    let unmapped = scratch.unmap(&mut remotes[0]);
    let (actions, process, mut threads) = match read {
        Ok(v) => v,
        Err(e) => {
            for (t, r) in m.threads.iter_mut().zip(remotes) {
                t.deferred.extend(r.deferred);
            }
            return Err(e);
        }
    };
    // A signal our remote syscalls took off a thread's queue is still
    // pending for the program: first in that thread's queue.
    for ((t, r), th) in m.threads.iter_mut().zip(remotes).zip(&mut threads) {
        t.deferred.extend(r.deferred);
        let mut held = state::siginfos(r.held);
        held.append(&mut th.state.pending);
        th.state.pending = held;
    }
    unmapped.map_err(CheckpointError::remote(pid, "unmap the scratch page"))?;
    p.sigactions = actions;
    p.state = process;
    p.threads = threads;
    p.comm = comm;
    p.exe = exe;
    p.cwd = cwd;
    p.root = root;
    p.mm = mm;
    p.auxv = auxv;
    p.vmas = vmas;
    Ok(())
}

/// The index of the shared anonymous object behind mapping `m`, its
/// pages dumped (read through the mapping) the first time a process of
/// the tree is seen mapping it.
fn shared_object(
    source: Source,
    m: &proc::MapLine,
    objects: &mut Vec<SharedMemory>,
    pages: &mut PageWriter,
) -> StepResult<usize> {
    if let Some(i) = objects.iter().position(|o| o.inode == m.inode) {
        return Ok(i);
    }
    let runs = pages
        .copy(source, &[(m.start, m.end - m.start)])?
        .into_iter()
        .map(|r| Run {
            addr: r.addr - m.start + m.offset,
            ..r
        })
        .collect();
    objects.push(SharedMemory {
        inode: m.inode,
        size: m.offset + (m.end - m.start),
        runs,
    });
    Ok(objects.len() - 1)
}
