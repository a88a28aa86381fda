//! The resident agent (`palisade agent`): one tokio process per state root
//! that serves `/metrics`, reads the kernel's events into the journal,
//! streams the journal to every subscriber over its API socket, handles
//! containers' OOM conditions and classifies host processes.
//!
//! Nothing a container needs to stay policed lives here: programs, maps
//! and links are pinned, so the agent can be killed, restarted or upgraded
//! under running containers; at start it re-adopts the pins and reconciles
//! them with the state directory (see `runtime::adopt`).

pub mod api;
mod classify;
mod kernel;
mod metrics;
mod oom;
mod view;
mod watch;

use std::{
    fs::File,
    io::Write as _,
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Instant, SystemTime},
};

use nix::fcntl::{Flock, FlockArg};
use thiserror::Error;
use tokio::sync::watch as signal_watch;

use crate::runtime::{
    RuntimeError, StateRoot, Status,
    adopt::{self, Adopted},
    journal::{self, Record},
};

#[derive(Debug, Error)]
pub enum AgentError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("another agent runs for the state root {root} (pid {pid}); stop it first")]
    Running { root: PathBuf, pid: String },
    #[error("{step}: {source}")]
    Io {
        step: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// How the agent is asked to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Serve `/metrics` here (none: no HTTP server).
    pub metrics_addr: Option<SocketAddr>,
    /// Classification rules (the configuration's `[[classify]]`).
    pub classify: Vec<crate::spec::ClassifyRule>,
}

/// The agent's API socket in a state root.
pub use crate::runtime::journal::agent_socket as socket_path;

fn lock_path(root: &StateRoot) -> PathBuf {
    root.dir().join("agent.lock")
}

/// What every task of the agent shares.
#[derive(Clone)]
pub struct Ctx {
    pub root: StateRoot,
    /// Counts journal appends seen; subscribers wait for it to change.
    grew: Arc<signal_watch::Sender<u64>>,
    /// Told when a container is created, so the kernel reader looks for
    /// the root's (possibly new) ring.
    ring_hint: Arc<tokio::sync::Notify>,
    /// Asks the kernel reader to journal what the ring holds now, and says
    /// when it has.
    flush: tokio::sync::mpsc::UnboundedSender<tokio::sync::oneshot::Sender<()>>,
    info: Arc<Mutex<Info>>,
    /// The device of the view filesystem the agent serves, if it does.
    view_dev: Option<u64>,
}

/// What the agent tells `agent status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Info {
    pub pid: u32,
    pub version: &'static str,
    pub root: PathBuf,
    pub started: String,
    pub metrics: Option<String>,
    pub subscribers: usize,
    pub records_from_kernel: u64,
    /// Containers whose `[oom]` section the agent watches.
    pub oom_watched: Vec<String>,
    pub classify_rules: usize,
    pub adopted: Adopted,
    /// Where the containers' `/proc` views are served (`ROOT/.view`);
    /// `None` if the filesystem could not be mounted (the log says why).
    pub proc_view: Option<PathBuf>,
}

impl Ctx {
    fn new(root: StateRoot, info: Info, view_dev: Option<u64>) -> (Self, kernel::Flushes) {
        let (flush, flushes) = tokio::sync::mpsc::unbounded_channel();
        let ctx = Self {
            root,
            grew: Arc::new(signal_watch::channel(0).0),
            ring_hint: Arc::new(tokio::sync::Notify::new()),
            flush,
            info: Arc::new(Mutex::new(info)),
            view_dev,
        };
        (ctx, flushes)
    }

    /// Journals what the kernel's ring holds now; returns once it has.
    async fn flush_kernel(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.flush.send(done).is_ok() {
            let _ = wait.await;
        }
    }

    /// Journals records (in one write, in this order) and wakes the
    /// subscribers. A journal that cannot be written is logged.
    pub fn emit(&self, records: &[Record]) {
        if let Err(e) = journal::append(&self.root, records) {
            tracing::error!(error = %e, "cannot write to the journal");
        }
        self.bump();
    }

    /// Wakes the subscribers: the journal may have grown.
    fn bump(&self) {
        self.grew.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn subscribe(&self) -> signal_watch::Receiver<u64> {
        self.grew.subscribe()
    }

    fn info(&self) -> std::sync::MutexGuard<'_, Info> {
        self.info.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs the agent until SIGTERM or SIGINT. `ready` is called once it
/// serves, with the metrics address it bound (the port is the kernel's
/// pick for 0).
/// The agent holds a descriptor per container it watches for OOM and per
/// API client, so a thousand containers pass the usual soft limit of
/// 1,024 (systemd's default, under a hard limit of 524,288): the soft
/// limit is raised to the hard one, and the log says so.
fn raise_descriptor_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "descriptor limit raised"),
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "cannot raise the descriptor limit")
            }
        },
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the descriptor limit"),
    }
}

