//! ptrace, cross-process memory access and clone3 with `set_tid`: the raw
//! calls the checkpoint engine drives a stopped task with. Nothing here
//! decides anything; it only wraps the kernel interface safely.

use nix::errno::Errno;

/// The general registers as the kernel exposes them (NT_PRSTATUS).
pub type Regs = libc::user_regs_struct;

const NT_PRSTATUS: libc::c_int = 1;
const NT_X86_XSTATE: libc::c_int = 0x202;
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
/// Large enough for any XSAVE layout this CPU generation has (AMX included).
const XSTATE_MAX: usize = 16 * 1024;

fn ptrace_raw(
    request: libc::c_uint,
    pid: i32,
    addr: usize,
    data: usize,
) -> nix::Result<libc::c_long> {
    Errno::clear();
    // SAFETY: every caller passes a request whose addr/data are either plain
    // integers or pointers to live buffers of the size the request needs.
    let r = unsafe { libc::ptrace(request, pid, addr, data) };
    if r == -1 && Errno::last_raw() != 0 {
        return Err(Errno::last());
    }
    Ok(r)
}

/// PTRACE_SEIZE `pid` (no stop, no signal), with `options`.
pub fn seize(pid: i32, options: libc::c_int) -> nix::Result<()> {
    ptrace_raw(libc::PTRACE_SEIZE, pid, 0, options as usize).map(drop)
}

/// PTRACE_O_SUSPEND_SECCOMP: the tracee's seccomp filters and strict mode
/// do not apply while it is traced (needs CAP_SYS_ADMIN).
pub const O_SUSPEND_SECCOMP: libc::c_int = 0x0020_0000;
const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
const PTRACE_SECCOMP_GET_METADATA: libc::c_uint = 0x420d;

/// Seccomp filter `index` (0: the newest) of stopped tracee `tid`: its
/// classic BPF program (struct sock_filter array) and its flags
/// (SECCOMP_FILTER_FLAG_*). Needs CAP_SYS_ADMIN.
pub fn seccomp_filter(tid: i32, index: u64) -> nix::Result<(Vec<u8>, u64)> {
    let count = ptrace_raw(PTRACE_SECCOMP_GET_FILTER, tid, index as usize, 0)? as usize;
    let mut prog = vec![0u8; count * 8];
    let got = ptrace_raw(
        PTRACE_SECCOMP_GET_FILTER,
        tid,
        index as usize,
        prog.as_mut_ptr() as usize,
    )? as usize;
    if got != count {
        return Err(Errno::EAGAIN);
    }
    // struct seccomp_metadata { __u64 filter_off; __u64 flags; }
    let mut meta = [index, 0u64];
    ptrace_raw(
        PTRACE_SECCOMP_GET_METADATA,
        tid,
        std::mem::size_of_val(&meta),
        meta.as_mut_ptr() as usize,
    )?;
    Ok((prog, meta[1]))
}

/// PTRACE_INTERRUPT a seized task: it stops at the next chance.
pub fn interrupt(pid: i32) -> nix::Result<()> {
    ptrace_raw(libc::PTRACE_INTERRUPT, pid, 0, 0).map(drop)
}

/// PTRACE_SETOPTIONS.
pub fn set_options(pid: i32, options: libc::c_int) -> nix::Result<()> {
    ptrace_raw(libc::PTRACE_SETOPTIONS, pid, 0, options as usize).map(drop)
}

/// PTRACE_DETACH, delivering `signal` (0 for none).
pub fn detach(pid: i32, signal: i32) -> nix::Result<()> {
    ptrace_raw(libc::PTRACE_DETACH, pid, 0, signal as usize).map(drop)
}

/// PTRACE_SYSCALL: run to the next syscall entry or exit, delivering
/// `signal` (0 for none).
pub fn cont_syscall(pid: i32, signal: i32) -> nix::Result<()> {
    ptrace_raw(libc::PTRACE_SYSCALL, pid, 0, signal as usize).map(drop)
}

/// Waits for a state change of `pid` (a tracee or a child) and returns the
/// raw wait status.
pub fn wait(pid: i32) -> nix::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: status is a live i32 the kernel writes the status into.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        match Errno::result(r) {
            Ok(_) => return Ok(status),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Reads the general registers (PTRACE_GETREGSET NT_PRSTATUS).
pub fn get_regs(pid: i32) -> nix::Result<Regs> {
    // SAFETY: user_regs_struct is plain integers; all-zero is valid.
    let mut regs: Regs = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: (&mut regs as *mut Regs).cast(),
        iov_len: std::mem::size_of::<Regs>(),
    };
    ptrace_raw(
        libc::PTRACE_GETREGSET,
        pid,
        NT_PRSTATUS as usize,
        &mut iov as *mut _ as usize,
    )?;
    Ok(regs)
}

