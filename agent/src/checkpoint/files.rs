//! File descriptors: what a process has open, as *file objects* (one per
//! open file description, so dup'ed or inherited fds share one) and
//! per-process *fd entries* (number, object, close-on-exec).
//!
//! Dump takes every fd into the dumper with pidfd_getfd and inspects it
//! there — fstat, fdinfo, socket options, tee of pipe buffers, MSG_PEEK
//! of socket queues — never moving the target's offsets nor consuming
//! its queued data. Restore creates every object in the restore helper,
//! then passes them into the new process with SCM_RIGHTS by remote
//! recvmsg; epoll sets are built last, in the process itself, because
//! epoll keys its items by the process's fd numbers.
//!
//! Buffered data (pipe and socket queues, deleted files' contents) lives
//! in `files.img` as checksummed blobs. Anything else is refused at dump
//! time, naming the fd. This module never uses `unsafe`; raw calls are
//! in `sys::fds`.

mod dump;
mod restore;
mod sockets;

use serde::{Deserialize, Serialize};

use super::error::{StepError, StepResult};

pub use dump::Table;
pub use restore::{Created, Paths, SCRATCH_LEN, create, install};

/// One open file description.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileObject {
    pub id: u32,
    /// File status flags from fdinfo (access mode, O_APPEND, O_NONBLOCK,
    /// O_ASYNC…), O_CLOEXEC excluded (that is the fd's, see [`FdEntry`]).
    pub flags: i32,
    pub kind: FileKind,
    /// Who gets its SIGIO/SIGURG (F_SETOWN_EX), and which signal
    /// (F_SETSIG); none if nobody does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// A socket's classic BPF filter (SO_ATTACH_FILTER), hex of its
    /// struct sock_filter array, and whether it was locked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_filter: Option<SocketFilter>,
}

