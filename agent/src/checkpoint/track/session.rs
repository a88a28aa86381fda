//! A tracking session: what lets a pre-dump chain go on across commands.
//!
//! Write-protection lives as long as the userfaultfd that armed it, and
//! the eBPF recorder as long as its links. Each `checkpoint` command is a
//! process of its own, so a small holder process, forked by the first
//! pre-dump, keeps those fds and hands copies to each later command over
//! a Unix socket (SCM_RIGHTS). The session's record (`session.json`,
//! beside the socket in `<root>/tracking/<pid>/`) names the chain's last
//! image, so a `--parent` that is not it is refused.
//!
//! Every command that talks to the holder ends by saying `keep` or
//! `stop`; a command that dies first (Ctrl-C, a crash) closes its end
//! unsaid, which the holder takes as `stop`. The holder then exits, the
//! kernel drops the write-protection and the programs with its fds, and
//! it removes the session's directory: an aborted chain leaves no trace
//! in the target. It also exits when every tracked process has ended.

use std::{
    io::{BufRead, BufReader, Write},
    os::{
        fd::{AsFd, BorrowedFd, OwnedFd},
        unix::net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    checkpoint::CheckpointError,
    sys::{fds, pidfd, process},
};

/// The session's record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Random, hex: the chain's images carry it.
    pub id: String,
    /// The tree's root and its start time (a reused pid is not it).
    pub pid: i32,
    pub start_time: u64,
    pub backend: String,
    /// The chain's last image: its directory, manifest digest, generation.
    pub latest: PathBuf,
    pub latest_blake3: String,
    pub generation: u32,
    /// The holder's pid (0 for the `full` backend, which holds nothing).
    pub holder: i32,
    /// When the chain's pages were last protected (ms since the epoch):
    /// the next step's written pages are what the tree wrote since.
    pub protected_at_ms: u64,
}

/// Now, in ms since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the holder hands over: for each tracked process, its
/// userfaultfd; and the eBPF recorder's map fds, if it runs.
pub struct Held {
    pub uffds: Vec<(i32, OwnedFd)>,
    pub maps: Vec<OwnedFd>,
}

/// The directory of the sessions of a state root.
pub fn dir_of(sessions: &Path, pid: i32) -> PathBuf {
    sessions.join(pid.to_string())
}

/// Where a command that read the eBPF recorder's events without
/// consuming them (a final checkpoint) leaves them for the next one.
pub fn stash_of(sessions: &Path, pid: i32) -> PathBuf {
    dir_of(sessions, pid).join("events.stash")
}

const RECORD: &str = "session.json";
const SOCKET: &str = "holder.sock";

/// Reads the session of `pid`, if there is one whose tree still runs;
/// a record left by a tree that is gone is removed.
pub fn load(sessions: &Path, pid: i32) -> Result<Option<Record>, CheckpointError> {
    let dir = dir_of(sessions, pid);
    let text = match std::fs::read(dir.join(RECORD)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CheckpointError::file(pid, "read", dir.join(RECORD))(e)),
    };
    let record: Record = serde_json::from_slice(&text).map_err(|e| CheckpointError::Process {
        pid,
        what: format!("{}: unreadable: {e}", dir.join(RECORD).display()),
    })?;
    let same_tree = crate::checkpoint::proc::start_time(pid).ok() == Some(record.start_time);
    let held = record.holder == 0 || holder_alive(&dir, record.holder);
    if !same_tree || !held {
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(None);
    }
    Ok(Some(record))
}

/// Writes the record (aside, then renamed in).
pub fn save(sessions: &Path, record: &Record) -> Result<(), CheckpointError> {
    let dir = dir_of(sessions, record.pid);
    private_dir(&dir).map_err(CheckpointError::file(record.pid, "create", &dir))?;
    let tmp = dir.join("session.json.tmp");
    let text = serde_json::to_vec_pretty(record).expect("a record serialises");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, dir.join(RECORD)))
        .map_err(CheckpointError::file(record.pid, "write", dir.join(RECORD)))
}

/// Makes `dir` (and missing parents) mode 0700: its socket hands out
/// fds that write-protect and read a process's memory, for root only.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Removes the session's record and socket.
pub fn remove(sessions: &Path, pid: i32) {
    let _ = std::fs::remove_dir_all(dir_of(sessions, pid));
}

fn holder_alive(dir: &Path, holder: i32) -> bool {
    holder > 0 && crate::checkpoint::proc::path(holder, "").exists() && dir.join(SOCKET).exists()
}

/// A connection to the holder for one command: it says `keep` or `stop`
/// when done (dropped unsaid, `stop`).
pub struct Link {
    stream: UnixStream,
}

impl Link {
    /// The chain goes on: the holder keeps tracking.
    pub fn keep(mut self) -> std::io::Result<()> {
        self.stream.write_all(b"keep\n")
    }

    /// Tracking ends now; returns once the holder has exited (up to 5 s),
    /// so no protection is left when the command reports.
    pub fn stop(mut self, holder: i32) {
        let _ = self.stream.write_all(b"stop\n");
        wait_gone(holder);
    }
}

