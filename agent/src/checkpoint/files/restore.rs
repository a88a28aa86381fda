//! Restore side. [`create`] makes every file object in the restore
//! helper itself (files opened and positioned, pipes and socket pairs
//! made and filled, sockets bound, eventfds, signalfds and timerfds set);
//! [`install`] passes them into the new process with SCM_RIGHTS, by
//! remote recvmsg on a socket pair the process makes, and builds its
//! epoll sets there.

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

use super::{FdEntry, FileKind, FileObject};
use crate::{
    checkpoint::{
        error::{StepError, StepResult, at as at_},
        remote::Remote,
    },
    sys::{fds, pidfd, ptrace},
};

/// The objects [`create`] made, by object id, held until [`install`]
/// has given them to the process.
pub struct Created {
    objects: HashMap<u32, OwnedFd>,
}

/// The fd an error names an object by: its first in the process.
fn first_fd(fds: &[FdEntry], id: u32) -> i32 {
    fds.iter().find(|e| e.object == id).map_or(-1, |e| e.fd)
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

/// Status flags F_SETFL may set on a helper-made object.
const SETFL: i32 = libc::O_NONBLOCK | libc::O_APPEND;

/// Creates every object except epoll sets (those are made in the
/// process, see [`install`]). `data` is files.img, already validated.
///
/// Sockets are created in the helper's network namespace, which for a
/// `--pid` restore is the process's: a container restore must setns into
/// the container's before calling this.
/// Where the image's paths are: under `root` (`/`, or a container's root
/// seen through /proc/PID/root); the container's output is `log`.
pub struct Paths {
    pub root: std::path::PathBuf,
    pub log: Option<std::path::PathBuf>,
}

impl Paths {
    fn resolve(&self, path: &str) -> StepResult<std::path::PathBuf> {
        if path == crate::checkpoint::image::CONTAINER_LOG {
            return self.log.clone().ok_or_else(|| {
                StepError::Image("the container's output, outside a container".into())
            });
        }
        Ok(self.root.join(path.trim_start_matches('/')))
    }
}

pub fn create(
    objects: &[FileObject],
    fds: &[FdEntry],
    data: &[u8],
    paths: &Paths,
) -> StepResult<Created> {
    let blob = |b: super::Blob| b.slice(data).unwrap_or_default();
    let mut made: HashMap<u32, OwnedFd> = HashMap::new();
    // Both ends of each pipe (by inode) until every object has its own.
    let mut ghosts: HashMap<(u64, u64), u32> = HashMap::new();
    let mut pipes: HashMap<u64, (OwnedFd, OwnedFd)> = HashMap::new();
    let mut ends_given: HashMap<(u64, i32), ()> = HashMap::new();
    // The other end of each socket pair made, by its inode.
    let mut unix_ends: HashMap<u64, OwnedFd> = HashMap::new();
    for o in objects {
        let n = first_fd(fds, o.id);
        let here = || format!("fd {n} ({})", o.describe());
        let at = || at_(here());
        let sys = |what: &str| {
            let what = format!("{}: {what}", here());
            StepError::sys(what)
        };
        let fd: OwnedFd = match &o.kind {
            FileKind::Path { path, pos } => {
                let real = paths.resolve(path)?;
                let mut f = open_flags(&real, o.flags)
                    .map_err(StepError::file(format!("fd {n}: open"), &real))?;
                if *pos != 0 {
                    match f.seek(SeekFrom::Start(*pos)) {
                        Ok(_) => {}
                        Err(e) if e.raw_os_error() == Some(libc::ESPIPE) => {}
                        Err(e) => {
                            return Err(StepError::file(format!("fd {n}: lseek to {pos}"), real)(
                                e,
                            ));
                        }
                    }
                }
                f.into()
            }
            FileKind::Deleted {
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
            } => {
                // One file for every description of it (made by the first;
                // images before inodes were recorded: one each).
                let shared = (*inode != (0, 0)).then_some(*inode);
                description(&mut ghosts, &made, shared, o.id, o.flags, *pos, || {
                    let real = paths.resolve(path)?;
                    let f = deleted_file(&real, *mode)?;
                    write_ghost(
                        &f,
                        blob(*contents),
                        *size,
                        extents,
                        *uid,
                        *gid,
                        *mode,
                        *times,
                    )?;
                    Ok(f.into())
                })
                .map_err(at())?
            }
            FileKind::Pipe {
                pipe, fifo, size, ..
            } => {
                if !pipes.contains_key(pipe) {
                    let real = fifo.as_deref().map(|f| paths.resolve(f)).transpose()?;
                    let ends = new_pipe(real.as_deref(), *size as i32).map_err(at())?;
                    // The buffered data, whichever end recorded it.
                    let buffered = objects.iter().find_map(|p| match &p.kind {
                        FileKind::Pipe { pipe: q, data, .. } if q == pipe => *data,
                        _ => None,
                    });
                    if let Some(b) = buffered {
                        fds::write_all(ends.1.as_fd(), blob(b)).map_err(sys("fill the pipe"))?;
                    }
                    pipes.insert(*pipe, ends);
                }
                let (r, w) = &pipes[pipe];
                let write = o.flags & libc::O_ACCMODE != libc::O_RDONLY;
                let end = if write { w } else { r };
                let key = (*pipe, write as i32);
                // The first object of each end is the end made; another
                // open file description of it is opened anew.
                if fifo.is_none() && ends_given.insert(key, ()).is_none() {
                    end.try_clone()
                        .map_err(StepError::io(format!("{}: dup", here())))?
                } else {
                    reopen(end.as_fd(), o.flags | libc::O_NONBLOCK)
                        .map_err(StepError::io(format!("{}: open the pipe again", here())))?
                }
            }
            FileKind::UnixPair {
                ino,
                peer,
                sock_type,
                queue,
                shutdown,
            } => match unix_ends.remove(ino) {
                Some(end) => end,
                None => {
                    let (mine, theirs) = fds::socketpair(*sock_type).map_err(sys("socketpair"))?;
                    let (peer_queue, peer_shutdown) = objects
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
                                fds::write_all(from.as_fd(), blob(*b))
                            } else {
                                fds::send(from.as_fd(), blob(*b)).map(drop)
                            }
                            .map_err(sys("queue its data"))?;
                        }
                    }
                    // Shut down after filling: sk_shutdown bit 2 (no
                    // more sending) is SHUT_WR, bit 1 SHUT_RD.
                    for (end, bits) in [(&mine, *shutdown), (&theirs, peer_shutdown)] {
                        if let Some(how) = match bits & 3 {
                            1 => Some(nix::sys::socket::Shutdown::Read),
                            2 => Some(nix::sys::socket::Shutdown::Write),
                            3 => Some(nix::sys::socket::Shutdown::Both),
                            _ => None,
                        } {
                            nix::sys::socket::shutdown(end.as_raw_fd(), how)
                                .map_err(sys("shutdown"))?;
                        }
                    }
                    unix_ends.insert(*peer, theirs);
                    mine
                }
            },
            FileKind::Memfd {
                name,
                pos,
                size,
                extents,
                data: contents,
                seals,
                noexec,
                inode,
            } => description(
                &mut ghosts,
                &made,
                Some(*inode),
                o.id,
                o.flags,
                *pos,
                || new_memfd(name, *size, extents, blob(*contents), *seals, *noexec),
            )
            .map_err(at())?,
            FileKind::UnixBound {
                sock_type,
                path,
                abstract_name,
                backlog,
                bind_dir,
                file,
            } => {
                // A relative name is bound from its directory, entered
                // for the moment (this helper is single-threaded).
                let dir = bind_dir.as_deref().map(|d| paths.resolve(d)).transpose()?;
                let back =
                    std::env::current_dir().map_err(StepError::io(format!("{}: cwd", here())))?;
                if let Some(d) = &dir {
                    std::env::set_current_dir(d)
                        .map_err(StepError::file(format!("{}: enter", here()), d))?;
                }
                let target = match (path, &dir) {
                    (Some(p), Some(_)) => Some(std::path::PathBuf::from(p)),
                    (Some(p), None) => Some(paths.resolve(p)?),
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
                    .map_err(StepError::file(format!("{}: back to", here()), &back))?;
                made.map_err(at())?
            }
            FileKind::Inet {
                family,
                sock_type,
                protocol,
                addr,
                peer,
                backlog,
                options,
            } => {
                let s = fds::socket(*family, *sock_type, *protocol).map_err(sys("socket"))?;
                for opt in options {
                    fds::setsockopt_int(s.as_fd(), opt.level, opt.name, opt.value)
                        .map_err(sys(&format!("setsockopt({}, {})", opt.level, opt.name)))?;
                }
                let parse = |a: &String| {
                    a.parse::<std::net::SocketAddr>()
                        .map_err(|e| StepError::Image(format!("address {a}: {e}")).at(here()))
                };
                if let Some(a) = addr {
                    fds::bind(s.as_fd(), parse(a)?).map_err(sys(&format!("bind {a}")))?;
                }
                if let Some(b) = backlog {
                    fds::listen(s.as_fd(), *b as i32).map_err(sys("listen"))?;
                }
                if let Some(p) = peer {
                    fds::connect(s.as_fd(), parse(p)?).map_err(sys(&format!("connect {p}")))?;
                }
                s
            }
            FileKind::EventFd { count, semaphore } => {
                let sem = if *semaphore { libc::EFD_SEMAPHORE } else { 0 };
                let e = fds::eventfd(libc::EFD_CLOEXEC | sem).map_err(sys("eventfd"))?;
                if *count > 0 {
                    fds::write_all(e.as_fd(), &count.to_ne_bytes())
                        .map_err(sys("set its count"))?;
                }
                e
            }
            FileKind::SignalFd { mask } => {
                fds::signalfd(*mask, libc::SFD_CLOEXEC).map_err(sys("signalfd"))?
            }
            FileKind::TimerFd {
                clock,
                ticks,
                value_ns,
                interval_ns,
                settime_flags,
                expiry_ns,
            } => {
                let t = fds::timerfd_create(*clock, libc::TFD_CLOEXEC)
                    .map_err(sys("timerfd_create"))?;
                if *value_ns > 0 {
                    let value = if settime_flags & libc::TFD_TIMER_ABSTIME != 0 {
                        *expiry_ns
                    } else {
                        *value_ns
                    };
                    fds::timerfd_arm(t.as_fd(), *settime_flags, value, *interval_ns)
                        .map_err(sys("timerfd_settime"))?;
                }
                if *ticks > 0 {
                    fds::timerfd_set_ticks(t.as_fd(), *ticks).map_err(sys("TFD_IOC_SET_TICKS"))?;
                }
                t
            }
            FileKind::Epoll { .. } => continue,
        };
        if !matches!(
            o.kind,
            FileKind::Path { .. } | FileKind::Deleted { .. } | FileKind::Memfd { .. }
        ) {
            let fl = fds::fcntl_int(fd.as_fd(), libc::F_GETFL, 0).map_err(sys("F_GETFL"))?;
            fds::fcntl_int(fd.as_fd(), libc::F_SETFL, (fl & !SETFL) | (o.flags & SETFL))
                .map_err(sys("F_SETFL"))?;
        }
        if let Some(filter) = &o.socket_filter {
            let code = crate::checkpoint::image::unhex(&filter.code).ok_or_else(|| {
                StepError::Image("its socket filter is not hex".into()).at(here())
            })?;
            fds::attach_socket_filter(fd.as_fd(), &code).map_err(sys("SO_ATTACH_FILTER"))?;
            if filter.locked {
                fds::setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_LOCK_FILTER, 1)
                    .map_err(sys("SO_LOCK_FILTER"))?;
            }
        }
        made.insert(o.id, fd);
    }
    Ok(Created { objects: made })
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

