//! Dump side: every fd of a stopped process, inspected through a
//! duplicate taken with pidfd_getfd. Reads only: offsets, queues, pipe
//! buffers and socket options of the process are left as they were (the
//! one option changed, SO_PEEK_OFF, is put back).

use std::{
    collections::HashMap,
    fs,
    io::Read,
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
        unix::fs::OpenOptionsExt,
    },
};

use nix::errno::Errno;

use super::{
    BlobWriter, EpollItem, FdEntry, FileKind, FileObject, Owner, SocketFilter,
    sockets::{TCP_CLOSE, TCP_ESTABLISHED, TCP_LISTEN, UnixDiag, inet, unix_sockets},
    validate,
};
use crate::{
    checkpoint::{CheckpointError, StepError, StepResult, proc},
    sys::{fds, pidfd},
};

/// Why an fd cannot be recorded: [`StepError::Unsupported`] for what
/// this engine does not reproduce faithfully, another for a failed
/// inspection.
pub(super) fn failed(what: &str) -> impl FnOnce(Errno) -> StepError + use<> {
    StepError::sys(what.to_string())
}

/// The fds of every process of a tree, with the open file descriptions
/// they share (across processes too) recorded once.
pub struct Table {
    d: Dumper,
    /// Each object's first fd, taken into the dumper, to compare others
    /// with (kcmp).
    taken: Vec<(u32, OwnedFd)>,
    objects: Vec<FileObject>,
    /// The processes recorded so far.
    pids: Vec<i32>,
    /// (device, inode, fd, pid) of every object's file, for the locks.
    inodes: Vec<(u64, u64, i32, i32)>,
    /// Eventfds whose fdinfo does not say whether they count as a
    /// semaphore (before Linux 6.2): (object id, fdinfo eventfd-id), for
    /// [`Table::finish`] to learn it once the whole tree is known.
    eventfd_modes: Vec<(u32, Option<String>)>,
}

impl Default for Table {
    fn default() -> Self {
        Table {
            d: Dumper {
                blobs: BlobWriter::default(),
                unix: None,
                pipes_with_data: Vec::new(),
                ghosts: HashMap::new(),
                memfds: Vec::new(),
                root: std::path::PathBuf::from("/"),
                cwd: "/".into(),
            },
            taken: Vec::new(),
            objects: Vec::new(),
            pids: Vec::new(),
            inodes: Vec::new(),
            eventfd_modes: Vec::new(),
        }
    }
}

