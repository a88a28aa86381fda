//! The agent's view of the journal: woken by inotify when any writer
//! (a `run`, a monitor, `rm`, `policy apply`, the agent itself) appends,
//! it wakes the subscribers and keeps one OOM watch per running container
//! whose policy asks for one.

use std::{collections::HashMap, time::Duration};

use nix::sys::inotify::AddWatchFlags;
use tokio::task::JoinHandle;

use super::{Ctx, oom};
use crate::{
    runtime::{
        self, Status,
        journal::{self, Tail, What},
    },
    sys::{notify, readiness},
};

pub(super) async fn run(ctx: Ctx) {
    let dir = journal::dir(&ctx.root);
    let mut tail = Tail::from_end(&ctx.root);
    let mut oom = OomWatches {
        tasks: HashMap::new(),
        events: oom::MemoryEvents::start(),
    };
    if let Err(e) = &oom.events {
        tracing::error!(error = %e, "containers on cgroup v2 cannot be watched for OOM");
    }
    for state in ctx.root.list().unwrap_or_default() {
        let state = runtime::reconcile(&ctx.root, state);
        if matches!(state.status, Status::Running | Status::Created) {
            oom.start(&ctx, &state.name);
        }
    }
    let events = AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO;
    let watched = std::fs::create_dir_all(&dir)
        .map_err(|e| e.to_string())
        .and_then(|()| notify::inotify(&dir, events).map_err(|e| e.to_string()))
        .and_then(|fd| readiness::readable(fd).map_err(|e| e.to_string()));
    let watched = match watched {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!(error = %e, dir = %dir.display(), "cannot watch the journal; reading it every second");
            None
        }
    };
    loop {
        match &watched {
            Some(w) => {
                if let Ok(mut guard) = w.readable().await {
                    let _ = notify::inotify_drain(w.get_ref());
                    guard.clear_ready();
                }
            }
            None => tokio::time::sleep(Duration::from_secs(1)).await,
        }
        ctx.bump();
        // Only lifecycle records matter here: denials, the bulk of the
        // journal, are not decoded.
        let lines = tail.read_lines();
        let records = lines
            .iter()
            .filter(|l| !l.contains(r#""kind":"denial""#))
            .filter_map(|l| serde_json::from_str::<journal::Record>(l).ok());
        for record in records {
            match record.what {
                What::Created { .. } => {
                    ctx.ring_hint.notify_one();
                    if let Some(dev) = ctx.view_dev
                        && let Ok(state) = ctx.root.load(&record.container)
                    {
                        super::bind_view(&ctx.root, state, dev);
                    }
                    oom.start(&ctx, &record.container);
                }
                What::PolicyChanged => oom.start(&ctx, &record.container),
                What::Exited { .. } | What::Removed => oom.stop(&ctx, &record.container),
                _ => {}
            }
        }
    }
}

/// One OOM watch per container whose policy has an `[oom]` section, and
/// the inotify instance the v2 ones share.
struct OomWatches {
    tasks: HashMap<String, JoinHandle<()>>,
    events: Result<oom::MemoryEvents, String>,
}

impl OomWatches {
    /// (Re)starts the container's watch from its state as it is now.
    fn start(&mut self, ctx: &Ctx, name: &str) {
        self.stop(ctx, name);
        let Ok(state) = ctx.root.load(name) else {
            return;
        };
        if let Some(handle) = oom::watch(ctx, &self.events, &state) {
            self.tasks.insert(name.to_string(), handle);
            ctx.info().oom_watched.push(name.to_string());
        }
    }

    fn stop(&mut self, ctx: &Ctx, name: &str) {
        if let Some(handle) = self.tasks.remove(name) {
            handle.abort();
            ctx.info().oom_watched.retain(|n| n != name);
        }
    }
}
