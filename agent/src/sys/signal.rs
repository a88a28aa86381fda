//! Synchronous signal handling: the CLI blocks the signals it forwards and
//! collects them with `sigwaitinfo`, so no handler runs concurrently.

use std::mem::MaybeUninit;

use nix::{
    errno::Errno,
    sys::signal::{SigSet, Signal},
};

/// A signal taken from the pending set, with who sent it.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub signal: Signal,
    /// `si_code`: `SI_USER` (0) for kill(2), `SI_KERNEL` (0x80) for signals
    /// the kernel raised itself, such as a terminal's ^C.
    pub code: i32,
}

/// Waits for one of the (blocked) signals in `set`.
pub fn wait(set: &SigSet) -> nix::Result<Received> {
    let mut info = MaybeUninit::<libc::siginfo_t>::uninit();
    loop {
        // SAFETY: `set` is a valid sigset_t and `info` points to writable
        // memory of the right size; the kernel fills it on success.
        let rc = unsafe { libc::sigwaitinfo(set.as_ref(), info.as_mut_ptr()) };
        if rc < 0 {
            match Errno::last() {
                Errno::EINTR => continue,
                e => return Err(e),
            }
        }
        // SAFETY: sigwaitinfo succeeded, so `info` is initialised.
        let info = unsafe { info.assume_init() };
        let signal = Signal::try_from(rc)?;
        return Ok(Received {
            signal,
            code: info.si_code,
        });
    }
}

/// Runs `f` with SIGINT, SIGTERM, SIGHUP and SIGQUIT held back: one that
/// arrives meanwhile (Ctrl-C) is delivered once `f` has returned, so a
/// step that must not be cut in the middle (a tree stopped and altered
/// by remote calls) finishes first.
pub fn holding_interrupts<T>(f: impl FnOnce() -> T) -> T {
    use nix::sys::signal::{SigmaskHow, sigprocmask};
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        set.add(s);
    }
    let mut old = SigSet::empty();
    let held = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)).is_ok();
    let out = f();
    if held {
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    }
    out
}
