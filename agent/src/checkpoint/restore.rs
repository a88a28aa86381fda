//! Restore: validate the whole image, then, in a forked helper that
//! traces everything it creates, recreate the tree with the old pids —
//! the root by clone3 `set_tid`, every other process by a remote clone3
//! from its restored parent (so parents, sessions and process groups are
//! the original's), threads likewise — rebuild each address space, files
//! and signal state by remote syscalls, and finally set every thread's
//! registers and release all tasks at once. The helper exits, so the
//! restored root is re-parented like a daemon. On any failure every
//! process created is killed.

use std::{
    io::{Read, Write},
    os::{fd::AsRawFd, unix::fs::FileExt},
    path::Path,
    time::{Duration, Instant},
};

use super::{
    CheckpointError, StepError, StepResult, files,
    image::{self, Image},
    pages::PageFile,
    proc,
    remote::{Remote, RemoteError, resume_regs},
    state,
};
use crate::sys::{
    process::{Forked, fork_single_threaded},
    ptrace,
};

mod rebuild;

const PAGE: u64 = 4096;
/// Highest user address with 4-level paging.
const TASK_SIZE: u64 = 0x7fff_ffff_f000;
const ARCH_MAP_VDSO_64: u64 = 0x2003;
const PR_SET_NAME: u64 = 15;
const PR_SET_MM: u64 = 35;
const PR_SET_MM_MAP: u64 = 14;
const RSEQ_FLAG_UNREGISTER: u64 = 1;

// Layout of the gadget (two pages): a `syscall` at 0, scratch data after
// it; clone3's arguments on the second page.
const GADGET_LEN: u64 = 2 * PAGE;
const G_ACT: u64 = 128;
const G_STR: u64 = 256;
const G_MM: u64 = 2048;
const G_AUXV: u64 = 2304;
const G_CLONE: u64 = PAGE;
const G_SET_TID: u64 = PAGE + 128;
const G_FILTER: u64 = PAGE + 256;

/// What a restore did, for the CLI to report.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub pid: i32,
    pub processes: usize,
    pub pages: u64,
    pub image_bytes: u64,
    /// Reading and validating the image.
    pub read: Duration,
    /// Every process of the tree, each holding only the gadget.
    pub create: Duration,
    /// Their memory, files, threads and task state.
    pub rebuild: Duration,
    /// Registers, and every task let go.
    pub release: Duration,
}

/// Restores a tree's image, read and checked by [`image::open`] (`read`
/// is how long that took); the tree runs on with its old pids.
pub fn restore(
    verified: &image::Verified,
    read: Duration,
) -> Result<RestoreReport, CheckpointError> {
    let image::Verified {
        image,
        pages,
        files: files_data,
        ..
    } = verified;
    let pid = image.root;
    for p in &image.processes {
        let ids = std::iter::once(p.pid).chain(p.threads.iter().map(|t| t.tid));
        for id in ids {
            if proc::path(id, "").exists() {
                let comm = std::fs::read_to_string(proc::path(id, "comm")).unwrap_or_default();
                return Err(CheckpointError::Process {
                    pid: id,
                    what: format!(
                        "the pid is in use (by {}): it must be free to restore with the same pid",
                        comm.trim_end()
                    ),
                });
            }
        }
    }
    preflight(image)?;
    let (mut reader, writer) = std::io::pipe().map_err(|e| CheckpointError::Step {
        pid,
        source: StepError::io("pipe")(e),
    })?;
    let forked = fork_single_threaded().map_err(|e| CheckpointError::Step {
        pid,
        source: StepError::Fork(e),
    })?;
    match forked {
        Forked::Child => {
            drop(reader);
            let mut writer = writer;
            let msg = match helper(image, pages, files_data) {
                Ok(times) => format!("ok {}", times.map(|t| t.as_nanos().to_string()).join(" ")),
                Err((at, e)) => format!("err {at} {e}"),
            };
            let _ = writer.write_all(msg.as_bytes());
            drop(writer);
            ptrace::exit_now(0);
        }
        Forked::Parent { child } => {
            drop(writer);
            let mut msg = String::new();
            let _ = reader.read_to_string(&mut msg);
            let _ = ptrace::wait(child);
            match msg.split_once(' ') {
                Some(("ok", times)) => {
                    let mut t = times
                        .split(' ')
                        .map(|n| Duration::from_nanos(n.parse().unwrap_or(0)));
                    let mut next = || t.next().unwrap_or_default();
                    Ok(RestoreReport {
                        pid,
                        processes: image.processes.len(),
                        pages: image.pages_len / PAGE,
                        image_bytes: image.pages_len,
                        read,
                        create: next(),
                        rebuild: next(),
                        release: next(),
                    })
                }
                Some(("err", e)) => {
                    let (at, what) = e.split_once(' ').unwrap_or(("0", e));
                    Err(CheckpointError::Restore {
                        pid: at.parse().unwrap_or(pid),
                        what: what.to_string(),
                    })
                }
                _ => Err(CheckpointError::Restore {
                    pid,
                    what: "the restore helper died without a word".into(),
                }),
            }
        }
    }
}

