//! Dump side of sockets: what sock_diag says about unix sockets, and the
//! state of IPv4/IPv6 sockets (TCP_INFO, addresses, options). Reads only.

use std::{collections::HashMap, os::fd::BorrowedFd};

use nix::errno::Errno;

use super::{FileKind, SockOpt, dump::failed};
use crate::{
    checkpoint::error::{StepError, StepResult},
    sys::fds,
};

/// What the sock_diag dump says about one unix socket.
pub(super) struct UnixDiag {
    pub state: u8,
    pub peer: u32,
    pub named: bool,
    pub shutdown: u8,
    /// UNIX_DIAG_RQLEN: for a listener, connections waiting and its
    /// backlog; for others, bytes queued to read and to write.
    pub rqlen: Option<(u32, u32)>,
    /// UNIX_DIAG_VFS: the inode and device of a path-bound socket's file.
    pub vfs: Option<(u32, u32)>,
}

const UDIAG_SHOW_NAME: u32 = 1;
const UDIAG_SHOW_PEER: u32 = 4;
const UDIAG_SHOW_RQLEN: u32 = 16;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_VFS: u16 = 1;
const UDIAG_SHOW_VFS: u32 = 2;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_SHUTDOWN: u16 = 6;
pub(super) const TCP_ESTABLISHED: u8 = 1;
pub(super) const TCP_CLOSE: u8 = 7;
pub(super) const TCP_LISTEN: u8 = 10;

/// Every unix socket of the dumper's network namespace (which for a
/// `--pid` dump is the process's), by inode.
pub(super) fn unix_sockets() -> nix::Result<HashMap<u32, UnixDiag>> {
    let mut req = vec![libc::AF_UNIX as u8, 0, 0, 0];
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    req.extend_from_slice(&0u32.to_ne_bytes()); // inode: any
    req.extend_from_slice(
        &(UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN).to_ne_bytes(),
    );
    req.extend_from_slice(&[0xff; 8]); // no cookie
    let mut out = HashMap::new();
    for msg in fds::sock_diag_dump(&req)? {
        if msg.len() < 16 {
            continue;
        }
        let ino = u32::from_ne_bytes(msg[4..8].try_into().expect("4 bytes"));
        let mut diag = UnixDiag {
            state: msg[2],
            peer: 0,
            named: false,
            shutdown: 0,
            rqlen: None,
            vfs: None,
        };
        let mut at = 16;
        while at + 4 <= msg.len() {
            let len = u16::from_ne_bytes([msg[at], msg[at + 1]]) as usize;
            let ty = u16::from_ne_bytes([msg[at + 2], msg[at + 3]]);
            if len < 4 || at + len > msg.len() {
                break;
            }
            match ty {
                UNIX_DIAG_NAME => diag.named = true,
                UNIX_DIAG_SHUTDOWN if len >= 5 => diag.shutdown = msg[at + 4],
                UNIX_DIAG_VFS if len >= 12 => {
                    let word =
                        |i: usize| u32::from_ne_bytes(msg[i..i + 4].try_into().expect("4 bytes"));
                    diag.vfs = Some((word(at + 4), word(at + 8)));
                }
                UNIX_DIAG_RQLEN if len >= 12 => {
                    let word =
                        |i: usize| u32::from_ne_bytes(msg[i..i + 4].try_into().expect("4 bytes"));
                    diag.rqlen = Some((word(at + 4), word(at + 8)));
                }
                UNIX_DIAG_PEER if len >= 8 => {
                    diag.peer = u32::from_ne_bytes(msg[at + 4..at + 8].try_into().expect("4 bytes"))
                }
                _ => {}
            }
            at += (len + 3) & !3;
        }
        out.insert(ino, diag);
    }
    Ok(out)
}

/// Integer options an IPv4/IPv6 socket gets back on restore, set before
/// bind. (level, option, only for this protocol or 0 for any).
const INET_OPTIONS: [(i32, i32, i32); 9] = [
    (libc::SOL_SOCKET, libc::SO_REUSEADDR, 0),
    (libc::SOL_SOCKET, libc::SO_REUSEPORT, 0),
    (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 0),
    (libc::SOL_SOCKET, libc::SO_BROADCAST, libc::IPPROTO_UDP),
    (libc::IPPROTO_IP, libc::IP_FREEBIND, 0),
    (libc::IPPROTO_TCP, libc::TCP_NODELAY, libc::IPPROTO_TCP),
    (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, libc::IPPROTO_TCP),
    (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, libc::IPPROTO_TCP),
    (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, libc::IPPROTO_TCP),
];

pub(super) fn inet(
    fd: BorrowedFd<'_>,
    family: i32,
    ty: i32,
    protocol: i32,
) -> StepResult<FileKind> {
    let local = fds::local_addr(fd).map_err(failed("getsockname"))?;
    let addr = local.filter(|a| a.port() != 0 || !a.ip().is_unspecified());
    let mut backlog = None;
    let mut peer = None;
    match (ty, protocol) {
        (libc::SOCK_STREAM, libc::IPPROTO_TCP) => {
            // struct tcp_info: state in byte 0; for a listener
            // tcpi_unacked (24) is the accept queue and tcpi_sacked (28)
            // the backlog.
            let mut info = [0u8; 32];
            fds::getsockopt_bytes(fd, libc::IPPROTO_TCP, libc::TCP_INFO, &mut info)
                .map_err(failed("TCP_INFO"))?;
            let word = |at: usize| u32::from_ne_bytes(info[at..at + 4].try_into().expect("4"));
            match info[0] {
                TCP_LISTEN => {
                    if word(24) > 0 {
                        return Err(StepError::Unsupported(format!(
                            "a listening TCP socket with {} connections not yet accepted",
                            word(24)
                        )));
                    }
                    backlog = Some(word(28));
                }
                TCP_CLOSE => {}
                state => {
                    let remote = fds::peer_addr(fd)
                        .ok()
                        .flatten()
                        .map_or("?".to_string(), |a| a.to_string());
                    return Err(StepError::Unsupported(format!(
                        "a connected TCP socket ({} -> {remote}, TCP state {state}): connected TCP sockets are not supported",
                        local.map_or("?".to_string(), |a| a.to_string())
                    )));
                }
            }
        }
        (libc::SOCK_DGRAM, libc::IPPROTO_UDP) => {
            let queued = fds::bytes_queued(fd).map_err(failed("FIONREAD"))?;
            if queued > 0 {
                return Err(StepError::Unsupported(format!(
                    "a UDP socket with {queued} bytes of datagrams queued"
                )));
            }
            peer = match fds::peer_addr(fd) {
                Ok(p) => p.map(|a| a.to_string()),
                Err(Errno::ENOTCONN) => None,
                Err(e) => return Err(failed("getpeername")(e)),
            };
        }
        _ => {
            return Err(StepError::Unsupported(format!(
                "an IP socket of type {ty}, protocol {protocol} (only TCP and UDP are supported)"
            )));
        }
    }
    let mut options = Vec::new();
    let extra = (family == libc::AF_INET6).then_some((libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0));
    for (level, name, only) in INET_OPTIONS.into_iter().chain(extra) {
        if only != 0 && only != protocol {
            continue;
        }
        let value = fds::getsockopt_int(fd, level, name)
            .map_err(failed(&format!("getsockopt({level}, {name})")))?;
        options.push(SockOpt { level, name, value });
    }
    Ok(FileKind::Inet {
        family,
        sock_type: ty,
        protocol,
        addr: addr.map(|a| a.to_string()),
        peer,
        backlog,
        options,
    })
}