/// F_GETOWN_EX and F_GETSIG of an open file description.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Owner {
    /// F_OWNER_TID (0), F_OWNER_PID (1) or F_OWNER_PGRP (2).
    pub kind: i32,
    pub id: i32,
    pub signal: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SocketFilter {
    pub code: String,
    pub locked: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FileKind {
    /// A regular file, a directory or a character device, by path.
    Path {
        path: String,
        pos: u64,
    },
    /// A regular file unlinked while open: its contents are kept.
    Deleted {
        /// The path it had (without " (deleted)").
        path: String,
        pos: u64,
        mode: u32,
        uid: u32,
        gid: u32,
        data: Blob,
        /// (device, inode): every open file description of one deleted
        /// file names it, and restore makes the file once for all of them.
        #[serde(default)]
        inode: (u64, u64),
        /// Its size; `data` holds its data extents (`extents`, offset and
        /// length, in order) and the rest are holes. None in older images,
        /// whose `data` is the whole file.
        #[serde(default)]
        size: Option<u64>,
        #[serde(default)]
        extents: Vec<(u64, u64)>,
        /// Access and modification times: seconds and nanoseconds of each.
        #[serde(default)]
        times: Option<[i64; 4]>,
    },
    /// One end of a pipe (`fifo`: a named pipe's path). Objects with the
    /// same `pipe` (its inode) are ends of one pipe; the buffered data is
    /// on one of them.
    Pipe {
        pipe: u64,
        fifo: Option<String>,
        /// F_GETPIPE_SZ.
        size: u32,
        data: Option<Blob>,
    },
    /// One end of a connected unnamed unix socket pair; its peer is the
    /// object whose `ino` is this one's `peer`.
    UnixPair {
        ino: u64,
        peer: u64,
        /// SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET.
        sock_type: i32,
        /// This end's receive queue: one blob per message (one blob for
        /// the whole of a stream).
        queue: Vec<Blob>,
        /// sk_shutdown bits (1: no more receiving, 2: no more sending).
        #[serde(default)]
        shutdown: u8,
    },
    /// A memfd (open, not mapped): its name, data extents (holes are not
    /// stored), size, seals (F_GET_SEALS) and whether it was made with
    /// MFD_NOEXEC_SEAL. Every description of one memfd shares it.
    Memfd {
        name: String,
        pos: u64,
        size: u64,
        extents: Vec<(u64, u64)>,
        data: Blob,
        seals: i32,
        noexec: bool,
        inode: (u64, u64),
    },
    /// A unix socket bound to a name that is listening (with no
    /// connection waiting) or an unconnected datagram socket (with nothing
    /// queued): bound again to its name on restore.
    UnixBound {
        /// SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET.
        sock_type: i32,
        /// The path it is bound to, or the abstract name (hex, without
        /// its leading NUL); none for an unbound datagram socket.
        path: Option<String>,
        #[serde(default)]
        abstract_name: Option<String>,
        /// listen(2) backlog of a listening socket.
        backlog: Option<u32>,
        /// For a relative `path`: the directory it was bound from (the
        /// process's cwd), where restore binds it again, so the name
        /// stays relative.
        #[serde(default)]
        bind_dir: Option<String>,
        /// A path-bound socket's file as the dump saw it: (device, inode,
        /// mode, uid, gid). Restore replaces that file only if it is
        /// still the same one.
        #[serde(default)]
        file: Option<(u64, u64, u32, u32, u32)>,
    },
    /// An IPv4/IPv6 TCP or UDP socket that is not a connected TCP one.
    Inet {
        family: i32,
        sock_type: i32,
        protocol: i32,
        /// Bound address ("127.0.0.1:8080", "[::1]:53"); none if unbound.
        addr: Option<String>,
        /// Connected peer of a UDP socket.
        peer: Option<String>,
        /// listen(2) backlog of a listening TCP socket.
        backlog: Option<u32>,
        options: Vec<SockOpt>,
    },
    EventFd {
        count: u64,
        semaphore: bool,
    },
    SignalFd {
        mask: u64,
    },
    /// Remaining time to the next expiry and the interval, in ns; the
    /// timer is re-armed relative to the restore.
    TimerFd {
        clock: i32,
        ticks: u64,
        value_ns: u64,
        interval_ns: u64,
        /// timerfd_settime flags (fdinfo `settime flags`): with
        /// TFD_TIMER_ABSTIME the timer is re-armed at `expiry_ns`, the
        /// absolute time on its clock it was due at, not relative to the
        /// restore (TFD_TIMER_CANCEL_ON_SET is kept too).
        #[serde(default)]
        settime_flags: i32,
        #[serde(default)]
        expiry_ns: u64,
    },
    Epoll {
        items: Vec<EpollItem>,
    },
}

/// An integer socket option, set again before bind.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct SockOpt {
    pub level: i32,
    pub name: i32,
    pub value: i32,
}

/// One watched fd of an epoll set, by the process's fd number.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct EpollItem {
    pub fd: i32,
    pub events: u32,
    pub data: u64,
    /// The file object it watches, when fd `fd` of the process no longer
    /// holds it (closed, or another file since): restore puts it at `fd`
    /// for the moment of adding the item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<u32>,
}

/// What one fd of the process is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct FdEntry {
    pub fd: i32,
    pub object: u32,
    pub cloexec: bool,
}

/// A piece of files.img.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Blob {
    pub offset: u64,
    pub len: u64,
    pub crc32: u32,
}

impl Blob {
    /// Its bytes in `data` (files.img), or None if outside it.
    pub fn slice(self, data: &[u8]) -> Option<&[u8]> {
        let end = self.offset.checked_add(self.len)?;
        data.get(self.offset as usize..usize::try_from(end).ok()?)
    }
}

impl FileObject {
    /// Every blob of the object, for validation.
    pub fn blobs(&self) -> Vec<Blob> {
        match &self.kind {
            FileKind::Deleted { data, .. } | FileKind::Memfd { data, .. } => vec![*data],
            FileKind::Pipe { data, .. } => data.iter().copied().collect(),
            FileKind::UnixPair { queue, .. } => queue.clone(),
            _ => Vec::new(),
        }
    }

