//! The raw calls checkpoint uses on file descriptors: taking another
//! process's fd (pidfd_getfd), comparing open file descriptions (kcmp),
//! copying a pipe's buffer without consuming it (tee), peeking at socket
//! queues, passing fds with SCM_RIGHTS, creating eventfds, signalfds,
//! timerfds and sockets, and sock_diag netlink queries. Each is a safe
//! wrapper returning `nix::Result`; nothing here decides anything.

use std::{
    io::IoSlice,
    net::SocketAddr,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
};

use nix::{
    errno::Errno,
    sys::socket::{self, ControlMessage, MsgFlags, SockaddrIn, SockaddrIn6, SockaddrStorage},
};

/// Wraps a fresh fd the kernel returned.
fn owned(fd: libc::c_long) -> nix::Result<OwnedFd> {
    let fd = Errno::result(fd)?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A duplicate, in this process, of fd `target` of the process behind
/// `pidfd` (pidfd_getfd(2), Linux 5.6): the same open file description.
/// Needs ptrace access to that process.
pub fn getfd(pidfd: BorrowedFd<'_>, target: RawFd) -> nix::Result<OwnedFd> {
    // SAFETY: a valid pidfd, an fd number and no flags; no memory is
    // shared with the kernel.
    owned(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0u32) })
}

const KCMP_FILE: libc::c_int = 0;

/// Whether two fds of this process are the same open file description
/// (kcmp(2) KCMP_FILE).
pub fn same_file(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> nix::Result<bool> {
    let me = std::process::id() as libc::pid_t;
    // SAFETY: kcmp takes two pids, a type and two fd numbers; it only
    // compares kernel objects.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            me,
            me,
            KCMP_FILE,
            a.as_raw_fd() as libc::c_ulong,
            b.as_raw_fd() as libc::c_ulong,
        )
    };
    Errno::result(r).map(|r| r == 0)
}

/// The data extents `(offset, length)` of a file of `size` bytes, by
/// lseek SEEK_DATA/SEEK_HOLE (a file system without holes reports one
/// extent of the whole file). Moves `fd`'s offset.
pub fn data_extents(fd: BorrowedFd<'_>, size: u64) -> nix::Result<Vec<(u64, u64)>> {
    use nix::unistd::{Whence, lseek};
    let mut out = Vec::new();
    let mut at = 0u64;
    while at < size {
        let start = match lseek(fd, at as libc::off_t, Whence::SeekData) {
            Ok(s) => s as u64,
            // No data past `at`: the rest is a hole.
            Err(Errno::ENXIO) => break,
            Err(e) => return Err(e),
        };
        let end = (lseek(fd, start as libc::off_t, Whence::SeekHole)? as u64).min(size);
        if end > start {
            out.push((start, end - start));
        }
        at = end.max(start + 1);
    }
    Ok(out)
}

/// Takes ownership of descriptor `fd`, which this process inherited
/// across exec by contract with the program that exec'd it (the small
/// monitor passes palisade its container's lock this way), and makes it
/// close-on-exec. Refuses the standard descriptors and a number that is
/// not open (EBADF).
pub fn adopt_inherited(fd: RawFd) -> nix::Result<OwnedFd> {
    if fd < 3 {
        return Err(Errno::EBADF);
    }
    // SAFETY: F_GETFD only reads the descriptor's flags.
    Errno::result(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: the fd is open (just checked), and by the caller's contract
    // it was inherited for this process to own: nothing else here holds it
    // (a freshly exec'd process has opened nothing under that number).
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: F_SETFD with a flag value on a descriptor we own.
    Errno::result(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) })?;
    Ok(owned)
}

/// memfd_create(2) with raw MFD_* `flags` (nix lacks MFD_NOEXEC_SEAL).
pub fn memfd_create(name: &std::ffi::CStr, flags: u32) -> nix::Result<OwnedFd> {
    // SAFETY: `name` is a live NUL-terminated string the kernel only reads.
    let fd = Errno::result(unsafe { libc::memfd_create(name.as_ptr(), flags) })?;
    // SAFETY: a new fd the kernel just gave us, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether our fd `mine` is the file process `pid`'s epoll `epfd`
/// watches as item `tfd` (kcmp(2) KCMP_EPOLL_TFD).
pub fn is_epoll_target(mine: BorrowedFd<'_>, pid: i32, epfd: i32, tfd: i32) -> nix::Result<bool> {
    const KCMP_EPOLL_TFD: libc::c_int = 7;
    // struct kcmp_epoll_slot { __u32 efd, tfd, toff; }
    let slot = [epfd as u32, tfd as u32, 0u32];
    // SAFETY: kcmp reads the three-word slot (live for the call) and only
    // compares kernel objects.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            std::process::id() as libc::pid_t,
            pid,
            KCMP_EPOLL_TFD,
            mine.as_raw_fd() as libc::c_ulong,
            slot.as_ptr(),
        )
    };
    Errno::result(r).map(|r| r == 0)
}

