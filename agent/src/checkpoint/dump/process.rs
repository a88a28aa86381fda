//! Reading one stopped process for the dump: what /proc says of it, its
//! mappings and their pages, and, by remote calls in its threads, its
//! signal handlers, task state and every thread's registers and state.

use super::{Member, Stopped};
use crate::{
    checkpoint::{
        CheckpointError, StepError, StepResult,
        image::{
            self, MmLayout, Process, Rseq, Run, SharedMemory, SigAction, Thread, Vma, VmaKind,
        },
        pages::{PageWriter, Source},
        proc,
        remote::{Remote, Scratch, find_syscall},
        state::{self, ProcessState},
        vmflags,
    },
    sys::ptrace,
};

/// Longest run of pages (each run has its own checksum).
const BATCH: u64 = 64 << 20;

/// pagemap bits: page present, swapped, file-backed (or the zero page).
const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;
const PM_FILE: u64 = 1 << 61;

/// The pages of [start, end) that a fresh mapping would not give back —
/// present or swapped and not a file page: touched anonymous memory
/// (the zero page included) and copied-on-write pages of private file
/// mappings — as ranges of contiguous pages (each at most [`BATCH`]).
///
/// One PAGEMAP_SCAN (Linux 6.7) gives the present pages as regions, at
/// the cost of a page-table walk; only the pages it calls swapped are read
/// from pagemap, one entry each, since a write-protection marker (a page
/// of a tracked range never touched, holding no data) reads as swapped
/// too. Where the kernel has no PAGEMAP_SCAN, pagemap is read whole.
/// An `anonymous` mapping has no file pages to leave out, and is scanned
/// without asking (the kernel then skips looking up each page: 1.6 ms a
/// GiB instead of 12 here).
pub(in crate::checkpoint) fn resident_ranges(
    pagemap: &std::fs::File,
    start: u64,
    end: u64,
    anonymous: bool,
) -> StepResult<Vec<(u64, u64)>> {
    use crate::sys::uffd::{PAGE_IS_FILE, PAGE_IS_PRESENT, PAGE_IS_SWAPPED, Scan, pagemap_scan};
    use std::os::fd::AsFd;
    // The zero page is taken, as pagemap shows it (present, not a file's).
    let file = if anonymous { 0 } else { PAGE_IS_FILE };
    let scan = Scan {
        category_inverted: file,
        category_mask: file,
        category_anyof_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
        return_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED | file,
        ..Scan::default()
    };
    let regions = match pagemap_scan(pagemap.as_fd(), start, end, &scan) {
        Ok(r) => r,
        // No PAGEMAP_SCAN (before 6.7).
        Err(nix::errno::Errno::ENOTTY) => return read_resident(pagemap, start, end),
        Err(e) => return Err(StepError::sys("PAGEMAP_SCAN")(e)),
    };
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for r in regions {
        if r.categories & PAGE_IS_PRESENT != 0 {
            append(&mut ranges, r.start, r.end - r.start);
        } else {
            for (a, l) in read_resident(pagemap, r.start, r.end)? {
                append(&mut ranges, a, l);
            }
        }
    }
    Ok(ranges)
}

/// Adds [addr, addr+len) (after what `ranges` holds) to `ranges`, joined
/// to the last range where they touch, no range longer than [`BATCH`].
fn append(ranges: &mut Vec<(u64, u64)>, addr: u64, len: u64) {
    let end = addr + len;
    let mut at = addr;
    while at < end {
        match ranges.last_mut() {
            Some((a, l)) if *a + *l == at && *l < BATCH => {
                let n = (BATCH - *l).min(end - at);
                *l += n;
                at += n;
            }
            _ => {
                let n = BATCH.min(end - at);
                ranges.push((at, n));
                at += n;
            }
        }
    }
}

