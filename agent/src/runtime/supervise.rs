//! Waiting for the container's first process while passing signals on.

use nix::{
    sys::{
        signal::{SigSet, Signal, kill},
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::Pid,
};

use crate::sys::signal;

/// Signals sent to palisade that it passes on to the container.
pub(super) const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// The signals to block while supervising: those forwarded, and SIGCHLD,
/// which says the container's process has ended.
pub(super) fn signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// `si_code` of a signal raised by the kernel (e.g. a terminal's ^C, which
/// the container's process, in the same process group, receives itself).
const SI_KERNEL: i32 = 0x80;

/// Exit status for a process ended by `signal`, as shells report it.
pub(crate) fn signalled(signal: Signal) -> i32 {
    128 + signal as i32
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    Exited(i32),
    Signaled(Signal),
}

impl Ended {
    /// As shells report it: the exit status, or 128+N for signal N.
    pub(crate) fn status(self) -> i32 {
        match self {
            Ended::Exited(code) => code,
            Ended::Signaled(sig) => signalled(sig),
        }
    }
}

/// Blocks until `child` exits; returns how it ended. `signals` must be
/// blocked in the calling thread.
pub(crate) fn until_exit(child: Pid, signals: &SigSet) -> nix::Result<Ended> {
    loop {
        let received = signal::wait(signals)?;
        if received.signal != Signal::SIGCHLD {
            if received.code != SI_KERNEL {
                let _ = kill(child, received.signal);
            }
            continue;
        }
        match waitpid(child, Some(WaitPidFlag::WNOHANG))? {
            WaitStatus::Exited(_, code) => return Ok(Ended::Exited(code)),
            WaitStatus::Signaled(_, sig, _) => return Ok(Ended::Signaled(sig)),
            _ => continue,
        }
    }
}