/// Writes the general registers (PTRACE_SETREGSET NT_PRSTATUS).
pub fn set_regs(pid: i32, regs: &Regs) -> nix::Result<()> {
    let mut copy = *regs;
    let mut iov = libc::iovec {
        iov_base: (&mut copy as *mut Regs).cast(),
        iov_len: std::mem::size_of::<Regs>(),
    };
    ptrace_raw(
        libc::PTRACE_SETREGSET,
        pid,
        NT_PRSTATUS as usize,
        &mut iov as *mut _ as usize,
    )
    .map(drop)
}

/// Reads the whole XSAVE area (FPU, SSE, AVX…; NT_X86_XSTATE).
pub fn get_xstate(pid: i32) -> nix::Result<Vec<u8>> {
    let mut buf = vec![0u8; XSTATE_MAX];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    ptrace_raw(
        libc::PTRACE_GETREGSET,
        pid,
        NT_X86_XSTATE as usize,
        &mut iov as *mut _ as usize,
    )?;
    buf.truncate(iov.iov_len);
    Ok(buf)
}

/// Writes the XSAVE area back.
pub fn set_xstate(pid: i32, xstate: &[u8]) -> nix::Result<()> {
    let mut buf = xstate.to_vec();
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    ptrace_raw(
        libc::PTRACE_SETREGSET,
        pid,
        NT_X86_XSTATE as usize,
        &mut iov as *mut _ as usize,
    )
    .map(drop)
}

/// A task's rseq registration (PTRACE_GET_RSEQ_CONFIGURATION, Linux 5.13).
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct RseqConfig {
    pub pointer: u64,
    pub size: u32,
    pub signature: u32,
    pub flags: u32,
    pub pad: u32,
}

/// Reads the rseq registration of a stopped tracee.
pub fn rseq_config(pid: i32) -> nix::Result<RseqConfig> {
    let mut conf = RseqConfig::default();
    ptrace_raw(
        PTRACE_GET_RSEQ_CONFIGURATION,
        pid,
        std::mem::size_of::<RseqConfig>(),
        &mut conf as *mut _ as usize,
    )?;
    Ok(conf)
}

/// Reads `buf.len()` bytes at `addr` of `pid` (process_vm_readv); returns
/// how many were read (short at the first unreadable page).
pub fn read_memory(pid: i32, addr: u64, buf: &mut [u8]) -> nix::Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: local points at `buf`, which we own mutably for the call;
    // the remote range is only read by the kernel on the other process's
    // behalf, never dereferenced here.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    Errno::result(n).map(|n| n as usize)
}

/// Most remote ranges one process_vm_readv takes (UIO_MAXIOV).
pub const MAX_IOV: usize = 1024;

/// Reads the remote ranges `(addr, len)` of `pid`, one after another, into
/// `buf` (as long as their sum) in one process_vm_readv; returns how many
/// bytes were read (short at the first unreadable page). At most
/// [`MAX_IOV`] ranges.
pub fn read_memory_ranges(pid: i32, ranges: &[(u64, usize)], buf: &mut [u8]) -> nix::Result<usize> {
    let total: usize = ranges.iter().map(|r| r.1).sum();
    if total != buf.len() || ranges.len() > MAX_IOV {
        return Err(Errno::EINVAL);
    }
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = remote_iovecs(ranges);
    // SAFETY: local points at `buf`, which we own mutably for the call and
    // which is exactly as long as the remote ranges together; the remote
    // iovecs only describe the other process's memory, which the kernel
    // reads on its behalf and we never dereference.
    let n = unsafe {
        libc::process_vm_readv(
            pid,
            &local,
            1,
            remote.as_ptr(),
            remote.len() as libc::c_ulong,
            0,
        )
    };
    Errno::result(n).map(|n| n as usize)
}

