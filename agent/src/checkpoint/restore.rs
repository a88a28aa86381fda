//! Restore: validate the whole image, then create the process with its
//! old pid (clone3 `set_tid`) in a forked helper, rebuild its address
//! space, files and signal mask by remote syscalls, set its registers and
//! let it go. The helper exits, so the restored process is re-parented
//! like a daemon. On any failure the created process is killed.

use std::{
    io::{Read, Write},
    os::fd::AsRawFd,
    path::Path,
    time::{Duration, Instant},
};

use super::{
    CheckpointError,
    image::{self, Image, VmaKind},
    pages::PageFile,
    proc,
    remote::{Remote, RemoteError, find_syscall, resume_regs},
};
use crate::sys::{
    process::{Forked, fork_single_threaded},
    ptrace,
};

const PAGE: u64 = 4096;
/// Highest user address with 4-level paging.
const TASK_SIZE: u64 = 0x7fff_ffff_f000;
const ARCH_MAP_VDSO_64: u64 = 0x2003;
const PR_SET_NAME: u64 = 15;
const PR_SET_MM: u64 = 35;
const PR_SET_MM_MAP: u64 = 14;
const RSEQ_FLAG_UNREGISTER: u64 = 1;

// Layout of the gadget page: a `syscall` at 0, scratch data after it.
const G_MASK: u64 = 64;
const G_ACT: u64 = 128;
const G_STR: u64 = 256;
const G_MM: u64 = 2048;
const G_AUXV: u64 = 2304;

/// What a restore did, for the CLI to report.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub pid: i32,
    pub pages: u64,
    pub image_bytes: u64,
    /// Reading and validating the image.
    pub read: Duration,
    /// The new process, its old address space gone.
    pub create: Duration,
    /// Its mappings and their pages.
    pub memory: Duration,
    /// Everything else (mm, files, signals, registers) and the detach.
    pub release: Duration,
}

/// Restores the image in `dir`; the process runs on with its old pid.
pub fn restore(dir: &Path) -> Result<RestoreReport, CheckpointError> {
    let t0 = Instant::now();
    let (image, pages) = image::read(dir)?;
    let read = t0.elapsed();
    let pid = image.pid;
    if proc::path(pid, "").exists() {
        let comm = std::fs::read_to_string(proc::path(pid, "comm")).unwrap_or_default();
        return Err(CheckpointError::Process {
            pid,
            what: format!(
                "the pid is in use (by {}): it must be free to restore with the same pid",
                comm.trim_end()
            ),
        });
    }
    let (mut reader, writer) = std::io::pipe().map_err(|e| CheckpointError::Process {
        pid,
        what: format!("pipe: {e}"),
    })?;
    match fork_single_threaded().map_err(CheckpointError::sys(pid, "fork the restore helper"))? {
        Forked::Child => {
            drop(reader);
            let mut writer = writer;
            let (msg, status) = match helper(&image, &pages) {
                Ok([create, memory, release]) => (
                    format!(
                        "ok {} {} {}",
                        create.as_nanos(),
                        memory.as_nanos(),
                        release.as_nanos()
                    ),
                    0,
                ),
                Err(e) => (format!("err {e}"), 1),
            };
            let _ = writer.write_all(msg.as_bytes());
            drop(writer);
            ptrace::exit_now(status);
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
                        pages: image.pages_len / PAGE,
                        image_bytes: image.pages_len,
                        read,
                        create: next(),
                        memory: next(),
                        release: next(),
                    })
                }
                Some(("err", e)) => Err(CheckpointError::Restore {
                    pid,
                    what: e.to_string(),
                }),
                _ => Err(CheckpointError::Restore {
                    pid,
                    what: "the restore helper died without a word".into(),
                }),
            }
        }
    }
}

