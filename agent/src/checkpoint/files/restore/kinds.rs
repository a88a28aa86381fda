//! Making each kind of file object in the restore helper, for
//! [`super::create`]: one function per kind, and what they share (one
//! file behind every description of a deleted file or memfd, one pipe
//! behind both ends, one socket pair behind both sockets).

use std::{
    collections::HashMap,
    fs,
    io::{Seek, SeekFrom},
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
        unix::fs::{OpenOptionsExt, PermissionsExt},
    },
    path::Path,
};

use super::Paths;
use crate::{
    checkpoint::{
        error::{StepError, StepResult, at as at_},
        files::{Blob, FileKind, FileObject},
    },
    sys::fds,
};

/// What objects made so far leave for the ones after them.
pub(super) struct Maker<'a> {
    objects: &'a [FileObject],
    /// files.img, already validated.
    data: &'a [u8],
    paths: &'a Paths,
    /// Every object made, by id.
    pub(super) made: HashMap<u32, OwnedFd>,
    /// The object made for each nameless file, by inode, until every
    /// description of it has its own.
    ghosts: HashMap<(u64, u64), u32>,
    /// Both ends of each pipe, by inode.
    pipes: HashMap<u64, (OwnedFd, OwnedFd)>,
    /// Which ends of a pipe an object already took as made.
    ends_given: HashMap<(u64, i32), ()>,
    /// The other end of each socket pair made, by its inode.
    unix_ends: HashMap<u64, OwnedFd>,
}

impl<'a> Maker<'a> {
    pub(super) fn new(objects: &'a [FileObject], data: &'a [u8], paths: &'a Paths) -> Self {
        Maker {
            objects,
            data,
            paths,
            made: HashMap::new(),
            ghosts: HashMap::new(),
            pipes: HashMap::new(),
            ends_given: HashMap::new(),
            unix_ends: HashMap::new(),
        }
    }

    /// Makes object `o` (fd `n` in errors) by its kind; none for an
    /// epoll set, which is made in the process.
    pub(super) fn make(&mut self, o: &FileObject, n: i32) -> StepResult<Option<OwnedFd>> {
        let fd = match &o.kind {
            FileKind::Path { .. } => self.make_path(o, n)?,
            FileKind::Deleted { .. } => self.make_deleted(o, n)?,
            FileKind::Pipe { .. } => self.make_pipe(o, n)?,
            FileKind::UnixPair { .. } => self.make_unix_pair(o, n)?,
            FileKind::Memfd { .. } => self.make_memfd(o, n)?,
            FileKind::UnixBound { .. } => self.make_unix_bound(o, n)?,
            FileKind::Inet { .. } => make_inet(o, n)?,
            FileKind::EventFd { count, semaphore } => make_eventfd(o, n, *count, *semaphore)?,
            FileKind::SignalFd { mask } => {
                fds::signalfd(*mask, libc::SFD_CLOEXEC).map_err(sys(n, o, "signalfd"))?
            }
            FileKind::TimerFd { .. } => make_timerfd(o, n)?,
            FileKind::Epoll { .. } => return Ok(None),
        };
        Ok(Some(fd))
    }