/// [`resident_ranges`] from a read of every page's pagemap entry.
fn read_resident(pagemap: &std::fs::File, start: u64, end: u64) -> StepResult<Vec<(u64, u64)>> {
    use std::os::unix::fs::FileExt;
    let npages = ((end - start) / 4096) as usize;
    let mut raw = vec![0u8; npages * 8];
    pagemap
        .read_exact_at(&mut raw, start / 4096 * 8)
        .map_err(StepError::io("read pagemap"))?;
    // A page of a write-protected range that was never touched reads as
    // swapped, yet holds only the protection marker: no data.
    let marker = crate::sys::uffd::marker_pagemap_entry().ok();
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for (i, entry) in raw.chunks_exact(8).enumerate() {
        let e = u64::from_ne_bytes(entry.try_into().expect("8 bytes"));
        if e & (PM_PRESENT | PM_SWAPPED) == 0 || e & PM_FILE != 0 || Some(e) == marker {
            continue;
        }
        append(&mut ranges, start + i as u64 * 4096, 4096);
    }
    Ok(ranges)
}

/// Appends to `pages` the resident pages of `pid`'s mapping [start, end)
/// and returns them as runs; those a pre-dump chain still holds (the
/// writer's [`crate::checkpoint::track::Prior`]) are named, not copied.
fn dump_vma(
    pid: i32,
    source: Source,
    pagemap: &std::fs::File,
    (start, end): (u64, u64),
    anonymous: bool,
    pages: &mut PageWriter,
) -> StepResult<Vec<Run>> {
    let ranges = resident_ranges(pagemap, start, end, anonymous)?;
    let (copy, kept) = match pages.prior() {
        Some(prior) => prior.split(pid, start, end, ranges),
        None => (ranges, Vec::new()),
    };
    let runs = pages.copy(source, &copy)?;
    Ok(if kept.is_empty() {
        runs
    } else {
        crate::checkpoint::track::merge_runs(runs, kept)
    })
}