pub fn run(
    root: &StateRoot,
    options: Options,
    ready: impl FnOnce(Option<SocketAddr>),
) -> Result<(), AgentError> {
    let io = |step| move |source| AgentError::Io { step, source };
    std::fs::create_dir_all(root.dir()).map_err(io("create the state root"))?;
    let _lock = lock(root)?;
    raise_descriptor_limit();
    let started = Instant::now();
    let adopted = adopt::adopt(root)?;
    report_adopted(&adopted);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("start the event loop"))?;
    let local = tokio::task::LocalSet::new();
    let view = match view::serve(root) {
        Ok(view) => Some(view),
        Err(e) => {
            tracing::error!(error = %e, "cannot serve the containers' /proc views: those that ask for one read the host's files");
            None
        }
    };
    let view_dev = view.as_ref().map(|v| v.dev);
    if let Some(dev) = view_dev {
        for state in root.list().unwrap_or_default() {
            bind_view(root, state, dev);
        }
    }
    let info = Info {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION"),
        root: root.dir().to_path_buf(),
        started: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        metrics: None,
        subscribers: 0,
        records_from_kernel: 0,
        oom_watched: Vec::new(),
        classify_rules: options.classify.len(),
        adopted,
        proc_view: view
            .as_ref()
            .map(|_| crate::runtime::view::mount_point(root)),
    };
    let (ctx, flushes) = Ctx::new(root.clone(), info, view_dev);
    let socket = socket_path(root);
    local.block_on(&runtime, async move {
        let metrics = match options.metrics_addr {
            Some(addr) => Some(metrics::bind(addr).await?),
            None => None,
        };
        let bound = metrics.as_ref().and_then(|l| l.local_addr().ok());
        ctx.info().metrics = bound.map(|a| a.to_string());
        let api = api::bind(&socket)?;
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(listener) = metrics {
            tasks.spawn_local(metrics::serve(ctx.clone(), listener));
        }
        tasks.spawn_local(api::serve(ctx.clone(), api));
        tasks.spawn_local(kernel::read(ctx.clone(), flushes));
        tasks.spawn_local(watch::run(ctx.clone()));
        if !options.classify.is_empty() {
            let (ctx, rules) = (ctx.clone(), options.classify);
            tasks.spawn_local(async move {
                if let Err(e) = classify::run(ctx, rules).await {
                    tracing::error!("classification stopped: {e}");
                }
            });
        }
        tracing::info!(
            root = %ctx.root.dir().display(),
            metrics = ?bound,
            socket = %socket.display(),
            took_ms = started.elapsed().as_millis() as u64,
            "agent serving"
        );
        ready(bound);
        let ended = shutdown_signal().await;
        tracing::info!(signal = ended, "stopping");
        tasks.shutdown().await;
        if let Some(view) = view {
            // The containers read the host's files again, not a dead
            // filesystem's errors.
            for state in ctx.root.list().unwrap_or_default() {
                let state = crate::runtime::reconcile(&ctx.root, state);
                if state.proc_view
                    && matches!(state.status, Status::Running | Status::Created)
                    && let Err(e) = crate::runtime::view::take_out(&state)
                {
                    tracing::warn!(container = %state.name, error = %e, "cannot take the /proc view out");
                }
            }
            view.stop();
        }
        let _ = std::fs::remove_file(&socket);
        tracing::info!("stopped; containers and their enforcement stay");
        Ok::<(), AgentError>(())
    })
}

/// Binds the view of the container `state` from the filesystem `dev` if
/// it asked for one, runs, and has not got it (it started while no agent
/// ran, or under one that is gone).
pub(crate) fn bind_view(root: &StateRoot, state: crate::runtime::State, dev: u64) {
    let state = crate::runtime::reconcile(root, state);
    let name = &state.name;
    if !state.proc_view || !matches!(state.status, Status::Running | Status::Created) {
        return;
    }
    match crate::runtime::view::bind_into(root, &state, dev) {
        Ok(true) => tracing::info!(container = %name, "its /proc view bound"),
        Ok(false) => {}
        Err(e) => {
            tracing::error!(container = %name, error = %e, "cannot bind its /proc view: it reads the host's files")
        }
    }
}

/// Waits for SIGTERM or SIGINT; its name.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot handle SIGTERM; stop the agent with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// One agent per state root: its lock file, holding its pid.
fn lock(root: &StateRoot) -> Result<Flock<File>, AgentError> {
    let path = lock_path(root);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| AgentError::Io {
            step: "open the agent's lock",
            source,
        })?;
    let _ = file.set_permissions(std::fs::Permissions::from_mode(0o600));
    let mut locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, _)) => {
            let pid = std::fs::read_to_string(&path)
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into());
            return Err(AgentError::Running {
                root: root.dir().to_path_buf(),
                pid,
            });
        }
    };
    let _ = locked.set_len(0);
    let _ = writeln!(*locked, "{}", std::process::id());
    Ok(locked)
}

fn report_adopted(adopted: &Adopted) {
    for name in &adopted.removed {
        tracing::info!(container = %name, "removed what a gone container left pinned");
    }
    for name in &adopted.reattached {
        tracing::warn!(container = %name, "its programs were detached (link pins missing): attached again");
    }
    for problem in &adopted.problems {
        tracing::error!(problem = %problem, "cannot reconcile");
    }
}