/// Before anything is created: every path the rebuild opens exists — the
/// executable, cwd and root of each process — and every mapped file is
/// still the file that was mapped (same size and modification time).
fn preflight(image: &Image) -> Result<(), CheckpointError> {
    use std::os::unix::fs::MetadataExt;
    for p in image.processes.iter().filter(|p| p.zombie.is_none()) {
        let refuse = |what: String| CheckpointError::Process {
            pid: p.pid,
            what: format!("cannot restore: {what}; nothing was created"),
        };
        for (what, path) in [("executable", &p.exe), ("cwd", &p.cwd), ("root", &p.root)] {
            if std::fs::metadata(path).is_err() {
                return Err(refuse(format!("its {what} {path} is gone")));
            }
        }
        for v in &p.vmas {
            let (Some((size, sec, nsec)), Some(path)) = (v.file, &v.path) else {
                continue;
            };
            let now = std::fs::metadata(path)
                .map_err(|e| refuse(format!("its mapped file {path}: {e}")))?;
            if (now.size(), now.mtime(), now.mtime_nsec()) != (size, sec, nsec) {
                return Err(refuse(format!(
                    "its mapped file {path} changed since the checkpoint (size {} and mtime {}.{:09}, then {size} and {sec}.{nsec:09})",
                    now.size(),
                    now.mtime(),
                    now.mtime_nsec()
                )));
            }
        }
    }
    Ok(())
}

/// The restore helper's state: what exists so far.
struct Restorer<'a> {
    image: &'a Image,
    pages: &'a PageFile,
    /// pages.img as a path the processes can open, if they can.
    pages_path: Option<String>,
    gadget: u64,
    /// Per image process, its main thread's driver (None for zombies).
    mains: Vec<Option<Remote>>,
    /// Other threads, by image process.
    threads: Vec<Vec<Remote>>,
    /// Every process created, to kill on failure.
    created: Vec<i32>,
    /// Shared anonymous memory, as memfds of the helper, by object.
    shared: Vec<std::os::fd::OwnedFd>,
    /// Every file object, made in the helper before any process.
    files: Option<files::Created>,
    /// A container's seccomp programs (palisade's, from its policy), for
    /// the processes that had them.
    seccomp: &'a [Vec<u8>],
}

/// An error and the pid of the task it happened in.
type Failure = (i32, StepError);

/// In the forked helper: create the tree, rebuild it, release it;
/// returns how long each took.
fn helper(image: &Image, pages: &PageFile, files_data: &[u8]) -> Result<[Duration; 3], Failure> {
    let root = image.root;
    // Every file object, made here first (the processes get them by
    // SCM_RIGHTS); the root's clone closes its copies.
    let all_fds = image.all_fds();
    let paths = files::Paths {
        root: "/".into(),
        log: None,
    };
    let created =
        files::create(&image.files, &all_fds, files_data, &paths).map_err(|e| (root, e))?;
    let child = match crate::sys::process::fork_tracee_with_pid(root) {
        Ok(child) => child,
        Err(nix::errno::Errno::EEXIST) => {
            return Err((root, StepError::failed(format!("pid {root} is in use"))));
        }
        Err(e) => {
            return Err((
                root,
                StepError::sys(format!("clone3 with set_tid {root}"))(e),
            ));
        }
    };
    // The processes read their pages themselves from the very file the
    // image was validated in, reopened through our fd: each byte is
    // copied once, straight into its place.
    let path = format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        pages.file().as_raw_fd()
    );
    run_or_kill(child, image, pages, Some(path), created, &[])
}

