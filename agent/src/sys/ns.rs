//! Entering another process's namespaces for a while.

use std::fs::File;

use nix::sched::{CloneFlags, setns};

/// Runs `f` in the network namespace of `pid` (sockets it makes belong
/// there), then comes back to the caller's own.
pub fn in_net_namespace_of<T>(pid: i32, f: impl FnOnce() -> T) -> std::io::Result<T> {
    let mine = File::open("/proc/thread-self/ns/net")?;
    let theirs = File::open(format!("/proc/{pid}/ns/net"))?;
    setns(&theirs, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
    let out = f();
    setns(&mine, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
    Ok(out)
}

/// Runs `f` in the mount namespace `ns` (an open `/proc/PID/ns/mnt`), on
/// a thread of its own made for it: a thread can only change its mount
/// namespace once it shares no filesystem context (root, working
/// directory) with the others, so it leaves that first; it starts at
/// the namespace's root, and ends with `f`, leaving the caller's threads
/// where they were.
pub fn in_mount_namespace<T: Send>(ns: &File, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::unshare(CloneFlags::CLONE_FS).map_err(std::io::Error::from)?;
                setns(ns, CloneFlags::CLONE_NEWNS).map_err(std::io::Error::from)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the mount namespace task panicked")))
    })
}