    /// A file opened by its path, at its offset (a pipe or socket opened
    /// by path has none).
    fn make_path(&self, o: &FileObject, n: i32) -> StepResult<OwnedFd> {
        let FileKind::Path { path, pos } = &o.kind else {
            unreachable!("make dispatches by kind")
        };
        let real = self.paths.resolve(path)?;
        let mut f =
            open_flags(&real, o.flags).map_err(StepError::file(format!("fd {n}: open"), &real))?;
        if *pos != 0 {
            match f.seek(SeekFrom::Start(*pos)) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ESPIPE) => {}
                Err(e) => {
                    return Err(StepError::file(format!("fd {n}: lseek to {pos}"), real)(e));
                }
            }
        }
        Ok(f.into())
    }

    /// A deleted file made again with its contents: one for all its
    /// descriptions (images before inodes were recorded: one each).
    fn make_deleted(&mut self, o: &FileObject, n: i32) -> StepResult<OwnedFd> {
        let FileKind::Deleted {
            path,
            pos,
            mode,
            uid,
            gid,
            data: contents,
            inode,
            size,
            extents,
            times,
        } = &o.kind
        else {
            unreachable!("make dispatches by kind")
        };
        let (paths, data) = (self.paths, self.data);
        let shared = (*inode != (0, 0)).then_some(*inode);
        description(
            &mut self.ghosts,
            &self.made,
            shared,
            o.id,
            o.flags,
            *pos,
            || {
                let real = paths.resolve(path)?;
                let f = deleted_file(&real, *mode)?;
                write_ghost(
                    &f,
                    blob(data, *contents),
                    *size,
                    extents,
                    *uid,
                    *gid,
                    *mode,
                    *times,
                )?;
                Ok(f.into())
            },
        )
        .map_err(at(n, o))
    }

    /// An end of a pipe or fifo, made and filled with its first end seen; a
    /// second description of an end is opened anew.
    fn make_pipe(&mut self, o: &FileObject, n: i32) -> StepResult<OwnedFd> {
        let FileKind::Pipe {
            pipe, fifo, size, ..
        } = &o.kind
        else {
            unreachable!("make dispatches by kind")
        };
        if !self.pipes.contains_key(pipe) {
            let real = fifo.as_deref().map(|f| self.paths.resolve(f)).transpose()?;
            let ends = new_pipe(real.as_deref(), *size as i32).map_err(at(n, o))?;
            // The buffered data, whichever end recorded it.
            let buffered = self.objects.iter().find_map(|p| match &p.kind {
                FileKind::Pipe { pipe: q, data, .. } if q == pipe => *data,
                _ => None,
            });
            if let Some(b) = buffered {
                fds::write_all(ends.1.as_fd(), blob(self.data, b)).map_err(sys(
                    n,
                    o,
                    "fill the pipe",
                ))?;
            }
            self.pipes.insert(*pipe, ends);
        }
        let (r, w) = &self.pipes[pipe];
        let write = o.flags & libc::O_ACCMODE != libc::O_RDONLY;
        let end = if write { w } else { r };
        let key = (*pipe, write as i32);
        let fd = if fifo.is_none() && self.ends_given.insert(key, ()).is_none() {
            end.try_clone()
                .map_err(StepError::io(format!("{}: dup", here(n, o))))?
        } else {
            reopen(end.as_fd(), o.flags | libc::O_NONBLOCK).map_err(StepError::io(format!(
                "{}: open the pipe again",
                here(n, o)
            )))?
        };
        Ok(fd)
    }

    /// One socket of a pair, made with the first seen: queues sent from the
    /// other end before each end is shut down as it was.
    fn make_unix_pair(&mut self, o: &FileObject, n: i32) -> StepResult<OwnedFd> {
        let FileKind::UnixPair {
            ino,
            peer,
            sock_type,
            queue,
            shutdown,
        } = &o.kind
        else {
            unreachable!("make dispatches by kind")
        };
        if let Some(end) = self.unix_ends.remove(ino) {
            return Ok(end);
        }
        let (mine, theirs) = fds::socketpair(*sock_type).map_err(sys(n, o, "socketpair"))?;
        let (peer_queue, peer_shutdown) = self
            .objects
            .iter()
            .find_map(|p| match &p.kind {
                FileKind::UnixPair {
                    ino: i,
                    queue,
                    shutdown,
                    ..
                } if i == peer => Some((queue.clone(), *shutdown)),
                _ => None,
            })
            .unwrap_or_default();
        // What was queued at one end is sent from the other.
        for (to_fill, from) in [(queue, &theirs), (&peer_queue, &mine)] {
            for b in to_fill {
                if *sock_type == libc::SOCK_STREAM {
                    fds::write_all(from.as_fd(), blob(self.data, *b))
                } else {
                    fds::send(from.as_fd(), blob(self.data, *b)).map(drop)
                }
                .map_err(sys(n, o, "queue its data"))?;
            }
        }
        // Shut down after filling: sk_shutdown bit 2 (no more sending) is
        // SHUT_WR, bit 1 SHUT_RD.
        for (end, bits) in [(&mine, *shutdown), (&theirs, peer_shutdown)] {
            if let Some(how) = match bits & 3 {
                1 => Some(nix::sys::socket::Shutdown::Read),
                2 => Some(nix::sys::socket::Shutdown::Write),
                3 => Some(nix::sys::socket::Shutdown::Both),
                _ => None,
            } {
                nix::sys::socket::shutdown(end.as_raw_fd(), how).map_err(sys(n, o, "shutdown"))?;
            }
        }
        self.unix_ends.insert(*peer, theirs);
        Ok(mine)
    }

    /// A memfd, made again with its contents and seals: one for every
    /// description of it.
    fn make_memfd(&mut self, o: &FileObject, n: i32) -> StepResult<OwnedFd> {
        let FileKind::Memfd {
            name,
            pos,
            size,
            extents,
            data: contents,
            seals,
            noexec,
            inode,
        } = &o.kind
        else {
            unreachable!("make dispatches by kind")
        };
        let data = self.data;
        description(
            &mut self.ghosts,
            &self.made,
            Some(*inode),
            o.id,
            o.flags,
            *pos,
            || new_memfd(name, *size, extents, blob(data, *contents), *seals, *noexec),
        )
        .map_err(at(n, o))
    }

    /// A bound unix socket; a relative name is bound from its directory,
    /// entered for the moment (this helper is single-threaded).
    fn make_unix_bound(&self, o: &FileObject, n: i32) -> StepResult<OwnedFd> {
        let FileKind::UnixBound {
            sock_type,
            path,
            abstract_name,
            backlog,
            bind_dir,
            file,
        } = &o.kind
        else {
            unreachable!("make dispatches by kind")
        };
        let dir = bind_dir
            .as_deref()
            .map(|d| self.paths.resolve(d))
            .transpose()?;
        let back =
            std::env::current_dir().map_err(StepError::io(format!("{}: cwd", here(n, o))))?;
        if let Some(d) = &dir {
            std::env::set_current_dir(d)
                .map_err(StepError::file(format!("{}: enter", here(n, o)), d))?;
        }
        let target = match (path, &dir) {
            (Some(p), Some(_)) => Some(std::path::PathBuf::from(p)),
            (Some(p), None) => Some(self.paths.resolve(p)?),
            _ => None,
        };
        let made = unix_bound(
            *sock_type,
            target,
            abstract_name.as_deref(),
            *backlog,
            *file,
        );
        std::env::set_current_dir(&back)
            .map_err(StepError::file(format!("{}: back to", here(n, o)), &back))?;
        made.map_err(at(n, o))
    }
}