impl Table {
    /// Records every fd of stopped process `pid`.
    pub fn dump(&mut self, pid: i32) -> Result<Vec<FdEntry>, CheckpointError> {
        let unsupported = |what: String| CheckpointError::Unsupported { pid, what };
        let process = |what: String| CheckpointError::Process { pid, what };
        let pidfd = pidfd::open(pid).map_err(CheckpointError::sys(pid, "pidfd_open"))?;
        let mut numbers: Vec<i32> = fs::read_dir(proc::path(pid, "fd"))
            .map_err(CheckpointError::file(pid, "list", proc::path(pid, "fd")))?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        numbers.sort_unstable();
        self.pids.push(pid);
        self.d.root = proc::path(pid, "root");
        self.d.cwd = fs::read_link(proc::path(pid, "cwd"))
            .map(|p| p.to_string_lossy().into_owned())
            .map_err(CheckpointError::file(pid, "read", proc::path(pid, "cwd")))?;
        let d = &mut self.d;
        let taken = &mut self.taken;
        let objects = &mut self.objects;
        let mut entries = Vec::new();
        let mut inodes: HashMap<i32, u64> = HashMap::new();
        // (fd, fdinfo) of each epoll, to check its items once all fds are known.
        let mut epolls: Vec<(i32, String)> = Vec::new();
        for n in numbers {
            let link_path = proc::path(pid, &format!("fd/{n}"));
            let link = fs::read_link(&link_path)
                .map_err(CheckpointError::file(pid, "read", &link_path))?
                .to_string_lossy()
                .into_owned();
            let info_path = proc::path(pid, &format!("fdinfo/{n}"));
            let info = fs::read_to_string(&info_path)
                .map_err(CheckpointError::file(pid, "read", &info_path))?;
            let flags = field(&info, "flags:")
                .and_then(|v| i32::from_str_radix(v, 8).ok())
                .ok_or_else(|| process(format!("fdinfo of fd {n}: no flags")))?;
            let fd = fds::getfd(pidfd.as_fd(), n)
                .map_err(CheckpointError::sys(pid, format!("pidfd_getfd of fd {n}")))?;
            let st = nix::sys::stat::fstat(&fd)
                .map_err(CheckpointError::sys(pid, format!("fstat of fd {n}")))?;
            inodes.insert(n, st.st_ino);
            if link == "anon_inode:[eventpoll]" {
                epolls.push((n, info.clone()));
            }
            let cloexec = flags & libc::O_CLOEXEC != 0;
            let mut shared = None;
            for (id, t) in taken.iter() {
                if fds::same_file(t.as_fd(), fd.as_fd())
                    .map_err(CheckpointError::sys(pid, "kcmp"))?
                {
                    shared = Some(*id);
                    break;
                }
            }
            let object = match shared {
                Some(id) => id,
                None => {
                    let kind = d.inspect(&link, &info, fd.as_fd(), &st).map_err(|e| {
                        CheckpointError::step(pid)(e.at(format!("fd {n} ({link})")))
                    })?;
                    let id = objects.len() as u32 + 1;
                    let (owner, socket_filter) =
                        owner_and_filter(fd.as_fd(), &st).map_err(|e| {
                            CheckpointError::step(pid)(e.at(format!("fd {n} ({link})")))
                        })?;
                    objects.push(FileObject {
                        id,
                        flags: flags & !libc::O_CLOEXEC,
                        kind,
                        owner,
                        socket_filter,
                    });
                    self.inodes.push((st.st_dev, st.st_ino, n, pid));
                    if link == "anon_inode:[eventfd]"
                        && field(&info, "eventfd-semaphore:").is_none()
                    {
                        let eventfd_id = field(&info, "eventfd-id:").map(str::to_string);
                        self.eventfd_modes.push((id, eventfd_id));
                    }
                    taken.push((id, fd));
                    id
                }
            };
            entries.push(FdEntry {
                fd: n,
                object,
                cloexec,
            });
        }

        // epoll keys items by (file, fd number): an item whose fd no
        // longer holds its file is matched (kcmp) with a file object of
        // the tree, which restore puts at that number to add it.
        for (n, info) in &epolls {
            for (tfd, ino) in epoll_inodes(info) {
                if inodes.get(&tfd) == Some(&ino) {
                    continue;
                }
                let mut target = None;
                for (id, t) in taken.iter() {
                    if fds::is_epoll_target(t.as_fd(), pid, *n, tfd)
                        .map_err(CheckpointError::sys(pid, "kcmp KCMP_EPOLL_TFD"))?
                    {
                        target = Some(*id);
                        break;
                    }
                }
                let Some(target) = target else {
                    return Err(unsupported(format!(
                        "fd {n} (epoll): it watches a file (inode {ino}, once fd {tfd}) that no process of the tree has open"
                    )));
                };
                let epoll = entries
                    .iter()
                    .find(|e| e.fd == *n)
                    .map(|e| e.object)
                    .expect("every epoll fd has an entry");
                if let Some(FileObject {
                    kind: FileKind::Epoll { items },
                    ..
                }) = objects.iter_mut().find(|o| o.id == epoll)
                    && let Some(item) = items.iter_mut().find(|i| i.fd == tfd)
                {
                    item.object = Some(target);
                }
            }
        }
        Ok(entries)
    }

    /// The objects and files.img, once every process is recorded; `fds`
    /// are all their fd entries (for error messages), `mapped` the inodes
    /// of the shared memory the tree maps.
    pub fn finish(
        self,
        pid: i32,
        fds: &[FdEntry],
        mapped: &[u64],
    ) -> Result<(Vec<FileObject>, Vec<u8>), CheckpointError> {
        let unsupported = |what: String| CheckpointError::Unsupported { pid, what };
        // A memfd both open and mapped would come back as two objects.
        if let Some(ino) = self.d.memfds.iter().find(|i| mapped.contains(i)) {
            return Err(unsupported(format!(
                "a memfd (inode {ino}) that is both open as an fd and mapped: restored, the two would no longer be one object"
            )));
        }
        let mut objects = self.objects;
        for (id, eventfd_id) in &self.eventfd_modes {
            let fd = self
                .taken
                .iter()
                .find(|(i, _)| i == id)
                .map(|(_, f)| f.as_fd());
            let object = objects.iter_mut().find(|o| o.id == *id);
            let (Some(fd), Some(o)) = (fd, object) else {
                continue;
            };
            let FileKind::EventFd { count, semaphore } = &mut o.kind else {
                continue;
            };
            let what = format!("an eventfd (object {id})");
            let Some(eventfd_id) = eventfd_id else {
                return Err(unsupported(format!(
                    "{what}: this kernel's fdinfo shows neither whether it counts as a semaphore (Linux 6.2) nor its eventfd-id (5.17), so whether it is shared outside the tree cannot be checked"
                )));
            };
            if let Some(holder) = eventfd_holder_outside(eventfd_id, &self.pids) {
                return Err(unsupported(format!(
                    "{what}, eventfd-id {eventfd_id}, is also open in pid {holder} outside the tree: this kernel (before 6.2) does not show whether it counts as a semaphore, and reading its count to learn it would change what pid {holder} sees"
                )));
            }
            *semaphore = fds::eventfd_is_semaphore(fd, *count).map_err(CheckpointError::sys(
                pid,
                "read an eventfd and write its count back (to learn whether it counts as a semaphore)",
            ))?;
        }
        let entries = fds;
        // Every socket pair's other end must be here.
        for o in &objects {
            if let FileKind::UnixPair { ino, peer, .. } = &o.kind {
                let here = objects
                    .iter()
                    .any(|p| matches!(p.kind, FileKind::UnixPair { ino: i, .. } if i == *peer));
                if !here {
                    let fd = entries
                        .iter()
                        .find(|e| e.object == o.id)
                        .map_or(-1, |e| e.fd);
                    return Err(unsupported(format!(
                        "fd {fd} (socket:[{ino}]): a unix socket whose peer (socket:[{peer}]) is outside the process"
                    )));
                }
            }
        }
        // Owners must be restored with the tree.
        for o in &objects {
            if let Some(owner) = o.owner
                && owner.id != 0
                && !self.pids.contains(&owner.id)
            {
                return Err(unsupported(format!(
                    "{}: its SIGIO owner (F_SETOWN, id {}) is outside the tree",
                    o.describe(),
                    owner.id
                )));
            }
        }
        check_locks(&self.pids, &self.inodes).map_err(CheckpointError::step(pid))?;
        validate(&objects, &[], &self.d.blobs.data).map_err(CheckpointError::step(pid))?;
        Ok((objects, self.d.blobs.data))
    }
}

