//! The command's terminal, for a caller that asked for one with
//! `--console-socket` (podman's `-t`, containerd's `tty`): a pseudo-terminal
//! made in the container's own devpts, whose master goes to the caller
//! over the socket and whose slave becomes the command's controlling
//! terminal and stdin, stdout and stderr.

use std::{
    io::IoSlice,
    os::{
        fd::{AsFd, AsRawFd, OwnedFd},
        unix::net::UnixStream,
    },
    path::Path,
};

use nix::{
    fcntl::{OFlag, open},
    pty::{grantpt, posix_openpt, ptsname_r, unlockpt},
    sys::{
        socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg},
        stat::Mode,
    },
    unistd::{dup2_stderr, dup2_stdin, dup2_stdout, setsid},
};

use super::RuntimeError;
use crate::sys::tty;

/// Connects to the caller's console socket (before any process is made,
/// so a wrong path changes nothing).
pub(super) fn connect(path: &Path) -> Result<OwnedFd, RuntimeError> {
    UnixStream::connect(path)
        .map(OwnedFd::from)
        .map_err(|e| RuntimeError::BadInput(format!("--console-socket {}: {e}", path.display())))
}

/// In the new process, inside the container's mount namespace: makes the
/// terminal, sends its master over `socket` (with the slave's name as the
/// message, as runc does) and makes the slave this process's controlling
/// terminal and stdio, in a session of its own.
pub(super) fn attach(socket: OwnedFd) -> Result<(), String> {
    let fail =
        |step: &'static str| move |e: nix::Error| format!("cannot {step} for the terminal: {e}");
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(fail("open /dev/ptmx"))?;
    grantpt(&master).map_err(fail("grant the pseudo-terminal"))?;
    unlockpt(&master).map_err(fail("unlock the pseudo-terminal"))?;
    let name = ptsname_r(&master).map_err(fail("name the pseudo-terminal"))?;
    let slave = open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(fail("open the pseudo-terminal's slave"))?;
    let fds = [master.as_raw_fd()];
    sendmsg::<UnixAddr>(
        socket.as_raw_fd(),
        &[IoSlice::new(name.as_bytes())],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(fail("send the master over the console socket"))?;
    drop((master, socket));
    setsid().map_err(fail("start a session"))?;
    tty::set_controlling(slave.as_fd()).map_err(fail("take the controlling terminal"))?;
    dup2_stdin(&slave).map_err(fail("make stdin"))?;
    dup2_stdout(&slave).map_err(fail("make stdout"))?;
    dup2_stderr(&slave).map_err(fail("make stderr"))?;
    Ok(())
}