/// An inet socket: its options set, then bound, listening or connected
/// as it was.
fn make_inet(o: &FileObject, n: i32) -> StepResult<OwnedFd> {
    let FileKind::Inet {
        family,
        sock_type,
        protocol,
        addr,
        peer,
        backlog,
        options,
    } = &o.kind
    else {
        unreachable!("make dispatches by kind")
    };
    let s = fds::socket(*family, *sock_type, *protocol).map_err(sys(n, o, "socket"))?;
    for opt in options {
        fds::setsockopt_int(s.as_fd(), opt.level, opt.name, opt.value).map_err(sys(
            n,
            o,
            &format!("setsockopt({}, {})", opt.level, opt.name),
        ))?;
    }
    let parse = |a: &String| {
        a.parse::<std::net::SocketAddr>()
            .map_err(|e| StepError::Image(format!("address {a}: {e}")).at(here(n, o)))
    };
    if let Some(a) = addr {
        fds::bind(s.as_fd(), parse(a)?).map_err(sys(n, o, &format!("bind {a}")))?;
    }
    if let Some(b) = backlog {
        fds::listen(s.as_fd(), *b as i32).map_err(sys(n, o, "listen"))?;
    }
    if let Some(p) = peer {
        fds::connect(s.as_fd(), parse(p)?).map_err(sys(n, o, &format!("connect {p}")))?;
    }
    Ok(s)
}