/// In the forked helper: create the process, rebuild it, release it;
/// returns how long creating, the memory and the rest took.
fn helper(image: &Image, pages: &PageFile) -> Result<[Duration; 3], String> {
    let t0 = Instant::now();
    let pid = image.pid;
    let child = match crate::sys::process::fork_with_pid(pid) {
        Ok(0) => ptrace::child_become_tracee(image.session_leader),
        Ok(child) => child,
        Err(nix::errno::Errno::EEXIST) => return Err(format!("pid {pid} is in use")),
        Err(e) => return Err(format!("clone3 with set_tid {pid}: {} ({e})", e.desc())),
    };
    let status = ptrace::wait(child).map_err(|e| format!("wait for the new process: {e}"))?;
    if !(libc::WIFSTOPPED(status) && libc::WSTOPSIG(status) == libc::SIGSTOP) {
        return Err(format!(
            "the new process did not stop (wait status {status:#x})"
        ));
    }
    let mut marks = Vec::new();
    let result = ptrace::set_options(child, libc::PTRACE_O_EXITKILL | libc::PTRACE_O_TRACESYSGOOD)
        .map_err(|e| format!("ptrace options: {e}"))
        .and_then(|_| rebuild(child, image, pages, &mut marks));
    if let Err(e) = result {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = ptrace::wait(child);
        return Err(e);
    }
    let end = Instant::now();
    let (memory, release) = match marks[..] {
        [m, r] => (m, r),
        _ => (end, end),
    };
    Ok([memory - t0, release - memory, end - release])
}