/// A remote-syscall driver for stopped task `t`: at the `syscall` it was
/// stopped in (rip-2), else at one in its vdso.
pub(in crate::checkpoint) fn remote_for(
    t: &Stopped,
    vdso: Option<(u64, u64)>,
) -> Result<Remote, CheckpointError> {
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

/// Reads process `m` into `p` (fds and stat's mm already there): /proc,
/// mappings and pages, then remote reads; `p` is written only if all work.
pub(super) fn collect(
    m: &mut Member,
    p: &mut Process,
    shared_memory: &mut Vec<SharedMemory>,
    pages: &mut PageWriter,
) -> Result<(), CheckpointError> {
    let pid = m.pid;
    let id = read_identity(pid)?;
    let mut mm = p.mm;
    let vmas = collect_vmas(pid, &mut mm, shared_memory, pages)?;
    let (actions, process, threads) = collect_remote(m, &vmas)?;
    p.sigactions = actions;
    p.state = process;
    p.threads = threads;
    p.comm = id.comm;
    p.exe = id.exe;
    p.cwd = id.cwd;
    p.root = id.root;
    p.mm = mm;
    p.auxv = id.auxv;
    p.vmas = vmas;
    Ok(())
}

/// What /proc says of a process itself: its directories, executable,
/// name and auxiliary vector.
struct Identity {
    cwd: String,
    root: String,
    exe: String,
    comm: String,
    auxv: Vec<u64>,
}

/// Reads the [`Identity`] of process `pid`.
fn read_identity(pid: i32) -> Result<Identity, CheckpointError> {
    let io = |what: &str| CheckpointError::file(pid, "read", proc::path(pid, what));
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
    Ok(Identity {
        cwd,
        root,
        exe,
        comm,
        auxv,
    })
}

/// Every mapping of `pid` as restore must make it again, its private pages
/// dumped (a shared anonymous object's once); the heap's end goes to `mm`.
fn collect_vmas(
    pid: i32,
    mm: &mut MmLayout,
    shared_memory: &mut Vec<SharedMemory>,
    pages: &mut PageWriter,
) -> Result<Vec<Vma>, CheckpointError> {
    let io = |what: &str| CheckpointError::file(pid, "read", proc::path(pid, what));
    let pagemap = std::fs::File::open(proc::path(pid, "pagemap")).map_err(io("pagemap"))?;
    // Memory the process made unreadable is read through this.
    let mem = std::fs::File::open(proc::path(pid, "mem")).map_err(io("mem"))?;
    // smaps walks every mapping's page tables to count its pages, for the
    // one line wanted of it (VmFlags): read on another CPU meanwhile.
    let (vm_flags, collected) = std::thread::scope(|s| {
        let smaps = s.spawn(|| proc::vm_flags(pid));
        let collected = collect_pages(pid, mm, shared_memory, pages, &pagemap, &mem);
        let flags = smaps.join().expect("the smaps reader does not panic");
        (flags, collected)
    });
    let vm_flags = vm_flags.map_err(io("smaps"))?;
    let ours = pages.prior().is_some_and(|p| p.protects(pid));
    let mut vmas = Vec::new();
    for (mut vma, range, shared) in collected? {
        let flags = vm_flags
            .get(&vma.start)
            .ok_or_else(|| CheckpointError::Process {
                pid,
                what: format!("{range}: no VmFlags in smaps"),
            })?;
        let path = vma.path.as_deref().unwrap_or("");
        let repro = if vmflags::KERNELS.contains(&path) {
            vmflags::Reproduce::default()
        } else {
            // The write-protection of a pre-dump chain's tracking is ours,
            // and ends with this checkpoint: not the process's to keep.
            let flags = if ours {
                flags
                    .split_whitespace()
                    .filter(|f| *f != "uw")
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                flags.clone()
            };
            vmflags::classify(&flags, shared)
                .map_err(|e| CheckpointError::step(pid)(e.at(format!("mapping {range}"))))?
        };
        vma.may_write = repro.may_write;
        vma.noreserve = repro.noreserve;
        vma.advice = repro.advice;
        vmas.push(vma);
    }
    Ok(vmas)
}

/// Every mapping of `pid` with its pages dumped (its VmFlags not yet
/// read: `may_write`, `noreserve` and `advice` left unset), with its
/// range as errors name it and whether it is shared.
fn collect_pages(
    pid: i32,
    mm: &mut MmLayout,
    shared_memory: &mut Vec<SharedMemory>,
    pages: &mut PageWriter,
    pagemap: &std::fs::File,
    mem: &std::fs::File,
) -> Result<Vec<(Vma, String, bool)>, CheckpointError> {
    let io = |what: &str| CheckpointError::file(pid, "read", proc::path(pid, what));
    let mut vmas = Vec::new();
    for m in proc::maps(pid).map_err(io("maps"))? {
        let range = format!("{:x}-{:x} {}", m.start, m.end, m.path);
        let shared = m.perms.as_bytes().get(3) == Some(&b's');
        let source = if m.perms.as_bytes()[0] == b'r' {
            Source::Process(pid)
        } else {
            Source::Mem(mem)
        };
        let (kind, shm) = vma_kind(pid, &m, &range, shared, source, shared_memory, pages)?;
        if m.path == "[heap]" {
            mm.brk = m.end;
        }
        let perms = m.perms.as_bytes();
        let read = perms[0] == b'r';
        let dumped = matches!(kind, VmaKind::Anonymous | VmaKind::File);
        let runs = if dumped {
            let anonymous = kind == VmaKind::Anonymous;
            dump_vma(pid, source, pagemap, (m.start, m.end), anonymous, pages).map_err(|e| {
                CheckpointError::Step {
                    pid,
                    source: e.at(range.as_str()),
                }
            })?
        } else {
            Vec::new()
        };
        let file = mapped_file(pid, &m, kind)?;
        let vma = Vma {
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
            may_write: false,
            noreserve: false,
            advice: Vec::new(),
            file,
        };
        vmas.push((vma, range, shared));
    }
    Ok(vmas)
}

/// The kind of mapping `m` and its shared anonymous object (dumped when
/// first seen); a mapping restore cannot make again is refused.
fn vma_kind(
    pid: i32,
    m: &proc::MapLine,
    range: &str,
    shared: bool,
    source: Source<'_>,
    shared_memory: &mut Vec<SharedMemory>,
    pages: &mut PageWriter,
) -> Result<(VmaKind, Option<usize>), CheckpointError> {
    let unsupported = |what: String| CheckpointError::Unsupported { pid, what };
    let mut shm = None;
    let kind = match m.path.as_str() {
        // A shared file mapping holds what the file holds. Shared
        // anonymous memory has no such home: its pages are dumped, once
        // per object.
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
            shm = Some(shared_object(source, m, shared_memory, pages).map_err(|e| {
                CheckpointError::Step {
                    pid,
                    source: e.at(range),
                }
            })?);
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
    Ok((kind, shm))
}

/// Size and modification time of the file a file mapping maps, for
/// restore to refuse one that changed; none for other kinds.
fn mapped_file(
    pid: i32,
    m: &proc::MapLine,
    kind: VmaKind,
) -> Result<Option<(u64, i64, i64)>, CheckpointError> {
    use std::os::unix::fs::MetadataExt;
    Ok(match kind {
        VmaKind::File | VmaKind::SharedFile => {
            let f = std::fs::metadata(proc::path(
                pid,
                &format!("map_files/{:x}-{:x}", m.start, m.end),
            ))
            .map_err(CheckpointError::file(
                pid,
                "read",
                proc::path(pid, "map_files"),
            ))?;
            Some((f.size(), f.mtime(), f.mtime_nsec()))
        }
        _ => None,
    })
}

/// Signal handlers, task state and every thread's, by remote calls through
/// one scratch page that is unmapped again whatever happens.
fn collect_remote(
    m: &mut Member,
    vmas: &[Vma],
) -> Result<(Vec<SigAction>, ProcessState, Vec<Thread>), CheckpointError> {
    let pid = m.pid;
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
    Ok((actions, process, threads))
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

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;
    use crate::sys::{mmap::Anonymous, uffd};

    const PAGE: usize = 4096;

    /// The scan and the plain pagemap read agree on written pages, the
    /// zero page, untouched pages and write-protection markers.
    #[test]
    fn the_scan_finds_the_pages_a_read_finds() {
        let mut m = Anonymous::new(16 * PAGE).expect("map");
        for p in [0, 1, 2, 5, 9] {
            m.as_mut_slice()[p * PAGE] = 1;
        }
        std::hint::black_box(m.as_slice()[7 * PAGE]);
        let fd = uffd::userfaultfd(libc::O_CLOEXEC | libc::O_NONBLOCK).expect("userfaultfd");
        let features = match uffd::tracking_features() {
            Ok(f) => f,
            Err(e) => {
                crate::sys::skip_test(
                    "checkpoint::dump::process::tests::the_scan_finds_the_pages_a_read_finds",
                    &format!("no asynchronous write-protection (Linux 6.7): {e}"),
                );
                return;
            }
        };
        uffd::api(fd.as_fd(), features).expect("api");
        let (start, len) = (m.addr(), 16 * PAGE as u64);
        uffd::register_wp(fd.as_fd(), start, len).expect("register");
        uffd::write_protect(fd.as_fd(), start, len, true).expect("protect");
        m.as_mut_slice()[10 * PAGE] = 1;
        let pagemap = std::fs::File::open("/proc/self/pagemap").expect("pagemap");
        let scanned = resident_ranges(&pagemap, start, start + len, true).expect("scan");
        assert_eq!(
            resident_ranges(&pagemap, start, start + len, false).expect("scan"),
            scanned
        );
        let read = read_resident(&pagemap, start, start + len).expect("read");
        let at = |p: u64, n: u64| (start + p * PAGE as u64, n * PAGE as u64);
        // Page 7 is the zero page; 3, 4, 6 and 8 hold markers.
        assert_eq!(scanned, [at(0, 3), at(5, 1), at(7, 1), at(9, 2)]);
        assert_eq!(read, scanned);

        // A file's own pages are not taken.
        let path = std::env::temp_dir().join(format!("palisade-resident-{}", std::process::id()));
        std::fs::write(&path, vec![3u8; 4 * PAGE]).expect("write a file");
        let file = std::fs::File::open(&path).expect("open it");
        let _ = std::fs::remove_file(&path);
        let mapped = crate::sys::mmap::Mapped::new(&file, 0, 4 * PAGE, false).expect("map it");
        let sum: u32 = mapped
            .as_slice()
            .iter()
            .step_by(PAGE)
            .map(|&b| u32::from(b))
            .sum();
        assert_eq!(sum, 12);
        let start = mapped.as_slice().as_ptr() as u64;
        let end = start + 4 * PAGE as u64;
        assert_eq!(
            resident_ranges(&pagemap, start, end, false).expect("scan"),
            []
        );
        assert_eq!(read_resident(&pagemap, start, end).expect("read"), []);
    }
}
