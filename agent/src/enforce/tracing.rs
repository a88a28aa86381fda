//! The object's global program: a raw tracepoint that counts the context
//! switches of every container's exiting threads, for every state root.
//! Unlike the cgroup hooks, tracepoints are attached once per host and
//! build, not per container, as BPF links pinned beside the programs
//! (`host-<hash>/link_<program>`, see `lifetime`): they outlive the process
//! that attached them, are never attached twice, and go when no container
//! is left. Older builds pinned them per root (`obj-<hash>/link_<program>`).

use std::path::{Path, PathBuf};

use aya::{
    Ebpf,
    maps::{HashMap, Map, MapData},
    programs::{RawTracePoint, links::FdLink},
};
use palisade_common::{CgroupPolicy, map, program};

use super::{EnforceError, hooks::LoadError};
use crate::sys::bpf::chain;

/// A raw tracepoint program: its name in the object and the tracepoint.
pub(super) struct TracePoint {
    pub program: &'static str,
    pub tracepoint: &'static str,
}

pub(super) const TRACEPOINTS: &[TracePoint] = &[TracePoint {
    program: program::TASK_EXIT,
    tracepoint: "sched_process_exit",
}];

/// Link pins of tracepoints older builds attached and this one does not
/// (CPU time and page faults now come from the cgroup's controllers, and
/// context switches from /proc and the exit program): removed wherever
/// tracepoints are detached, so an old build's program stops running on
/// every switch or fault of the host.
const RETIRED_LINKS: &[&str] = &["link_page_fault_user", "link_sched_switch"];

/// Removes the tracepoint link pins in `dir`, this build's and retired ones.
fn remove_links(dir: &Path) {
    for tp in TRACEPOINTS {
        let _ = std::fs::remove_file(link_pin(dir, tp));
    }
    for link in RETIRED_LINKS {
        let _ = std::fs::remove_file(dir.join(link));
    }
}

/// Where the link of `tp` is pinned in the object's directory `dir`.
fn link_pin(dir: &Path, tp: &TracePoint) -> PathBuf {
    dir.join(format!("link_{}", tp.program))
}

/// Loads (verifies) the tracepoint's program from the object and pins it.
pub(super) fn load_and_pin(bpf: &mut Ebpf, tp: &TracePoint, path: &Path) -> Result<(), LoadError> {
    let prog = bpf.program_mut(tp.program).ok_or(LoadError::Missing)?;
    let p: &mut RawTracePoint = prog.try_into().map_err(LoadError::Load)?;
    p.load().map_err(LoadError::Load)?;
    p.pin(path).map_err(|e| LoadError::Pin(e.to_string()))
}

/// Attaches every tracepoint program pinned in `dir` whose link is not
/// pinned there yet, and pins the link.
pub(super) fn ensure_attached(dir: &Path) -> Result<(), EnforceError> {
    for tp in TRACEPOINTS {
        let pin = link_pin(dir, tp);
        if pin.exists() {
            continue;
        }
        let failed = |reason: String| EnforceError::Trace {
            tracepoint: tp.tracepoint,
            reason: super::hint(reason),
        };
        let mut prog =
            RawTracePoint::from_pin(dir.join(tp.program)).map_err(|e| failed(chain(&e)))?;
        let id = prog.attach(tp.tracepoint).map_err(|e| failed(chain(&e)))?;
        let link = FdLink::from(prog.take_link(id).map_err(|e| failed(chain(&e)))?);
        link.pin(&pin).map(drop).map_err(|e| EnforceError::Pin {
            path: pin.clone(),
            reason: chain(&e),
        })?;
    }
    Ok(())
}

/// Detaches the tracepoints pinned in `dir` (removing their link pins).
pub(super) fn detach(dir: &Path) {
    remove_links(dir);
}

/// Detaches the tracepoints of the state root's other objects (earlier
/// builds) that police no container any more, so old builds do not keep
/// running on the host's tasks. Their programs and maps stay pinned;
/// an old build that runs again attaches its tracepoints again.
pub(super) fn detach_idle_siblings(root_dir: &Path, ours: &Path) {
    let Ok(entries) = std::fs::read_dir(root_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let is_object = entry.file_name().to_string_lossy().starts_with("obj-");
        let linked = TRACEPOINTS.iter().any(|tp| link_pin(&dir, tp).exists())
            || RETIRED_LINKS.iter().any(|l| dir.join(l).exists());
        if !is_object || dir == ours || !linked {
            continue;
        }
        let policies = MapData::from_pin(dir.join(map::CGROUP_POLICY))
            .ok()
            .and_then(|m| Map::from_map_data(m).ok())
            .and_then(|m| HashMap::<MapData, u64, CgroupPolicy>::try_from(m).ok());
        // Unreadable: leave it be.
        if policies.is_some_and(|p| p.keys().next().is_none()) {
            remove_links(&dir);
        }
    }
}
