//! ptrace, cross-process memory access and clone3 with `set_tid`: the raw
//! calls the checkpoint engine drives a stopped task with. Nothing here
//! decides anything; it only wraps the kernel interface safely.

use std::io::{IoSlice, IoSliceMut};

use nix::{
    errno::Errno,
    sys::{
        ptrace::{self, Options, regset::NT_PRSTATUS},
        signal::Signal,
        uio::{RemoteIoVec, process_vm_readv, process_vm_writev},
    },
    unistd::Pid,
};

/// The general registers as the kernel exposes them (NT_PRSTATUS).
pub type Regs = libc::user_regs_struct;

const NT_X86_XSTATE: libc::c_int = 0x202;
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
/// Large enough for any XSAVE layout this CPU generation has (AMX included).
const XSTATE_MAX: usize = 16 * 1024;

/// ptrace(2) for the requests nix does not wrap.
///
/// # Safety
/// `addr` and `data` must be what `request` takes: plain integers, or
/// addresses of buffers live for the call and as large as the request
/// reads or writes (writable where it writes).
unsafe fn ptrace_raw(
    request: libc::c_uint,
    pid: i32,
    addr: usize,
    data: usize,
) -> nix::Result<libc::c_long> {
    Errno::clear();
    // SAFETY: the caller's contract: addr and data are integers or live
    // buffers of the size the request needs.
    let r = unsafe { libc::ptrace(request, pid, addr, data) };
    if r == -1 && Errno::last_raw() != 0 {
        return Err(Errno::last());
    }
    Ok(r)
}

/// PTRACE_SEIZE `pid` (no stop, no signal), with `options`.
pub fn seize(pid: i32, options: libc::c_int) -> nix::Result<()> {
    ptrace::seize(Pid::from_raw(pid), Options::from_bits_retain(options))
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
    // SAFETY: with data 0 the request only counts the filter's
    // instructions; addr is an integer.
    let count = unsafe { ptrace_raw(PTRACE_SECCOMP_GET_FILTER, tid, index as usize, 0) }? as usize;
    let mut prog = vec![0u8; count * 8];
    // SAFETY: `prog` has room for the `count` 8-byte instructions the
    // kernel copies (a filter never changes once installed).
    let got = unsafe {
        ptrace_raw(
            PTRACE_SECCOMP_GET_FILTER,
            tid,
            index as usize,
            prog.as_mut_ptr() as usize,
        )
    }? as usize;
    if got != count {
        return Err(Errno::EAGAIN);
    }
    // struct seccomp_metadata { __u64 filter_off; __u64 flags; }
    let mut meta = [index, 0u64];
    // SAFETY: `meta` is a live struct seccomp_metadata of the size passed
    // in addr, which the kernel reads and writes.
    unsafe {
        ptrace_raw(
            PTRACE_SECCOMP_GET_METADATA,
            tid,
            std::mem::size_of_val(&meta),
            meta.as_mut_ptr() as usize,
        )
    }?;
    Ok((prog, meta[1]))
}

/// PTRACE_INTERRUPT a seized task: it stops at the next chance.
pub fn interrupt(pid: i32) -> nix::Result<()> {
    ptrace::interrupt(Pid::from_raw(pid))
}

/// PTRACE_SETOPTIONS.
pub fn set_options(pid: i32, options: libc::c_int) -> nix::Result<()> {
    ptrace::setoptions(Pid::from_raw(pid), Options::from_bits_retain(options))
}

/// PTRACE_DETACH, delivering `signal` if any.
pub fn detach(pid: i32, signal: Option<Signal>) -> nix::Result<()> {
    ptrace::detach(Pid::from_raw(pid), signal)
}

/// PTRACE_SYSCALL: run to the next syscall entry or exit, delivering
/// `signal` if any.
pub fn cont_syscall(pid: i32, signal: Option<Signal>) -> nix::Result<()> {
    ptrace::syscall(Pid::from_raw(pid), signal)
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
    ptrace::getregset::<NT_PRSTATUS>(Pid::from_raw(pid))
}

/// Writes the general registers (PTRACE_SETREGSET NT_PRSTATUS).
pub fn set_regs(pid: i32, regs: &Regs) -> nix::Result<()> {
    ptrace::setregset::<NT_PRSTATUS>(Pid::from_raw(pid), *regs)
}

/// Reads the whole XSAVE area (FPU, SSE, AVX…; NT_X86_XSTATE).
pub fn get_xstate(pid: i32) -> nix::Result<Vec<u8>> {
    let mut buf = vec![0u8; XSTATE_MAX];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `iov` describes `buf`, live and writable for the call; the
    // kernel writes at most iov_len bytes and shortens iov_len to them.
    unsafe {
        ptrace_raw(
            libc::PTRACE_GETREGSET,
            pid,
            NT_X86_XSTATE as usize,
            &mut iov as *mut _ as usize,
        )
    }?;
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
    // SAFETY: `iov` describes `buf`, live for the call; the kernel reads
    // at most iov_len bytes of it.
    unsafe {
        ptrace_raw(
            libc::PTRACE_SETREGSET,
            pid,
            NT_X86_XSTATE as usize,
            &mut iov as *mut _ as usize,
        )
    }
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
    // SAFETY: `conf` is a live, writable struct ptrace_rseq_configuration
    // (repr(C), same layout) of the size passed in addr.
    unsafe {
        ptrace_raw(
            PTRACE_GET_RSEQ_CONFIGURATION,
            pid,
            std::mem::size_of::<RseqConfig>(),
            &mut conf as *mut _ as usize,
        )
    }?;
    Ok(conf)
}

/// Reads `buf.len()` bytes at `addr` of `pid` (process_vm_readv); returns
/// how many were read (short at the first unreadable page).
pub fn read_memory(pid: i32, addr: u64, buf: &mut [u8]) -> nix::Result<usize> {
    let remote = [RemoteIoVec {
        base: addr as usize,
        len: buf.len(),
    }];
    process_vm_readv(Pid::from_raw(pid), &mut [IoSliceMut::new(buf)], &remote)
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
    process_vm_readv(
        Pid::from_raw(pid),
        &mut [IoSliceMut::new(buf)],
        &remote_iovecs(ranges),
    )
}

/// Writes `data` at `addr` of `pid` (process_vm_writev); returns how many
/// bytes were written.
pub fn write_memory(pid: i32, addr: u64, data: &[u8]) -> nix::Result<usize> {
    let remote = [RemoteIoVec {
        base: addr as usize,
        len: data.len(),
    }];
    process_vm_writev(Pid::from_raw(pid), &[IoSlice::new(data)], &remote)
}

/// Another process's memory `(address, length)`, as process_vm_* take it.
fn remote_iovecs(ranges: &[(u64, usize)]) -> Vec<RemoteIoVec> {
    ranges
        .iter()
        .map(|&(addr, len)| RemoteIoVec {
            base: addr as usize,
            len,
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
    process_vm_writev(
        Pid::from_raw(pid),
        &[IoSlice::new(data)],
        &remote_iovecs(ranges),
    )
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
    ptrace::getevent(Pid::from_raw(pid)).map(|msg| msg as u64)
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
    // SAFETY: `info` is a live, writable buffer of sizeof(siginfo_t) (128)
    // bytes, all the kernel writes.
    unsafe { ptrace_raw(libc::PTRACE_GETSIGINFO, pid, 0, info.as_mut_ptr() as usize) }?;
    Ok(info)
}