/// kcmp(2) resources two processes can share by clone flags.
#[derive(Debug, Clone, Copy)]
pub enum Shared {
    /// CLONE_VM: the address space.
    Vm = 1,
    /// CLONE_FILES: the fd table.
    Files = 2,
    /// CLONE_FS: cwd, root and umask.
    Fs = 3,
    /// CLONE_SIGHAND: the signal handlers.
    Sighand = 4,
}

/// Whether processes `a` and `b` share resource `what` (kcmp(2)).
pub fn shares(a: i32, b: i32, what: Shared) -> nix::Result<bool> {
    // SAFETY: kcmp takes two pids and a type, and only compares kernel
    // objects.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, a, b, what as libc::c_int, 0, 0) };
    Errno::result(r).map(|r| r == 0)
}

/// fcntl with an integer argument (F_GETFL, F_SETFL, F_GETPIPE_SZ…).
pub fn fcntl_int(fd: BorrowedFd<'_>, cmd: libc::c_int, arg: libc::c_int) -> nix::Result<i32> {
    // SAFETY: every command callers pass takes an integer argument (or
    // none); no memory is involved.
    Errno::result(unsafe { libc::fcntl(fd.as_raw_fd(), cmd, arg) })
}

/// Bytes waiting to be read (FIONREAD) on a pipe or socket.
pub fn bytes_queued(fd: BorrowedFd<'_>) -> nix::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int into `n`, which lives for the call.
    Errno::result(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) })?;
    Ok(n as usize)
}

/// A pipe with `flags` (O_CLOEXEC, O_NONBLOCK): (read end, write end).
pub fn pipe2(flags: libc::c_int) -> nix::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two fds into the live array.
    Errno::result(unsafe { libc::pipe2(fds.as_mut_ptr(), flags) })?;
    // SAFETY: both fds were just created for us.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Copies up to `len` bytes from pipe `from` into pipe `to` without
/// consuming them (tee(2), non-blocking).
pub fn tee(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> nix::Result<usize> {
    // SAFETY: two fds, a length and flags; the kernel moves page
    // references between the pipes, no user memory is involved.
    let r = unsafe {
        libc::tee(
            from.as_raw_fd(),
            to.as_raw_fd(),
            len,
            libc::SPLICE_F_NONBLOCK,
        )
    };
    Errno::result(r).map(|n| n as usize)
}

/// An integer socket option.
pub fn getsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> nix::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `v`, both live.
    Errno::result(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut v as *mut i32).cast(),
            &mut len,
        )
    })?;
    Ok(v)
}

pub fn setsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: i32,
) -> nix::Result<()> {
    // SAFETY: the kernel reads one int from `value`, live for the call.
    Errno::result(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// The classic BPF program attached to a socket (SO_ATTACH_FILTER), as
/// its struct sock_filter array; none if it has none.
pub fn socket_filter(fd: BorrowedFd<'_>) -> nix::Result<Option<Vec<u8>>> {
    // With a length of 0 the kernel tells the program's length (in
    // instructions) in `len`.
    let mut len: libc::socklen_t = 0;
    // SAFETY: a null buffer of length 0: the kernel only writes `len`.
    Errno::result(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            std::ptr::null_mut(),
            &mut len,
        )
    })?;
    if len == 0 {
        return Ok(None);
    }
    let mut prog = vec![0u8; len as usize * 8];
    let mut n = len;
    // SAFETY: the kernel writes at most `n` instructions (8 bytes each)
    // into `prog`, which holds that many.
    Errno::result(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            prog.as_mut_ptr().cast(),
            &mut n,
        )
    })?;
    prog.truncate(n as usize * 8);
    Ok(Some(prog))
}

