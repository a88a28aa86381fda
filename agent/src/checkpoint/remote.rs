//! Remote syscalls: make a stopped tracee execute one syscall of our
//! choosing. Its rip is pointed at a `syscall` instruction (bytes 0f 05
//! anywhere in an executable mapping), rax and the argument registers are
//! set, and PTRACE_SYSCALL runs it from entry stop to exit stop, where the
//! result is read from rax. The tracee never runs a single other
//! instruction.

use nix::errno::Errno;

use crate::sys::ptrace::{self, Regs};

pub struct Remote {
    pub pid: i32,
    /// Address of a `syscall` instruction in the tracee.
    pub insn: u64,
    /// Register template (segments, flags) for each call.
    base: Regs,
    /// Signals that arrived while we drove the task: they were held back
    /// so they do not run a handler amid our calls; the caller sends them
    /// again once the task is released.
    pub deferred: Vec<i32>,
    /// The siginfo of each signal in `deferred`, as it was dequeued.
    pub held: Vec<[u8; 128]>,
    /// The task a remote fork or clone created, as our pid namespace
    /// numbers it (from its event stop).
    pub created: Option<i32>,
}

/// Why a remote syscall failed: the kernel said no inside the tracee, or
/// driving the tracee failed.
#[derive(Debug)]
pub enum RemoteError {
    Errno(Errno),
    Trace(String),
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemoteError::Errno(e) => write!(f, "{} ({})", e.desc(), e),
            RemoteError::Trace(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for RemoteError {}

impl Remote {
    pub fn new(pid: i32, insn: u64, base: Regs) -> Self {
        Remote {
            pid,
            insn,
            base,
            deferred: Vec::new(),
            held: Vec::new(),
            created: None,
        }
    }

    fn run_to_stop(&mut self, what: &str) -> Result<(), RemoteError> {
        loop {
            ptrace::cont_syscall(self.pid, None)
                .map_err(|e| RemoteError::Trace(format!("ptrace syscall ({what}): {e}")))?;
            let status = ptrace::wait(self.pid)
                .map_err(|e| RemoteError::Trace(format!("wait ({what}): {e}")))?;
            if !libc::WIFSTOPPED(status) {
                return Err(RemoteError::Trace(format!(
                    "the task ended during {what} (wait status {status:#x})"
                )));
            }
            let sig = libc::WSTOPSIG(status);
            if sig == (libc::SIGTRAP | 0x80) || (sig == libc::SIGTRAP && status >> 16 == 0) {
                return Ok(());
            }
            let event = status >> 16;
            if matches!(
                event,
                libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE
            ) {
                let pid = ptrace::event_msg(self.pid)
                    .map_err(|e| RemoteError::Trace(format!("ptrace event message: {e}")))?;
                self.created = Some(pid as i32);
            }
            if event == 0 && sig != libc::SIGTRAP {
                // A signal-delivery stop: hold the signal back, go on.
                self.deferred.push(sig);
                if let Ok(info) = ptrace::get_siginfo(self.pid) {
                    self.held.push(info);
                }
            }
            // Event stops (a group stop while seized) are passed over too.
        }
    }

    /// Executes syscall `nr` with `args` in the tracee; returns its result.
    pub fn call(&mut self, nr: i64, args: &[u64]) -> Result<u64, RemoteError> {
        let mut r = self.base;
        r.rip = self.insn;
        r.rax = nr as u64;
        r.orig_rax = u64::MAX;
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        r.rdi = a[0];
        r.rsi = a[1];
        r.rdx = a[2];
        r.r10 = a[3];
        r.r8 = a[4];
        r.r9 = a[5];
        ptrace::set_regs(self.pid, &r)
            .map_err(|e| RemoteError::Trace(format!("set registers: {e}")))?;
        self.run_to_stop("syscall entry")?;
        self.run_to_stop("syscall exit")?;
        let out = ptrace::get_regs(self.pid)
            .map_err(|e| RemoteError::Trace(format!("get registers: {e}")))?;
        let ret = out.rax as i64;
        if (-4095..0).contains(&ret) {
            return Err(RemoteError::Errno(Errno::from_raw(-ret as i32)));
        }
        Ok(out.rax)
    }
}

/// Kernel-internal restart codes a syscall interrupted by our stop returns.
const RESTART_CODES: [i64; 4] = [-512, -513, -514, -516];

/// The registers to resume a task with after remote syscalls: the kernel
/// no longer restarts a syscall our stop interrupted (we resume from a
/// syscall-exit stop), so it is re-issued by hand — rip back over the
/// 2-byte `syscall`, rax = its number.
pub fn resume_regs(saved: Regs) -> Regs {
    let mut regs = saved;
    if (regs.orig_rax as i64) >= 0 && RESTART_CODES.contains(&(regs.rax as i64)) {
        regs.rip -= 2;
        regs.rax = regs.orig_rax;
    }
    regs.orig_rax = u64::MAX;
    regs
}

/// The address of a `syscall` instruction (bytes 0f 05) in `bytes`, which
/// start at `base`.
pub fn find_syscall(bytes: &[u8], base: u64) -> Option<u64> {
    bytes
        .windows(2)
        .position(|w| w == [0x0f, 0x05])
        .map(|i| base + i as u64)
}

/// One anonymous read-write page mapped in the tracee by remote mmap, for
/// the structures remote syscalls read and write (sigactions, timers,
/// credentials…), at an address free of any mapping in `busy`. It is
/// unmapped again before the tracee is let go: nothing of ours remains.
pub struct Scratch {
    pub addr: u64,
}

impl Scratch {
    pub const SIZE: u64 = 4096;

    /// Maps the page at the lowest 4 GiB-aligned address outside every
    /// [start, end) of `busy` (the tracee's current mappings).
    pub fn map(r: &mut Remote, busy: &[(u64, u64)]) -> Result<Scratch, RemoteError> {
        let free = |a: u64| !busy.iter().any(|(s, e)| a + Self::SIZE > *s && a < *e);
        let addr = (1..0x7000u64)
            .map(|i| (i << 32) + (1 << 31))
            .find(|a| free(*a))
            .ok_or_else(|| RemoteError::Trace("no free address for a scratch page".into()))?;
        r.call(
            libc::SYS_mmap,
            &[
                addr,
                Self::SIZE,
                (libc::PROT_READ | libc::PROT_WRITE) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64,
                u64::MAX,
                0,
            ],
        )?;
        Ok(Scratch { addr })
    }

    /// Writes `data` at `offset` of the page.
    pub fn put(&self, pid: i32, offset: u64, data: &[u8]) -> Result<u64, RemoteError> {
        if offset + data.len() as u64 > Self::SIZE {
            return Err(RemoteError::Trace(format!(
                "{} bytes do not fit the scratch page at offset {offset}",
                data.len()
            )));
        }
        let n = ptrace::write_memory(pid, self.addr + offset, data)
            .map_err(|e| RemoteError::Trace(format!("write the scratch page: {e}")))?;
        if n != data.len() {
            return Err(RemoteError::Trace("short write to the scratch page".into()));
        }
        Ok(self.addr + offset)
    }

    /// Reads `len` bytes at `offset` of the page.
    pub fn get(&self, pid: i32, offset: u64, len: usize) -> Result<Vec<u8>, RemoteError> {
        let mut buf = vec![0u8; len];
        let n = ptrace::read_memory(pid, self.addr + offset, &mut buf)
            .map_err(|e| RemoteError::Trace(format!("read the scratch page: {e}")))?;
        if n != len {
            return Err(RemoteError::Trace("short read of the scratch page".into()));
        }
        Ok(buf)
    }

    pub fn unmap(self, r: &mut Remote) -> Result<(), RemoteError> {
        r.call(libc::SYS_munmap, &[self.addr, Self::SIZE]).map(drop)
    }
}