/// Waits (up to 5 s) for process `pid` to end.
fn wait_gone(pid: i32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while pid > 0
        && crate::checkpoint::proc::path(pid, "").exists()
        && !crate::checkpoint::proc::Stat::read(pid).is_ok_and(|s| s.state() == 'Z')
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Connects to the session's holder and takes copies of its fds.
pub fn connect(sessions: &Path, record: &Record) -> Result<(Link, Held), CheckpointError> {
    let path = dir_of(sessions, record.pid).join(SOCKET);
    let fail = |what: String| CheckpointError::Process {
        pid: record.pid,
        what: format!("its tracking session ({}): {what}", path.display()),
    };
    let stream = UnixStream::connect(&path).map_err(|e| fail(format!("connect: {e}")))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| fail(e.to_string()))?;
    let (text, fds) =
        fds::recv_with_fds(stream.as_fd(), 64 << 10).map_err(|e| fail(format!("receive: {e}")))?;
    let desc: Handover = serde_json::from_slice(&text).map_err(|e| fail(format!("{e}")))?;
    if fds.len() != desc.uffds.len() + desc.maps {
        return Err(fail(format!(
            "it sent {} fds for {} userfaultfds and {} maps",
            fds.len(),
            desc.uffds.len(),
            desc.maps
        )));
    }
    let mut fds = fds.into_iter();
    let uffds = desc
        .uffds
        .iter()
        .map(|pid| (*pid, fds.next().expect("counted")))
        .collect();
    let maps = fds.collect();
    Ok((Link { stream }, Held { uffds, maps }))
}

/// What a handover message says of the fds that come with it, in order.
#[derive(Serialize, Deserialize)]
struct Handover {
    uffds: Vec<i32>,
    maps: usize,
}

/// Forks the holder of `held` for the session `record` (saved by the
/// caller once the first image is written); returns the link of this
/// command, the holder's pid set in `record`. The caller must still be
/// single-threaded. The holder keeps every fd it inherits (the eBPF
/// recorder's programs and links among them) but our standard streams.
pub fn start_holder(
    sessions: &Path,
    record: &mut Record,
    held: &Held,
) -> Result<Link, CheckpointError> {
    let pid = record.pid;
    let dir = dir_of(sessions, pid);
    let fail = |what: String| CheckpointError::Process {
        pid,
        what: format!(
            "cannot start its tracking session in {}: {what}",
            dir.display()
        ),
    };
    let _ = std::fs::remove_dir_all(&dir);
    private_dir(&dir).map_err(|e| fail(e.to_string()))?;
    let listener = UnixListener::bind(dir.join(SOCKET)).map_err(|e| fail(e.to_string()))?;
    let (ours, theirs) = UnixStream::pair().map_err(|e| fail(e.to_string()))?;
    let targets: Vec<OwnedFd> = held
        .uffds
        .iter()
        .filter_map(|(p, _)| pidfd::open(*p).ok())
        .collect();
    match process::fork_single_threaded().map_err(|e| fail(e.to_string()))? {
        process::Forked::Child => {
            // Our copy of the command's end would keep its death from
            // ever reading as the end of the stream.
            drop(ours);
            let code = hold(&dir, &record.id, listener, theirs, held, &targets);
            process::exit_now(code)
        }
        process::Forked::Parent { child } => {
            drop(theirs);
            record.holder = child;
            Ok(Link { stream: ours })
        }
    }
}

/// The holder's life: serve every command's connection in turn until one
/// says `stop` or ends unsaid, or every tracked process is gone; then
/// remove the session's directory (if still this session's) and exit.
fn hold(
    dir: &Path,
    id: &str,
    listener: UnixListener,
    first: UnixStream,
    held: &Held,
    targets: &[OwnedFd],
) -> i32 {
    let _ = nix::unistd::setsid();
    let _ = process::stdio_to_dev_null();
    // The first command already has the fds.
    let mut go_on = heard_keep(first);
    while go_on {
        match process::wait_readable(listener.as_fd(), targets) {
            Ok(process::Ready::Fd) => {}
            // Every tracked process has ended.
            Ok(process::Ready::Gone) | Err(_) => break,
        }
        let Ok((stream, _)) = listener.accept() else {
            break;
        };
        go_on = serve(stream, held);
    }
    let ours = std::fs::read(dir.join(RECORD))
        .ok()
        .and_then(|t| serde_json::from_slice::<Record>(&t).ok())
        .is_none_or(|r| r.id == id);
    if ours {
        let _ = std::fs::remove_dir_all(dir);
    }
    0
}

/// Hands `held` over on `stream`; whether the command said `keep`.
fn serve(stream: UnixStream, held: &Held) -> bool {
    let desc = Handover {
        uffds: held.uffds.iter().map(|(p, _)| *p).collect(),
        maps: held.maps.len(),
    };
    let text = serde_json::to_vec(&desc).expect("a handover serialises");
    let fds: Vec<BorrowedFd> = held
        .uffds
        .iter()
        .map(|(_, f)| f.as_fd())
        .chain(held.maps.iter().map(|f| f.as_fd()))
        .collect();
    if fds::send_with_fds(stream.as_fd(), &text, &fds).is_err() {
        // The command died before it took them: an abort like any other.
        return false;
    }
    heard_keep(stream)
}

/// Reads the command's last word: true only for `keep`.
fn heard_keep(stream: UnixStream) -> bool {
    let mut line = String::new();
    let _ = BufReader::new(stream).read_line(&mut line);
    line.trim() == "keep"
}
