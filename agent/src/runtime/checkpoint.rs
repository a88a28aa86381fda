//! A container's checkpoint, as the runtime sees it: the container must be
//! running, outermost and recorded with a recipe; the checkpoint engine
//! dumps it; then, unless it is to be left running, it is ended and
//! removed so its name is free for the restore.

use super::{StateRoot, Status};
use crate::checkpoint::{
    CheckpointError, ContainerTarget, DumpOptions, DumpReport, imagedir::ImageDir, sign::ImageKey,
};

/// Checkpoints container `name` into `dir`, signed with `key`.
pub fn checkpoint_container(
    root: &StateRoot,
    name: &str,
    dir: &ImageDir,
    key: &ImageKey,
    opts: DumpOptions,
    progress: &mut dyn FnMut(u64),
    chain: Option<crate::checkpoint::track::Chain>,
) -> Result<DumpReport, CheckpointError> {
    let refuse = |what: String| CheckpointError::Container {
        name: name.to_string(),
        what,
    };
    let state = root.load(name).map_err(|e| match e {
        super::StateError::NotFound(_) => CheckpointError::NoContainer(name.to_string()),
        e => refuse(e.to_string()),
    })?;
    let pid = match (state.status, state.pid) {
        (Status::Running, Some(pid)) => pid,
        (status, _) => return Err(refuse(format!("it is {status}, not running"))),
    };
    if !state.enclosing.is_empty() {
        return Err(refuse(
            "it is nested in another container (--parent): checkpoint the outermost".into(),
        ));
    }
    let recipe = state.recipe.clone().ok_or_else(|| {
        refuse("it was started by a palisade whose recipe this one cannot read".into())
    })?;
    let cgroup = state
        .cgroups
        .first()
        .ok_or_else(|| refuse("it has no cgroup".into()))?;
    let target = ContainerTarget {
        name,
        pid,
        cgroup,
        recipe,
        log: root.log_path(name).display().to_string(),
    };
    let report = crate::checkpoint::checkpoint_container(target, dir, key, opts, progress, chain)?;
    if !opts.leave_running {
        super::remove(root, name, true).map_err(|e| refuse(e.to_string()))?;
    }
    Ok(report)
}

/// The host pid of running container `name`'s first process (what its
/// pre-dump chain is kept by).
pub fn running_pid(root: &StateRoot, name: &str) -> Result<i32, CheckpointError> {
    let state = root.load(name).map_err(|e| match e {
        super::StateError::NotFound(_) => CheckpointError::NoContainer(name.to_string()),
        e => CheckpointError::Container {
            name: name.to_string(),
            what: e.to_string(),
        },
    })?;
    match (state.status, state.pid) {
        (Status::Running, Some(pid)) => Ok(pid),
        (status, _) => Err(CheckpointError::Container {
            name: name.to_string(),
            what: format!("it is {status}, not running"),
        }),
    }
}