/// An eventfd with its count.
fn make_eventfd(o: &FileObject, n: i32, count: u64, semaphore: bool) -> StepResult<OwnedFd> {
    let sem = if semaphore { libc::EFD_SEMAPHORE } else { 0 };
    let e = fds::eventfd(libc::EFD_CLOEXEC | sem).map_err(sys(n, o, "eventfd"))?;
    if count > 0 {
        fds::write_all(e.as_fd(), &count.to_ne_bytes()).map_err(sys(n, o, "set its count"))?;
    }
    Ok(e)
}

/// A timerfd, armed as it was (an absolute timer at its expiry), with
/// its ticks not yet read.
fn make_timerfd(o: &FileObject, n: i32) -> StepResult<OwnedFd> {
    let FileKind::TimerFd {
        clock,
        ticks,
        value_ns,
        interval_ns,
        settime_flags,
        expiry_ns,
    } = &o.kind
    else {
        unreachable!("make dispatches by kind")
    };
    let t = fds::timerfd_create(*clock, libc::TFD_CLOEXEC).map_err(sys(n, o, "timerfd_create"))?;
    if *value_ns > 0 {
        let value = if settime_flags & libc::TFD_TIMER_ABSTIME != 0 {
            *expiry_ns
        } else {
            *value_ns
        };
        fds::timerfd_arm(t.as_fd(), *settime_flags, value, *interval_ns).map_err(sys(
            n,
            o,
            "timerfd_settime",
        ))?;
    }
    if *ticks > 0 {
        fds::timerfd_set_ticks(t.as_fd(), *ticks).map_err(sys(n, o, "TFD_IOC_SET_TICKS"))?;
    }
    Ok(t)
}

/// How errors name object `o`: by its first fd `n` and what it is.
pub(super) fn here(n: i32, o: &FileObject) -> String {
    format!("fd {n} ({})", o.describe())
}

/// For `map_err`: a step of making object `o` failed.
fn at(n: i32, o: &FileObject) -> impl FnOnce(StepError) -> StepError + use<> {
    at_(here(n, o))
}

/// For `map_err`: syscall `what` on object `o` failed.
pub(super) fn sys(
    n: i32,
    o: &FileObject,
    what: &str,
) -> impl FnOnce(nix::errno::Errno) -> StepError + use<> {
    StepError::sys(format!("{}: {what}", here(n, o)))
}

/// The piece `b` of files.img (`data`).
fn blob(data: &[u8], b: Blob) -> &[u8] {
    b.slice(data).unwrap_or_default()
}

/// Opens `path` with open(2) `flags` (access mode included; creation
/// flags dropped).
fn open_flags(path: &Path, flags: i32) -> std::io::Result<fs::File> {
    let mode = flags & libc::O_ACCMODE;
    fs::OpenOptions::new()
        .read(mode == libc::O_RDONLY || mode == libc::O_RDWR)
        .write(mode == libc::O_WRONLY || mode == libc::O_RDWR)
        .custom_flags(flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_TMPFILE))
        .open(path)
}

fn reopen(fd: BorrowedFd<'_>, flags: i32) -> std::io::Result<OwnedFd> {
    open_flags(
        Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())),
        flags,
    )
    .map(Into::into)
}