/// Restores `image` into `root`, a child of ours that stopped itself as
/// our tracee (pid 1 of a new container: the image's pids are those of
/// its pid namespace). On failure every process created is killed, the
/// root too.
pub fn restore_into(
    root: i32,
    image: &Image,
    pages: &PageFile,
    files_data: &[u8],
    log: &Path,
    seccomp: &[Vec<u8>],
) -> Result<(), CheckpointError> {
    if image.root != 1 {
        return Err(CheckpointError::Image(format!(
            "the tree's root is pid {}, a container's is pid 1",
            image.root
        )));
    }
    // Paths are the container's, its output is its new log, and sockets
    // are made in its network namespace.
    let all_fds = image.all_fds();
    let paths = files::Paths {
        root: proc::path(root, "root"),
        log: Some(log.to_path_buf()),
    };
    let fail = |source| CheckpointError::RestoreStep { pid: 1, source };
    let created = crate::sys::ns::in_net_namespace_of(root, || {
        files::create(&image.files, &all_fds, files_data, &paths)
    })
    .map_err(|e| fail(StepError::io("enter its network namespace")(e)))?
    .map_err(fail)?;
    // Our /proc/PID/fd is out of the container's sight: its pages are
    // written into it from here.
    run_or_kill(root, image, pages, None, created, seccomp)
        .map(drop)
        .map_err(|(pid, source)| CheckpointError::RestoreStep { pid, source })
}

fn run_or_kill(
    child: i32,
    image: &Image,
    pages: &PageFile,
    pages_path: Option<String>,
    files: files::Created,
    seccomp: &[Vec<u8>],
) -> Result<[Duration; 3], Failure> {
    let mut restorer = Restorer {
        image,
        pages,
        gadget: 0,
        mains: Vec::new(),
        threads: Vec::new(),
        created: vec![child],
        shared: Vec::new(),
        files: Some(files),
        seccomp,
        pages_path,
    };
    let result = restorer.run(child);
    if result.is_err() {
        for pid in restorer.created.iter().rev() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for pid in &restorer.created {
            let _ = ptrace::wait(*pid);
        }
    }
    result
}

fn write_all(pid: i32, addr: u64, data: &[u8]) -> StepResult<()> {
    let mut done = 0;
    while done < data.len() {
        let at = addr + done as u64;
        let n = ptrace::write_memory(pid, at, &data[done..])
            .map_err(StepError::task(pid, format!("write memory at {at:#x}")))?;
        if n == 0 {
            return Err(StepError::failed(format!(
                "write memory at {at:#x}: short write"
            )));
        }
        done += n;
    }
    Ok(())
}

fn prot(read: bool, write: bool, exec: bool) -> u64 {
    let mut p = 0;
    if read {
        p |= libc::PROT_READ;
    }
    if write {
        p |= libc::PROT_WRITE;
    }
    if exec {
        p |= libc::PROT_EXEC;
    }
    p as u64
}

/// Picks an address for the gadget where neither any process of the
/// image nor the new root has anything mapped.
fn gadget_address(image: &Image, current: &[proc::MapLine]) -> Option<u64> {
    let busy = |a: u64| {
        image
            .processes
            .iter()
            .flat_map(|p| &p.vmas)
            .any(|v| a + GADGET_LEN > v.start && a < v.end)
            || current
                .iter()
                .any(|m| a + GADGET_LEN > m.start && a < m.end)
    };
    (1..0x7000u64).map(|i| i << 32).find(|a| !busy(*a))
}

const CLONE_THREAD_FLAGS: u64 = (libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD
    | libc::CLONE_SYSVSEM) as u64;

