//! Process creation.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::unistd::{ForkResult, fork};

/// Which side of a fork this is.
pub enum Forked {
    Parent { child: i32 },
    Child,
}

/// Forks the calling process.
///
/// # Safety contract for callers
/// The caller must be single-threaded: the child then owns a consistent
/// copy of every lock and allocator state. palisade forks only from the
/// CLI's main thread, before any thread is started.
pub fn fork_single_threaded() -> nix::Result<Forked> {
    debug_assert_eq!(
        thread_count(),
        Some(1),
        "fork from a multi-threaded process"
    );
    // SAFETY: the process is single-threaded (asserted in debug builds and
    // guaranteed by every caller), so the child inherits no lock held by a
    // thread that does not exist in it and may run ordinary Rust code.
    match unsafe { fork() }? {
        ForkResult::Parent { child } => Ok(Forked::Parent {
            child: child.as_raw(),
        }),
        ForkResult::Child => Ok(Forked::Child),
    }
}

/// Threads of this process, from /proc/self/status.
fn thread_count() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}

/// `struct clone_args` of clone3(2), as of Linux 5.7.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_INTO_CGROUP` (Linux 5.7): born in the cgroup v2 directory whose
/// fd is `clone_args.cgroup`.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Forks the calling process with clone3(2), the child created directly in
/// the new namespaces `flags` names (e.g. CLONE_NEWPID | CLONE_NEWTIME), so
/// the caller's own later children stay where the caller is, and, given a
/// cgroup v2 directory, directly in that cgroup (no migration, which costs
/// an RCU grace period). Same contract as [`fork_single_threaded`]: the
/// caller must be single-threaded.
pub fn fork_into(flags: libc::c_int, cgroup: Option<BorrowedFd<'_>>) -> nix::Result<Forked> {
    debug_assert_eq!(
        thread_count(),
        Some(1),
        "fork from a multi-threaded process"
    );
    let mut args = CloneArgs {
        flags: flags as u32 as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    match clone3_fork(&args)? {
        0 => Ok(Forked::Child),
        child => Ok(Forked::Parent { child }),
    }
}

/// clone3 with `set_tid = [pid]` (the caller must be able to pick pids in
/// its pid namespace, and `pid` must be free) and otherwise fork-like:
/// returns the child's pid in the parent, 0 in the child. Same contract
/// as [`fork_single_threaded`]: the caller must be single-threaded, and
/// the child should only make async-signal-safe calls before it is taken
/// over.
pub fn fork_with_pid(pid: i32) -> nix::Result<i32> {
    let tid: libc::pid_t = pid;
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: &tid as *const libc::pid_t as u64,
        set_tid_size: 1,
        ..Default::default()
    };
    clone3_fork(&args)
}

/// clone3(2) without CLONE_VM or a stack: a fork whose details `args`
/// gives. Returns the child's pid in the parent, 0 in the child.
fn clone3_fork(args: &CloneArgs) -> nix::Result<i32> {
    // SAFETY: `args` is a valid clone_args of the size passed, and any
    // set_tid array it points to lives across the call (the caller's);
    // without CLONE_VM the child gets a copy of the address space and
    // continues from this call like a fork() child, and the process is
    // single-threaded (every caller's contract) so no lock is held by a
    // thread missing in the child.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    nix::errno::Errno::result(rc).map(|r| r as i32)
}