// Layout of the scratch area `install` uses in the process (256 bytes).
const S_MSG: u64 = 0; // struct msghdr, 56 bytes
const S_IOV: u64 = 64; // struct iovec
const S_BYTE: u64 = 80; // the one data byte
const S_CMSG: u64 = 96; // CMSG_SPACE(sizeof(int)) = 24
const S_EVENT: u64 = 128; // struct epoll_event (packed, 12 bytes)
const S_PAIR: u64 = 160; // int[2] of socketpair
const S_OWNER: u64 = 168; // struct f_owner_ex
pub const SCRATCH_LEN: u64 = 256;
const CMSG_LEN_INT: u64 = 20;

fn put(pid: i32, addr: u64, data: &[u8]) -> StepResult<()> {
    match ptrace::write_memory(pid, addr, data) {
        Ok(n) if n == data.len() => Ok(()),
        Ok(n) => Err(StepError::failed(format!(
            "write memory at {addr:#x}: {n} of {} bytes",
            data.len()
        ))),
        Err(e) => Err(StepError::task(pid, format!("write memory at {addr:#x}"))(
            e,
        )),
    }
}

fn get<const N: usize>(pid: i32, addr: u64) -> StepResult<[u8; N]> {
    let mut b = [0u8; N];
    match ptrace::read_memory(pid, addr, &mut b) {
        Ok(n) if n == N => Ok(b),
        Ok(n) => Err(StepError::failed(format!(
            "read memory at {addr:#x}: {n} of {N} bytes"
        ))),
        Err(e) => Err(StepError::task(pid, format!("read memory at {addr:#x}"))(e)),
    }
}

