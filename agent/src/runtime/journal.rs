//! The events journal: what happened to the state root's containers, one
//! JSON record a line, in the order it was written.
//!
//! Every writer appends to it: `run`, `create`, `start`, `rm` and `policy
//! apply` write lifecycle records, the monitor writes a container's exit,
//! and the agent writes the kernel's denials (it is the one reader of the
//! ring buffer) and its own OOM actions and classifications. The agent
//! tails it and streams it to every subscriber, so every subscriber sees
//! every record, in journal order; a record written while no agent runs is
//! still there when one starts.
//!
//! Bounded: the file is `ROOT/.journal/events`; once it passes
//! [`SEGMENT_BYTES`] the writer that passed it renames it to `events.1`
//! (replacing the older one), so the journal keeps between one and two
//! segments of history.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write},
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::{EventView, StateRoot};

/// A segment's size before it is rotated.
pub const SEGMENT_BYTES: u64 = 16 << 20;

/// The longest line a reader accepts; anything longer is not a record.
const MAX_LINE: usize = 64 << 10;

/// One event of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Wall clock, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// The same instant, RFC 3339 with milliseconds.
    pub time: String,
    /// The container's name (or `cgroup:ID` for a denial of one gone).
    pub container: String,
    #[serde(flatten)]
    pub what: What,
}

/// What happened; `kind` in the JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum What {
    /// Made, with its policy in force; not yet running its command when
    /// made by `create`.
    Created { pid: Option<i32> },
    /// Its command runs.
    Started { pid: i32 },
    /// Its first process ended: an exit status, or the signal that ended
    /// it; `oom` if the kernel's OOM killer killed in it, or the agent
    /// ended it for `[oom] action = "kill"`.
    Exited {
        status: Option<i32>,
        signal: Option<i32>,
        oom: bool,
    },
    /// Removed, with everything palisade held for it.
    Removed,
    /// `policy apply` put a new policy in force.
    PolicyChanged,
    /// The kernel refused (or, in audit mode, would have refused) a call.
    Denial(Denial),
    /// The agent acted on the container's memory condition.
    OomAction(OomAction),
    /// The agent moved a host process into the container.
    Classified(Classified),
}

/// A denial, as `palisade events` has always shown it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    pub pid: u32,
    pub comm: String,
    /// `connect`, `sendmsg`, `bind`, `accept`, `socket` or `device`.
    pub hook: String,
    pub protocol: String,
    pub address: String,
    pub port: u16,
    /// `denied` or `audited`.
    pub verdict: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceAccess>,
}

/// The device of a device denial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceAccess {
    #[serde(rename = "type")]
    pub kind: String,
    pub major: u32,
    pub minor: u32,
    pub access: String,
}

/// An OOM action the agent took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OomAction {
    /// `kill`, `freeze` or `notify`.
    pub action: String,
    /// The condition: `oom` (the limit was hit) or `memory_high`.
    pub condition: String,
    /// Microseconds from the agent learning of the condition to the
    /// action done.
    pub latency_us: u64,
    /// What the action did, or why it failed.
    pub detail: String,
}

/// A host process the agent classified into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classified {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub exe: String,
    /// The rule that matched, as written.
    pub rule: String,
    /// Microseconds from the exec to the move done.
    pub latency_us: u64,
    /// Whether the process was held (stopped) until it was moved.
    pub held: bool,
}

impl Record {
    /// A record of now.
    pub fn now(container: &str, what: What) -> Self {
        Self::at(SystemTime::now(), container, what)
    }

    pub fn at(when: SystemTime, container: &str, what: What) -> Self {
        Self {
            time_ns: wall_ns(when),
            time: humantime::format_rfc3339_millis(when).to_string(),
            container: container.to_string(),
            what,
        }
    }

    /// The record of a kernel event.
    pub fn denial(e: &EventView) -> Self {
        let what = What::Denial(Denial {
            pid: e.pid,
            comm: e.comm.clone(),
            hook: e.hook.to_string(),
            protocol: e.protocol.to_string(),
            address: e.address.clone(),
            port: e.port,
            verdict: e.verdict.to_string(),
            device: e.device.as_ref().map(|d| DeviceAccess {
                kind: d.kind.to_string(),
                major: d.major,
                minor: d.minor,
                access: d.access.clone(),
            }),
        });
        Self::at(e.at, &e.container, what)
    }