impl Restorer<'_> {
    fn run(&mut self, root: i32) -> Result<[Duration; 3], Failure> {
        let t0 = Instant::now();
        let image = self.image;
        let fail = |e: StepError| (root, e);
        let status = ptrace::wait(root)
            .map_err(|e| fail(StepError::task(root, "wait for the new process")(e)))?;
        if !(libc::WIFSTOPPED(status) && libc::WSTOPSIG(status) == libc::SIGSTOP) {
            return Err(fail(StepError::failed(format!(
                "the new process did not stop (wait status {status:#x})"
            ))));
        }
        // Seccomp the tree is given back must not apply to our remote
        // calls (the new tasks inherit the option).
        let seccomp = image
            .processes
            .iter()
            .any(|p| p.state.seccomp_strict || p.state.seccomp_filters > 0);
        ptrace::set_options(
            root,
            libc::PTRACE_O_EXITKILL
                | libc::PTRACE_O_TRACESYSGOOD
                | libc::PTRACE_O_TRACEFORK
                | libc::PTRACE_O_TRACECLONE
                | if seccomp {
                    ptrace::O_SUSPEND_SECCOMP
                } else {
                    0
                },
        )
        .map_err(|e| fail(StepError::task(root, "ptrace options")(e)))?;
        let r = self.prepare_root(root).map_err(fail)?;
        self.make_shared().map_err(fail)?;
        let n = image.processes.len();
        self.mains = (0..n).map(|_| None).collect();
        self.threads = (0..n).map(|_| Vec::new()).collect();
        self.mains[0] = Some(r);
        self.set_groups(0)?;
        // Every process, parents first, each forked from its parent while
        // both hold nothing but the gadget.
        for i in 1..n {
            let p = &image.processes[i];
            let parent = image
                .processes
                .iter()
                .position(|q| q.pid == p.parent)
                .expect("image::read checked every parent comes first");
            let parent_task = self.mains[parent].as_mut().ok_or_else(|| {
                (
                    p.parent,
                    StepError::Image("a zombie cannot have children".into()),
                )
            })?;
            let task =
                clone_task(parent_task, self.gadget, p.pid, false).map_err(|e| (p.pid, e))?;
            self.created.push(task.pid);
            self.mains[i] = Some(task);
            self.set_groups(i)?;
            if let Some(status) = p.zombie {
                let task = self.mains[i].take().expect("just created");
                zombie_exit(task, status).map_err(|e| (p.pid, e))?;
            }
        }
        let t1 = Instant::now();
        for i in 0..n {
            if image.processes[i].zombie.is_none() {
                self.rebuild(i).map_err(|e| (image.processes[i].pid, e))?;
            }
        }
        let t2 = Instant::now();
        self.release()?;
        Ok([t1 - t0, t2 - t1, t2.elapsed()])
    }

    /// The root, still a copy of the helper: drop its rseq, map the
    /// gadget where the image has nothing, unmap everything else.
    fn prepare_root(&mut self, pid: i32) -> StepResult<Remote> {
        let e = |what: String| StepError::remote(pid, what);
        let start = ptrace::get_regs(pid).map_err(StepError::task(pid, "registers"))?;
        // The new process stopped right after its kill(2): rip-2 is `syscall`.
        let mut two = [0u8; 2];
        ptrace::read_memory(pid, start.rip - 2, &mut two)
            .map_err(StepError::task(pid, "read rip"))?;
        if two != [0x0f, 0x05] {
            return Err(StepError::failed(format!(
                "no syscall instruction before rip {:#x}",
                start.rip
            )));
        }
        let mut r = Remote::new(pid, start.rip - 2, start);
        if let Ok(conf) = ptrace::rseq_config(pid)
            && conf.pointer != 0
        {
            r.call(
                libc::SYS_rseq,
                &[
                    conf.pointer,
                    conf.size.into(),
                    RSEQ_FLAG_UNREGISTER,
                    conf.signature.into(),
                ],
            )
            .map_err(e("unregister the helper's rseq".into()))?;
        }
        let current = proc::maps(pid).map_err(StepError::file(
            "maps of the new process",
            proc::path(pid, "maps"),
        ))?;
        let gadget = gadget_address(self.image, &current)
            .ok_or_else(|| StepError::failed("no free address for the gadget"))?;
        r.call(
            libc::SYS_mmap,
            &[
                gadget,
                GADGET_LEN,
                (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64,
                u64::MAX,
                0,
            ],
        )
        .map_err(e(format!("map the gadget at {gadget:#x}")))?;
        write_all(pid, gadget, &[0x0f, 0x05])?;
        r.insn = gadget;
        self.gadget = gadget;
        // Everything else of the helper's copy goes, the vdso included.
        r.call(libc::SYS_munmap, &[0, gadget])
            .map_err(e("unmap below the gadget".into()))?;
        r.call(
            libc::SYS_munmap,
            &[gadget + GADGET_LEN, TASK_SIZE - gadget - GADGET_LEN],
        )
        .map_err(e("unmap above the gadget".into()))?;
        Ok(r)
    }

    /// One memfd per shared anonymous object, filled with its pages; the
    /// processes map it through /proc/HELPER/fd/N.
    fn make_shared(&mut self) -> StepResult<()> {
        use nix::sys::memfd::{MFdFlags, memfd_create};
        for (i, shm) in self.image.shared_memory.iter().enumerate() {
            let fd = memfd_create(c"palisade-shared", MFdFlags::MFD_CLOEXEC)
                .map_err(StepError::sys(format!("memfd for shared memory {i}")))?;
            let file = std::fs::File::from(fd);
            file.set_len(shm.size)
                .map_err(StepError::io(format!("size shared memory {i}")))?;
            for run in &shm.runs {
                let data = self
                    .pages
                    .read(run.offset, run.len)
                    .map_err(StepError::io(format!("read pages of shared memory {i}")))?;
                file.write_all_at(&data, run.addr)
                    .map_err(StepError::io(format!("fill shared memory {i}")))?;
            }
            self.shared.push(file.into());
        }
        Ok(())
    }

    /// Session and process group of process `i`, by setsid/setpgid in it.
    fn set_groups(&mut self, i: usize) -> Result<(), Failure> {
        let p = &self.image.processes[i];
        let parent_pgid = self
            .image
            .processes
            .iter()
            .find(|q| q.pid == p.parent)
            .map(|q| q.pgid);
        let task = self.mains[i].as_mut().expect("created");
        let pid = task.pid;
        let e = |what: &str| {
            let what = StepError::remote(pid, what.to_string());
            move |err: RemoteError| (p.pid, what(err))
        };
        if p.sid == p.pid {
            task.call(libc::SYS_setsid, &[]).map_err(e("setsid"))?;
        } else if p.pgid == p.pid {
            task.call(libc::SYS_setpgid, &[0, 0])
                .map_err(e("setpgid to its own group"))?;
        } else if parent_pgid.is_some_and(|g| g != p.pgid) {
            task.call(libc::SYS_setpgid, &[0, p.pgid as u64])
                .map_err(e(&format!("setpgid to group {}", p.pgid)))?;
        }
        Ok(())
    }

    /// Registers and extended state of every thread, then every task is
    /// let go, one right after the other.
    fn release(&mut self) -> Result<(), Failure> {
        let image = self.image;
        for (i, p) in image.processes.iter().enumerate() {
            let Some(main) = &self.mains[i] else { continue };
            let tasks = std::iter::once(main).chain(&self.threads[i]);
            for (task, t) in tasks.zip(&p.threads) {
                let tid = task.pid;
                // The blocked mask the task had, now that no remote
                // syscall follows to take a pending signal.
                state::unblock(tid, t.sigmask).map_err(|err| (tid, err))?;
                // A syscall our stop interrupted is re-issued.
                let regs = resume_regs(t.regs.into());
                ptrace::set_regs(tid, &regs)
                    .map_err(|err| (tid, StepError::task(tid, "set registers")(err)))?;
                let xstate = image::unhex(&t.xstate)
                    .ok_or_else(|| (tid, StepError::Image("xstate is not hex".into())))?;
                ptrace::set_xstate(tid, &xstate)
                    .map_err(|err| (tid, StepError::task(tid, "set xstate")(err)))?;
            }
        }
        // A process that was stopped gets its SIGSTOP while still held:
        // it stops again before running an instruction of its own.
        for (i, p) in image.processes.iter().enumerate() {
            if let (Some(main), true) = (&self.mains[i], p.state.stopped) {
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(main.pid),
                    nix::sys::signal::Signal::SIGSTOP,
                )
                .map_err(|err| (main.pid, StepError::task(main.pid, "stop it again")(err)))?;
            }
        }
        for (i, main) in self.mains.iter().enumerate() {
            let Some(main) = main else { continue };
            for task in std::iter::once(main).chain(&self.threads[i]) {
                ptrace::detach(task.pid, None)
                    .map_err(|err| (task.pid, StepError::task(task.pid, "detach")(err)))?;
            }
        }
        Ok(())
    }
}

