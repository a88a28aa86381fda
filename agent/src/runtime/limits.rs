//! `/run/palisade/limits.json` inside a container: the limits it runs
//! under, for the job itself to read (see `spec::Limits`).
//!
//! The file lives on the host in the container's state directory
//! (`ROOT/NAME/limits/limits.json`); that directory, not the file, is
//! bound read-only onto `/run/palisade` when the container's filesystem
//! is built (`rootfs`), so a change is a new file renamed over the old
//! one and the container sees it at once (a bind of the file itself would
//! keep showing the inode it was made with).

use std::{
    fs,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use super::{RuntimeError, StateRoot};
use crate::spec::{Limits, Policy, ResourceLimits};

/// The file's name, in the directory and inside the container.
pub const FILE: &str = "limits.json";
/// Where the directory appears inside the container.
pub const MOUNT_POINT: &str = "/run/palisade";

/// The container's limits directory on the host.
pub fn dir(root: &StateRoot, name: &str) -> PathBuf {
    root.container_dir(name).join("limits")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Makes the directory and its first file, for a container starting
/// under `policy` (its own device rules included). Returns the directory.
pub fn create(root: &StateRoot, name: &str, policy: &Policy) -> Result<PathBuf, RuntimeError> {
    let dir = dir(root, name);
    match fs::DirBuilder::new().mode(0o755).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(RuntimeError::io("create the limits directory", &e)),
    }
    write(&dir, &Limits::new(name, policy, now()))
        .map_err(|e| RuntimeError::io("write limits.json", &e))?;
    Ok(dir)
}

/// Replaces the file: written beside it, then renamed over it.
fn write(dir: &Path, limits: &Limits) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(limits).map_err(std::io::Error::other)?;
    let temp = dir.join(format!(".{FILE}.{}", std::process::id()));
    let written = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&temp)
        .and_then(|mut f| {
            f.write_all(&text)?;
            f.write_all(b"\n")?;
            f.sync_all()
        })
        .and_then(|()| fs::rename(&temp, dir.join(FILE)));
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

/// Rewrites the container's file through `change`, one generation on. A
/// container without one (started by an older palisade) is left alone.
fn update(
    root: &StateRoot,
    name: &str,
    change: impl FnOnce(&mut Limits),
) -> Result<(), RuntimeError> {
    let dir = dir(root, name);
    let Ok(text) = fs::read(dir.join(FILE)) else {
        return Ok(());
    };
    let mut limits: Limits = serde_json::from_slice(&text).map_err(|e| RuntimeError::SetupIo {
        step: "read limits.json",
        reason: e.to_string(),
    })?;
    change(&mut limits);
    write(&dir, &limits.touched(now())).map_err(|e| RuntimeError::io("write limits.json", &e))
}

/// After `policy apply`: the network and device policy now in force.
pub fn policy_applied(root: &StateRoot, name: &str, policy: &Policy) -> Result<(), RuntimeError> {
    update(root, name, |l| l.set_policy(policy))
}

/// After `update`: `change` (the fields it sets) is now in force.
pub fn resources_changed(
    root: &StateRoot,
    name: &str,
    change: &ResourceLimits,
) -> Result<(), RuntimeError> {
    update(root, name, |l| l.change_resources(change))
}