/// Gives the stopped process (driven by `r`, with [`SCRATCH_LEN`] bytes
/// of writable scratch memory at `scratch`) every fd of the image, at its
/// number and with its close-on-exec flag; nothing else of ours stays in
/// it.
pub fn install(
    r: &mut Remote,
    scratch: u64,
    objects: &[FileObject],
    fds: &[FdEntry],
    created: &Created,
) -> StepResult<()> {
    let pid = r.pid;
    let e = |what: String| StepError::remote(pid, what);
    // A socket pair in the process; we take one end and close it there.
    r.call(
        libc::SYS_socketpair,
        &[
            libc::AF_UNIX as u64,
            (libc::SOCK_DGRAM | libc::SOCK_CLOEXEC) as u64,
            0,
            scratch + S_PAIR,
        ],
    )
    .map_err(e("socketpair for passing fds".into()))?;
    let pair = get::<8>(pid, scratch + S_PAIR)?;
    let a = i32::from_ne_bytes(pair[..4].try_into().expect("4 bytes"));
    let b = i32::from_ne_bytes(pair[4..].try_into().expect("4 bytes"));
    let pidfd = pidfd::open(pid).map_err(StepError::task(pid, "pidfd_open"))?;
    let sender = fds::getfd(pidfd.as_fd(), a).map_err(StepError::task(pid, "pidfd_getfd"))?;
    r.call(libc::SYS_close, &[a as u64])
        .map_err(e("close the sending end".into()))?;
    // The receiving end moves above every fd of the image.
    let above = fds.iter().map(|f| f.fd).max().unwrap_or(2) + 1;
    let t = r
        .call(
            libc::SYS_fcntl,
            &[b as u64, libc::F_DUPFD_CLOEXEC as u64, above as u64],
        )
        .map_err(e("move the receiving end".into()))?;
    r.call(libc::SYS_close, &[b as u64])
        .map_err(e("close the receiving end".into()))?;

    let mut sorted: Vec<FdEntry> = fds.to_vec();
    sorted.sort_by_key(|f| f.fd);
    let kind = |id: u32| objects.iter().find(|o| o.id == id).map(|o| &o.kind);
    let received = (|| {
        for f in sorted
            .iter()
            .filter(|f| !matches!(kind(f.object), Some(FileKind::Epoll { .. })))
        {
            let obj = created.objects.get(&f.object).ok_or_else(|| {
                StepError::failed(format!("fd {}: object {} was not created", f.fd, f.object))
            })?;
            fds::send_fd(sender.as_fd(), obj.as_fd())
                .map_err(StepError::sys(format!("fd {}: SCM_RIGHTS send", f.fd)))?;
            let got = receive(r, scratch, t).map_err(at_(format!("fd {}", f.fd)))?;
            place(r, got, f)?;
        }
        Ok::<(), StepError>(())
    })();
    if let Err(err) = received {
        let _ = r.call(libc::SYS_close, &[t]);
        return Err(err);
    }
    let rest = finish_install(r, scratch, objects, &sorted, created, &sender, t, above);
    let closed = r.call(libc::SYS_close, &[t]);
    rest?;
    closed.map_err(e("close the receiving end".into()))?;
    Ok(())
}

