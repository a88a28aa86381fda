//! Userspace OOM handling: the `[oom]` section of a container's policy.
//!
//! One task per container with an `[oom]` section waits on its memory
//! condition (see `cgroups::oom`) and acts: `kill` ends the container,
//! recorded as an OOM end; `freeze` freezes it until `palisade kill`;
//! `notify` only reports. Each action is one `oom_action` journal record,
//! with the time from the wake-up to the action done.
//!
//! The kernel's OOM killer stays on: this handler adds to it and never
//! replaces it. With the agent down a container at its limit is still
//! handled by the kernel (its exit still says OOM), only the extra action
//! and its record are missing; at `memory_high` nothing happens but the
//! kernel's reclaim. The task reads nothing while it waits: an idle
//! container costs an fd and a parked task.

use std::{
    os::fd::OwnedFd,
    path::Path,
    time::{Duration, Instant},
};

use tokio::io::unix::AsyncFd;

use super::Ctx;
use crate::{
    cgroups::{
        self, Hierarchies,
        oom::{MemoryWatch, Woke},
    },
    runtime::{
        self, State,
        journal::{self, Record, What},
    },
    spec::{OomAction, OomPolicy, ResourceLimits},
    sys::readiness,
};

/// How long a kill may take to empty the cgroup before it is reported as
/// incomplete.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Starts watching `state`'s container if its policy has an `[oom]`
/// section; `None` if it has none (or it cannot be watched: logged). The
/// watch is registered before this returns, so nothing that happens after
/// is missed. The task ends when the container does, or is aborted by the
/// agent when the container is removed or its policy changes. Must be
/// called within the agent's tokio runtime.
pub fn watch(ctx: &Ctx, state: &State) -> Option<tokio::task::JoinHandle<()>> {
    let (oom, limits) = match handler_of(state) {
        Ok(Some(found)) => found,
        Ok(None) => return None,
        Err(e) => {
            tracing::error!(container = %state.name, error = %e, "cannot handle the container's OOM");
            return None;
        }
    };
    let opened = Hierarchies::detect()
        .and_then(|h| h.existing(&state.cgroups))
        .and_then(|cgroups| MemoryWatch::open(&cgroups, oom.at, limits.memory_high))
        .map_err(|e| e.to_string())
        .and_then(|(fd, w)| Ok((readiness::readable(fd).map_err(|e| e.to_string())?, w)));
    let (fd, memory) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            tracing::error!(container = %state.name, error = %e, "cannot watch the container's memory");
            return None;
        }
    };
    tracing::info!(container = %state.name, action = %oom.action, at = %oom.at, "watching for OOM");
    Some(tokio::spawn(handle(
        ctx.clone(),
        state.clone(),
        oom,
        fd,
        memory,
    )))
}

/// The container's `[oom]` and the limits it runs under, from its recorded
/// policy (the last applied one, else the one it started with).
fn handler_of(state: &State) -> Result<Option<(OomPolicy, ResourceLimits)>, String> {
    let Some(recipe) = &state.recipe else {
        return Ok(None);
    };
    let Some(oom) = runtime::adopt::recorded_policy(state)?.oom else {
        return Ok(None);
    };
    oom.check(&recipe.launch.resources)?;
    Ok(Some((oom, recipe.launch.resources.clone())))
}

async fn handle(
    ctx: Ctx,
    state: State,
    oom: OomPolicy,
    fd: AsyncFd<OwnedFd>,
    mut memory: MemoryWatch,
) {
    let name = state.name.clone();
    loop {
        let mut ready = match fd.readable().await {
            Ok(ready) => ready,
            Err(e) => {
                tracing::error!(container = %name, error = %e, "the memory watch failed");
                return;
            }
        };
        let woke = Instant::now();
        let what = memory.woke(ready.get_inner());
        // Drained: the next signal is a new edge (tokio keeps one that
        // came after the guard was taken).
        ready.clear_ready();
        match what {
            Ok(Woke::Met) => {}
            Ok(Woke::Nothing) => continue,
            Ok(Woke::Gone) => return,
            Ok(Woke::MetGone) => {
                // Said, not left out: the action was due, and the kernel
                // had already ended the container.
                let detail = "not taken: the kernel's OOM killer had already ended the container";
                tracing::info!(container = %name, action = %oom.action, at = %oom.at, detail, "OOM action");
                ctx.emit(&[oom_record(&state, oom, detail.to_string(), woke.elapsed())]);
                return;
            }
            Err(e) => {
                tracing::error!(container = %name, error = %e, "the memory watch failed");
                return;
            }
        }
        let ended = act(&ctx, &state, oom, woke).await;
        if ended {
            return;
        }
    }
}

/// Takes `oom`'s action and journals it; true if the container is ended.
async fn act(ctx: &Ctx, state: &State, oom: OomPolicy, woke: Instant) -> bool {
    let (detail, ended, marker) = match oom.action {
        OomAction::Notify => (
            match oom.at {
                crate::spec::OomCondition::Oom => {
                    "reported; the kernel's OOM killer acts on the limit".to_string()
                }
                crate::spec::OomCondition::MemoryHigh => {
                    "reported; usage is above memory_high".to_string()
                }
            },
            false,
            None,
        ),
        OomAction::Freeze => {
            let s = state.clone();
            match tokio::task::spawn_blocking(move || runtime::oom::freeze(&s)).await {
                Ok(Ok(())) => (
                    format!(
                        "frozen for inspection; `palisade kill {}` ends it",
                        state.name
                    ),
                    false,
                    None,
                ),
                Ok(Err(e)) => (format!("cannot freeze: {e}"), false, None),
                Err(e) => (format!("cannot freeze: {e}"), false, None),
            }
        }
        OomAction::Kill => {
            let (root, s) = (ctx.root.clone(), state.clone());
            match tokio::task::spawn_blocking(move || runtime::oom::kill(&root, &s)).await {
                Ok(Ok(marker)) => {
                    let signalled = woke.elapsed().as_micros();
                    let emptied = until_empty(marker.cgroup()).await;
                    let detail = if emptied {
                        format!(
                            "ended every process of the container (all signalled after {signalled} us)"
                        )
                    } else {
                        format!(
                            "killed, but processes remained after {} s",
                            KILL_WAIT.as_secs()
                        )
                    };
                    (detail, true, Some(marker))
                }
                Ok(Err(e)) => (format!("cannot kill: {e}"), true, None),
                Err(e) => (format!("cannot kill: {e}"), true, None),
            }
        }
    };
    let latency = woke.elapsed();
    tracing::info!(container = %state.name, action = %oom.action, at = %oom.at, latency_us = latency.as_micros() as u64, detail = %detail, "OOM action");
    ctx.emit(&[oom_record(state, oom, detail, latency)]);
    // Unlocked after the record is written: the monitor's exit record
    // comes after it.
    drop(marker);
    ended
}

/// The journal record of an OOM action on `state`'s container.
fn oom_record(state: &State, oom: OomPolicy, detail: String, latency: Duration) -> Record {
    Record::now(
        &state.name,
        What::OomAction(journal::OomAction {
            action: oom.action.as_str().to_string(),
            condition: oom.at.as_str().to_string(),
            latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            detail,
        }),
    )
}

/// Waits until the cgroup `dir` holds no process (its tasks take a moment
/// to die once killed); false after [`KILL_WAIT`]. Runs only while an
/// action is under way.
async fn until_empty(dir: &Path) -> bool {
    let deadline = Instant::now() + KILL_WAIT;
    while !cgroups::is_empty(dir) {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    true
}