    /// `kind` as in the JSON.
    pub fn kind(&self) -> &'static str {
        match self.what {
            What::Created { .. } => "created",
            What::Started { .. } => "started",
            What::Exited { .. } => "exited",
            What::Removed => "removed",
            What::PolicyChanged => "policy_changed",
            What::Denial(_) => "denial",
            What::OomAction(_) => "oom_action",
            What::Classified(_) => "classified",
        }
    }

    /// One line, without its newline.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("a record serialises")
    }
}

/// Nanoseconds since the Unix epoch.
fn wall_ns(when: SystemTime) -> u64 {
    when.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

/// A record line's `time_ns`, read from its start (it is the first field
/// of every record); `None` for a line that is not a record.
fn record_time(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(br#"{"time_ns":"#)?;
    if !line.ends_with(b"}\n") {
        return None;
    }
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// The journal's directory.
pub fn dir(root: &StateRoot) -> PathBuf {
    root.dir().join(".journal")
}

fn current(dir: &Path) -> PathBuf {
    dir.join("events")
}

fn previous(dir: &Path) -> PathBuf {
    dir.join("events.1")
}

/// Appends records in one write, rotating the segment once it is full.
/// A journal that cannot be written is reported to the caller, who decides
/// whether that is a warning (a lifecycle command whose work is done) or
/// an error.
pub fn append(root: &StateRoot, records: &[Record]) -> io::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let dir = dir(root);
    std::fs::create_dir_all(&dir)?;
    let mut text = String::new();
    for r in records {
        text.push_str(&r.to_line());
        text.push('\n');
    }
    let path = current(&dir);
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)?;
    // Writers take turns, so a rotation never splits a record and one
    // write is one run of whole lines.
    let mut file =
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))?;
    file.write_all(text.as_bytes())?;
    let size = file.metadata()?.len();
    // Rotated only if the path still names this file: another writer may
    // have rotated it while this one waited for the lock.
    let same = std::fs::symlink_metadata(&path)
        .is_ok_and(|m| m.ino() == file.metadata().map(|f| f.ino()).unwrap_or(0));
    if size >= SEGMENT_BYTES && same {
        std::fs::rename(&path, previous(&dir))?;
    }
    Ok(())
}

/// The agent's API socket in a state root (see `daemon::api`).
pub fn agent_socket(root: &StateRoot) -> PathBuf {
    root.dir().join("agent.sock")
}

/// How long a writer waits for the agent to journal the kernel's events.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// Asks the root's agent, if one runs, to journal the kernel's buffered
/// events first, so that a record written next comes after every denial
/// that happened before it. Without an agent, or if it does not answer in
/// time, nothing is waited for.
fn flush_kernel_events(root: &StateRoot) {
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(agent_socket(root)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(FLUSH_TIMEOUT));
    let _ = stream.set_write_timeout(Some(FLUSH_TIMEOUT));
    if stream.write_all(b"{\"op\":\"flush\"}\n").is_ok() {
        let mut answer = [0u8; 8];
        let _ = stream.read(&mut answer);
    }
}

/// Appends one record; a failure is a warning on stderr (the work the
/// record tells of is done, and its result stands). An exit, a removal or
/// a policy change is written after the agent has journaled the denials
/// buffered before it.
pub fn note(root: &StateRoot, record: Record) {
    if matches!(
        record.what,
        What::Exited { .. } | What::Removed | What::PolicyChanged
    ) {
        flush_kernel_events(root);
    }
    if let Err(e) = append(root, std::slice::from_ref(&record)) {
        crate::report::warning(&format!(
            "cannot write the {} event of {} to the journal in {}: {e}",
            record.kind(),
            record.container,
            dir(root).display()
        ));
    }
}

/// Reads the journal as it grows: first what is there (from `since`),
/// then, at each [`Tail::read`], what was appended meanwhile, across
/// rotations.
pub struct Tail {
    dir: PathBuf,
    reader: Option<BufReader<File>>,
    /// The inode being read.
    ino: u64,
    /// Records older than this are skipped (nanoseconds since the epoch).
    since_ns: u64,
    /// A line read only in part, waiting for its end.
    partial: Vec<u8>,
    /// Segments still to read before the current one (oldest first).
    pending: Vec<PathBuf>,
}

impl Tail {
    /// A tail starting at the end: only records appended from now on.
    pub fn from_end(root: &StateRoot) -> Self {
        let dir = dir(root);
        let mut tail = Self::empty(dir);
        if let Ok(mut f) = File::open(current(&tail.dir)) {
            let _ = f.seek(SeekFrom::End(0));
            tail.ino = f.metadata().map(|m| m.ino()).unwrap_or(0);
            tail.reader = Some(BufReader::new(f));
        } else {
            // No journal yet: whatever is written from now on is new, even
            // if it is rotated before the first read.
            tail.since_ns = wall_ns(SystemTime::now());
            tail.pending = vec![previous(&tail.dir)];
        }
        tail
    }