/// The rest of [`install`], once every fd is in place: O_ASYNC and SIGIO
/// owners, then epoll sets and their items (a target no longer at its fd
/// number comes through `sender`/`t` and is put there for the moment).
#[allow(clippy::too_many_arguments)]
fn finish_install(
    r: &mut Remote,
    scratch: u64,
    objects: &[FileObject],
    sorted: &[FdEntry],
    created: &Created,
    sender: &OwnedFd,
    t: u64,
    above: i32,
) -> StepResult<()> {
    let pid = r.pid;
    let e = |what: String| StepError::remote(pid, what);
    let kind = |id: u32| objects.iter().find(|o| o.id == id).map(|o| &o.kind);

    // O_ASYNC and SIGIO owners, set from inside, once per open file
    // description: the kernel records the fd number O_ASYNC was set
    // through (the si_fd of each SIGIO), and the owner's id is one of the
    // process's pid namespace.
    let mut owned = Vec::new();
    for f in sorted {
        let Some(o) = objects.iter().find(|o| o.id == f.object) else {
            continue;
        };
        if owned.contains(&o.id) || (o.owner.is_none() && o.flags & libc::O_ASYNC == 0) {
            continue;
        }
        owned.push(o.id);
        if o.flags & libc::O_ASYNC != 0 {
            let fl = r
                .call(libc::SYS_fcntl, &[f.fd as u64, libc::F_GETFL as u64, 0])
                .map_err(e(format!("fd {}: F_GETFL", f.fd)))?;
            r.call(
                libc::SYS_fcntl,
                &[f.fd as u64, libc::F_SETFL as u64, fl | libc::O_ASYNC as u64],
            )
            .map_err(e(format!("fd {}: F_SETFL O_ASYNC", f.fd)))?;
        }
        let Some(owner) = o.owner else { continue };
        let mut ex = owner.kind.to_ne_bytes().to_vec();
        ex.extend_from_slice(&owner.id.to_ne_bytes());
        put(pid, scratch + S_OWNER, &ex)?;
        r.call(
            libc::SYS_fcntl,
            &[f.fd as u64, fds::F_SETOWN_EX as u64, scratch + S_OWNER],
        )
        .map_err(e(format!("fd {}: F_SETOWN_EX {}", f.fd, owner.id)))?;
        if owner.signal != 0 {
            r.call(
                libc::SYS_fcntl,
                &[f.fd as u64, fds::F_SETSIG as u64, owner.signal as u64],
            )
            .map_err(e(format!("fd {}: F_SETSIG {}", f.fd, owner.signal)))?;
        }
    }

    // Epoll sets: made here, then their items added by fd number.
    let mut epolls: HashMap<u32, i32> = HashMap::new();
    for f in sorted
        .iter()
        .filter(|f| matches!(kind(f.object), Some(FileKind::Epoll { .. })))
    {
        let got = match epolls.get(&f.object) {
            Some(first) => r
                .call(
                    libc::SYS_fcntl,
                    &[*first as u64, libc::F_DUPFD_CLOEXEC as u64, 0],
                )
                .map_err(e(format!("fd {}: dup epoll fd {first}", f.fd)))?,
            None => {
                let ep = r
                    .call(libc::SYS_epoll_create1, &[libc::EPOLL_CLOEXEC as u64])
                    .map_err(e(format!("fd {}: epoll_create1", f.fd)))?;
                let flags = objects
                    .iter()
                    .find(|o| o.id == f.object)
                    .map_or(0, |o| o.flags & libc::O_NONBLOCK);
                if flags != 0 {
                    r.call(libc::SYS_fcntl, &[ep, libc::F_SETFL as u64, flags as u64])
                        .map_err(e(format!("fd {}: F_SETFL", f.fd)))?;
                }
                epolls.insert(f.object, f.fd);
                ep
            }
        };
        place(r, got, f)?;
    }
    for (id, fd) in &epolls {
        let Some(FileKind::Epoll { items }) = kind(*id) else {
            continue;
        };
        for it in items {
            let mut ev = it.events.to_ne_bytes().to_vec();
            ev.extend_from_slice(&it.data.to_ne_bytes());
            put(pid, scratch + S_EVENT, &ev)?;
            if let Some(target) = it.object {
                add_moved_target(
                    r, scratch, sorted, created, sender, t, above, *fd, it.fd, target,
                )?;
                continue;
            }
            r.call(
                libc::SYS_epoll_ctl,
                &[
                    *fd as u64,
                    libc::EPOLL_CTL_ADD as u64,
                    it.fd as u64,
                    scratch + S_EVENT,
                ],
            )
            .map_err(e(format!(
                "fd {fd}: epoll_ctl add fd {} (events {:#x})",
                it.fd, it.events
            )))?;
        }
    }
    Ok(())
}