/// A new process (or, with `thread`, a new thread of the caller's) with
/// id `tid`, by a remote clone3 with `set_tid` in `parent`. It starts
/// traced by us (PTRACE_O_TRACEFORK/TRACECLONE), stopped before its first
/// instruction, which is right after the gadget's `syscall`.
fn clone_task(parent: &mut Remote, gadget: u64, tid: i32, thread: bool) -> StepResult<Remote> {
    let pid = parent.pid;
    let (flags, exit_signal) = if thread {
        (CLONE_THREAD_FLAGS, 0)
    } else {
        (0, libc::SIGCHLD as u64)
    };
    // struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal,
    // stack, stack_size, tls, set_tid, set_tid_size, cgroup.
    let args = [
        flags,
        0,
        0,
        0,
        exit_signal,
        0,
        0,
        0,
        gadget + G_SET_TID,
        1,
        0,
    ];
    let bytes: Vec<u8> = args.iter().flat_map(|w| w.to_ne_bytes()).collect();
    write_all(pid, gadget + G_CLONE, &bytes)?;
    write_all(pid, gadget + G_SET_TID, &tid.to_ne_bytes())?;
    let what = if thread { "thread" } else { "process" };
    parent.created = None;
    let got = parent
        .call(libc::SYS_clone3, &[gadget + G_CLONE, bytes.len() as u64])
        .map_err(StepError::remote(
            pid,
            format!("remote clone3 of {what} {tid} (set_tid)"),
        ))?;
    if got != tid as u64 {
        return Err(StepError::failed(format!(
            "clone3 gave {what} {got}, not {tid}"
        )));
    }
    // Its pid as we see it (the same, unless it is in a pid namespace of
    // its own).
    let host = parent.created.unwrap_or(tid);
    let status =
        ptrace::wait(host).map_err(StepError::task(host, format!("wait for {what} {tid}")))?;
    if !libc::WIFSTOPPED(status) {
        return Err(StepError::failed(format!(
            "new {what} {tid} did not stop (wait status {status:#x})"
        )));
    }
    let regs =
        ptrace::get_regs(host).map_err(StepError::task(host, format!("registers of {tid}")))?;
    Ok(Remote::new(host, gadget, regs))
}

