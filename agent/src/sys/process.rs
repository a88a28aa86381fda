//! Process creation.

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
