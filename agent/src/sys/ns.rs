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