/// Writes `data` at `addr` of `pid` (process_vm_writev); returns how many
/// bytes were written.
pub fn write_memory(pid: i32, addr: u64, data: &[u8]) -> nix::Result<usize> {
    let local = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: the kernel only reads `data` (live for the call) and writes
    // into the other process's memory; nothing in ours is changed.
    let n = unsafe { libc::process_vm_writev(pid, &local, 1, &remote, 1, 0) };
    Errno::result(n).map(|n| n as usize)
}

/// iovecs describing another process's memory `(address, length)`.
fn remote_iovecs(ranges: &[(u64, usize)]) -> Vec<libc::iovec> {
    ranges
        .iter()
        .map(|&(addr, len)| libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: len,
        })
        .collect()
}

/// Writes `data` into `pid`'s memory at `ranges` `(address, length)` (at
/// most [`MAX_IOV`], together exactly as long as `data`), in one call;
/// returns the bytes written (short if a range is not writable).
pub fn write_memory_ranges(pid: i32, ranges: &[(u64, usize)], data: &[u8]) -> nix::Result<usize> {
    let total: usize = ranges.iter().map(|r| r.1).sum();
    if total != data.len() || ranges.len() > MAX_IOV {
        return Err(Errno::EINVAL);
    }
    let local = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let remote = remote_iovecs(ranges);
    // SAFETY: the kernel only reads `data` (live for the call, exactly as
    // long as the remote ranges together) and writes into the other
    // process's memory; nothing of ours is changed or dereferenced.
    let n = unsafe {
        libc::process_vm_writev(
            pid,
            &local,
            1,
            remote.as_ptr(),
            remote.len() as libc::c_ulong,
            0,
        )
    };
    Errno::result(n).map(|n| n as usize)
}

/// In a freshly cloned child: drop every signal handler, the alternate
/// signal stack and every fd, then stop as a tracee of the parent. Only
/// async-signal-safe calls; never returns.
pub fn child_become_tracee() -> ! {
    // SAFETY: each call below is async-signal-safe, takes plain integers
    // or pointers to locals, and the process is a fork-like copy that
    // exits with _exit on any failure.
    unsafe {
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let ss = libc::stack_t {
            ss_sp: std::ptr::null_mut(),
            ss_flags: libc::SS_DISABLE,
            ss_size: 0,
        };
        libc::sigaltstack(&ss, std::ptr::null_mut());
        libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
        if libc::ptrace(libc::PTRACE_TRACEME, 0, 0usize, 0usize) == 0 {
            libc::syscall(libc::SYS_kill, libc::getpid(), libc::SIGSTOP);
        }
        libc::_exit(127)
    }
}

/// Ends the calling process at once, without running destructors (the
/// forked helper of restore).
pub fn exit_now(status: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(status) }
}

/// The robust futex list head and its length of task `tid`
/// (get_robust_list(2); needs ptrace access to it).
pub fn robust_list(tid: i32) -> nix::Result<(u64, u64)> {
    let mut head: u64 = 0;
    let mut len: usize = 0;
    // SAFETY: the kernel writes one pointer-sized value to each of the two
    // live locals passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            tid,
            &mut head as *mut u64,
            &mut len as *mut usize,
        )
    };
    Errno::result(r).map(|_| (head, len as u64))
}

/// PTRACE_GETEVENTMSG: after a fork/clone event stop, the new task's pid
/// as the tracer's pid namespace numbers it.
pub fn event_msg(pid: i32) -> nix::Result<u64> {
    let mut msg: libc::c_ulong = 0;
    ptrace_raw(
        libc::PTRACE_GETEVENTMSG,
        pid,
        0,
        &mut msg as *mut libc::c_ulong as usize,
    )?;
    Ok(msg)
}

/// Like [`wait`] but returns `None` at once if `pid` has nothing to
/// report yet.
pub fn wait_nohang(pid: i32) -> nix::Result<Option<i32>> {
    let mut status = 0;
    // SAFETY: status is a live i32 the kernel writes the status into.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL | libc::WNOHANG) };
    match Errno::result(r) {
        Ok(0) => Ok(None),
        Ok(_) => Ok(Some(status)),
        Err(e) => Err(e),
    }
}

/// PTRACE_GETSIGINFO: the siginfo of the signal a tracee stopped for.
pub fn get_siginfo(pid: i32) -> nix::Result<[u8; 128]> {
    let mut info = [0u8; 128];
    ptrace_raw(libc::PTRACE_GETSIGINFO, pid, 0, info.as_mut_ptr() as usize)?;
    Ok(info)
}
