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
//! container costs a parked task, and an eventfd (v1) or a watch in the
//! agent's one inotify instance (v2).

use std::{
    collections::HashMap,
    os::fd::{AsFd, OwnedFd},
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    io::unix::AsyncFd,
    sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel},
};

use super::Ctx;
use crate::{
    cgroups::{
        self, Hierarchies,
        oom::{MemoryWatch, Wakes, Woke},
    },
    runtime::{
        self, State,
        journal::{self, Record, What},
    },
    spec::{OomAction, OomPolicy, ResourceLimits},
    sys::{
        notify::{self, Inotified},
        readiness,
    },
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
pub fn watch(
    ctx: &Ctx,
    events: &Result<MemoryEvents, String>,
    state: &State,
) -> Option<tokio::task::JoinHandle<()>> {
    let (oom, limits) = match handler_of(state) {
        Ok(Some(found)) => found,
        Ok(None) => return None,
        Err(e) => {
            tracing::error!(container = %state.name, error = %e, "cannot handle the container's OOM");
            return None;
        }
    };
    let opened = events.as_ref().map_err(Clone::clone).and_then(|events| {
        let (wakes, memory) = Hierarchies::detect()
            .and_then(|h| h.existing(&state.cgroups))
            .and_then(|cgroups| {
                MemoryWatch::open(
                    &cgroups,
                    oom.at,
                    limits.memory_high,
                    events.0.fd.get_ref().as_fd(),
                )
            })
            .map_err(|e| e.to_string())?;
        let waker = match wakes {
            Wakes::Own(fd) => Waker::Own(readiness::readable(fd).map_err(|e| e.to_string())?),
            Wakes::Shared(wd) => Waker::Shared(events.register(wd)),
        };
        Ok((waker, memory))
    });
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

/// What wakes a container's OOM task.
enum Waker {
    /// Its own descriptor (v1's eventfd).
    Own(AsyncFd<OwnedFd>),
    /// Its watch's events in the agent's shared instance (v2).
    Shared(Registration),
}

impl Waker {
    /// Waits for the next wake-up; when it came, and what it meant.
    async fn next(&mut self, memory: &mut MemoryWatch) -> (Instant, Result<Woke, String>) {
        match self {
            Waker::Own(fd) => {
                let mut ready = match fd.readable().await {
                    Ok(ready) => ready,
                    Err(e) => return (Instant::now(), Err(e.to_string())),
                };
                let woke = Instant::now();
                let what = memory.woke(ready.get_inner());
                // Drained: the next signal is a new edge (tokio keeps one
                // that came after the guard was taken).
                ready.clear_ready();
                (woke, what.map_err(|e| e.to_string()))
            }
            Waker::Shared(registration) => {
                let seen = registration.events.recv().await;
                let woke = Instant::now();
                let what = seen
                    .ok_or_else(|| "the agent's inotify reader stopped".to_string())
                    .and_then(|seen| memory.woke_by(seen).map_err(|e| e.to_string()));
                (woke, what)
            }
        }
    }
}

/// The agent's one inotify instance for the `memory.events` of every
/// container on cgroup v2 it watches. The host allows each user few
/// instances (`fs.inotify.max_user_instances`, 128 by default) and many
/// watches, so an instance per container would stop at about a hundred.
/// One task reads it and hands each watch's events to its container's
/// task.
pub struct MemoryEvents(Arc<Hub>);

struct Hub {
    fd: AsyncFd<OwnedFd>,
    waiters: Mutex<HashMap<i32, UnboundedSender<Inotified>>>,
}

impl MemoryEvents {
    /// The instance, and the task that reads it. Must be called within
    /// the agent's tokio runtime.
    pub fn start() -> Result<Self, String> {
        let fd = notify::inotify_instance()
            .map_err(|e| format!("cannot make an inotify instance: {e}"))?;
        let hub = Arc::new(Hub {
            fd: readiness::readable(fd).map_err(|e| e.to_string())?,
            waiters: Mutex::new(HashMap::new()),
        });
        tokio::spawn(dispatch(Arc::clone(&hub)));
        Ok(Self(hub))
    }

    /// Routes watch `wd`'s events to the returned registration, which
    /// removes the watch when dropped.
    fn register(&self, wd: i32) -> Registration {
        let (send, events) = unbounded_channel();
        self.0.waiters().insert(wd, send);
        Registration {
            hub: Arc::clone(&self.0),
            wd,
            events,
        }
    }
}

impl Hub {
    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<i32, UnboundedSender<Inotified>>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One container's watch in the shared instance.
struct Registration {
    hub: Arc<Hub>,
    wd: i32,
    events: UnboundedReceiver<Inotified>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.waiters().remove(&self.wd);
        let _ = notify::inotify_unwatch(self.hub.fd.get_ref().as_fd(), self.wd);
    }
}

/// Reads the shared instance for as long as the agent runs, handing each
/// watch's events to its container's task; a watch whose file is gone
/// gets that, and no more.
async fn dispatch(hub: Arc<Hub>) {
    loop {
        let mut ready = match hub.fd.readable().await {
            Ok(ready) => ready,
            Err(e) => {
                tracing::error!(error = %e, "the inotify instance of memory watches failed");
                // Every waiting task hears that its watch has ended.
                hub.waiters().clear();
                return;
            }
        };
        let seen = notify::inotify_drain_by_watch(hub.fd.get_ref().as_fd());
        ready.clear_ready();
        let seen = match seen {
            Ok(seen) => seen,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the inotify instance of memory watches");
                hub.waiters().clear();
                return;
            }
        };
        let mut waiters = hub.waiters();
        for (wd, what) in seen {
            if let Some(send) = waiters.get(&wd) {
                let _ = send.send(what);
            }
            if what.gone {
                waiters.remove(&wd);
            }
        }
    }
}

async fn handle(ctx: Ctx, state: State, oom: OomPolicy, mut waker: Waker, mut memory: MemoryWatch) {
    let name = state.name.clone();
    loop {
        let (woke, what) = waker.next(&mut memory).await;
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
        // A frozen container is held already: its memory events (cgroup
        // v2 counts `high` again as a kill thaws and ends it) are not a
        // new condition to freeze it for.
        if oom.action == OomAction::Freeze && runtime::oom::is_frozen(&state) {
            continue;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// 200 watches (more than the 128 inotify instances a user may have
    /// by default) in the one shared instance: each write reaches only its
    /// file's registration, a removed file's registration hears it is
    /// gone, and a dropped registration takes its watch away.
    /// The next events of `r`'s watch, within 5 s.
    async fn next(r: &mut Option<Registration>) -> Inotified {
        let r = r.as_mut().expect("registered");
        tokio::time::timeout(Duration::from_secs(5), r.events.recv())
            .await
            .expect("events within 5 s")
            .expect("the reader runs")
    }

    #[test]
    fn one_instance_routes_each_watch_to_its_own_waiter() {
        let dir =
            std::env::temp_dir().join(format!("palisade-memory-events-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let events = MemoryEvents::start().expect("one inotify instance");
            let mut registrations = Vec::new();
            for i in 0..200 {
                let file = dir.join(format!("memory.events.{i}"));
                std::fs::write(&file, "oom 0\n").unwrap();
                let wd = notify::inotify_watch_modify(events.0.fd.get_ref().as_fd(), &file)
                    .expect("a watch");
                registrations.push(Some(events.register(wd)));
            }
            std::fs::write(dir.join("memory.events.137"), "oom 1\n").unwrap();
            let seen = next(&mut registrations[137]).await;
            assert!(seen.modified && !seen.gone, "{seen:?}");
            std::fs::remove_file(dir.join("memory.events.5")).unwrap();
            let seen = next(&mut registrations[5]).await;
            assert!(seen.gone, "{seen:?}");
            // Only those two heard anything.
            for (i, r) in registrations.iter_mut().enumerate() {
                let r = r.as_mut().unwrap();
                if i != 5 {
                    assert!(
                        r.events.try_recv().is_err(),
                        "watch {i} heard another's event"
                    );
                }
            }
            // Dropped: its watch is removed (the kernel says so as
            // IN_IGNORED, which no one hears), and its file's writes go
            // nowhere.
            let wd = registrations[10].as_ref().unwrap().wd;
            registrations[10] = None;
            assert!(!events.0.waiters().contains_key(&wd));
            std::fs::write(dir.join("memory.events.10"), "oom 2\n").unwrap();
            std::fs::write(dir.join("memory.events.11"), "oom 2\n").unwrap();
            let seen = next(&mut registrations[11]).await;
            assert!(seen.modified);
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
}