/// Ends a freshly created process the way the zombie it stands for
/// ended, so that its parent finds the same wait status.
fn zombie_exit(mut r: Remote, status: i32) -> StepResult<()> {
    let pid = r.pid;
    if libc::WIFEXITED(status) {
        // exit_group never returns: the task ends inside the call.
        match r.call(libc::SYS_exit_group, &[libc::WEXITSTATUS(status) as u64]) {
            Err(RemoteError::Trace(_)) => {}
            Err(err) => {
                return Err(StepError::remote(
                    pid,
                    format!("exit_group of zombie {pid}"),
                )(err));
            }
            Ok(ret) => {
                return Err(StepError::failed(format!(
                    "exit_group of zombie {pid} returned {ret}"
                )));
            }
        }
    } else {
        let sig = libc::WTERMSIG(status);
        let sig = nix::sys::signal::Signal::try_from(sig)
            .map_err(|_| StepError::Image(format!("zombie {pid}: bad signal {sig}")))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
            .map_err(StepError::task(pid, format!("kill zombie {pid}")))?;
        // SIGKILL ends it at once, before it can be continued: ESRCH
        // from here on only means it is already dying.
        let cont = |deliver| match ptrace::cont_syscall(pid, deliver) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(err) => Err(StepError::task(pid, format!("zombie {pid}: continue"))(err)),
        };
        cont(Some(sig))?;
        loop {
            let st =
                ptrace::wait(pid).map_err(StepError::task(pid, format!("zombie {pid}: wait")))?;
            if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
                break;
            }
            let deliver = if libc::WIFSTOPPED(st) && libc::WSTOPSIG(st) == sig as i32 {
                Some(sig)
            } else {
                None
            };
            cont(deliver)?;
        }
        return Ok(());
    }
    let st = ptrace::wait(pid);
    match st {
        Ok(st) if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) => Ok(()),
        // Already reaped while the call ran.
        Err(nix::errno::Errno::ECHILD) => Ok(()),
        Ok(st) => Err(StepError::failed(format!(
            "zombie {pid} did not end (wait status {st:#x})"
        ))),
        Err(err) => Err(StepError::task(pid, format!("zombie {pid}: wait"))(err)),
    }
}
