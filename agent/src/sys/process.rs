//! Process creation.
//!
//! A fork copies only the calling thread: a lock another thread held at
//! that moment (the allocator's, stdio's) stays held forever in the child.
//! The safe forks here therefore refuse a process that has other threads;
//! [`fork`] lets a caller that knows its child makes only
//! async-signal-safe calls fork anyway.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::{
    errno::Errno,
    unistd::{ForkResult, fork as nix_fork},
};

/// Which side of a fork this is.
pub enum Forked {
    Parent { child: i32 },
    Child,
}

/// Why a fork was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ForkError {
    #[error(
        "the process runs {0} threads and a fork needs it single-threaded (palisade forks before it starts any thread: this is a bug)"
    )]
    Threaded(usize),
    #[error("cannot count this process's threads in /proc/self/status: {0}")]
    CountThreads(std::io::Error),
    #[error("{0}")]
    Sys(#[from] Errno),
}

/// Forks the calling process, which must be single-threaded (else
/// [`ForkError::Threaded`]): the child then owns a consistent copy of
/// every lock and allocator state and may run any code.
pub fn fork_single_threaded() -> Result<Forked, ForkError> {
    ensure_single_threaded()?;
    // SAFETY: the process has no other thread (just checked; only this
    // thread could start one), so the child may run any code.
    Ok(unsafe { fork() }?)
}

/// Forks the calling process.
///
/// # Safety
/// If the process has other threads, the child must make only
/// async-signal-safe calls until it execs or ends with `_exit`; locks
/// those threads held are never released in it. A single-threaded caller
/// wants [`fork_single_threaded`], which checks that it is.
pub unsafe fn fork() -> nix::Result<Forked> {
    // SAFETY: the caller's contract: either there is no other thread, or
    // the child calls only what is async-signal-safe.
    match unsafe { nix_fork() }? {
        ForkResult::Parent { child } => Ok(Forked::Parent {
            child: child.as_raw(),
        }),
        ForkResult::Child => Ok(Forked::Child),
    }
}

/// Ends the calling process at once with `code` (`_exit`: no destructors,
/// no stdio flush): what a forked child that must not return does.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and never returns.
    unsafe { libc::_exit(code) }
}

/// Gives the allocator's free memory back to the kernel (glibc's
/// `malloc_trim(0)`: the free top of the heap, and free pages inside it).
/// A long-lived process that was forked from a busy one (a monitor, from
/// the CLI that loaded and verified the BPF object) otherwise keeps every
/// page its parent's heap ever grew to.
pub fn release_free_memory() {
    // SAFETY: malloc_trim has no preconditions; it only returns free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Points stdin, stdout and stderr at /dev/null (a detached process must
/// not hold its starter's pipes open).
pub fn stdio_to_dev_null() -> nix::Result<()> {
    let null = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDWR,
        nix::sys::stat::Mode::empty(),
    )?;
    for target in 0..3 {
        // SAFETY: dup2 onto the standard fds, which this process owns.
        if unsafe { libc::dup2(null.as_raw_fd(), target) } < 0 {
            return Err(Errno::last());
        }
    }
    Ok(())
}

/// What [`wait_readable`] saw.
pub enum Ready {
    /// `fd` is readable.
    Fd,
    /// Every process of `pidfds` has ended.
    Gone,
}

/// Waits until `fd` is readable or every process of `pidfds` has ended.
pub fn wait_readable(fd: BorrowedFd<'_>, pidfds: &[std::os::fd::OwnedFd]) -> nix::Result<Ready> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut ended = vec![false; pidfds.len()];
    loop {
        let mut set = vec![PollFd::new(fd, PollFlags::POLLIN)];
        set.extend(
            pidfds
                .iter()
                .zip(&ended)
                .filter(|(_, e)| !**e)
                .map(|(p, _)| PollFd::new(p.as_fd(), PollFlags::POLLIN)),
        );
        match poll(&mut set, PollTimeout::NONE) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        if set[0].any().unwrap_or(false) {
            return Ok(Ready::Fd);
        }
        let mut live = ended.iter_mut().filter(|e| !**e);
        for p in &set[1..] {
            let e = live.next().expect("one poll entry per live pidfd");
            if p.any().unwrap_or(false) {
                *e = true;
            }
        }
        if !pidfds.is_empty() && ended.iter().all(|e| *e) {
            return Ok(Ready::Gone);
        }
    }
}

/// Refuses a process that runs more than one thread. A thread just joined
/// may linger in the kernel a moment after it wakes its joiner, so a
/// count above one is looked at again for up to a second before refusing.
fn ensure_single_threaded() -> Result<(), ForkError> {
    let mut waited = 0;
    loop {
        let threads = thread_count()?;
        if threads == 1 {
            return Ok(());
        }
        if waited == 1000 {
            return Err(ForkError::Threaded(threads));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
        waited += 1;
    }
}

/// Threads of this process, from /proc/self/status.
fn thread_count() -> Result<usize, ForkError> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(ForkError::CountThreads)?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| {
            ForkError::CountThreads(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no Threads: line",
            ))
        })
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
/// an RCU grace period). Like [`fork_single_threaded`], refused unless the
/// process is single-threaded.
pub fn fork_into(flags: libc::c_int, cgroup: Option<BorrowedFd<'_>>) -> Result<Forked, ForkError> {
    ensure_single_threaded()?;
    let mut args = CloneArgs {
        flags: flags as u32 as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    // SAFETY: `args` has no set_tid array, and the process has no other
    // thread (just checked), so the child may run any code.
    match unsafe { clone3_fork(&args) }? {
        0 => Ok(Forked::Child),
        child => Ok(Forked::Parent { child }),
    }
}

/// clone3 with `set_tid = [pid]` (the caller must be able to pick pids in
/// its pid namespace, and `pid` must be free), otherwise fork-like. The
/// child never returns from here: it stops at once as the caller's tracee
/// ([`super::ptrace::child_become_tracee`], async-signal-safe calls only,
/// so the caller may have other threads). Returns the child's pid.
pub fn fork_tracee_with_pid(pid: i32) -> nix::Result<i32> {
    let tid: libc::pid_t = pid;
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: &tid as *const libc::pid_t as u64,
        set_tid_size: 1,
        ..Default::default()
    };
    // SAFETY: `tid` outlives the call; the child makes only
    // async-signal-safe calls (the match below, then
    // child_become_tracee, which ends in a stop or _exit).
    match unsafe { clone3_fork(&args) }? {
        0 => super::ptrace::child_become_tracee(),
        child => Ok(child),
    }
}

/// clone3(2) without CLONE_VM or a stack: a fork whose details `args`
/// gives. Returns the child's pid in the parent, 0 in the child.
///
/// # Safety
/// Any set_tid array `args` points to must be live for the call. As for
/// [`fork`]: if the process has other threads, the child must make only
/// async-signal-safe calls until it execs or ends with `_exit`.
unsafe fn clone3_fork(args: &CloneArgs) -> nix::Result<i32> {
    // SAFETY: `args` is a valid clone_args of the size passed, and any
    // set_tid array it points to lives across the call (the caller's
    // contract); without CLONE_VM the child gets a copy of the address
    // space and continues from this call like a fork() child, which is
    // sound under the caller's contract on threads.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    Errno::result(rc).map(|r| r as i32)
}