/// A process other than `tree`'s and this one with eventfd `eventfd_id`
/// (fdinfo eventfd-id) open. A process that exits while it is looked at
/// is not one.
fn eventfd_holder_outside(eventfd_id: &str, tree: &[i32]) -> Option<i32> {
    let me = std::process::id() as i32;
    let pids = fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| *p != me && !tree.contains(p));
    for p in pids {
        let Ok(fds) = fs::read_dir(proc::path(p, "fd")) else {
            continue;
        };
        for e in fds.flatten() {
            let is_eventfd =
                fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == "anon_inode:[eventfd]");
            let n = e.file_name();
            let info = proc::path(p, &format!("fdinfo/{}", n.to_string_lossy()));
            if is_eventfd
                && fs::read_to_string(info)
                    .is_ok_and(|i| field(&i, "eventfd-id:") == Some(eventfd_id))
            {
                return Some(p);
            }
        }
    }
    None
}

/// The SIGIO owner and signal of an open file description, and a
/// socket's filter.
fn owner_and_filter(
    fd: BorrowedFd<'_>,
    st: &libc::stat,
) -> StepResult<(Option<Owner>, Option<SocketFilter>)> {
    // An O_PATH fd (the only valid fd fcntl answers EBADF for) has none.
    let (kind, id) = match fds::owner(fd) {
        Err(Errno::EBADF) => (0, 0),
        other => other.map_err(failed("F_GETOWN_EX"))?,
    };
    let signal = match fds::fcntl_int(fd, fds::F_GETSIG, 0) {
        Err(Errno::EBADF) => 0,
        other => other.map_err(failed("F_GETSIG"))?,
    };
    let owner = (id != 0 || signal != 0).then_some(Owner { kind, id, signal });
    if kind == fds::F_OWNER_PGRP && id != 0 {
        return Err(StepError::Unsupported(
            "its SIGIO goes to a process group (F_SETOWN with a group)".into(),
        ));
    }
    let mut filter = None;
    if st.st_mode & libc::S_IFMT == libc::S_IFSOCK
        && let Some(code) = fds::socket_filter(fd).map_err(failed("SO_GET_FILTER"))?
    {
        let locked = fds::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_LOCK_FILTER)
            .map_err(failed("SO_LOCK_FILTER"))?
            != 0;
        filter = Some(SocketFilter {
            code: crate::checkpoint::image::hex(&code),
            locked,
        });
    }
    Ok((owner, filter))
}