fn write_all(pid: i32, addr: u64, data: &[u8]) -> Result<(), String> {
    let mut done = 0;
    while done < data.len() {
        let n = ptrace::write_memory(pid, addr + done as u64, &data[done..])
            .map_err(|e| format!("write memory at {:#x}: {e}", addr + done as u64))?;
        if n == 0 {
            return Err(format!(
                "write memory at {:#x}: short write",
                addr + done as u64
            ));
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

/// Picks a page for the gadget where neither the image nor the new
/// process has anything mapped.
fn gadget_address(image: &Image, current: &[proc::MapLine]) -> Option<u64> {
    let busy = |a: u64| {
        image.vmas.iter().any(|v| a + PAGE > v.start && a < v.end)
            || current.iter().any(|m| a + PAGE > m.start && a < m.end)
    };
    (1..0x7000u64).map(|i| i << 32).find(|a| !busy(*a))
}

/// `marks` gets the instants the memory phase starts and ends.
fn rebuild(
    pid: i32,
    image: &Image,
    pages: &PageFile,
    marks: &mut Vec<Instant>,
) -> Result<(), String> {
    let e = |what: String| move |err: RemoteError| format!("{what}: {err}");
    let start = ptrace::get_regs(pid).map_err(|err| format!("registers: {err}"))?;
    // The new process stopped right after its kill(2): rip-2 is `syscall`.
    let mut two = [0u8; 2];
    ptrace::read_memory(pid, start.rip - 2, &mut two).map_err(|err| format!("read rip: {err}"))?;
    if two != [0x0f, 0x05] {
        return Err(format!(
            "no syscall instruction before rip {:#x}",
            start.rip
        ));
    }
    let mut r = Remote::new(pid, start.rip - 2, start);

    // Its inherited rseq area is about to be unmapped: unregister first.
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

    let current = proc::maps(pid).map_err(|err| format!("maps of the new process: {err}"))?;
    let gadget = gadget_address(image, &current).ok_or("no free address for the gadget page")?;
    r.call(
        libc::SYS_mmap,
        &[
            gadget,
            PAGE,
            (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64,
            u64::MAX,
            0,
        ],
    )
    .map_err(e(format!("map the gadget page at {gadget:#x}")))?;
    write_all(pid, gadget, &[0x0f, 0x05])?;
    r.insn = gadget;

    // Everything else of the helper's copy goes, the vdso included.
    r.call(libc::SYS_munmap, &[0, gadget])
        .map_err(e("unmap below the gadget".into()))?;
    r.call(
        libc::SYS_munmap,
        &[gadget + PAGE, TASK_SIZE - gadget - PAGE],
    )
    .map_err(e("unmap above the gadget".into()))?;

    // The kernel's vdso where the image had it (glibc caches pointers
    // into it); ARCH_MAP_VDSO takes the start of the vvar area below it.
    let vdso = image.vmas.iter().find(|v| v.kind == VmaKind::Vdso);
    if let Some(vdso) = vdso {
        let base = image
            .vmas
            .iter()
            .filter(|v| matches!(v.kind, VmaKind::Vvar | VmaKind::Vdso))
            .map(|v| v.start)
            .min()
            .unwrap_or(vdso.start);
        r.call(libc::SYS_arch_prctl, &[ARCH_MAP_VDSO_64, base])
            .map_err(e(format!("map the vdso at {base:#x}")))?;
        let now = proc::maps(pid).map_err(|err| format!("maps: {err}"))?;
        if !now
            .iter()
            .any(|m| m.path == "[vdso]" && m.start == vdso.start)
        {
            return Err(format!(
                "the kernel placed the vdso elsewhere than {:#x} (its layout differs from the image's)",
                vdso.start
            ));
        }
    }

    let put_str = |s: &str| -> Result<u64, String> {
        if s.len() >= (G_MM - G_STR) as usize {
            return Err(format!("path too long: {s}"));
        }
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        write_all(pid, gadget + G_STR, &b)?;
        Ok(gadget + G_STR)
    };

    // The new process reads its pages itself, from the very file the image
    // was validated in (reopened through our fd), so each byte is copied
    // once, straight into its place.
    marks.push(Instant::now());
    let pages_fd = if image.pages_len > 0 {
        let path = format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            pages.file().as_raw_fd()
        );
        r.call(
            libc::SYS_open,
            &[
                put_str(&path)?,
                (libc::O_RDONLY | libc::O_CLOEXEC) as u64,
                0,
            ],
        )
        .map_err(e(format!("open the page file as {path}")))?
    } else {
        u64::MAX
    };
    for v in &image.vmas {
        if !matches!(
            v.kind,
            VmaKind::Anonymous | VmaKind::File | VmaKind::SharedFile
        ) {
            continue;
        }
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
        let shared = v.kind == VmaKind::SharedFile;
        let mut flags = if shared {
            (libc::MAP_SHARED | libc::MAP_FIXED) as u64
        } else {
            (libc::MAP_PRIVATE | libc::MAP_FIXED) as u64
        };
        let mut fd = u64::MAX;
        if matches!(v.kind, VmaKind::File | VmaKind::SharedFile) {
            let path = v.path.as_deref().unwrap_or_default();
            let p = put_str(path)?;
            // A writable shared mapping needs the file open for writing.
            let mode = if shared && v.write {
                libc::O_RDWR
            } else {
                libc::O_RDONLY
            };
            fd = r
                .call(libc::SYS_open, &[p, mode as u64, 0])
                .map_err(e(format!("{range}: open {path}")))?;
        } else {
            flags |= libc::MAP_ANONYMOUS as u64;
            if v.path.as_deref() == Some("[stack]") {
                flags |= libc::MAP_GROWSDOWN as u64;
            }
        }
        let mapped = r.call(
            libc::SYS_mmap,
            &[v.start, len, first_prot, flags, fd, v.offset],
        );
        if fd != u64::MAX {
            let _ = r.call(libc::SYS_close, &[fd]);
        }
        mapped.map_err(e(format!("{range}: mmap")))?;
        if !v.runs.is_empty() {
            for run in &v.runs {
                let mut done = 0;
                while done < run.len {
                    let n = r
                        .call(
                            libc::SYS_pread64,
                            &[pages_fd, run.addr + done, run.len - done, run.offset + done],
                        )
                        .map_err(e(format!("{range}: read its pages at {:#x}", run.addr)))?;
                    if n == 0 {
                        return Err(format!("{range}: the page file ended early"));
                    }
                    done += n;
                }
            }
            if first_prot != final_prot {
                r.call(libc::SYS_mprotect, &[v.start, len, final_prot])
                    .map_err(e(format!("{range}: mprotect")))?;
            }
        }
    }

    if pages_fd != u64::MAX {
        r.call(libc::SYS_close, &[pages_fd])
            .map_err(e("close the page file".into()))?;
    }
    marks.push(Instant::now());

    // mm layout (brk, stack, args, env, auxv) and the executable's link.
    let mm = image.mm;
    let exe_fd = r
        .call(
            libc::SYS_open,
            &[put_str(&image.exe)?, libc::O_RDONLY as u64, 0],
        )
        .map_err(e(format!("open the executable {}", image.exe)))?;
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
    let auxv: Vec<u8> = image.auxv.iter().flat_map(|w| w.to_ne_bytes()).collect();
    if auxv.len() as u64 > PAGE - G_AUXV {
        return Err("auxv too large".into());
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
    set.map_err(e("prctl PR_SET_MM_MAP (brk, stack, args, auxv, exe)".into()))?;

    for f in &image.fds {
        let flags = f.flags & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL);
        let p = put_str(&f.path)?;
        let got = r
            .call(libc::SYS_open, &[p, flags as u64, 0])
            .map_err(e(format!("fd {}: open {}", f.fd, f.path)))?;
        if got != f.fd as u64 {
            let cloexec = (flags & libc::O_CLOEXEC) as u64;
            r.call(libc::SYS_dup3, &[got, f.fd as u64, cloexec])
                .map_err(e(format!("fd {}: dup3", f.fd)))?;
            let _ = r.call(libc::SYS_close, &[got]);
        }
        if f.pos != 0 {
            match r.call(
                libc::SYS_lseek,
                &[f.fd as u64, f.pos, libc::SEEK_SET as u64],
            ) {
                Ok(_) | Err(RemoteError::Errno(nix::errno::Errno::ESPIPE)) => {}
                Err(err) => return Err(format!("fd {}: lseek to {}: {err}", f.fd, f.pos)),
            }
        }
    }

    r.call(libc::SYS_chdir, &[put_str(&image.cwd)?])
        .map_err(e(format!("chdir {}", image.cwd)))?;
    r.call(libc::SYS_prctl, &[PR_SET_NAME, put_str(&image.comm)?])
        .map_err(e("prctl PR_SET_NAME".into()))?;
    for act in &image.sigactions {
        write_all(pid, gadget + G_ACT, &act.to_bytes())?;
        r.call(
            libc::SYS_rt_sigaction,
            &[act.signal as u64, gadget + G_ACT, 0, 8],
        )
        .map_err(e(format!("rt_sigaction of signal {}", act.signal)))?;
    }
    write_all(pid, gadget + G_MASK, &image.sigmask.to_ne_bytes())?;
    r.call(
        libc::SYS_rt_sigprocmask,
        &[libc::SIG_SETMASK as u64, gadget + G_MASK, 0, 8],
    )
    .map_err(e("rt_sigprocmask".into()))?;
    if let Some(rseq) = image.rseq {
        r.call(
            libc::SYS_rseq,
            &[rseq.pointer, rseq.size.into(), 0, rseq.signature.into()],
        )
        .map_err(e(format!("rseq register at {:#x}", rseq.pointer)))?;
    }

    // The gadget goes too, unmapped from a `syscall` in the restored code.
    let mut insn = None;
    // Any readable executable mapping will do; read it back from the
    // restored process, a MiB at most each.
    for v in image.vmas.iter().filter(|v| v.exec && v.read) {
        let mut bytes = vec![0u8; (v.end - v.start).min(1 << 20) as usize];
        if let Ok(n) = ptrace::read_memory(pid, v.start, &mut bytes)
            && let Some(a) = find_syscall(&bytes[..n], v.start)
        {
            insn = Some(a);
            break;
        }
    }
    let insn =
        insn.ok_or("no syscall instruction in the restored code to unmap the gadget with")?;
    r.insn = insn;
    r.call(libc::SYS_munmap, &[gadget, PAGE])
        .map_err(e("unmap the gadget page".into()))?;

    // Registers last; a syscall our stop interrupted is re-issued.
    let regs = resume_regs(image.regs.into());
    ptrace::set_regs(pid, &regs).map_err(|err| format!("set registers: {err}"))?;
    let xstate = image::unhex(&image.xstate).ok_or("xstate is not hex")?;
    ptrace::set_xstate(pid, &xstate).map_err(|err| format!("set xstate: {err}"))?;
    ptrace::detach(pid, 0).map_err(|err| format!("detach: {err}"))?;
    Ok(())
}