    /// A short description for error messages.
    pub fn describe(&self) -> String {
        match &self.kind {
            FileKind::Path { path, .. } => path.clone(),
            FileKind::Deleted { path, .. } => format!("{path} (deleted)"),
            FileKind::Memfd { name, .. } => format!("memfd:{name}"),
            FileKind::Pipe {
                pipe, fifo: None, ..
            } => format!("pipe:[{pipe}]"),
            FileKind::Pipe {
                fifo: Some(path), ..
            } => format!("fifo {path}"),
            FileKind::UnixPair { ino, .. } => format!("unix socket:[{ino}]"),
            FileKind::UnixBound {
                path,
                abstract_name,
                ..
            } => match (path, abstract_name) {
                (Some(p), _) => format!("unix socket {p}"),
                (_, Some(a)) => format!("unix socket @{a}"),
                _ => "unbound unix socket".into(),
            },
            FileKind::Inet { addr, .. } => {
                format!("socket {}", addr.as_deref().unwrap_or("(unbound)"))
            }
            FileKind::EventFd { .. } => "eventfd".into(),
            FileKind::SignalFd { .. } => "signalfd".into(),
            FileKind::TimerFd { .. } => "timerfd".into(),
            FileKind::Epoll { .. } => "epoll".into(),
        }
    }
}

/// Accumulates files.img.
#[derive(Default)]
pub struct BlobWriter {
    pub data: Vec<u8>,
}

impl BlobWriter {
    pub fn push(&mut self, bytes: &[u8]) -> Blob {
        let offset = self.data.len() as u64;
        self.data.extend_from_slice(bytes);
        Blob {
            offset,
            len: bytes.len() as u64,
            crc32: crc32fast::hash(bytes),
        }
    }
}

