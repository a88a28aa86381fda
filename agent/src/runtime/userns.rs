//! User namespaces (`--userns`): the container's uids and gids 0-65535 are
//! the host's 1000000-1065535, so root in the container is an unprivileged
//! user on the host. Every container shares this one range (like Docker's
//! userns-remap); the files of a `--rootfs` owned by host root show up as
//! nobody inside.

use std::fs;

use super::RuntimeError;

/// The host uid and gid of the container's root.
pub const HOST_BASE: u32 = 1_000_000;
/// How many ids are mapped.
pub const SIZE: u32 = 65_536;

/// Writes the uid and gid maps of the (waiting) process `pid`, which has
/// just been created in a new user namespace.
pub fn write_maps(pid: i32) -> Result<(), RuntimeError> {
    let map = format!("0 {HOST_BASE} {SIZE}\n");
    for file in ["uid_map", "gid_map"] {
        let path = format!("/proc/{pid}/{file}");
        fs::write(&path, &map)
            .map_err(|e| RuntimeError::io("write the user namespace's id maps", &e))?;
    }
    Ok(())
}

/// In a process of the container's user namespace: become its root, whose
/// ids the maps give (until then the process has the overflow ids).
pub fn become_root() -> Result<(), String> {
    let root = (nix::unistd::Gid::from_raw(0), nix::unistd::Uid::from_raw(0));
    nix::unistd::setresgid(root.0, root.0, root.0)
        .map_err(|e| format!("cannot become gid 0 in the user namespace: {e}"))?;
    nix::unistd::setresuid(root.1, root.1, root.1)
        .map_err(|e| format!("cannot become uid 0 in the user namespace: {e}"))
}