/// Attaches classic BPF program `prog` (struct sock_filter array) to a
/// socket (SO_ATTACH_FILTER).
pub fn attach_socket_filter(fd: BorrowedFd<'_>, prog: &[u8]) -> nix::Result<()> {
    let fprog = libc::sock_fprog {
        len: (prog.len() / 8) as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: the kernel reads `fprog` and the `len` instructions it
    // points at, all live for the call.
    Errno::result(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// The owner of an open file description (F_GETOWN_EX): its type
/// (F_OWNER_TID, F_OWNER_PID, F_OWNER_PGRP) and id (0: none).
pub fn owner(fd: BorrowedFd<'_>) -> nix::Result<(i32, i32)> {
    // struct f_owner_ex { int type; pid_t pid; }
    let mut o = [0i32; 2];
    // SAFETY: F_GETOWN_EX writes one struct f_owner_ex (two ints) into `o`.
    Errno::result(unsafe { libc::fcntl(fd.as_raw_fd(), F_GETOWN_EX, o.as_mut_ptr()) })?;
    Ok((o[0], o[1]))
}

pub const F_SETSIG: libc::c_int = 10;
pub const F_GETSIG: libc::c_int = 11;
pub const F_SETOWN_EX: libc::c_int = 15;
const F_GETOWN_EX: libc::c_int = 16;
pub const F_OWNER_PGRP: libc::c_int = 2;

/// The first `buf.len()` bytes of a socket option (TCP_INFO).
pub fn getsockopt_bytes(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    buf: &mut [u8],
) -> nix::Result<usize> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `buf`.
    Errno::result(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    })?;
    Ok(len as usize)
}

/// What one peek returned.
pub struct Peeked {
    /// Bytes copied into the buffer.
    pub len: usize,
    /// The message was longer than the buffer (MSG_TRUNC).
    pub truncated: bool,
    /// It carried control data (fds, credentials) that was not taken.
    pub control: bool,
}

/// recvmsg(MSG_PEEK | MSG_DONTWAIT) without a control buffer: copies the
/// next bytes (at SO_PEEK_OFF when it is set) and leaves them queued.
pub fn peek(fd: BorrowedFd<'_>, buf: &mut [u8]) -> nix::Result<Peeked> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is valid (no name, no control).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: msg points at one iovec over `buf`, both live for the call;
    // there is no control buffer, so no fd can be installed in us.
    let n = unsafe {
        libc::recvmsg(
            fd.as_raw_fd(),
            &mut msg,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    let n = Errno::result(n)? as usize;
    Ok(Peeked {
        len: n,
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
        control: msg.msg_flags & libc::MSG_CTRUNC != 0,
    })
}

/// Sends `data` as one message (one datagram, or part of a stream).
pub fn send(fd: BorrowedFd<'_>, data: &[u8]) -> nix::Result<usize> {
    socket::send(fd.as_raw_fd(), data, MsgFlags::MSG_NOSIGNAL)
}

/// Passes `fd` over unix socket `sock` (SCM_RIGHTS, with one data byte).
pub fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> nix::Result<()> {
    let raw = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&raw)];
    socket::sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(&[0u8])],
        &cmsg,
        MsgFlags::empty(),
        None,
    )
    .map(drop)
}

/// Sends `data` with `fds` (SCM_RIGHTS) in one message on a connected
/// Unix socket.
pub fn send_with_fds(sock: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> nix::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &cmsg };
    let sent = socket::sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(data)],
        cmsgs,
        MsgFlags::empty(),
        None,
    )?;
    if sent != data.len() {
        return Err(nix::errno::Errno::EMSGSIZE);
    }
    Ok(())
}

/// The most fds [`recv_with_fds`] takes in one message.
pub const MAX_FDS: usize = 253;

/// Receives one message of up to `max` bytes and up to [`MAX_FDS`] fds
/// (close-on-exec) from a connected Unix socket; a message or fd list cut
/// short is EMSGSIZE.
pub fn recv_with_fds(sock: BorrowedFd<'_>, max: usize) -> nix::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; max];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = socket::recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let socket::ControlMessageOwned::ScmRights(raw) = c {
            for fd in raw {
                // SAFETY: SCM_RIGHTS gave us these fds, each new and ours.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    let truncated = msg
        .flags
        .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
    let len = msg.bytes;
    if truncated {
        return Err(nix::errno::Errno::EMSGSIZE);
    }
    buf.truncate(len);
    Ok((buf, fds))
}

/// socket(2) with close-on-exec.
pub fn socket(domain: i32, ty: i32, protocol: i32) -> nix::Result<OwnedFd> {
    // SAFETY: integers in, a new fd out.
    owned(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) }.into())
}