/// Refuses file locks (POSIX, OFD, flock, leases) held by the tree or on
/// its files: /proc/locks, matched by pid and by (device, inode).
fn check_locks(pids: &[i32], inodes: &[(u64, u64, i32, i32)]) -> StepResult<()> {
    let text = fs::read_to_string("/proc/locks").map_err(StepError::file("read", "/proc/locks"))?;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        // "N: TYPE MODE ACCESS PID MAJ:MIN:INODE START END", waiters
        // prefixed by "->".
        let words = if words.get(1) == Some(&"->") {
            &words[1..]
        } else {
            &words[..]
        };
        let (Some(kind), Some(pid), Some(file)) = (words.get(1), words.get(4), words.get(5)) else {
            continue;
        };
        let pid: i32 = pid.parse().unwrap_or(-1);
        let mut parts = file.split(':');
        let (Some(maj), Some(min), Some(ino)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(maj), Ok(min), Ok(ino)) = (
            u64::from_str_radix(maj, 16),
            u64::from_str_radix(min, 16),
            ino.parse::<u64>(),
        ) else {
            continue;
        };
        let dev = libc::makedev(maj as u32, min as u32);
        let ours = inodes.iter().find(|i| i.0 == dev && i.1 == ino);
        if pids.contains(&pid) || (ours.is_some() && pid <= 0) {
            let (fd, holder) = ours.map_or((-1, pid), |i| (i.2, i.3));
            return Err(StepError::Unsupported(format!(
                "a {kind} file lock on inode {ino} (fd {fd} of pid {holder}): file locks are not restored"
            )));
        }
    }
    Ok(())
}

/// The fdinfo inventory: every line of an fd's fdinfo is one this engine
/// records (or knows to be derived); another — a lock, an inotify watch,
/// a newer kernel's line — is a refusal naming it, never ignored.
fn check_fdinfo(link: &str, info: &str) -> StepResult<()> {
    const ANY: &[&str] = &["pos", "flags", "mnt_id", "ino"];
    let kind: &[&str] = match link {
        "anon_inode:[eventfd]" => &["eventfd-count", "eventfd-semaphore", "eventfd-id"],
        "anon_inode:[signalfd]" => &["sigmask"],
        "anon_inode:[timerfd]" => &[
            "clockid",
            "ticks",
            "settime flags",
            "it_value",
            "it_interval",
        ],
        "anon_inode:[eventpoll]" => &["tfd"],
        _ => &[],
    };
    let socket = link.starts_with("socket:[");
    for line in info.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if ANY.contains(&key) || kind.contains(&key) {
            continue;
        }
        // A unix socket's count of fds in flight in its queue.
        if socket && key == "scm_fds" && value == "0" {
            continue;
        }
        return Err(StepError::Unsupported(match key {
            "lock" => format!(
                "a {} file lock on it ({}): file locks are not restored",
                value.split_whitespace().nth(1).unwrap_or("?"),
                value.split_whitespace().collect::<Vec<_>>().join(" ")
            ),
            "scm_fds" => format!("a queued message carries fds ({value} in flight, SCM_RIGHTS)"),
            _ => format!("fdinfo line {key:?}, unknown to this palisade for this kind of file"),
        }));
    }
    Ok(())
}

/// Whether an fdinfo's flags hold O_PATH.
fn o_path(info: &str) -> bool {
    field(info, "flags:")
        .and_then(|v| i32::from_str_radix(v, 8).ok())
        .is_some_and(|f| f & libc::O_PATH != 0)
}

/// The value after `key` on its line of an fdinfo text.
fn field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim())
}

fn hex_field(info: &str, key: &str) -> StepResult<u64> {
    field(info, key)
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .ok_or_else(|| StepError::Failed(format!("fdinfo has no {key}")))
}

/// "(sec, nsec)" of a timerfd's fdinfo, in ns.
fn time_field(info: &str, key: &str) -> StepResult<u64> {
    let bad = || StepError::Failed(format!("fdinfo has no {key} (sec, nsec)"));
    let v = field(info, key).ok_or_else(bad)?;
    let (s, ns) = v
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split_once(',')
        .ok_or_else(bad)?;
    let s: u64 = s.trim().parse().map_err(|_| bad())?;
    let ns: u64 = ns.trim().parse().map_err(|_| bad())?;
    Ok(s * 1_000_000_000 + ns)
}

/// Parses the `tfd: N events: X data: X …` lines of an epoll's fdinfo.
fn epoll_items(info: &str) -> StepResult<Vec<EpollItem>> {
    let mut items = Vec::new();
    for line in info.lines().filter(|l| l.starts_with("tfd:")) {
        let bad = || StepError::Failed(format!("unparsable epoll item: {line}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |key: &str| {
            words
                .iter()
                .position(|w| *w == key)
                .and_then(|i| words.get(i + 1))
                .copied()
        };
        items.push(EpollItem {
            fd: after("tfd:").and_then(|v| v.parse().ok()).ok_or_else(bad)?,
            events: after("events:")
                .and_then(|v| u32::from_str_radix(v, 16).ok())
                .ok_or_else(bad)?,
            data: after("data:")
                .and_then(|v| u64::from_str_radix(v, 16).ok())
                .ok_or_else(bad)?,
            object: None,
        });
    }
    Ok(items)
}

/// (fd, inode) of each item of an epoll's fdinfo (`… ino:HEX …`).
fn epoll_inodes(info: &str) -> Vec<(i32, u64)> {
    info.lines()
        .filter(|l| l.starts_with("tfd:"))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let fd = words.nth(1)?.parse().ok()?;
            let ino = words.find_map(|w| w.strip_prefix("ino:"))?;
            Some((fd, u64::from_str_radix(ino, 16).ok()?))
        })
        .collect()
}