/// Remote recvmsg of one fd on socket `sock`; returns its number.
fn receive(r: &mut Remote, scratch: u64, sock: u64) -> StepResult<u64> {
    let pid = r.pid;
    let mut msg = Vec::with_capacity(56);
    for w in [
        0u64,
        0,
        scratch + S_IOV,
        1,
        scratch + S_CMSG,
        24, // msg_controllen
        0,
    ] {
        msg.extend_from_slice(&w.to_ne_bytes());
    }
    put(pid, scratch + S_MSG, &msg)?;
    let mut iov = (scratch + S_BYTE).to_ne_bytes().to_vec();
    iov.extend_from_slice(&1u64.to_ne_bytes());
    put(pid, scratch + S_IOV, &iov)?;
    put(pid, scratch + S_CMSG, &[0u8; 24])?;
    let n = r
        .call(
            libc::SYS_recvmsg,
            &[
                sock,
                scratch + S_MSG,
                (libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT) as u64,
            ],
        )
        .map_err(StepError::remote(pid, "remote recvmsg"))?;
    let c = get::<24>(pid, scratch + S_CMSG)?;
    let len = u64::from_ne_bytes(c[..8].try_into().expect("8 bytes"));
    let level = i32::from_ne_bytes(c[8..12].try_into().expect("4 bytes"));
    let ty = i32::from_ne_bytes(c[12..16].try_into().expect("4 bytes"));
    if n != 1 || len != CMSG_LEN_INT || level != libc::SOL_SOCKET || ty != libc::SCM_RIGHTS {
        return Err(StepError::failed(format!(
            "remote recvmsg returned {n} bytes and no fd (cmsg len {len}, level {level}, type {ty})"
        )));
    }
    Ok(i32::from_ne_bytes(c[16..20].try_into().expect("4 bytes")) as u64)
}

