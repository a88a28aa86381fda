//! How long pins live. A state root's programs, maps and container links
//! live in its bpffs directory while it has containers; when the last one
//! goes the whole directory goes (an event ring with unread events stays
//! alone until `palisade events` reads it, and no program writes it).
//!
//! The accounting tracepoints (`sched_switch`, `page_fault_user`) run for
//! every task of the host, so they exist once per host and build, not per
//! root: their programs, links and the maps they use (`CGROUP_POLICY`,
//! `USAGE`, `RUNNING`, `TASK_CGROUP`, all keyed by cgroup or task, so
//! roots never collide) are pinned in `/sys/fs/bpf/palisade/host-<hash>/`
//! and every root's object is loaded against those maps. That directory
//! goes when no state root has this build's programs pinned. Changes to it
//! happen under a host-wide lock, always taken after a root's lock.

use std::{
    fs::{self, File},
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use aya::maps::{Map, MapData, RingBuf};
use nix::fcntl::{Flock, FlockArg};
use palisade_common::map;

use super::{BPFFS, EnforceError, HOOKS, Pins, chain, object_hash, tracing};

/// The maps the tracepoint programs use, shared by every root.
pub(super) const SHARED_MAPS: &[&str] = &[
    map::CGROUP_POLICY,
    map::USAGE,
    map::RUNNING,
    map::TASK_CGROUP,
];

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

/// Whether the ring pinned at `path` holds unread events.
fn pending(path: &Path) -> bool {
    MapData::from_pin(path)
        .ok()
        .and_then(|m| crate::sys::bpf::ringbuf_pending(m.fd().as_fd()).ok())
        .unwrap_or(false)
}

/// Empties an object directory but for an event ring with unread events.
pub(super) fn clear_except_events(dir: &Path) {
    if !pending(&dir.join(map::EVENTS)) {
        let _ = fs::remove_dir_all(dir);
        return;
    }
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name() != map::EVENTS {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// The root's event ring, if one is pinned.
pub fn open_events(pins: &Pins) -> Result<Option<RingBuf<MapData>>, EnforceError> {
    let path = pins.object_dir().join(map::EVENTS);
    if !path.exists() {
        return Ok(None);
    }
    let failed = |reason: String| EnforceError::Pin {
        path: path.clone(),
        reason,
    };
    let map = MapData::from_pin(&path)
        .and_then(Map::from_map_data)
        .map_err(|e| failed(chain(&e)))?;
    RingBuf::try_from(map)
        .map(Some)
        .map_err(|e| failed(chain(&e)))
}

/// The kernel's id of the root's pinned event ring (to tell a new one).
pub fn events_ring_id(pins: &Pins) -> Option<u32> {
    aya::maps::MapInfo::from_pin(pins.object_dir().join(map::EVENTS))
        .ok()
        .map(|i| i.id())
}

/// Removes what a state root with no container left has pinned: its link
/// pins, every object of every build (detaching the tracepoints an older
/// build attached per root), then the host's tracepoints if no root of
/// this build is left. The caller holds the root's lock and has checked
/// the root has no container (none can appear while it holds the lock: a
/// new one reserves its name before it takes the lock). Returns what it
/// removed. An event ring with unread events stays.
pub fn unpin_root(pins: &Pins) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let dir = pins.dir();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path == pins.object_dir() {
                clear_except_events(&path);
                if !path.exists() {
                    removed.push(path);
                }
            } else if fs::remove_dir_all(&path).is_ok() {
                removed.push(path);
            }
        }
        if fs::remove_dir(dir).is_ok() {
            removed = vec![dir.to_path_buf()];
        }
    }
    removed.extend(release_idle_hosts());
    removed
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
        let object = format!("obj-{hash}");
        let used = dirs
            .iter()
            .filter(|d| !is_host_dir(d))
            .any(|root| root.join(&object).join(HOOKS[0].program).exists());
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
