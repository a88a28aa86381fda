//! Checkpoint of a container: its cgroup is frozen while every task of
//! its tree is seized, the tree is dumped like a `--pid` tree, and its
//! pids are rewritten as the container's pid namespace numbers them
//! (restore recreates them there, in a new container made from the
//! recorded `run` recipe, under the same policy).

use std::{collections::HashMap, path::Path, time::Instant};

use super::{
    CheckpointError,
    dump::{self, DumpOptions, DumpReport},
    files::FileKind,
    image::{self, ContainerImage, Image},
    imagedir::ImageDir,
    proc,
    sign::ImageKey,
};
use crate::{cgroups, spec::Recipe};

/// A running container to checkpoint, as its state records it.
pub struct ContainerTarget<'a> {
    pub name: &'a str,
    /// Its first process (host pid).
    pub pid: i32,
    /// Its cgroup v2 directory.
    pub cgroup: &'a Path,
    pub recipe: Recipe,
    /// Its log file on the host.
    pub log: String,
}

/// Checkpoints a container into `dir`, signed with `key`, leaving it
/// running: the runtime ends and removes it afterwards if asked.
pub fn checkpoint_container(
    target: ContainerTarget,
    dir: &ImageDir,
    key: &ImageKey,
    opts: DumpOptions,
    progress: &mut dyn FnMut(u64),
    chain: Option<crate::checkpoint::track::Chain>,
) -> Result<DumpReport, CheckpointError> {
    let ContainerTarget {
        name,
        pid,
        cgroup: unified,
        recipe,
        log,
    } = target;
    let t0 = Instant::now();
    let frozen_cgroup = |frozen| {
        cgroups::set_frozen(unified, frozen).map_err(|source| CheckpointError::Cgroup {
            name: name.to_string(),
            source,
        })
    };
    frozen_cgroup(true)?;
    let frozen = dump::freeze(pid);
    let thawed = frozen_cgroup(false);
    let frozen = frozen?;
    if let Err(e) = thawed {
        let _ = frozen.release();
        return Err(e);
    }
    let freeze = t0.elapsed();
    if let Err(e) = check_all_in_tree(name, unified, &frozen) {
        let _ = frozen.release();
        return Err(e);
    }
    let target = dump::ImageTarget { dir, key };
    let report = dump::dump_into(
        pid,
        frozen,
        target,
        opts,
        progress,
        freeze,
        // A pre-dump chain's pages, by the host pids the chain knows.
        chain.as_ref(),
        |image| {
            // The first process has palisade's filters, which restore makes
            // again from the policy; one added since cannot be.
            let own = image.processes[0].state.seccomp_filters;
            if let Some(p) = image
                .processes
                .iter()
                .find(|p| p.state.seccomp_filters != own && p.zombie.is_none())
            {
                return Err(CheckpointError::Unsupported {
                    pid: p.pid,
                    what: format!(
                        "{} seccomp filters where the container has {own} (its own cannot be read back)",
                        p.state.seccomp_filters
                    ),
                });
            }
            to_namespace(image)?;
            // Its output goes to the log on the host, out of its sight: the
            // restored container's goes to its own log.
            for o in &mut image.files {
                if let FileKind::Path { path, .. } = &mut o.kind
                    && *path == log
                {
                    *path = image::CONTAINER_LOG.to_string();
                }
            }
            image.container = Some(ContainerImage {
                name: name.to_string(),
                recipe,
            });
            Ok(())
        },
    )?;
    if let Some(c) = chain {
        c.finish();
    }
    Ok(report)
}

/// Every process in the container's cgroup must be in the tree under its
/// first process: one started by `palisade exec` is not, and could not be
/// put back.
fn check_all_in_tree(
    name: &str,
    unified: &Path,
    frozen: &dump::Frozen,
) -> Result<(), CheckpointError> {
    let procs = cgroups::procs_checked(unified).map_err(|source| CheckpointError::Cgroup {
        name: name.to_string(),
        source,
    })?;
    for pid in procs {
        if !frozen.members.iter().any(|m| m.pid == pid) {
            return Err(CheckpointError::Container {
                name: name.to_string(),
                what: format!(
                    "process {pid} in its cgroup is not a descendant of its first process (started by `palisade exec`?)"
                ),
            });
        }
    }
    Ok(())
}

/// The innermost pid in /proc/PID/status's NSpid line.
fn namespace_pid(pid: i32, tid: i32) -> Result<i32, CheckpointError> {
    let status =
        std::fs::read_to_string(proc::path(pid, &format!("task/{tid}/status"))).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|v| v.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| CheckpointError::Process {
            pid: tid,
            what: "no NSpid in its status".into(),
        })
}

/// Rewrites every pid of the image (taken from the host) as the
/// container's pid namespace numbers it. A session or group outside the
/// container (the monitor's) becomes 0: inherited from whoever restores.
fn to_namespace(image: &mut Image) -> Result<(), CheckpointError> {
    let mut map = HashMap::new();
    for p in &image.processes {
        map.insert(p.pid, namespace_pid(p.pid, p.pid)?);
        for t in &p.threads {
            map.insert(t.tid, namespace_pid(p.pid, t.tid)?);
        }
    }
    let ns = |pid: i32| map.get(&pid).copied().unwrap_or(0);
    image.root = ns(image.root);
    for p in &mut image.processes {
        p.parent = ns(p.parent);
        p.pgid = ns(p.pgid);
        p.sid = ns(p.sid);
        p.pid = ns(p.pid);
        for t in &mut p.threads {
            t.tid = ns(t.tid);
        }
    }
    Ok(())
}