/// Fills a new deleted file: `data` at its extents (or all of it, for an
/// older image) in a file of `size` bytes, holes left as holes; then its
/// owner, mode and times.
#[allow(clippy::too_many_arguments)]
fn write_ghost(
    f: &fs::File,
    data: &[u8],
    size: Option<u64>,
    extents: &[(u64, u64)],
    uid: u32,
    gid: u32,
    mode: u32,
    times: Option<[i64; 4]>,
) -> StepResult<()> {
    use std::os::unix::fs::FileExt;
    match size {
        None => f.write_all_at(data, 0),
        Some(size) => f.set_len(size).and_then(|()| {
            let mut at = 0usize;
            for &(offset, len) in extents {
                f.write_all_at(&data[at..at + len as usize], offset)?;
                at += len as usize;
            }
            Ok(())
        }),
    }
    .map_err(StepError::io("write its contents"))?;
    std::os::unix::fs::fchown(f, Some(uid), Some(gid))
        .and_then(|_| f.set_permissions(fs::Permissions::from_mode(mode)))
        .map_err(StepError::io("owner and mode"))?;
    if let Some([a, an, m, mn]) = times {
        use nix::sys::time::TimeSpec;
        nix::sys::stat::futimens(f, &TimeSpec::new(a, an), &TimeSpec::new(m, mn))
            .map_err(StepError::sys("times"))?;
    }
    Ok(())
}

/// An open file description of a file with no name (deleted, a memfd):
/// the file made by `create` for the first description of `inode`, the
/// same file for the others; each opened again with its own `flags` and
/// offset `pos`.
fn description(
    ghosts: &mut HashMap<(u64, u64), u32>,
    made: &HashMap<u32, OwnedFd>,
    inode: Option<(u64, u64)>,
    id: u32,
    flags: i32,
    pos: u64,
    create: impl FnOnce() -> StepResult<OwnedFd>,
) -> StepResult<OwnedFd> {
    let first = inode
        .and_then(|i| ghosts.get(&i))
        .and_then(|first| made.get(first));
    let made_now;
    let file = match first {
        Some(fd) => fd.as_fd(),
        None => {
            made_now = create()?;
            if let Some(i) = inode {
                ghosts.insert(i, id);
            }
            made_now.as_fd()
        }
    };
    let mut g: fs::File = reopen(file, flags)
        .map_err(StepError::io("reopen with its flags"))?
        .into();
    g.seek(SeekFrom::Start(pos))
        .map_err(StepError::io(format!("lseek to {pos}")))?;
    Ok(g.into())
}

/// A memfd named `name` with `data` at its `extents` in `size` bytes,
/// then its seals (with MFD_NOEXEC_SEAL if it was made so).
fn new_memfd(
    name: &str,
    size: u64,
    extents: &[(u64, u64)],
    data: &[u8],
    seals: i32,
    noexec: bool,
) -> StepResult<OwnedFd> {
    use std::os::unix::fs::FileExt;
    const MFD_NOEXEC_SEAL: u32 = 8;
    let cname =
        std::ffi::CString::new(name).map_err(|_| StepError::Image("a NUL in its name".into()))?;
    let mut flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    if noexec {
        flags |= MFD_NOEXEC_SEAL;
    }
    let fd = fds::memfd_create(&cname, flags).map_err(StepError::sys("memfd_create"))?;
    let f = fs::File::from(fd);
    f.set_len(size)
        .and_then(|()| {
            let mut at = 0usize;
            for &(offset, len) in extents {
                f.write_all_at(&data[at..at + len as usize], offset)?;
                at += len as usize;
            }
            Ok(())
        })
        .map_err(StepError::io("write its contents"))?;
    let have =
        fds::fcntl_int(f.as_fd(), libc::F_GET_SEALS, 0).map_err(StepError::sys("F_GET_SEALS"))?;
    if seals & !have != 0 {
        fds::fcntl_int(f.as_fd(), libc::F_ADD_SEALS, seals & !have)
            .map_err(StepError::sys(format!("F_ADD_SEALS {seals:#x}")))?;
    }
    Ok(f.into())
}