/// A deleted file's data (its extents, in one blob) and the extents.
type Ghost = (super::Blob, Vec<(u64, u64)>);

struct Dumper {
    blobs: BlobWriter,
    unix: Option<HashMap<u32, UnixDiag>>,
    /// Pipes (by inode) whose buffer is already recorded.
    pipes_with_data: Vec<u64>,
    /// Deleted files and memfds (by device and inode) already read.
    ghosts: HashMap<(u64, u64), Ghost>,
    /// Inodes of the memfds recorded as files.
    memfds: Vec<u64>,
    /// The root of the process being recorded (/proc/PID/root), and its
    /// cwd as it sees it.
    root: std::path::PathBuf,
    cwd: String,
}

impl Dumper {
    fn inspect(
        &mut self,
        link: &str,
        info: &str,
        fd: BorrowedFd<'_>,
        st: &libc::stat,
    ) -> StepResult<FileKind> {
        check_fdinfo(link, info)?;
        let fmt = st.st_mode & libc::S_IFMT;
        match link {
            "anon_inode:[eventfd]" => Ok(FileKind::EventFd {
                count: hex_field(info, "eventfd-count:")?,
                // Without the line (before 6.2), `Table::finish` learns it.
                semaphore: field(info, "eventfd-semaphore:") == Some("1"),
            }),
            "anon_inode:[signalfd]" => Ok(FileKind::SignalFd {
                mask: hex_field(info, "sigmask:")?,
            }),
            "anon_inode:[timerfd]" => {
                let clock = field(info, "clockid:")
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| StepError::Failed("fdinfo has no clockid".into()))?;
                let value_ns = time_field(info, "it_value:")?;
                let settime_flags = field(info, "settime flags:")
                    .and_then(|v| i32::from_str_radix(v, 8).ok())
                    .ok_or_else(|| StepError::Failed("fdinfo has no settime flags".into()))?;
                let known = libc::TFD_TIMER_ABSTIME | libc::TFD_TIMER_CANCEL_ON_SET;
                if settime_flags & !known != 0 {
                    return Err(StepError::Unsupported(format!(
                        "timerfd settime flags {settime_flags:o}, unknown to this palisade"
                    )));
                }
                // Its remaining time is read now: the absolute expiry is
                // now plus that.
                let now = fds::clock_now_ns(clock).map_err(failed("clock_gettime"))?;
                Ok(FileKind::TimerFd {
                    clock,
                    ticks: field(info, "ticks:")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                    value_ns,
                    interval_ns: time_field(info, "it_interval:")?,
                    settime_flags,
                    expiry_ns: now + value_ns,
                })
            }
            "anon_inode:[eventpoll]" => Ok(FileKind::Epoll {
                items: epoll_items(info)?,
            }),
            l if l.starts_with("anon_inode:") => Err(StepError::Unsupported(
                "this kind of anonymous-inode file is not supported".into(),
            )),
            l if l.starts_with("pipe:[") => self.pipe(None, fd, st),
            l if l.starts_with("socket:[") => self.socket(fd, st),
            l if l.starts_with("/memfd:") && fmt == libc::S_IFREG => self.memfd(l, info, fd, st),
            "/dev/tty" => Err(StepError::Unsupported(
                "the controlling terminal (/dev/tty): terminals are not restored".into(),
            )),
            l if l == "/dev/ptmx" || l.starts_with("/dev/pts/") => Err(StepError::Unsupported(
                "a pseudo-terminal: terminals are not restored".into(),
            )),
            l if l.starts_with('/') && fmt != libc::S_IFREG && st.st_nlink == 0 => {
                Err(StepError::Unsupported(format!(
                    "a removed {} (its path is gone, and restore would open whatever is there now)",
                    match fmt {
                        libc::S_IFDIR => "directory",
                        libc::S_IFIFO => "fifo",
                        _ => "device or special file",
                    }
                )))
            }
            // An O_PATH fd holds only a place in the tree (of a file of
            // any type, a symlink itself with O_NOFOLLOW): opened again
            // by path with the same flags.
            l if l.starts_with('/') && o_path(info) && st.st_nlink > 0 => Ok(FileKind::Path {
                path: l.to_string(),
                pos: 0,
            }),
            l if l.starts_with('/') => match fmt {
                libc::S_IFREG if st.st_nlink == 0 && l.ends_with(" (deleted)") => {
                    self.deleted(l, info, fd, st)
                }
                libc::S_IFREG | libc::S_IFDIR | libc::S_IFCHR => Ok(FileKind::Path {
                    path: l.to_string(),
                    pos: field(info, "pos:")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                }),
                libc::S_IFIFO => self.pipe(Some(l), fd, st),
                _ => Err(StepError::Unsupported(
                    "neither a regular file, a directory, a character device nor a fifo".into(),
                )),
            },
            _ => Err(StepError::Unsupported(
                "this kind of file is not supported".into(),
            )),
        }
    }

    /// Opens the file behind our duplicate again, read-only: a new open
    /// file description, so reading it moves no offset of the process.
    fn reopen(fd: BorrowedFd<'_>, extra: i32) -> StepResult<fs::File> {
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(extra | libc::O_CLOEXEC)
            .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map_err(StepError::io("reopen for reading"))
    }

    /// A memfd: its contents (data extents), seals and exec mode, read
    /// once per memfd however many descriptions of it are open.
    fn memfd(
        &mut self,
        link: &str,
        info: &str,
        fd: BorrowedFd<'_>,
        st: &libc::stat,
    ) -> StepResult<FileKind> {
        let name = link
            .strip_prefix("/memfd:")
            .and_then(|n| n.strip_suffix(" (deleted)"))
            .ok_or_else(|| StepError::Failed(format!("unexpected memfd link {link}")))?
            .to_string();
        let seals = fds::fcntl_int(fd, libc::F_GET_SEALS, 0).map_err(failed("F_GET_SEALS"))?;
        let inode = (st.st_dev, st.st_ino);
        let (data, extents) = self.contents_once(fd, st)?;
        self.memfds.push(st.st_ino);
        Ok(FileKind::Memfd {
            name,
            pos: field(info, "pos:")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            size: st.st_size as u64,
            extents,
            data,
            seals,
            noexec: seals & libc::F_SEAL_EXEC != 0 && st.st_mode & 0o111 == 0,
            inode,
        })
    }

    /// The data extents of a file with no name (deleted, or a memfd) and
    /// their bytes as one blob, read once per inode however many of its
    /// descriptions are open; holes are not stored.
    fn contents_once(&mut self, fd: BorrowedFd<'_>, st: &libc::stat) -> StepResult<Ghost> {
        let inode = (st.st_dev, st.st_ino);
        if let Some(known) = self.ghosts.get(&inode) {
            return Ok(known.clone());
        }
        let file = Self::reopen(fd, 0)?;
        let extents = fds::data_extents(file.as_fd(), st.st_size as u64)
            .map_err(failed("SEEK_DATA/SEEK_HOLE"))?;
        let mut contents = Vec::new();
        for &(offset, len) in &extents {
            let at = contents.len();
            contents.resize(at + len as usize, 0);
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut contents[at..], offset)
                .map_err(StepError::io("read its contents"))?;
        }
        let known = (self.blobs.push(&contents), extents);
        self.ghosts.insert(inode, known.clone());
        Ok(known)
    }

    /// A deleted file: its data extents (holes are not stored) and times,
    /// read once per file however many descriptions of it are open.
    fn deleted(
        &mut self,
        link: &str,
        info: &str,
        fd: BorrowedFd<'_>,
        st: &libc::stat,
    ) -> StepResult<FileKind> {
        let inode = (st.st_dev, st.st_ino);
        let (data, extents) = self.contents_once(fd, st)?;
        Ok(FileKind::Deleted {
            path: link.trim_end_matches(" (deleted)").to_string(),
            pos: field(info, "pos:")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            data,
            inode,
            size: Some(st.st_size as u64),
            extents,
            times: Some([st.st_atime, st.st_atime_nsec, st.st_mtime, st.st_mtime_nsec]),
        })
    }

    fn pipe(
        &mut self,
        fifo: Option<&str>,
        fd: BorrowedFd<'_>,
        st: &libc::stat,
    ) -> StepResult<FileKind> {
        let fl = fds::fcntl_int(fd, libc::F_GETFL, 0).map_err(failed("F_GETFL"))?;
        if fl & libc::O_DIRECT != 0 {
            return Err(StepError::Unsupported(
                "a pipe in packet mode (O_DIRECT)".into(),
            ));
        }
        let size = fds::fcntl_int(fd, libc::F_GETPIPE_SZ, 0).map_err(failed("F_GETPIPE_SZ"))?;
        let mut data = None;
        if !self.pipes_with_data.contains(&st.st_ino) {
            self.pipes_with_data.push(st.st_ino);
            // A read end of our own on the same pipe (whichever end the
            // process has), then tee: the buffer is copied, not consumed.
            let reader = Self::reopen(fd, libc::O_NONBLOCK)?;
            let queued = fds::bytes_queued(reader.as_fd()).map_err(failed("FIONREAD"))?;
            let mut bytes = vec![0u8; queued];
            if queued > 0 {
                let (r, w) =
                    fds::pipe2(libc::O_CLOEXEC | libc::O_NONBLOCK).map_err(failed("pipe2"))?;
                fds::fcntl_int(w.as_fd(), libc::F_SETPIPE_SZ, size)
                    .map_err(failed("F_SETPIPE_SZ"))?;
                let copied = fds::tee(reader.as_fd(), w.as_fd(), queued).map_err(failed("tee"))?;
                if copied != queued {
                    return Err(StepError::Failed(format!(
                        "tee copied {copied} of the {queued} buffered bytes"
                    )));
                }
                fs::File::from(r)
                    .read_exact(&mut bytes)
                    .map_err(StepError::io("read the copy"))?;
            }
            data = Some(self.blobs.push(&bytes));
        }
        Ok(FileKind::Pipe {
            pipe: st.st_ino,
            fifo: fifo.map(str::to_string),
            size: size as u32,
            data,
        })
    }

    /// A bound (or unbound datagram) unix socket that is not connected:
    /// its name, and a listener's backlog; what is queued at it (a
    /// connection not yet accepted, a datagram) is refused.
    fn unix_bound(
        &mut self,
        fd: BorrowedFd<'_>,
        ty: i32,
        listening: bool,
        rqlen: Option<(u32, u32)>,
        vfs: Option<(u32, u32)>,
    ) -> StepResult<FileKind> {
        use nix::sys::socket::{UnixAddr, getsockname};
        let (queued, backlog) = rqlen.unwrap_or((0, 0));
        if queued != 0 {
            return Err(StepError::Unsupported(if listening {
                format!("a listening unix socket with {queued} connections not yet accepted")
            } else {
                format!("a unix datagram socket with {queued} bytes queued")
            }));
        }
        let addr: UnixAddr = getsockname(fd.as_raw_fd()).map_err(failed("getsockname"))?;
        let path = addr.path().map(|p| p.to_string_lossy().into_owned());
        let abstract_name = addr.as_abstract().map(crate::checkpoint::image::hex);
        // A relative name was bound from the cwd (which the process may
        // have left since: then its file is not found and it is refused).
        let bind_dir = path
            .as_ref()
            .filter(|p| !p.starts_with('/'))
            .map(|_| self.cwd.clone());
        let file = match (&path, vfs) {
            (Some(p), Some((vino, _))) => {
                let dir = bind_dir.as_deref().unwrap_or("/");
                let at = self
                    .root
                    .join(dir.trim_start_matches('/'))
                    .join(p.trim_start_matches('/'));
                let st = nix::sys::stat::lstat(&at).map_err(|e| {
                    StepError::Unsupported(format!(
                        "a unix socket bound to {p}, whose file cannot be found ({})",
                        e.desc()
                    ))
                })?;
                if st.st_ino != u64::from(vino) {
                    return Err(StepError::Unsupported(format!(
                        "a unix socket bound to {p}, whose file was removed or replaced"
                    )));
                }
                Some((
                    st.st_dev,
                    st.st_ino,
                    st.st_mode & 0o7777,
                    st.st_uid,
                    st.st_gid,
                ))
            }
            (Some(p), None) => {
                return Err(StepError::Failed(format!(
                    "sock_diag gave no file for the unix socket bound to {p}"
                )));
            }
            _ => None,
        };
        Ok(FileKind::UnixBound {
            sock_type: ty,
            path,
            abstract_name,
            backlog: listening.then_some(backlog),
            bind_dir,
            file,
        })
    }

    fn socket(&mut self, fd: BorrowedFd<'_>, st: &libc::stat) -> StepResult<FileKind> {
        let opt = |level, name, what: &'static str| {
            fds::getsockopt_int(fd, level, name).map_err(failed(what))
        };
        let domain = opt(libc::SOL_SOCKET, libc::SO_DOMAIN, "SO_DOMAIN")?;
        let ty = opt(libc::SOL_SOCKET, libc::SO_TYPE, "SO_TYPE")?;
        let protocol = opt(libc::SOL_SOCKET, libc::SO_PROTOCOL, "SO_PROTOCOL")?;
        match domain {
            libc::AF_UNIX => self.unix(fd, st, ty),
            libc::AF_INET | libc::AF_INET6 => inet(fd, domain, ty, protocol),
            _ => Err(StepError::Unsupported(format!(
                "a socket of address family {domain} (only unix socket pairs and IPv4/IPv6 TCP and UDP are supported)"
            ))),
        }
    }

    fn unix(&mut self, fd: BorrowedFd<'_>, st: &libc::stat, ty: i32) -> StepResult<FileKind> {
        if self.unix.is_none() {
            self.unix = Some(unix_sockets().map_err(failed("sock_diag of unix sockets"))?);
        }
        let ino = st.st_ino;
        let (state, peer, named, shutdown, rqlen, vfs) = self
            .unix
            .as_ref()
            .and_then(|m| m.get(&(ino as u32)))
            .map(|d| (d.state, d.peer, d.named, d.shutdown, d.rqlen, d.vfs))
            .ok_or_else(|| StepError::Failed("not found by sock_diag".into()))?;
        let listening = state == TCP_LISTEN;
        if (named && peer == 0 && (listening || state == TCP_CLOSE))
            || (ty == libc::SOCK_DGRAM && peer == 0)
        {
            return self.unix_bound(fd, ty, listening, rqlen, vfs);
        }
        if named {
            return Err(StepError::Unsupported(
                "a unix socket bound to an address (only unnamed socket pairs are supported)"
                    .into(),
            ));
        }
        if !matches!(
            ty,
            libc::SOCK_STREAM | libc::SOCK_DGRAM | libc::SOCK_SEQPACKET
        ) {
            return Err(StepError::Unsupported(format!("unix socket of type {ty}")));
        }
        if peer == 0 || (ty != libc::SOCK_DGRAM && state != TCP_ESTABLISHED) {
            return Err(StepError::Unsupported(
                "an unconnected unix socket (only connected socket pairs are supported)".into(),
            ));
        }
        let queue = self.peek_queue(fd, ty == libc::SOCK_STREAM)?;
        Ok(FileKind::UnixPair {
            ino,
            peer: peer.into(),
            sock_type: ty,
            queue,
            shutdown,
        })
    }

    /// The socket's receive queue, peeked with SO_PEEK_OFF walking it
    /// (then put back as it was).
    fn peek_queue(&mut self, fd: BorrowedFd<'_>, stream: bool) -> StepResult<Vec<super::Blob>> {
        let old = fds::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF)
            .map_err(failed("SO_PEEK_OFF"))?;
        fds::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0)
            .map_err(failed("set SO_PEEK_OFF"))?;
        let walked = self.walk_queue(fd, stream);
        let put_back = fds::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, old)
            .map_err(failed("put SO_PEEK_OFF back"));
        let queue = walked?;
        put_back?;
        Ok(queue)
    }

    fn walk_queue(&mut self, fd: BorrowedFd<'_>, stream: bool) -> StepResult<Vec<super::Blob>> {
        let mut buf = vec![0u8; 256 << 10];
        let mut messages: Vec<Vec<u8>> = Vec::new();
        loop {
            let p = match fds::peek(fd, &mut buf) {
                Ok(p) => p,
                Err(Errno::EAGAIN) => break,
                Err(e) => return Err(failed("peek at the queue")(e)),
            };
            if p.control {
                return Err(StepError::Unsupported(
                    "a queued message carries fds or credentials".into(),
                ));
            }
            if p.truncated {
                return Err(StepError::Unsupported(format!(
                    "a queued message is longer than {} bytes",
                    buf.len()
                )));
            }
            if p.len == 0 {
                if stream {
                    break; // the peer shut down its writing side
                }
                return Err(StepError::Unsupported("an empty datagram is queued".into()));
            }
            messages.push(buf[..p.len].to_vec());
        }
        Ok(if stream {
            let all = messages.concat();
            if all.is_empty() {
                Vec::new()
            } else {
                vec![self.blobs.push(&all)]
            }
        } else {
            messages.iter().map(|m| self.blobs.push(m)).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fdinfo_fields() {
        let timer = "pos:\t0\nflags:\t02004002\nmnt_id:\t15\nino:\t1057\nclockid: 1\nticks: 2\nsettime flags: 00\nit_value: (0, 499872150)\nit_interval: (1, 5)\n";
        assert_eq!(time_field(timer, "it_value:").ok(), Some(499_872_150));
        assert_eq!(time_field(timer, "it_interval:").ok(), Some(1_000_000_005));
        assert_eq!(field(timer, "ticks:"), Some("2"));
        let ep = "pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1057\ntfd:        5 events:       19 data:             1111  pos:0 ino:4ac sdev:e\ntfd:        7 events: 80000001 data: ffffffffffffffff  pos:0 ino:4ad sdev:e\n";
        let items = epoll_items(ep).ok().unwrap();
        assert_eq!(
            items,
            vec![
                EpollItem {
                    fd: 5,
                    events: 0x19,
                    data: 0x1111,
                    object: None,
                },
                EpollItem {
                    fd: 7,
                    events: 0x8000_0001,
                    data: u64::MAX,
                    object: None,
                }
            ]
        );
        assert_eq!(epoll_inodes(ep), vec![(5, 0x4ac), (7, 0x4ad)]);
        let ev = "pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1057\neventfd-count:                5\neventfd-id: 3\neventfd-semaphore: 1\n";
        assert_eq!(hex_field(ev, "eventfd-count:").ok(), Some(5));
        assert_eq!(field(ev, "eventfd-semaphore:"), Some("1"));
    }
}