/// Moves fd `got` of the process (close-on-exec) to `f.fd` with the
/// entry's close-on-exec flag.
/// Adds to epoll `epfd` the item for file object `target` at fd number
/// `tfd`, which no longer holds it: the target is passed in, put at
/// `tfd` (what is there now set aside and put back after), added (its
/// event already in the scratch area), and closed there again.
#[allow(clippy::too_many_arguments)]
fn add_moved_target(
    r: &mut Remote,
    scratch: u64,
    fds: &[FdEntry],
    created: &Created,
    sender: &OwnedFd,
    t: u64,
    above: i32,
    epfd: i32,
    tfd: i32,
    target: u32,
) -> StepResult<()> {
    let pid = r.pid;
    let e = |what: String| StepError::remote(pid, format!("fd {epfd} (epoll), item {tfd}: {what}"));
    let obj = created.objects.get(&target).ok_or_else(|| {
        StepError::failed(format!(
            "fd {epfd}: its item's file object {target} was not created"
        ))
    })?;
    fds::send_fd(sender.as_fd(), obj.as_fd())
        .map_err(StepError::sys(format!("fd {epfd}: SCM_RIGHTS send")))?;
    let got = receive(r, scratch, t).map_err(at_(format!("fd {epfd}")))?;
    let here = fds.iter().find(|f| f.fd == tfd);
    let saved = match here {
        Some(_) => Some(
            r.call(
                libc::SYS_fcntl,
                &[tfd as u64, libc::F_DUPFD_CLOEXEC as u64, above as u64],
            )
            .map_err(e("set its fd aside".into()))?,
        ),
        None => None,
    };
    r.call(libc::SYS_dup3, &[got, tfd as u64, libc::O_CLOEXEC as u64])
        .map_err(e("put the target at its number".into()))?;
    r.call(
        libc::SYS_epoll_ctl,
        &[
            epfd as u64,
            libc::EPOLL_CTL_ADD as u64,
            tfd as u64,
            scratch + S_EVENT,
        ],
    )
    .map_err(e("epoll_ctl add".into()))?;
    match (saved, here) {
        (Some(saved), Some(f)) => {
            let cloexec = if f.cloexec { libc::O_CLOEXEC as u64 } else { 0 };
            r.call(libc::SYS_dup3, &[saved, tfd as u64, cloexec])
                .map_err(e("put its fd back".into()))?;
            r.call(libc::SYS_close, &[saved])
                .map_err(e("close the copy".into()))?;
        }
        _ => {
            r.call(libc::SYS_close, &[tfd as u64])
                .map_err(e("close the target".into()))?;
        }
    }
    r.call(libc::SYS_close, &[got])
        .map_err(e("close the received target".into()))?;
    Ok(())
}

fn place(r: &mut Remote, got: u64, f: &FdEntry) -> StepResult<()> {
    let pid = r.pid;
    let e = |what: &str| StepError::remote(pid, format!("fd {}: {what}", f.fd));
    if got == f.fd as u64 {
        if !f.cloexec {
            r.call(libc::SYS_fcntl, &[got, libc::F_SETFD as u64, 0])
                .map_err(e("clear close-on-exec"))?;
        }
        return Ok(());
    }
    let cloexec = if f.cloexec { libc::O_CLOEXEC as u64 } else { 0 };
    r.call(libc::SYS_dup3, &[got, f.fd as u64, cloexec])
        .map_err(e(&format!("dup3 from {got}")))?;
    r.call(libc::SYS_close, &[got]).map_err(e("close"))?;
    Ok(())
}