/// A unix socket bound again to its name: a path (whose stale socket
/// file is removed first, only if it is still the file the dump saw; its
/// mode and owner put back after), an abstract name (hex), or none; then
/// listening with its backlog.
fn unix_bound(
    sock_type: i32,
    path: Option<std::path::PathBuf>,
    abstract_name: Option<&str>,
    backlog: Option<u32>,
    file: Option<(u64, u64, u32, u32, u32)>,
) -> StepResult<OwnedFd> {
    use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, listen};
    let ty = SockType::try_from(sock_type).map_err(StepError::sys("socket type"))?;
    let sock = nix::sys::socket::socket(AddressFamily::Unix, ty, SockFlag::SOCK_CLOEXEC, None)
        .map_err(StepError::sys("socket"))?;
    let addr = match (&path, abstract_name) {
        (Some(p), _) => {
            let (dev, ino, ..) =
                file.ok_or_else(|| StepError::Image("no record of its socket file".into()))?;
            match nix::sys::stat::lstat(p) {
                Ok(st) if (st.st_dev, st.st_ino) == (dev, ino) => {
                    fs::remove_file(p).map_err(StepError::file("remove its old socket file", p))?
                }
                Ok(_) => {
                    return Err(StepError::failed(format!(
                        "{} is no longer the socket file it was bound to: refused",
                        p.display()
                    )));
                }
                Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => return Err(StepError::sys(format!("lstat {}", p.display()))(e)),
            }
            Some(UnixAddr::new(p.as_path()).map_err(StepError::sys("address"))?)
        }
        (None, Some(name)) => {
            let name = crate::checkpoint::image::unhex(name)
                .ok_or_else(|| StepError::Image("abstract name is not hex".into()))?;
            Some(UnixAddr::new_abstract(&name).map_err(StepError::sys("address"))?)
        }
        (None, None) => None,
    };
    if let Some(addr) = addr {
        bind(sock.as_raw_fd(), &addr).map_err(StepError::sys("bind"))?;
    }
    if let (Some(p), Some((_, _, mode, uid, gid))) = (&path, file) {
        std::os::unix::fs::lchown(p, Some(uid), Some(gid))
            .and_then(|()| fs::set_permissions(p, fs::Permissions::from_mode(mode)))
            .map_err(StepError::file("owner and mode of", p))?;
    }
    if let Some(backlog) = backlog {
        let backlog = Backlog::new(backlog as i32).map_err(StepError::sys("backlog"))?;
        listen(&sock, backlog).map_err(StepError::sys("listen"))?;
    }
    Ok(sock)
}

/// A pipe of `size` bytes: both ends, or for a fifo two opens of it.
fn new_pipe(fifo: Option<&Path>, size: i32) -> StepResult<(OwnedFd, OwnedFd)> {
    let (r, w) = match fifo {
        None => fds::pipe2(libc::O_CLOEXEC).map_err(StepError::sys("pipe2"))?,
        Some(path) => {
            // Read-write opens of a fifo never wait for a peer.
            let rw: OwnedFd = open_flags(path, libc::O_RDWR | libc::O_NONBLOCK)
                .map_err(StepError::file("open", path))?
                .into();
            let other = rw.try_clone().map_err(StepError::io("dup"))?;
            (other, rw)
        }
    };
    fds::fcntl_int(w.as_fd(), libc::F_SETPIPE_SZ, size)
        .map_err(StepError::sys(format!("F_SETPIPE_SZ {size}")))?;
    Ok((r, w))
}

/// A file that is already unlinked: made under its old name and unlinked
/// if that name is free (so /proc shows the same "path (deleted)"), else
/// an O_TMPFILE in its old directory, else in the temporary directory.
fn deleted_file(p: &Path, mode: u32) -> StepResult<fs::File> {
    if let Ok(f) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode & 0o777)
        .open(p)
    {
        fs::remove_file(p).map_err(StepError::file("unlink", p))?;
        return Ok(f);
    }
    let dir = p
        .parent()
        .filter(|d| d.is_dir())
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(mode & 0o777)
        .open(&dir)
        .map_err(StepError::file("O_TMPFILE in", dir))
}