/// socketpair(AF_UNIX, ty) with close-on-exec.
pub fn socketpair(ty: i32) -> nix::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: socketpair writes two fds into the live array.
    Errno::result(unsafe {
        libc::socketpair(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr())
    })?;
    // SAFETY: both fds were just created for us.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn inet_addr(storage: SockaddrStorage) -> Option<SocketAddr> {
    if let Some(a) = storage.as_sockaddr_in() {
        Some(SocketAddr::V4((*a).into()))
    } else {
        storage
            .as_sockaddr_in6()
            .map(|a| SocketAddr::V6((*a).into()))
    }
}

/// The local address of an IPv4/IPv6 socket.
pub fn local_addr(fd: BorrowedFd<'_>) -> nix::Result<Option<SocketAddr>> {
    socket::getsockname::<SockaddrStorage>(fd.as_raw_fd()).map(inet_addr)
}

/// The peer of a connected IPv4/IPv6 socket (ENOTCONN when there is none).
pub fn peer_addr(fd: BorrowedFd<'_>) -> nix::Result<Option<SocketAddr>> {
    socket::getpeername::<SockaddrStorage>(fd.as_raw_fd()).map(inet_addr)
}

pub fn bind(fd: BorrowedFd<'_>, addr: SocketAddr) -> nix::Result<()> {
    match addr {
        SocketAddr::V4(a) => socket::bind(fd.as_raw_fd(), &SockaddrIn::from(a)),
        SocketAddr::V6(a) => socket::bind(fd.as_raw_fd(), &SockaddrIn6::from(a)),
    }
}

pub fn connect(fd: BorrowedFd<'_>, addr: SocketAddr) -> nix::Result<()> {
    match addr {
        SocketAddr::V4(a) => socket::connect(fd.as_raw_fd(), &SockaddrIn::from(a)),
        SocketAddr::V6(a) => socket::connect(fd.as_raw_fd(), &SockaddrIn6::from(a)),
    }
}

pub fn listen(fd: BorrowedFd<'_>, backlog: i32) -> nix::Result<()> {
    // SAFETY: an fd and an integer.
    Errno::result(unsafe { libc::listen(fd.as_raw_fd(), backlog) }).map(drop)
}

/// eventfd(2) with a zero count.
pub fn eventfd(flags: libc::c_int) -> nix::Result<OwnedFd> {
    // SAFETY: integers in, a new fd out.
    owned(unsafe { libc::eventfd(0, flags) }.into())
}

/// Whether eventfd `fd`, whose count is `count` (as its fdinfo says),
/// counts as a semaphore (EFD_SEMAPHORE), learnt by reading it: a read
/// takes 1 from a semaphore's count and all of another's. Kernels before
/// 6.2 show the mode nowhere else. The count is raised to 2 first if it
/// is lower, so that neither read can block and the two answers differ,
/// and is put back after: it ends as it was, plus whatever the kernel
/// added meanwhile. The caller makes sure that no process it has not
/// stopped holds the file, since one could read the count in between.
pub fn eventfd_is_semaphore(fd: BorrowedFd<'_>, count: u64) -> nix::Result<bool> {
    let add = |n: u64| nix::unistd::write(fd, &n.to_ne_bytes()).map(drop);
    let take = || {
        let mut b = [0u8; 8];
        nix::unistd::read(fd, &mut b).map(|_| u64::from_ne_bytes(b))
    };
    let raised = 2u64.saturating_sub(count);
    if raised > 0 {
        add(raised)?;
    }
    let taken = take()?;
    if taken >= raised {
        // Put back what was there: all of it, or the 1 a semaphore gave.
        if taken > raised {
            add(taken - raised)?;
        }
    } else {
        // A semaphore at 0 was raised by 2 and gave 1: take the other.
        for _ in taken..raised {
            take()?;
        }
    }
    Ok(taken == 1)
}

/// signalfd(2) for the signals in `mask` (bit n-1 for signal n).
pub fn signalfd(mask: u64, flags: libc::c_int) -> nix::Result<OwnedFd> {
    // SAFETY: the raw syscall reads an 8-byte kernel sigset from `mask`,
    // live for the call.
    owned(unsafe { libc::syscall(libc::SYS_signalfd4, -1, &mask as *const u64, 8usize, flags) })
}

pub fn timerfd_create(clock: libc::c_int, flags: libc::c_int) -> nix::Result<OwnedFd> {
    // SAFETY: integers in, a new fd out.
    owned(unsafe { libc::timerfd_create(clock, flags) }.into())
}

fn timespec(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    }
}