/// Checks that the objects and fd entries of an image fit together (ids
/// unique, every fd's object exists, the ends of a pipe or socket pair
/// agree) and that every blob lies in `data` with its checksum. Returns
/// what is wrong.
pub fn validate(objects: &[FileObject], fds: &[FdEntry], data: &[u8]) -> StepResult<()> {
    use std::collections::HashMap;
    let mut by_id = HashMap::new();
    for o in objects {
        if by_id.insert(o.id, o).is_some() {
            return Err(StepError::Image(format!(
                "file object id {} appears twice",
                o.id
            )));
        }
        for b in o.blobs() {
            let bytes = b.slice(data).ok_or_else(|| {
                StepError::Image(format!(
                    "file object {} ({}): data at {}+{} lies outside files.img ({} bytes; truncated?)",
                    o.id,
                    o.describe(),
                    b.offset,
                    b.len,
                    data.len()
                ))
            })?;
            let crc = crc32fast::hash(bytes);
            if crc != b.crc32 {
                return Err(StepError::Image(format!(
                    "file object {} ({}): data at offset {}: checksum mismatch (stored {:08x}, computed {crc:08x})",
                    o.id,
                    o.describe(),
                    b.offset,
                    b.crc32
                )));
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for f in fds {
        if !seen.insert(f.fd) {
            return Err(StepError::Image(format!("fd {} appears twice", f.fd)));
        }
        if !by_id.contains_key(&f.object) {
            return Err(StepError::Image(format!(
                "fd {}: no file object {}",
                f.fd, f.object
            )));
        }
    }
    let mut pipes: HashMap<u64, (Option<&String>, u32, usize)> = HashMap::new();
    for o in objects {
        match &o.kind {
            FileKind::Deleted {
                data,
                size: Some(size),
                extents,
                ..
            }
            | FileKind::Memfd {
                data,
                size,
                extents,
                ..
            } => {
                let mut end = 0;
                let mut total = 0;
                for &(offset, len) in extents {
                    if offset < end || offset.checked_add(len).is_none_or(|e| e > *size) {
                        return Err(StepError::Image(format!(
                            "file object {} ({}): its data extents overlap or pass its size",
                            o.id,
                            o.describe()
                        )));
                    }
                    end = offset + len;
                    total += len;
                }
                if total != data.len {
                    return Err(StepError::Image(format!(
                        "file object {} ({}): {} bytes of data for {total} bytes of extents",
                        o.id,
                        o.describe(),
                        data.len
                    )));
                }
            }
            FileKind::Pipe {
                pipe,
                fifo,
                size,
                data,
            } => {
                let e = pipes.entry(*pipe).or_insert((fifo.as_ref(), *size, 0));
                if e.0 != fifo.as_ref() || e.1 != *size {
                    return Err(StepError::Image(format!(
                        "pipe:[{pipe}]: its ends disagree on the pipe's path or size"
                    )));
                }
                e.2 += data.is_some() as usize;
                if e.2 > 1 {
                    return Err(StepError::Image(format!(
                        "pipe:[{pipe}]: buffered data recorded twice"
                    )));
                }
            }
            FileKind::UnixPair {
                ino,
                peer,
                sock_type,
                ..
            } => {
                let other = objects
                    .iter()
                    .find(|p| matches!(&p.kind, FileKind::UnixPair { ino: i, .. } if i == peer));
                match other.map(|p| &p.kind) {
                    Some(FileKind::UnixPair {
                        peer: back,
                        sock_type: t,
                        ..
                    }) if back == ino && t == sock_type => {}
                    _ => {
                        return Err(StepError::Image(format!(
                            "unix socket:[{ino}]: its peer socket:[{peer}] is missing or not its pair"
                        )));
                    }
                }
            }
            // Checked against the fds of a process that holds the epoll.
            FileKind::Epoll { items } if fds.iter().any(|f| f.object == o.id) => {
                for it in items {
                    if !seen.contains(&it.fd) {
                        return Err(StepError::Image(format!(
                            "epoll object {}: watched fd {} is not an fd of the process",
                            o.id, it.fd
                        )));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe_end(id: u32, flags: i32, data: Option<Blob>) -> FileObject {
        FileObject {
            id,
            flags,
            owner: None,
            socket_filter: None,
            kind: FileKind::Pipe {
                pipe: 77,
                fifo: None,
                size: 65536,
                data,
            },
        }
    }

    #[test]
    fn validation_names_what_does_not_fit() {
        let mut w = BlobWriter::default();
        let b = w.push(b"hello");
        let objects = vec![pipe_end(1, 0, Some(b)), pipe_end(2, 1, None)];
        let fds = vec![
            FdEntry {
                fd: 3,
                object: 1,
                cloexec: false,
            },
            FdEntry {
                fd: 4,
                object: 2,
                cloexec: true,
            },
        ];
        validate(&objects, &fds, &w.data).unwrap();
        let err = validate(&objects, &fds, b"hellO").unwrap_err();
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
        let err = validate(&objects, &fds, b"hel").unwrap_err();
        assert!(err.to_string().contains("outside files.img"), "{err}");
        let twice = vec![pipe_end(1, 0, Some(b)), pipe_end(2, 1, Some(b))];
        let err = validate(&twice, &fds, &w.data).unwrap_err();
        assert!(err.to_string().contains("recorded twice"), "{err}");
        let lone = vec![FileObject {
            id: 1,
            flags: 2,
            owner: None,
            socket_filter: None,
            kind: FileKind::UnixPair {
                ino: 5,
                peer: 6,
                sock_type: libc::SOCK_STREAM,
                queue: vec![],
                shutdown: 0,
            },
        }];
        let err = validate(&lone, &fds[..1], &[]).unwrap_err();
        assert!(
            err.to_string().contains("peer socket:[6] is missing"),
            "{err}"
        );
        let err = validate(&objects[..1], &fds, &w.data).unwrap_err();
        assert!(err.to_string().contains("fd 4: no file object 2"), "{err}");
    }
}
