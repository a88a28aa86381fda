//! Rebuilding one created process around the gadget, by remote syscalls
//! in it: its address space and memory, mm layout, files, directories and
//! signal handlers, threads, seccomp and task state, and last the gadget
//! itself unmapped. Each step relies on the ones before it (the page file
//! is read through mappings already made; credentials go after every
//! call that needs privilege), so [`Restorer::rebuild`] runs them in order.

use std::os::fd::AsRawFd;

use super::{
    ARCH_MAP_VDSO_64, G_ACT, G_AUXV, G_FILTER, G_MM, G_STR, GADGET_LEN, PAGE, PR_SET_MM,
    PR_SET_MM_MAP, PR_SET_NAME, Restorer, clone_task, prot, write_all,
};
use crate::{
    checkpoint::{
        StepError, StepResult,
        error::at,
        files,
        image::{self, Process, Vma, VmaKind},
        pages::PageFile,
        proc,
        remote::{Remote, find_syscall},
        state,
    },
    sys::ptrace,
};

impl Restorer<'_> {
    /// Rebuilds process `i`, which holds nothing but the gadget, into the
    /// image's process: every step below, in this order.
    pub(super) fn rebuild(&mut self, i: usize) -> StepResult<()> {
        let image = self.image;
        let p: &Process = &image.processes[i];
        let gadget = self.gadget;
        let r = self.mains[i].as_mut().expect("live process");
        map_vdso(r, p)?;
        self.map_memory(i)?;
        let r = self.mains[i].as_mut().expect("live process");
        set_mm(r, gadget, p)?;

        // File descriptors, passed in by SCM_RIGHTS (scratch: G_STR).
        const _: () = assert!(G_STR + files::SCRATCH_LEN <= G_MM);
        let created = self.files.as_ref().expect("made before any process");
        files::install(r, gadget + G_STR, &image.files, &p.fds, created)?;

        set_dirs(r, gadget, p)?;
        set_sigactions(r, gadget, p)?;
        self.make_threads(i)?;
        self.restore_seccomp(i)?;
        // Task state (checkpoint/state.rs), credentials last; every
        // signal stays blocked until `state::unblock` at the release.
        let r = self.mains[i].as_mut().expect("live process");
        state::restore(r, &p.state, &p.threads[0].state)?;
        self.drop_gadget(i)
    }

    /// Every mapping of process `i` at its address, filled from the page
    /// file (opened in the process, if it can see it, while the fill lasts).
    fn map_memory(&mut self, i: usize) -> StepResult<()> {
        let p = &self.image.processes[i];
        let (gadget, pages) = (self.gadget, self.pages);
        let helper_pid = std::process::id();
        let shared_fds: Vec<i32> = self.shared.iter().map(|f| f.as_raw_fd()).collect();
        let r = self.mains[i].as_mut().expect("live process");
        let pid = r.pid;

        // The page file, open in the process if it can see it.
        let pages_fd = match &self.pages_path {
            Some(path) if p.vmas.iter().any(|v| !v.runs.is_empty()) => Some(
                r.call(
                    libc::SYS_open,
                    &[
                        put_str(pid, gadget, path)?,
                        (libc::O_RDONLY | libc::O_CLOEXEC) as u64,
                        0,
                    ],
                )
                .map_err(StepError::remote(
                    pid,
                    format!("open the page file as {path}"),
                ))?,
            ),
            _ => None,
        };
        for v in &p.vmas {
            if !matches!(
                v.kind,
                VmaKind::Anonymous | VmaKind::File | VmaKind::SharedFile | VmaKind::SharedAnonymous
            ) {
                continue;
            }
            let backing = match (v.kind, v.shared_memory) {
                (VmaKind::SharedAnonymous, Some(obj)) => {
                    Some(format!("/proc/{helper_pid}/fd/{}", shared_fds[obj]))
                }
                (VmaKind::File | VmaKind::SharedFile, _) => v.path.clone(),
                _ => None,
            };
            map_vma(r, gadget, v, backing, pages_fd, pages)?;
        }

        if let Some(fd) = pages_fd {
            r.call(libc::SYS_close, &[fd])
                .map_err(StepError::remote(pid, "close the page file"))?;
        }
        Ok(())
    }

    /// The other threads of process `i`, created in its rebuilt address
    /// space; then each thread's own state, the main thread's first.
    fn make_threads(&mut self, i: usize) -> StepResult<()> {
        let p = &self.image.processes[i];
        let gadget = self.gadget;
        let r = self.mains[i].as_mut().expect("live process");
        let pid = r.pid;
        for t in &p.threads[1..] {
            let task = clone_task(r, gadget, t.tid, true)?;
            self.threads[i].push(task);
        }
        let r = self.mains[i].as_mut().expect("live process");
        thread_state(r, gadget, &p.threads[0])?;
        for (task, t) in self.threads[i].iter_mut().zip(&p.threads[1..]) {
            thread_state(task, gadget, t)?;
            state::restore_other_thread(task, pid, &p.state, &t.state)?;
        }
        Ok(())
    }

    /// Seccomp for every thread at once (TSYNC): a tree's own filters or its
    /// container's policy, which spares the remote calls that follow.
    fn restore_seccomp(&mut self, i: usize) -> StepResult<()> {
        let p = &self.image.processes[i];
        let gadget = self.gadget;
        let r = self.mains[i].as_mut().expect("live process");
        if self.image.container.is_none() && !p.state.seccomp_programs.is_empty() {
            // A tree's own filters, as they were read back.
            let programs = p
                .state
                .seccomp_programs
                .iter()
                .map(|f| {
                    image::unhex(&f.code)
                        .map(|code| (code, f.flags))
                        .ok_or_else(|| StepError::Image("a seccomp program is not hex".into()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            install_seccomp(r, gadget, &programs)?;
        } else if p.state.seccomp_filters > 0 {
            if self.seccomp.len() != p.state.seccomp_filters as usize {
                return Err(StepError::Image(format!(
                    "it had {} seccomp filters; palisade can give it only the {} of its container's policy",
                    p.state.seccomp_filters,
                    self.seccomp.len()
                )));
            }
            let programs: Vec<_> = self.seccomp.iter().map(|c| (c.clone(), 0)).collect();
            install_seccomp(r, gadget, &programs)?;
        }
        Ok(())
    }

    /// The gadget goes too, unmapped from a `syscall` in the restored
    /// code; then strict seccomp, which must be the very last call.
    fn drop_gadget(&mut self, i: usize) -> StepResult<()> {
        let p = &self.image.processes[i];
        let r = self.mains[i].as_mut().expect("live process");
        let pid = r.pid;
        let insn = restored_syscall(pid, p)?;
        r.insn = insn;
        r.call(libc::SYS_munmap, &[self.gadget, GADGET_LEN])
            .map_err(StepError::remote(pid, "unmap the gadget"))?;
        // The very last call: from here on only read, write, exit and
        // sigreturn are allowed (our trace suspends it until release).
        if p.state.seccomp_strict {
            const PR_SET_SECCOMP: u64 = 22;
            const SECCOMP_MODE_STRICT: u64 = 1;
            for task in std::iter::once(&mut *r).chain(self.threads[i].iter_mut()) {
                task.insn = insn;
                task.call(libc::SYS_prctl, &[PR_SET_SECCOMP, SECCOMP_MODE_STRICT])
                    .map_err(StepError::remote(
                        pid,
                        format!("thread {}: seccomp strict mode", task.pid),
                    ))?;
            }
        }
        Ok(())
    }
}

/// Writes `s`, NUL-terminated, into the gadget's scratch (G_STR) of
/// `pid` and returns its address there.
fn put_str(pid: i32, gadget: u64, s: &str) -> StepResult<u64> {
    if s.len() >= (G_MM - G_STR) as usize {
        return Err(StepError::Image(format!("path too long: {s}")));
    }
    let mut b = s.as_bytes().to_vec();
    b.push(0);
    write_all(pid, gadget + G_STR, &b)?;
    Ok(gadget + G_STR)
}

/// The kernel's vdso where the image had it (glibc caches pointers into
/// it); ARCH_MAP_VDSO takes the start of the vvar area below it.
fn map_vdso(r: &mut Remote, p: &Process) -> StepResult<()> {
    let pid = r.pid;
    let Some(vdso) = p.vmas.iter().find(|v| v.kind == VmaKind::Vdso) else {
        return Ok(());
    };
    let base = p
        .vmas
        .iter()
        .filter(|v| matches!(v.kind, VmaKind::Vvar | VmaKind::Vdso))
        .map(|v| v.start)
        .min()
        .unwrap_or(vdso.start);
    r.call(libc::SYS_arch_prctl, &[ARCH_MAP_VDSO_64, base])
        .map_err(StepError::remote(pid, format!("map the vdso at {base:#x}")))?;
    let now = proc::maps(pid).map_err(StepError::file("read", proc::path(pid, "maps")))?;
    if !now
        .iter()
        .any(|m| m.path == "[vdso]" && m.start == vdso.start)
    {
        return Err(StepError::failed(format!(
            "the kernel placed the vdso elsewhere than {:#x} (its layout differs from the image's)",
            vdso.start
        )));
    }
    Ok(())
}

/// One mapping, of `backing` (a path the process opens) or anonymous:
/// writable while its pages are filled, then its own protection and advice.
fn map_vma(
    r: &mut Remote,
    gadget: u64,
    v: &Vma,
    backing: Option<String>,
    pages_fd: Option<u64>,
    pages: &PageFile,
) -> StepResult<()> {
    let pid = r.pid;
    let range = format!(
        "vma {:x}-{:x} {}",
        v.start,
        v.end,
        v.path.as_deref().unwrap_or("")
    );
    let len = v.end - v.start;
    let final_prot = prot(v.read, v.write, v.exec);
    let first_prot = if !v.runs.is_empty() {
        (libc::PROT_READ | libc::PROT_WRITE) as u64
    } else {
        final_prot
    };
    let shared = matches!(v.kind, VmaKind::SharedFile | VmaKind::SharedAnonymous);
    let mut fd = u64::MAX;
    if let Some(path) = &backing {
        let p = put_str(pid, gadget, path)?;
        // A writable shared mapping needs the file open for writing.
        let mode = if shared && (v.write || v.may_write) {
            libc::O_RDWR
        } else {
            libc::O_RDONLY
        };
        fd = r
            .call(libc::SYS_open, &[p, mode as u64, 0])
            .map_err(StepError::remote(pid, format!("{range}: open {path}")))?;
    }
    let flags = map_flags(v, shared, backing.is_none());
    let mapped = r.call(
        libc::SYS_mmap,
        &[v.start, len, first_prot, flags, fd, v.offset],
    );
    if fd != u64::MAX {
        let _ = r.call(libc::SYS_close, &[fd]);
    }
    mapped.map_err(StepError::remote(pid, format!("{range}: mmap")))?;
    if !v.runs.is_empty() {
        fill_runs(r, pages_fd, pages, &v.runs).map_err(at(range.as_str()))?;
        if first_prot != final_prot {
            r.call(libc::SYS_mprotect, &[v.start, len, final_prot])
                .map_err(StepError::remote(pid, format!("{range}: mprotect")))?;
        }
    }
    for &advice in &v.advice {
        r.call(libc::SYS_madvise, &[v.start, len, advice as u64])
            .map_err(StepError::remote(pid, format!("{range}: madvise {advice}")))?;
    }
    Ok(())
}

/// The mmap flags of `v`: shared or private, always fixed; an anonymous
/// one grows down if it is the stack.
fn map_flags(v: &Vma, shared: bool, anonymous: bool) -> u64 {
    let mut flags = if shared {
        (libc::MAP_SHARED | libc::MAP_FIXED) as u64
    } else {
        (libc::MAP_PRIVATE | libc::MAP_FIXED) as u64
    };
    if anonymous {
        flags |= libc::MAP_ANONYMOUS as u64;
        if v.path.as_deref() == Some("[stack]") {
            flags |= libc::MAP_GROWSDOWN as u64;
        }
    }
    if v.noreserve {
        flags |= libc::MAP_NORESERVE as u64;
    }
    flags
}

/// The mm layout (brk, stack, args, env, auxv) and the executable's
/// link, in one PR_SET_MM_MAP, once every mapping is in place.
fn set_mm(r: &mut Remote, gadget: u64, p: &Process) -> StepResult<()> {
    let pid = r.pid;
    let mm = p.mm;
    let exe_fd = r
        .call(
            libc::SYS_open,
            &[put_str(pid, gadget, &p.exe)?, libc::O_RDONLY as u64, 0],
        )
        .map_err(StepError::remote(
            pid,
            format!("open the executable {}", p.exe),
        ))?;
    let mut map = Vec::new();
    for w in [
        mm.start_code,
        mm.end_code,
        mm.start_data,
        mm.end_data,
        mm.start_brk,
        mm.brk,
        mm.start_stack,
        mm.arg_start,
        mm.arg_end,
        mm.env_start,
        mm.env_end,
        gadget + G_AUXV,
    ] {
        map.extend_from_slice(&w.to_ne_bytes());
    }
    let auxv: Vec<u8> = p.auxv.iter().flat_map(|w| w.to_ne_bytes()).collect();
    if auxv.len() as u64 > PAGE - G_AUXV {
        return Err(StepError::Image("auxv too large".into()));
    }
    map.extend_from_slice(&(auxv.len() as u32).to_ne_bytes());
    map.extend_from_slice(&(exe_fd as u32).to_ne_bytes());
    write_all(pid, gadget + G_MM, &map)?;
    write_all(pid, gadget + G_AUXV, &auxv)?;
    let set = r.call(
        libc::SYS_prctl,
        &[PR_SET_MM, PR_SET_MM_MAP, gadget + G_MM, map.len() as u64, 0],
    );
    let _ = r.call(libc::SYS_close, &[exe_fd]);
    set.map_err(StepError::remote(
        pid,
        "prctl PR_SET_MM_MAP (brk, stack, args, auxv, exe)",
    ))?;
    Ok(())
}

/// The working and root directories. Both are host paths: the cwd is
/// entered before the root changes.
fn set_dirs(r: &mut Remote, gadget: u64, p: &Process) -> StepResult<()> {
    let pid = r.pid;
    r.call(libc::SYS_chdir, &[put_str(pid, gadget, &p.cwd)?])
        .map_err(StepError::remote(pid, format!("chdir {}", p.cwd)))?;
    if p.root != "/" {
        r.call(libc::SYS_chroot, &[put_str(pid, gadget, &p.root)?])
            .map_err(StepError::remote(pid, format!("chroot {}", p.root)))?;
    }
    Ok(())
}

/// Every signal disposition the image has, by rt_sigaction.
fn set_sigactions(r: &mut Remote, gadget: u64, p: &Process) -> StepResult<()> {
    let pid = r.pid;
    for act in &p.sigactions {
        write_all(pid, gadget + G_ACT, &act.to_bytes())?;
        r.call(
            libc::SYS_rt_sigaction,
            &[act.signal as u64, gadget + G_ACT, 0, 8],
        )
        .map_err(StepError::remote(
            pid,
            format!("rt_sigaction of signal {}", act.signal),
        ))?;
    }
    Ok(())
}

/// A `syscall` in the restored code to unmap the gadget with, read back
/// from any readable executable mapping (a MiB at most each).
fn restored_syscall(pid: i32, p: &Process) -> StepResult<u64> {
    let mut insn = None;
    for v in p.vmas.iter().filter(|v| v.exec && v.read) {
        let mut bytes = vec![0u8; (v.end - v.start).min(1 << 20) as usize];
        if let Ok(n) = ptrace::read_memory(pid, v.start, &mut bytes)
            && let Some(a) = find_syscall(&bytes[..n], v.start)
        {
            insn = Some(a);
            break;
        }
    }
    insn.ok_or_else(|| {
        StepError::failed("no syscall instruction in the restored code to unmap the gadget with")
    })
}

/// Fills a mapping's runs of pages: past a few MiB written in from the
/// mapped page file on two threads ([`PageFile::write_into`]), else each
/// run read by the process itself from the page file (`fd`, open in it),
/// or written into it from here.
fn fill_runs(
    r: &mut Remote,
    fd: Option<u64>,
    pages: &PageFile,
    runs: &[image::Run],
) -> StepResult<()> {
    // Runs kept from a pre-dump chain are written in from its page files.
    let (own, kept): (Vec<image::Run>, Vec<image::Run>) = runs.iter().partition(|r| r.from == 0);
    for run in &kept {
        let file = pages.holding(run)?;
        if file.worth_writing_into(std::slice::from_ref(run)) {
            file.write_into(r.pid, std::slice::from_ref(run))?;
        } else {
            fill(r, None, file, run)?;
        }
    }
    if pages.worth_writing_into(&own) {
        return pages.write_into(r.pid, &own);
    }
    own.iter().try_for_each(|run| fill(r, fd, pages, run))
}

/// Fills a run of pages: read by the process itself from the page file
/// (`fd`, open in it), else written into it from here.
fn fill(r: &mut Remote, fd: Option<u64>, pages: &PageFile, run: &image::Run) -> StepResult<()> {
    let Some(fd) = fd else {
        let data = pages
            .read(run.offset, run.len)
            .map_err(StepError::io("read the page file"))?;
        return write_all(r.pid, run.addr, &data);
    };
    let mut done = 0;
    while done < run.len {
        let n = r
            .call(
                libc::SYS_pread64,
                &[fd, run.addr + done, run.len - done, run.offset + done],
            )
            .map_err(StepError::remote(
                r.pid,
                format!("read its pages at {:#x}", run.addr + done),
            ))?;
        if n == 0 {
            return Err(StepError::failed("the page file ended early"));
        }
        done += n;
    }
    Ok(())
}

/// Installs `programs` (struct sock_filter arrays, oldest first, each
/// with its SECCOMP_FILTER_FLAG_*) in the process, for all its threads.
fn install_seccomp(r: &mut Remote, gadget: u64, programs: &[(Vec<u8>, u64)]) -> StepResult<()> {
    const SECCOMP_SET_MODE_FILTER: u64 = 1;
    const SECCOMP_FILTER_FLAG_TSYNC: u64 = 1;
    let pid = r.pid;
    for (prog, flags) in programs {
        let room = (GADGET_LEN - G_FILTER - 16) as usize;
        if prog.len() > room {
            return Err(StepError::Image(format!(
                "a seccomp program of {} bytes does not fit the gadget",
                prog.len()
            )));
        }
        let mut fprog = ((prog.len() / 8) as u64).to_ne_bytes().to_vec();
        fprog.extend_from_slice(&(gadget + G_FILTER + 16).to_ne_bytes());
        write_all(pid, gadget + G_FILTER, &fprog)?;
        write_all(pid, gadget + G_FILTER + 16, prog)?;
        r.call(
            libc::SYS_seccomp,
            &[
                SECCOMP_SET_MODE_FILTER,
                SECCOMP_FILTER_FLAG_TSYNC | flags,
                gadget + G_FILTER,
            ],
        )
        .map_err(StepError::remote(pid, "seccomp filter"))?;
    }
    Ok(())
}

/// Per-thread state, by remote syscalls in the thread itself.
fn thread_state(r: &mut Remote, gadget: u64, t: &image::Thread) -> StepResult<()> {
    let tid = r.pid;
    let e = |what: &str| StepError::remote(tid, format!("thread {tid}: {what}"));
    let mut name = t.comm.as_bytes().to_vec();
    name.truncate(15);
    name.push(0);
    write_all(tid, gadget + G_STR, &name)?;
    r.call(libc::SYS_prctl, &[PR_SET_NAME, gadget + G_STR])
        .map_err(e("prctl PR_SET_NAME"))?;
    r.call(libc::SYS_set_tid_address, &[t.tid_address])
        .map_err(e("set_tid_address"))?;
    if t.robust_list != 0 {
        r.call(
            libc::SYS_set_robust_list,
            &[t.robust_list, t.robust_list_len],
        )
        .map_err(e("set_robust_list"))?;
    }
    if let Some(rseq) = t.rseq {
        r.call(
            libc::SYS_rseq,
            &[rseq.pointer, rseq.size.into(), 0, rseq.signature.into()],
        )
        .map_err(e(&format!("rseq register at {:#x}", rseq.pointer)))?;
    }
    Ok(())
}