    /// A tail starting with the records of the last `ago` (both segments).
    pub fn since(root: &StateRoot, ago: Duration) -> Self {
        let dir = dir(root);
        let mut tail = Self::empty(dir);
        tail.since_ns = wall_ns(SystemTime::now().checked_sub(ago).unwrap_or(UNIX_EPOCH));
        tail.pending = vec![previous(&tail.dir)];
        tail
    }

    fn empty(dir: PathBuf) -> Self {
        Self {
            dir,
            reader: None,
            ino: 0,
            since_ns: 0,
            partial: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// The records appended since the last call, in order.
    pub fn read(&mut self) -> Vec<Record> {
        self.read_lines()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Like [`Tail::read`], as the lines themselves (each with its
    /// newline), without decoding them: what a subscriber is sent.
    pub fn read_lines(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        // The older segment, once, when replaying.
        while let Some(path) = self.pending.pop() {
            if let Ok(f) = File::open(&path) {
                let mut reader = BufReader::new(f);
                self.drain(&mut reader, &mut out);
            }
            self.partial.clear();
        }
        loop {
            if let Some(mut reader) = self.reader.take() {
                self.drain(&mut reader, &mut out);
                self.reader = Some(reader);
            }
            // Rotated (or made): what the path names now is another file.
            let path = current(&self.dir);
            let Ok(meta) = std::fs::metadata(&path) else {
                break;
            };
            if meta.ino() == self.ino && self.reader.is_some() {
                break;
            }
            let Ok(f) = File::open(&path) else { break };
            self.ino = meta.ino();
            self.partial.clear();
            self.reader = Some(BufReader::new(f));
        }
        out
    }

    fn drain(&mut self, reader: &mut BufReader<File>, out: &mut Vec<String>) {
        loop {
            let mut line = std::mem::take(&mut self.partial);
            match reader
                .by_ref()
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut line)
            {
                Ok(0) | Err(_) => {
                    self.partial = line;
                    return;
                }
                Ok(_) if line.last() != Some(&b'\n') => {
                    if line.len() >= MAX_LINE {
                        // Not a record: skipped to its end.
                        let mut rest = Vec::new();
                        let _ = reader.read_until(b'\n', &mut rest);
                        continue;
                    }
                    // The writer's line is not all there yet.
                    self.partial = line;
                    return;
                }
                Ok(_) => {
                    if let Some(time_ns) = record_time(&line)
                        && time_ns >= self.since_ns
                        && let Ok(line) = String::from_utf8(line)
                    {
                        out.push(line);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> StateRoot {
        let dir =
            std::env::temp_dir().join(format!("palisade-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        StateRoot::new(dir)
    }

    #[test]
    fn records_round_trip_and_a_tail_sees_appends_in_order() {
        let root = scratch("order");
        let mut tail = Tail::from_end(&root);
        assert!(tail.read().is_empty());
        let a = Record::now("a", What::Created { pid: Some(7) });
        let b = Record::now(
            "a",
            What::Exited {
                status: None,
                signal: Some(9),
                oom: true,
            },
        );
        append(&root, std::slice::from_ref(&a)).unwrap();
        append(&root, std::slice::from_ref(&b)).unwrap();
        assert_eq!(tail.read(), vec![a.clone(), b.clone()]);
        assert!(tail.read().is_empty());
        let line = a.to_line();
        assert!(line.contains(r#""kind":"created""#), "{line}");
        let _ = std::fs::remove_dir_all(root.dir());
    }

    #[test]
    fn a_rotated_journal_is_followed_and_replayed_from_both_segments() {
        let root = scratch("rotate");
        let mut tail = Tail::from_end(&root);
        let first = Record::now("x", What::Removed);
        append(&root, std::slice::from_ref(&first)).unwrap();
        // Rotate by hand, as a writer past the bound does.
        std::fs::rename(current(&dir(&root)), previous(&dir(&root))).unwrap();
        let second = Record::now("y", What::PolicyChanged);
        append(&root, std::slice::from_ref(&second)).unwrap();
        assert_eq!(tail.read(), vec![first.clone(), second.clone()]);
        let mut replay = Tail::since(&root, Duration::from_secs(60));
        assert_eq!(replay.read(), vec![first, second]);
        let mut none = Tail::since(&root, Duration::ZERO);
        assert!(none.read().is_empty());
        let _ = std::fs::remove_dir_all(root.dir());
    }
}
