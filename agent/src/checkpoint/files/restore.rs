//! Restore side. [`create`] makes every file object in the restore
//! helper itself (files opened and positioned, pipes and socket pairs
//! made and filled, sockets bound, eventfds, signalfds and timerfds set);
//! [`install`] passes them into the new process with SCM_RIGHTS, by
//! remote recvmsg on a socket pair the process makes, and builds its
//! epoll sets there.

use std::{
    collections::HashMap,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
};

use super::{FdEntry, FileKind, FileObject};
use crate::{
    checkpoint::{
        error::{StepError, StepResult, at as at_},
        remote::Remote,
    },
    sys::{fds, pidfd, ptrace},
};

mod kinds;

/// The objects [`create`] made, by object id, held until [`install`]
/// has given them to the process.
pub struct Created {
    objects: HashMap<u32, OwnedFd>,
}

/// The fd an error names an object by: its first in the process.
fn first_fd(fds: &[FdEntry], id: u32) -> i32 {
    fds.iter().find(|e| e.object == id).map_or(-1, |e| e.fd)
}

/// Status flags F_SETFL may set on a helper-made object.
const SETFL: i32 = libc::O_NONBLOCK | libc::O_APPEND;

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

/// Creates every object except epoll sets (those are made in the
/// process, see [`install`]). `data` is files.img, already validated.
///
/// Sockets are created in the helper's network namespace, which for a
/// `--pid` restore is the process's: a container restore must setns into
/// the container's before calling this.
pub fn create(
    objects: &[FileObject],
    fds: &[FdEntry],
    data: &[u8],
    paths: &Paths,
) -> StepResult<Created> {
    let mut maker = kinds::Maker::new(objects, data, paths);
    for o in objects {
        let n = first_fd(fds, o.id);
        let Some(fd) = maker.make(o, n)? else {
            continue;
        };
        set_status_and_filter(o, n, fd.as_fd())?;
        maker.made.insert(o.id, fd);
    }
    Ok(Created {
        objects: maker.made,
    })
}

/// What every object made here gets after its kind's own steps: the
/// status flags (of one not opened by path) and its socket filter,
/// locked if it was.
fn set_status_and_filter(o: &FileObject, n: i32, fd: BorrowedFd<'_>) -> StepResult<()> {
    let sys = |what: &str| kinds::sys(n, o, what);
    if !matches!(
        o.kind,
        FileKind::Path { .. } | FileKind::Deleted { .. } | FileKind::Memfd { .. }
    ) {
        let fl = fds::fcntl_int(fd, libc::F_GETFL, 0).map_err(sys("F_GETFL"))?;
        fds::fcntl_int(fd, libc::F_SETFL, (fl & !SETFL) | (o.flags & SETFL))
            .map_err(sys("F_SETFL"))?;
    }
    if let Some(filter) = &o.socket_filter {
        let code = crate::checkpoint::image::unhex(&filter.code).ok_or_else(|| {
            StepError::Image("its socket filter is not hex".into()).at(kinds::here(n, o))
        })?;
        fds::attach_socket_filter(fd, &code).map_err(sys("SO_ATTACH_FILTER"))?;
        if filter.locked {
            fds::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_LOCK_FILTER, 1)
                .map_err(sys("SO_LOCK_FILTER"))?;
        }
    }
    Ok(())
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
