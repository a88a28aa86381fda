//! Dump: seize and stop the process, refuse what this slice cannot
//! restore, record everything into the image, then end the original (or
//! let it continue unchanged with `--leave-running`).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};

use super::{
    CheckpointError,
    image::{self, Image, Registers, Rseq, Run, SigAction, Vma, VmaKind},
    pages::{self, PageWriter},
    proc,
    remote::{Remote, find_syscall, resume_regs},
};
use crate::sys::ptrace;

/// Longest run of pages (each run has its own checksum).
const BATCH: u64 = 64 << 20;

#[derive(Debug, Clone, Copy)]
pub struct DumpOptions {
    pub leave_running: bool,
}

/// What a dump did, for the CLI to report.
#[derive(Debug, Clone)]
pub struct DumpReport {
    pub pid: i32,
    pub vmas: usize,
    pub pages: u64,
    pub image_bytes: u64,
    /// Seizing and stopping the process.
    pub freeze: Duration,
    /// Reading everything, the pages streamed into pages.img meanwhile.
    pub dump: Duration,
    /// Flushing pages.img and writing meta.json.
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

/// Checkpoints process `pid` into `dir`; `progress` is called with the
/// bytes of pages written so far as the dump goes.
pub fn checkpoint_pid(
    pid: i32,
    dir: &Path,
    opts: DumpOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<DumpReport, CheckpointError> {
    let unsupported = |what: String| CheckpointError::Unsupported { pid, what };
    let t0 = Instant::now();
    let threads = proc::threads(pid).map_err(|e| CheckpointError::Process {
        pid,
        what: format!("no such process ({e})"),
    })?;
    if threads != 1 {
        return Err(unsupported(format!("it has {threads} threads")));
    }
    let kids = proc::children(pid);
    if !kids.is_empty() {
        return Err(unsupported(format!("it has children (pids {kids:?})")));
    }
    ptrace::seize(pid, libc::PTRACE_O_TRACESYSGOOD)
        .map_err(CheckpointError::sys(pid, "ptrace seize"))?;
    let stopped = ptrace::interrupt(pid)
        .and_then(|_| ptrace::wait(pid))
        .map_err(CheckpointError::sys(pid, "ptrace interrupt"));
    match stopped {
        Ok(status) if libc::WIFSTOPPED(status) => {}
        Ok(status) => {
            return Err(CheckpointError::Process {
                pid,
                what: format!("ended while being stopped (wait status {status:#x})"),
            });
        }
        Err(e) => {
            let _ = ptrace::detach(pid, 0);
            return Err(e);
        }
    }
    let freeze = t0.elapsed();
    let t1 = Instant::now();
    // Remote syscalls (sigactions) change the registers: whatever
    // happens, they are put back before the task is let go.
    let saved = ptrace::get_regs(pid).map_err(CheckpointError::sys(pid, "read registers"));
    let saved = match saved {
        Ok(r) => r,
        Err(e) => {
            let _ = ptrace::detach(pid, 0);
            return Err(e);
        }
    };
    let mut deferred = Vec::new();
    // pages.img is written as the pages are read (pages.rs); a refused or
    // failed dump leaves no image behind.
    let dir_existed = dir.exists();
    let collected = image::create_pages(dir, progress)
        .and_then(|mut pages| Ok((collect(pid, saved, &mut deferred, &mut pages)?, pages)));
    let discard = || {
        let _ = std::fs::remove_file(pages::partial(&dir.join(image::PAGES)));
        if !dir_existed {
            let _ = std::fs::remove_dir(dir);
        }
    };
    // Lets the task go on, with the signals held back during our remote
    // syscalls sent again.
    let release = |deferred: &[i32]| {
        let r = ptrace::detach(pid, 0);
        for sig in deferred {
            if let Ok(sig) = Signal::try_from(*sig) {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
            }
        }
        r
    };
    if let Err(e) = ptrace::set_regs(pid, &resume_regs(saved)) {
        let _ = release(&deferred);
        discard();
        return Err(CheckpointError::sys(pid, "restore registers")(e));
    }
    let (image, pages) = match collected {
        Ok(v) => v,
        Err(e) => {
            let _ = release(&deferred);
            discard();
            return Err(e);
        }
    };
    let dump = t1.elapsed();
    let t2 = Instant::now();
    let written = pages
        .finish()
        .map_err(|e| CheckpointError::Image(format!("{}: {e}", dir.join(image::PAGES).display())))
        .and_then(|_| image::write(dir, &image));
    if let Err(e) = written {
        let _ = release(&deferred);
        discard();
        return Err(e);
    }
    let write = t2.elapsed();
    if opts.leave_running {
        release(&deferred).map_err(CheckpointError::sys(pid, "ptrace detach"))?;
    } else {
        end(pid)?;
    }
    Ok(DumpReport {
        pid,
        vmas: image.vmas.len(),
        pages: image.pages_len / 4096,
        image_bytes: image.pages_len,
        freeze,
        dump,
        write,
    })
}

/// SIGKILL the stopped original, reap its trace, and wait (up to 10 s)
/// for its parent to free the pid.
fn end(pid: i32) -> Result<(), CheckpointError> {
    nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL)
        .map_err(CheckpointError::sys(pid, "kill"))?;
    loop {
        match ptrace::wait(pid) {
            Ok(status) if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) => break,
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while proc::path(pid, "").exists() {
        if Instant::now() > deadline {
            let parent = proc::Stat::read(pid).map(|s| s.field(4)).unwrap_or(0);
            return Err(CheckpointError::Process {
                pid,
                what: format!(
                    "killed after the dump, but its parent (pid {parent}) has not reaped it: the pid is not free yet"
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
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
    pid: i32,
    pagemap: &std::fs::File,
    start: u64,
    end: u64,
    pages: &mut PageWriter,
) -> Result<Vec<Run>, String> {
    use std::os::unix::fs::FileExt;
    let npages = ((end - start) / 4096) as usize;
    let mut raw = vec![0u8; npages * 8];
    pagemap
        .read_exact_at(&mut raw, start / 4096 * 8)
        .map_err(|e| format!("pagemap: {e}"))?;
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
    pages.copy_from(pid, &ranges)
}

/// Reads every signal disposition that is not the default, by remote
/// rt_sigaction executed at a `syscall` instruction of the process's own
/// (at rip-2 when it was stopped in a syscall, else in its vdso), into
/// scratch space below its red zone, which is put back afterwards.
fn sigactions(
    pid: i32,
    regs: ptrace::Regs,
    vdso: Option<(u64, u64)>,
    deferred: &mut Vec<i32>,
) -> Result<Vec<SigAction>, CheckpointError> {
    let fail = |what: String| CheckpointError::Process { pid, what };
    let mut two = [0u8; 2];
    let at_rip = (regs.orig_rax as i64) >= 0
        && ptrace::read_memory(pid, regs.rip - 2, &mut two).is_ok()
        && two == [0x0f, 0x05];
    let insn = if at_rip {
        regs.rip - 2
    } else {
        let (start, end) = vdso.ok_or_else(|| {
            fail("no syscall instruction to read signal handlers with (no vdso)".into())
        })?;
        let mut bytes = vec![0u8; (end - start) as usize];
        ptrace::read_memory(pid, start, &mut bytes)
            .map_err(CheckpointError::sys(pid, "read the vdso"))?;
        find_syscall(&bytes, start)
            .ok_or_else(|| fail("no syscall instruction in the vdso".into()))?
    };
    let scratch = (regs.rsp - 128 - 64) & !15;
    let mut old = [0u8; 32];
    ptrace::read_memory(pid, scratch, &mut old)
        .map_err(CheckpointError::sys(pid, "read the stack"))?;
    let mut r = Remote::new(pid, insn, regs);
    let mut out = Vec::new();
    let mut result = Ok(());
    for sig in 1..=64i32 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        if let Err(e) = r.call(libc::SYS_rt_sigaction, &[sig as u64, 0, scratch, 8]) {
            result = Err(fail(format!("remote rt_sigaction({sig}): {e}")));
            break;
        }
        let mut b = [0u8; 32];
        if let Err(e) = ptrace::read_memory(pid, scratch, &mut b) {
            result = Err(CheckpointError::sys(pid, "read a sigaction")(e));
            break;
        }
        let act = SigAction::from_bytes(sig, &b);
        if act.handler != 0 || act.flags != 0 || act.mask != 0 {
            out.push(act);
        }
    }
    deferred.append(&mut r.deferred);
    ptrace::write_memory(pid, scratch, &old)
        .map_err(CheckpointError::sys(pid, "put the stack back"))?;
    result.map(|()| out)
}

fn collect(
    pid: i32,
    regs: ptrace::Regs,
    deferred: &mut Vec<i32>,
    pages: &mut PageWriter,
) -> Result<Image, CheckpointError> {
    let unsupported = |what: String| CheckpointError::Unsupported { pid, what };
    let io = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| CheckpointError::Process {
            pid,
            what: format!("{what}: {e}"),
        }
    };
    let xstate = ptrace::get_xstate(pid).map_err(CheckpointError::sys(pid, "read xstate"))?;
    let rseq = ptrace::rseq_config(pid)
        .ok()
        .filter(|c| c.pointer != 0)
        .map(|c| Rseq {
            pointer: c.pointer,
            size: c.size,
            signature: c.signature,
        });
    let stat = proc::Stat::read(pid).map_err(io("stat"))?;
    let mut mm = stat.mm();
    let session_leader = stat.field(6) == pid as u64;
    let fds = proc::fds(pid).map_err(unsupported)?;
    let sigmask = proc::sigmask(pid).ok_or_else(|| CheckpointError::Process {
        pid,
        what: "no SigBlk in status".into(),
    })?;
    let read_link = |name: &str| {
        std::fs::read_link(proc::path(pid, name))
            .map(|p| p.to_string_lossy().into_owned())
            .map_err(io(name))
    };
    let cwd = read_link("cwd")?;
    let exe = read_link("exe")?;
    let comm = std::fs::read_to_string(proc::path(pid, "comm"))
        .map_err(io("comm"))?
        .trim_end()
        .to_string();
    let auxv = proc::auxv(pid).map_err(io("auxv"))?;

    let mut vmas = Vec::new();
    let pagemap = std::fs::File::open(proc::path(pid, "pagemap")).map_err(io("pagemap"))?;
    for m in proc::maps(pid).map_err(io("maps"))? {
        let range = format!("{:x}-{:x} {}", m.start, m.end, m.path);
        let shared = m.perms.as_bytes().get(3) == Some(&b's');
        let kind = match m.path.as_str() {
            // A shared file mapping holds what the file holds. Shared
            // anonymous memory (/dev/zero, SysV, memfd) has no such home.
            p if shared
                && p.starts_with('/')
                && !p.ends_with(" (deleted)")
                && !p.starts_with("/dev/")
                && !p.starts_with("/SYSV")
                && !p.starts_with("/memfd:") =>
            {
                VmaKind::SharedFile
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
        let p = m.perms.as_bytes();
        let read = p[0] == b'r';
        let dumped = read && matches!(kind, VmaKind::Anonymous | VmaKind::File);
        let runs = if dumped {
            dump_vma(pid, &pagemap, m.start, m.end, pages).map_err(|what| {
                CheckpointError::Process {
                    pid,
                    what: format!("{range}: {what}"),
                }
            })?
        } else {
            Vec::new()
        };
        vmas.push(Vma {
            start: m.start,
            end: m.end,
            read,
            write: p[1] == b'w',
            exec: p[2] == b'x',
            kind,
            path: (!m.path.is_empty()).then(|| m.path.clone()),
            offset: m.offset,
            runs,
        });
    }
    let vdso = vmas
        .iter()
        .find(|v| v.kind == VmaKind::Vdso)
        .map(|v| (v.start, v.end));
    let sigactions = sigactions(pid, regs, vdso, deferred)?;
    let image = Image {
        pid,
        session_leader,
        comm,
        exe,
        cwd,
        regs: regs.into(),
        xstate: image::hex(&xstate),
        sigmask,
        sigactions,
        rseq,
        mm,
        auxv,
        vmas,
        fds,
        pages_len: pages.len(),
    };
    Ok(image)
}