/// Arms a timerfd relative to now: first expiry in `value_ns`, then every
/// `interval_ns` (0: once).
pub fn timerfd_arm(
    fd: BorrowedFd<'_>,
    flags: i32,
    value_ns: u64,
    interval_ns: u64,
) -> nix::Result<()> {
    let spec = libc::itimerspec {
        it_interval: timespec(interval_ns),
        it_value: timespec(value_ns),
    };
    // SAFETY: the kernel reads `spec` (live) and writes no old value.
    Errno::result(unsafe {
        libc::timerfd_settime(fd.as_raw_fd(), flags, &spec, std::ptr::null_mut())
    })
    .map(drop)
}

/// The time now on `clock`, in nanoseconds.
pub fn clock_now_ns(clock: i32) -> nix::Result<u64> {
    let t = nix::time::clock_gettime(nix::time::ClockId::from_raw(clock))?;
    Ok(t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
}

/// TFD_IOC_SET_TICKS: expirations not yet read (CONFIG_CHECKPOINT_RESTORE).
const TFD_IOC_SET_TICKS: libc::c_ulong = 0x4008_5400;

pub fn timerfd_set_ticks(fd: BorrowedFd<'_>, ticks: u64) -> nix::Result<()> {
    // SAFETY: the ioctl reads one u64 from `ticks`, live for the call.
    Errno::result(unsafe { libc::ioctl(fd.as_raw_fd(), TFD_IOC_SET_TICKS, &ticks) }).map(drop)
}

/// Writes all of `data` (blocking).
pub fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> nix::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(0) => return Err(Errno::EPIPE),
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;

/// Sends one sock_diag dump request (`req`: the family's request struct)
/// on a fresh NETLINK_SOCK_DIAG socket of the caller's network namespace
/// and returns the payload of every answer, up to NLMSG_DONE.
pub fn sock_diag_dump(req: &[u8]) -> nix::Result<Vec<Vec<u8>>> {
    let sock = socket(libc::AF_NETLINK, libc::SOCK_RAW, NETLINK_SOCK_DIAG)?;
    let mut msg = Vec::with_capacity(16 + req.len());
    msg.extend_from_slice(&((16 + req.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(req);
    socket::send(sock.as_raw_fd(), &msg, MsgFlags::empty())?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = socket::recv(sock.as_fd().as_raw_fd(), &mut buf, MsgFlags::empty())?;
        let mut at = 0;
        while at + 16 <= n {
            let len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
            let ty = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().expect("2 bytes"));
            if len < 16 || at + len > n {
                return Err(Errno::EBADMSG);
            }
            match ty as libc::c_int {
                libc::NLMSG_DONE => return Ok(out),
                libc::NLMSG_ERROR => {
                    let code =
                        i32::from_ne_bytes(buf[at + 16..at + 20].try_into().expect("4 bytes"));
                    return Err(Errno::from_raw(-code));
                }
                _ => out.push(buf[at + 16..at + len].to_vec()),
            }
            at += (len + 3) & !3;
        }
        if n == 0 {
            return Ok(out);
        }
    }
}

/// Closes `fd` in this process.
///
/// # Safety
/// Nothing in this process may use or close `fd` afterwards: it must be a
/// descriptor whose owner will never run again here, such as a forked
/// child's copy of one its parent owns.
pub unsafe fn close_inherited(fd: std::os::fd::RawFd) {
    // SAFETY: the caller guarantees no owner of `fd` uses it again here.
    unsafe { libc::close(fd) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The count fdinfo shows for our own eventfd `fd`.
    fn count_of(fd: BorrowedFd<'_>) -> u64 {
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
            .expect("fdinfo");
        let v = info
            .lines()
            .find_map(|l| l.strip_prefix("eventfd-count:"))
            .expect("an eventfd-count line");
        u64::from_str_radix(v.trim(), 16).expect("hex")
    }

    #[test]
    fn the_eventfd_probe_tells_a_semaphore_and_leaves_the_count() {
        for semaphore in [false, true] {
            for count in [0u64, 1, 2, 5, 1 << 40] {
                let flags = libc::EFD_CLOEXEC | if semaphore { libc::EFD_SEMAPHORE } else { 0 };
                let fd = eventfd(flags).unwrap();
                if count > 0 {
                    nix::unistd::write(&fd, &count.to_ne_bytes()).unwrap();
                }
                assert_eq!(
                    eventfd_is_semaphore(fd.as_fd(), count),
                    Ok(semaphore),
                    "semaphore {semaphore}, count {count}"
                );
                assert_eq!(count_of(fd.as_fd()), count, "semaphore {semaphore}");
            }
        }
    }
}
