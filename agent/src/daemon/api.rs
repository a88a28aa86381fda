//! The agent's API: a Unix socket in the state root (`agent.sock`, mode
//! 0600, root only), one JSON request a connection, answered with JSON
//! lines. `events` streams the journal (so every subscriber sees every
//! record, in journal order); `status` tells what the agent does.
//!
//! The client half is here too, for the CLI.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream as StdStream,
    path::Path,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader as AsyncBufReader},
    net::{UnixListener, UnixStream},
};

use super::{AgentError, Ctx};
use crate::runtime::{
    StateRoot,
    journal::{Record, Tail},
};

/// The longest request the agent reads.
const MAX_REQUEST: u64 = 64 << 10;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Journal records: those of the last `since_secs` seconds (all that
    /// are kept if `None` and not `follow`), then, with `follow`, new ones
    /// as they are written, until the client goes.
    Events {
        since_secs: Option<f64>,
        follow: bool,
    },
    /// One JSON object: the agent's [`super::Info`].
    Status,
    /// Journal the kernel's buffered events now; answered `{}` once done
    /// (a container's exit is journaled after every denial it caused).
    Flush,
}

pub(super) fn bind(path: &Path) -> Result<UnixListener, AgentError> {
    let io = |step| move |source| AgentError::Io { step, source };
    // The agent holds the root's agent lock: a socket there is a dead
    // agent's.
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io("remove a dead agent's socket")(e));
        }
        _ => {}
    }
    // Made 0600 from the start: no moment in which others may connect.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    listener.map_err(|source| AgentError::Listen {
        addr: path.display().to_string(),
        source,
    })
}

pub(super) async fn serve(ctx: Ctx, listener: UnixListener) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "API: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::task::spawn_local(session(ctx.clone(), stream));
    }
}

async fn session(ctx: Ctx, stream: UnixStream) {
    // The socket's mode already keeps others out; a peer that is not root
    // (a process that was handed a descriptor) is refused too.
    if stream.peer_cred().map(|c| c.uid()).ok() != Some(0) {
        return;
    }
    let (read, mut write) = stream.into_split();
    let mut read = AsyncBufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST));
    let mut line = String::new();
    let got = tokio::time::timeout(REQUEST_TIMEOUT, read.read_line(&mut line)).await;
    let request = match got {
        Ok(Ok(n)) if n > 0 => serde_json::from_str::<Request>(&line),
        _ => return,
    };
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            let answer = serde_json::json!({ "error": format!("bad request: {e}") });
            let _ = write.write_all(format!("{answer}\n").as_bytes()).await;
            return;
        }
    };
    match request {
        Request::Flush => {
            ctx.flush_kernel().await;
            let _ = write.write_all(b"{}\n").await;
        }
        Request::Status => {
            let info = serde_json::to_string(&*ctx.info()).expect("json");
            let _ = write.write_all(format!("{info}\n").as_bytes()).await;
        }
        Request::Events { since_secs, follow } => {
            let mut tail = match (since_secs, follow) {
                (Some(secs), _) => Tail::since(
                    &ctx.root,
                    Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX),
                ),
                (None, false) => Tail::since(&ctx.root, Duration::MAX),
                (None, true) => Tail::from_end(&ctx.root),
            };
            ctx.info().subscribers += 1;
            let mut grew = ctx.subscribe();
            let mut rest = String::new();
            loop {
                grew.borrow_and_update();
                let out = tail.read_lines().concat();
                if !out.is_empty() && write.write_all(out.as_bytes()).await.is_err() {
                    break;
                }
                if !follow {
                    break;
                }
                tokio::select! {
                    changed = grew.changed() => if changed.is_err() { break },
                    // Anything more from the client, or its end, ends it.
                    _ = read.read_line(&mut rest) => break,
                }
            }
            ctx.info().subscribers -= 1;
        }
    }
}

/// Why the CLI could not talk to the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the agent's socket {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the agent: {0}")]
    Agent(String),
}

impl ClientError {
    /// The error for an I/O failure on `root`'s agent socket.
    fn io(root: &StateRoot) -> impl Fn(std::io::Error) -> Self + '_ {
        move |source| ClientError::Io {
            path: super::socket_path(root).display().to_string(),
            source,
        }
    }
}

/// A connection to the root's agent; `None` if no agent listens there.
pub fn connect(root: &StateRoot) -> Option<StdStream> {
    StdStream::connect(super::socket_path(root)).ok()
}

fn ask(
    root: &StateRoot,
    mut stream: StdStream,
    request: &Request,
) -> Result<BufReader<StdStream>, ClientError> {
    let mut text = serde_json::to_string(request).expect("json");
    text.push('\n');
    stream
        .write_all(text.as_bytes())
        .map_err(ClientError::io(root))?;
    Ok(BufReader::new(stream))
}

/// Streams the agent's answer to an `events` request, one record at a
/// time, until the agent ends it or `out` returns false.
pub fn events(
    root: &StateRoot,
    stream: StdStream,
    request: &Request,
    mut out: impl FnMut(Record) -> bool,
) -> Result<(), ClientError> {
    let mut reader = ask(root, stream, request)?;
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(ClientError::io(root))?;
        if n == 0 {
            return Ok(());
        }
        match serde_json::from_str::<Record>(&line) {
            Ok(record) => {
                if !out(record) {
                    return Ok(());
                }
            }
            Err(_) => return Err(ClientError::Agent(line.trim().to_string())),
        }
    }
}

/// The agent's status, as JSON.
pub fn status(root: &StateRoot, stream: StdStream) -> Result<serde_json::Value, ClientError> {
    let mut reader = ask(root, stream, &Request::Status)?;
    let mut line = String::new();
    reader.read_line(&mut line).map_err(ClientError::io(root))?;
    serde_json::from_str(&line).map_err(|_| ClientError::Agent(line.trim().to_string()))
}
