//! How long pins live, and what runs meanwhile.
//!
//! A state root's programs and maps are pinned in its bpffs directory once
//! per build (verifying them costs seconds of CPU), and attached to each
//! container's cgroup by link pins that go with the container; a root
//! with no container has nothing attached. `palisade system prune` removes
//! the whole directory.
//!
//! The accounting tracepoint (`sched_process_exit`) runs for
//! every exiting thread of the host, so it exists once per host and build,
//! not per root: its program, link and the maps it uses (`CGROUP_POLICY`,
//! `USAGE`, `EXITED`, all keyed by cgroup or thread, so roots never
//! collide) are pinned in `/sys/fs/bpf/palisade/host-<hash>/` and every
//! root's object is loaded against those maps. Its link is made by the
//! first container of any root and removed once no container of any root
//! has a policy entry, so with no container on the host no palisade
//! program runs when a thread exits. Changes to that directory
//! happen under a host-wide lock, taken after a root's lock when both are
//! needed; a start holds it from attaching the tracepoints until its
//! policy entry is written, so a concurrent cleanup never detaches them
//! under it.

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
};

use aya::maps::{Map, MapData, RingBuf};
use nix::fcntl::{Flock, FlockArg};
use palisade_common::{CgroupPolicy, map};

use super::{BPFFS, EnforceError, Pins, object_hash, tracing};

/// The maps the tracepoint programs use, shared by every root.
pub(super) const SHARED_MAPS: &[&str] = &[map::CGROUP_POLICY, map::USAGE, map::EXITED];

/// Where the host-wide lock lives.
const LOCK_DIR: &str = "/run/palisade-bpf";

/// This build's host-wide directory.
pub(super) fn host_dir() -> PathBuf {
    Path::new(BPFFS)
        .join("palisade")
        .join(format!("host-{:016x}", object_hash()))
}

/// The host-wide lock over every `host-<hash>` directory.
pub(super) fn lock_host() -> Result<Flock<File>, EnforceError> {
    let failed = |reason: String| EnforceError::Pin {
        path: PathBuf::from(LOCK_DIR),
        reason,
    };
    fs::create_dir_all(LOCK_DIR).map_err(|e| failed(e.to_string()))?;
    let file = File::create(Path::new(LOCK_DIR).join("lock")).map_err(|e| failed(e.to_string()))?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| failed(e.to_string()))
}

pub(super) fn host_maps_complete(host: &Path) -> bool {
    SHARED_MAPS.iter().all(|m| host.join(m).exists())
}

/// Whether the host's maps and tracepoint programs are pinned (their links
/// are made by `tracing::ensure_attached`).
pub(super) fn host_complete(host: &Path) -> bool {
    host_maps_complete(host)
        && tracing::TRACEPOINTS
            .iter()
            .all(|tp| host.join(tp.program).exists())
}

/// The kernel's id of the map pinned at `path`.
fn map_id(path: PathBuf) -> Option<u32> {
    aya::maps::MapInfo::from_pin(path).ok().map(|i| i.id())
}

/// Whether the object pinned in `dir` was loaded against the host's maps.
pub(super) fn uses_host_maps(dir: &Path, host: &Path) -> bool {
    let host = map_id(host.join(map::CGROUP_POLICY));
    host.is_some() && map_id(dir.join(map::CGROUP_POLICY)) == host
}

/// The root's event ring, if one is pinned.
pub fn open_events(pins: &Pins) -> Result<Option<RingBuf<MapData>>, EnforceError> {
    let dir = pins.object_dir();
    if !dir.join(map::EVENTS).exists() {
        return Ok(None);
    }
    super::open_map(&dir, map::EVENTS).map(Some)
}

/// The kernel's id of the root's pinned event ring (to tell a new one).
pub fn events_ring_id(pins: &Pins) -> Option<u32> {
    aya::maps::MapInfo::from_pin(pins.object_dir().join(map::EVENTS))
        .ok()
        .map(|i| i.id())
}

/// Removes everything a state root pins (`system prune`): its link pins,
/// every object of every build (detaching the tracepoints an older build
/// attached per root), then the host's directory if no root of this build
/// is left. The caller holds the root's lock and has checked the root has
/// no container (none can appear while it holds the lock: a new one
/// reserves its name before it takes the lock). Returns what it removed.
pub fn unpin_root(pins: &Pins) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    if pins.dir().exists() && fs::remove_dir_all(pins.dir()).is_ok() {
        removed.push(pins.dir().to_path_buf());
    }
    removed.extend(release_idle_hosts());
    removed
}

/// What a state root keeps once its last container is gone: this build's
/// programs and maps, attached nowhere. Older builds' objects go (with the
/// tracepoints they attached per root), and so do empty link directories.
pub fn retire_root(pins: &Pins) {
    let _ = fs::remove_dir(pins.dir().join("links"));
    for entry in fs::read_dir(pins.dir()).into_iter().flatten().flatten() {
        let path = entry.path();
        let object = entry.file_name().to_string_lossy().starts_with("obj-");
        if object && path != pins.object_dir() {
            let _ = fs::remove_dir_all(&path);
        }
    }
}

/// Detaches the host's tracepoints (removes their link pins) if no
/// container of any root has a policy entry. Their programs and maps stay
/// pinned, so the next container only attaches them again.
pub fn detach_if_idle() {
    let Ok(_lock) = lock_host() else {
        return;
    };
    let host = host_dir();
    let policies = MapData::from_pin(host.join(map::CGROUP_POLICY))
        .ok()
        .and_then(|m| Map::from_map_data(m).ok())
        .and_then(|m| aya::maps::HashMap::<MapData, u64, CgroupPolicy>::try_from(m).ok());
    // Unreadable: leave it be.
    if policies.is_some_and(|p| p.keys().next().is_none()) {
        tracing::detach(&host);
    }
}

/// Removes every `host-<hash>` directory that no state root's object of
/// that build uses any more (detaching its tracepoints).
pub fn release_idle_hosts() -> Vec<PathBuf> {
    let Ok(_lock) = lock_host() else {
        return Vec::new();
    };
    let base = Path::new(BPFFS).join("palisade");
    let dirs: Vec<PathBuf> = fs::read_dir(&base)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    let mut removed = Vec::new();
    for host in dirs.iter().filter(|d| is_host_dir(d)) {
        let Some(hash) = host
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("host-"))
        else {
            continue;
        };
        // A root of this build uses the host's maps (an older palisade's
        // root of the same object has maps of its own).
        let object = format!("obj-{hash}");
        let used = dirs
            .iter()
            .filter(|d| !is_host_dir(d))
            .any(|root| uses_host_maps(&root.join(&object), host));
        if !used && fs::remove_dir_all(host).is_ok() {
            removed.push(host.clone());
        }
    }
    removed
}

fn is_host_dir(dir: &Path) -> bool {
    dir.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("host-"))
}
