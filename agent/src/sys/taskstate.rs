//! Raw calls the checkpoint engine needs for a task's state that are made
//! from outside the task: resource limits of another process (prlimit),
//! its queued signals (PTRACE_PEEKSIGINFO) and its blocked mask
//! (PTRACE_SETSIGMASK). Nothing here decides anything.

use nix::errno::Errno;

const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;
/// PTRACE_PEEKSIGINFO flag: the process-wide (shared) queue.
const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;
/// Bytes of one siginfo as the kernel copies it out.
pub const SIGINFO_SIZE: usize = 128;

/// One resource limit (`struct rlimit64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub soft: u64,
    pub hard: u64,
}

/// Sets limit `resource` of process `pid` (raising a hard limit needs
/// CAP_SYS_RESOURCE).
pub fn set_rlimit(pid: i32, resource: u32, limit: Limit) -> nix::Result<()> {
    let new = libc::rlimit64 {
        rlim_cur: limit.soft,
        rlim_max: limit.hard,
    };
    // SAFETY: `new` is a live rlimit64 the kernel only reads; no old value.
    let r = unsafe { libc::prlimit64(pid, resource as _, &new, std::ptr::null_mut()) };
    Errno::result(r).map(drop)
}

#[repr(C)]
struct PeekSiginfoArgs {
    off: u64,
    flags: u32,
    nr: i32,
}

/// The signals queued for stopped tracee `tid` (its own queue, or its
/// process's shared one), oldest first, as raw siginfos; nothing is
/// dequeued.
pub fn peek_siginfo(tid: i32, shared: bool) -> nix::Result<Vec<[u8; SIGINFO_SIZE]>> {
    const BATCH: usize = 32;
    let mut out = Vec::new();
    loop {
        let args = PeekSiginfoArgs {
            off: out.len() as u64,
            flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 },
            nr: BATCH as i32,
        };
        let mut buf = [[0u8; SIGINFO_SIZE]; BATCH];
        Errno::clear();
        // SAFETY: addr points at a live args struct, data at a buffer of
        // `nr` siginfos of the kernel's size; the kernel writes at most that.
        let n = unsafe {
            libc::ptrace(
                PTRACE_PEEKSIGINFO,
                tid,
                &args as *const PeekSiginfoArgs,
                buf.as_mut_ptr(),
            )
        };
        if n < 0 {
            return Err(Errno::last());
        }
        let n = n as usize;
        out.extend_from_slice(&buf[..n]);
        if n < BATCH {
            return Ok(out);
        }
    }
}

/// Sets the blocked-signal mask of stopped tracee `tid` (SIGKILL and
/// SIGSTOP are never blocked, whatever `mask` says).
pub fn set_sigmask(tid: i32, mask: u64) -> nix::Result<()> {
    let m = mask;
    Errno::clear();
    // SAFETY: addr is the mask's size, data points at a live u64.
    let r = unsafe { libc::ptrace(PTRACE_SETSIGMASK, tid, 8usize, &m as *const u64) };
    if r == -1 && Errno::last_raw() != 0 {
        return Err(Errno::last());
    }
    Ok(())
}
