//! Task state beyond memory and files: resource limits, personality,
//! prctl flags, interval and POSIX timers, credentials and capabilities,
//! the alternate signal stack and queued signals.
//!
//! Dump reads what /proc and ptrace show from outside and the rest by
//! remote syscalls in the stopped task (into a scratch page); restore
//! writes it back by remote syscalls in the new task, credentials last
//! because every earlier step may need root. Process-wide state is
//! [`ProcessState`]; per-thread state is [`ThreadState`], dumped and
//! restored for one tid so it works for any thread. What cannot be
//! restored faithfully (seccomp filters, a parent-death signal) is
//! refused at dump time.

mod creds;

use serde::{Deserialize, Serialize};

pub use creds::Credentials;

use super::{
    CheckpointError, image, proc,
    remote::{Remote, RemoteError, Scratch},
};
use crate::sys::taskstate::{self, Limit, SIGINFO_SIZE};

const PR_GET_PDEATHSIG: u64 = 2;
const PR_GET_DUMPABLE: u64 = 3;
const PR_SET_DUMPABLE: u64 = 4;
const PR_SET_TIMERSLACK: u64 = 29;
const PR_GET_TIMERSLACK: u64 = 30;
const PR_SET_CHILD_SUBREAPER: u64 = 36;
const PR_GET_CHILD_SUBREAPER: u64 = 37;
const PR_SET_NO_NEW_PRIVS: u64 = 38;
/// Linux 6.17: timer_create takes the id preset in its timer_t argument.
const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;
const SS_DISABLE: i32 = 2;
const SS_ONSTACK: i32 = 1;
const RLIMIT_COUNT: u32 = 16;

// Offsets in the scratch page.
const S_OUT: u64 = 0;
pub(super) const S_IN: u64 = 512;
const S_ID: u64 = 1024;

/// Process-wide state (`Image.state`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ProcessState {
    /// Every resource limit, by RLIMIT_* number.
    pub rlimits: Vec<RLimit>,
    pub personality: u64,
    /// PR_GET_DUMPABLE.
    pub dumpable: u64,
    pub no_new_privs: bool,
    pub child_subreaper: bool,
    pub timer_slack_ns: u64,
    /// ITIMER_REAL/VIRTUAL/PROF that were armed.
    pub itimers: Vec<ITimer>,
    pub posix_timers: Vec<PosixTimer>,
    pub creds: Credentials,
    /// Signals queued for the whole process, oldest first.
    pub pending: Vec<Siginfo>,
    /// PR_SET_PDEATHSIG (restored only where the parent is restored too:
    /// not for a `--pid` tree's root).
    #[serde(default)]
    pub pdeathsig: i32,
    /// Seccomp filters in force (their programs cannot be read back).
    #[serde(default)]
    pub seccomp_filters: u32,
}

/// Per-thread state (`Image.thread` until images hold threads).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ThreadState {
    pub altstack: Option<AltStack>,
    /// Signals queued for this thread only, oldest first.
    pub pending: Vec<Siginfo>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct RLimit {
    pub resource: u32,
    pub soft: u64,
    pub hard: u64,
}

/// `struct itimerval`, in microseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct ITimer {
    pub which: u32,
    pub interval_us: u64,
    pub value_us: u64,
}

/// A POSIX timer as /proc/PID/timers and timer_gettime show it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct PosixTimer {
    pub id: i32,
    pub clock: i32,
    pub signal: i32,
    /// sigev_notify: SIGEV_SIGNAL, SIGEV_NONE, or'ed with SIGEV_THREAD_ID.
    pub notify: i32,
    /// The thread a SIGEV_THREAD_ID timer signals.
    pub tid: i32,
    pub value: u64,
    /// Remaining time and period, in nanoseconds (0: disarmed).
    pub remaining_ns: u64,
    pub interval_ns: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct AltStack {
    pub sp: u64,
    /// SS_AUTODISARM and the like (SS_ONSTACK is a state, not kept).
    pub flags: i32,
    pub size: u64,
}

/// A queued signal: its number and the whole raw siginfo (hex), sent
/// back as it was by rt_(tg)sigqueueinfo.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Siginfo {
    pub signal: i32,
    pub code: i32,
    pub raw: String,
}

fn word(b: &[u8], i: usize) -> u64 {
    u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
}

fn words(ws: &[u64]) -> Vec<u8> {
    ws.iter().flat_map(|w| w.to_ne_bytes()).collect()
}

/// Signals as the kernel's siginfo records give them (from
/// PTRACE_PEEKSIGINFO, or held back from a signal-delivery stop).
pub(super) fn siginfos(raw: Vec<[u8; SIGINFO_SIZE]>) -> Vec<Siginfo> {
    raw.into_iter()
        .map(|b| Siginfo {
            signal: i32::from_ne_bytes(b[0..4].try_into().expect("4 bytes")),
            code: i32::from_ne_bytes(b[8..12].try_into().expect("4 bytes")),
            raw: image::hex(&b),
        })
        .collect()
}

/// Reads the state of thread `r.pid` (stopped, with `scratch` mapped).
pub fn dump_thread(r: &mut Remote, scratch: &Scratch) -> Result<ThreadState, CheckpointError> {
    let tid = r.pid;
    let fail = |what: &str| {
        let what = what.to_string();
        move |e: RemoteError| CheckpointError::Process {
            pid: tid,
            what: format!("{what}: {e}"),
        }
    };
    let pending = taskstate::peek_siginfo(tid, false).map_err(CheckpointError::sys(
        tid,
        "PTRACE_PEEKSIGINFO (thread queue)",
    ))?;
    r.call(libc::SYS_sigaltstack, &[0, scratch.addr + S_OUT])
        .map_err(fail("remote sigaltstack"))?;
    let b = scratch.get(tid, S_OUT, 24).map_err(fail("sigaltstack"))?;
    let flags = i32::from_ne_bytes(b[8..12].try_into().expect("4 bytes"));
    let altstack = (flags & SS_DISABLE == 0).then(|| AltStack {
        sp: word(&b, 0),
        flags: flags & !SS_ONSTACK,
        size: word(&b, 2),
    });
    Ok(ThreadState {
        altstack,
        pending: siginfos(pending),
    })
}

/// Reads the process-wide state of `r.pid` (stopped, with `scratch`
/// mapped); refuses what restore could not reproduce.
pub fn dump_process(r: &mut Remote, scratch: &Scratch) -> Result<ProcessState, CheckpointError> {
    let pid = r.pid;
    let unsupported = |what: String| CheckpointError::Unsupported { pid, what };
    let fail = |what: String| {
        move |e: RemoteError| CheckpointError::Process {
            pid,
            what: format!("{what}: {e}"),
        }
    };
    let pending = taskstate::peek_siginfo(pid, true).map_err(CheckpointError::sys(
        pid,
        "PTRACE_PEEKSIGINFO (shared queue)",
    ))?;
    let status = std::fs::read_to_string(proc::path(pid, "status")).map_err(|e| {
        CheckpointError::Process {
            pid,
            what: format!("status: {e}"),
        }
    })?;
    let creds = creds::from_status(&status).ok_or_else(|| CheckpointError::Process {
        pid,
        what: "unparsable credentials in /proc/PID/status".into(),
    })?;
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
            .unwrap_or("0")
    };
    // Filters cannot be read back: only a container's own (palisade's,
    // made again from its policy) are restored; see the callers.
    if field("Seccomp:") == "1" {
        return Err(unsupported("seccomp strict mode".into()));
    }
    let seccomp_filters = field("Seccomp_filters:").parse().unwrap_or(0);
    // Read by the process itself: prlimit on another process whose
    // credentials differ from ours needs CAP_SYS_RESOURCE.
    let mut rlimits = Vec::new();
    for resource in 0..RLIMIT_COUNT {
        r.call(
            libc::SYS_prlimit64,
            &[0, resource.into(), 0, scratch.addr + S_OUT],
        )
        .map_err(fail(format!("remote prlimit64 {resource}")))?;
        let b = scratch
            .get(pid, S_OUT, 16)
            .map_err(fail("read rlimit".into()))?;
        rlimits.push(RLimit {
            resource,
            soft: word(&b, 0),
            hard: word(&b, 1),
        });
    }
    let mut prctl = |op: u64, what: &str| {
        r.call(libc::SYS_prctl, &[op, scratch.addr + S_OUT, 0, 0, 0])
            .map_err(fail(format!("remote prctl {what}")))
    };
    let dumpable = prctl(PR_GET_DUMPABLE, "PR_GET_DUMPABLE")?;
    let timer_slack_ns = prctl(PR_GET_TIMERSLACK, "PR_GET_TIMERSLACK")?;
    let securebits = prctl(creds::PR_GET_SECUREBITS, "PR_GET_SECUREBITS")? as u32;
    prctl(PR_GET_PDEATHSIG, "PR_GET_PDEATHSIG")?;
    let int = |r: &mut Remote| -> Result<i32, CheckpointError> {
        let b = scratch
            .get(r.pid, S_OUT, 4)
            .map_err(fail("read prctl result".into()))?;
        Ok(i32::from_ne_bytes(b[..4].try_into().expect("4 bytes")))
    };
    let pdeathsig = int(r)?;
    r.call(
        libc::SYS_prctl,
        &[PR_GET_CHILD_SUBREAPER, scratch.addr + S_OUT, 0, 0, 0],
    )
    .map_err(fail("remote prctl PR_GET_CHILD_SUBREAPER".into()))?;
    let child_subreaper = int(r)? != 0;
    let personality = r
        .call(libc::SYS_personality, &[0xffff_ffff])
        .map_err(fail("remote personality".into()))?;

    let mut itimers = Vec::new();
    for which in 0..3u32 {
        r.call(libc::SYS_getitimer, &[which.into(), scratch.addr + S_OUT])
            .map_err(fail(format!("remote getitimer {which}")))?;
        let b = scratch
            .get(pid, S_OUT, 32)
            .map_err(fail("read itimerval".into()))?;
        let us = |i: usize| word(&b, i) * 1_000_000 + word(&b, i + 1);
        if us(2) != 0 {
            itimers.push(ITimer {
                which,
                interval_us: us(0),
                value_us: us(2),
            });
        }
    }

    let text = std::fs::read_to_string(proc::path(pid, "timers")).map_err(|e| {
        CheckpointError::Process {
            pid,
            what: format!("timers: {e}"),
        }
    })?;
    let mut posix_timers =
        parse_timers(&text).map_err(|e| unsupported(format!("POSIX timer: {e}")))?;
    posix_timers.sort_by_key(|t| t.id);
    for t in &mut posix_timers {
        // A CPU-time clock of a given task encodes its pid: ~(clock >> 3).
        let owner = !(t.clock >> 3);
        if t.clock < 0 && owner != pid {
            return Err(unsupported(format!(
                "POSIX timer {} on the CPU clock of another task (pid {owner})",
                t.id
            )));
        }
        r.call(
            libc::SYS_timer_gettime,
            &[t.id as u64, scratch.addr + S_OUT],
        )
        .map_err(fail(format!("remote timer_gettime {}", t.id)))?;
        let b = scratch
            .get(pid, S_OUT, 32)
            .map_err(fail("read itimerspec".into()))?;
        t.interval_ns = word(&b, 0) * 1_000_000_000 + word(&b, 1);
        t.remaining_ns = word(&b, 2) * 1_000_000_000 + word(&b, 3);
    }

    Ok(ProcessState {
        rlimits,
        personality,
        dumpable,
        no_new_privs: field("NoNewPrivs:") == "1",
        child_subreaper,
        timer_slack_ns,
        itimers,
        posix_timers,
        creds: Credentials {
            securebits,
            ..creds
        },
        pending: siginfos(pending),
        pdeathsig,
        seccomp_filters,
    })
}

/// Parses /proc/PID/timers:
/// `ID: n`, `signal: SIG/VALUE`, `notify: KIND/pid.N` or `/tid.N`,
/// `ClockID: c`, one block per timer.
fn parse_timers(text: &str) -> Result<Vec<PosixTimer>, String> {
    let mut out: Vec<PosixTimer> = Vec::new();
    for line in text.lines() {
        let Some((key, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        let bad = || format!("unparsable line {line:?} of /proc/PID/timers");
        if key == "ID" {
            out.push(PosixTimer {
                id: v.parse().map_err(|_| bad())?,
                clock: 0,
                signal: 0,
                notify: 0,
                tid: 0,
                value: 0,
                remaining_ns: 0,
                interval_ns: 0,
            });
            continue;
        }
        let t = out.last_mut().ok_or_else(bad)?;
        match key {
            "signal" => {
                let (sig, val) = v.split_once('/').ok_or_else(bad)?;
                t.signal = sig.parse().map_err(|_| bad())?;
                t.value =
                    u64::from_str_radix(val.trim_start_matches("0x"), 16).map_err(|_| bad())?;
            }
            "notify" => {
                let (kind, target) = v.split_once('/').ok_or_else(bad)?;
                t.notify = match kind {
                    "signal" => libc::SIGEV_SIGNAL,
                    "none" => libc::SIGEV_NONE,
                    // The kernel treats SIGEV_THREAD like SIGEV_SIGNAL.
                    "thread" => libc::SIGEV_THREAD,
                    other => return Err(format!("timer {} notifies by {other:?}", t.id)),
                };
                let (scope, n) = target.split_once('.').ok_or_else(bad)?;
                if scope == "tid" {
                    t.notify |= libc::SIGEV_THREAD_ID;
                    t.tid = n.parse().map_err(|_| bad())?;
                }
            }
            "ClockID" => t.clock = v.parse().map_err(|_| bad())?,
            _ => {}
        }
    }
    Ok(out)
}

/// Restores the process-wide state and that of thread `r.pid` (its only
/// thread for now) in the new process, whose memory, files, sigactions
/// and mask are in place. Leaves every signal blocked so that the queued
/// ones stay queued through the remaining remote calls:
/// [`unblock`] sets the real mask just before the task is let go.
/// Credentials go last.
pub fn restore(r: &mut Remote, state: &ProcessState, thread: &ThreadState) -> Result<(), String> {
    let pid = r.pid;
    let busy: Vec<(u64, u64)> = proc::maps(pid)
        .map_err(|e| format!("maps: {e}"))?
        .iter()
        .map(|m| (m.start, m.end))
        .collect();
    let scratch = Scratch::map(r, &busy).map_err(|e| format!("map a scratch page: {e}"))?;
    let result = restore_with(r, &scratch, state, thread);
    let unmapped = scratch
        .unmap(r)
        .map_err(|e| format!("unmap the scratch page: {e}"));
    result.and(unmapped)
}

/// Restores thread `r.pid`, not the main one, of process `tgid`: its own
/// state and the process's credentials (the kernel keeps them per
/// thread: each thread gets them itself). Like [`restore`], it leaves
/// every signal blocked until [`unblock`].
pub fn restore_other_thread(
    r: &mut Remote,
    tgid: i32,
    state: &ProcessState,
    thread: &ThreadState,
) -> Result<(), String> {
    let busy: Vec<(u64, u64)> = proc::maps(r.pid)
        .map_err(|e| format!("maps: {e}"))?
        .iter()
        .map(|m| (m.start, m.end))
        .collect();
    let scratch = Scratch::map(r, &busy).map_err(|e| format!("map a scratch page: {e}"))?;
    let result = taskstate::set_sigmask(r.pid, u64::MAX)
        .map_err(|e| format!("PTRACE_SETSIGMASK: {e}"))
        .and_then(|()| restore_thread(r, &scratch, tgid, thread))
        .and_then(|()| creds::restore(r, &scratch, &state.creds));
    let unmapped = scratch
        .unmap(r)
        .map_err(|e| format!("unmap the scratch page: {e}"));
    result.and(unmapped)
}

/// The last step before the registers: the blocked mask the task had.
pub fn unblock(pid: i32, sigmask: u64) -> Result<(), String> {
    taskstate::set_sigmask(pid, sigmask).map_err(|e| format!("PTRACE_SETSIGMASK: {e}"))
}

fn restore_with(
    r: &mut Remote,
    s: &Scratch,
    state: &ProcessState,
    thread: &ThreadState,
) -> Result<(), String> {
    let pid = r.pid;
    let e = |what: String| move |err: RemoteError| format!("{what}: {err}");
    taskstate::set_sigmask(pid, u64::MAX).map_err(|e| format!("PTRACE_SETSIGMASK: {e}"))?;

    r.call(libc::SYS_personality, &[state.personality])
        .map_err(e(format!("personality {:#x}", state.personality)))?;
    r.call(
        libc::SYS_prctl,
        &[PR_SET_TIMERSLACK, state.timer_slack_ns, 0, 0, 0],
    )
    .map_err(e("PR_SET_TIMERSLACK".into()))?;
    r.call(
        libc::SYS_prctl,
        &[
            PR_SET_CHILD_SUBREAPER,
            state.child_subreaper.into(),
            0,
            0,
            0,
        ],
    )
    .map_err(e("PR_SET_CHILD_SUBREAPER".into()))?;
    if state.no_new_privs {
        r.call(libc::SYS_prctl, &[PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0])
            .map_err(e("PR_SET_NO_NEW_PRIVS".into()))?;
    }

    for t in &state.itimers {
        let split = |us: u64| [us / 1_000_000, us % 1_000_000];
        let val = words(&[split(t.interval_us), split(t.value_us)].concat());
        let p = s.put(pid, S_IN, &val).map_err(e("itimerval".into()))?;
        r.call(libc::SYS_setitimer, &[t.which.into(), p, 0])
            .map_err(e(format!("setitimer {}", t.which)))?;
    }

    if !state.posix_timers.is_empty() {
        r.call(
            libc::SYS_prctl,
            &[PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0],
        )
        .map_err(e(
            "prctl PR_TIMER_CREATE_RESTORE_IDS (Linux 6.17 or later is needed to restore POSIX timer ids)".into(),
        ))?;
        let created = posix_timers(r, s, &state.posix_timers);
        let off = r
            .call(libc::SYS_prctl, &[PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0])
            .map_err(e("prctl PR_TIMER_CREATE_RESTORE_IDS off".into()));
        created.and(off)?;
    }

    restore_thread(r, s, pid, thread)?;
    // rt_sigqueueinfo lets a task give any si_code only to its own
    // process, as seen from the thread whose tid is the pid: r.pid here.
    for sig in &state.pending {
        let p = s
            .put(pid, S_IN, &siginfo_bytes(sig)?)
            .map_err(e("siginfo".into()))?;
        r.call(
            libc::SYS_rt_sigqueueinfo,
            &[pid as u64, sig.signal as u64, p],
        )
        .map_err(e(format!("queue signal {} (shared)", sig.signal)))?;
    }

    for l in &state.rlimits {
        let limit = Limit {
            soft: l.soft,
            hard: l.hard,
        };
        taskstate::set_rlimit(pid, l.resource, limit).map_err(|err| {
            format!(
                "prlimit {} to {limit:?}: {}{}",
                l.resource,
                err.desc(),
                if err == nix::errno::Errno::EPERM {
                    " (raising a hard limit above the restorer's needs CAP_SYS_RESOURCE)"
                } else {
                    ""
                }
            )
        })?;
    }
    creds::restore(r, s, &state.creds)?;
    // A change of credentials resets dumpable (to fs.suid_dumpable), so
    // it comes after; prctl takes 0 and 1 only, 2 comes from the sysctl.
    let dumpable = r
        .call(libc::SYS_prctl, &[PR_GET_DUMPABLE, 0, 0, 0, 0])
        .map_err(e("PR_GET_DUMPABLE".into()))?;
    if dumpable != state.dumpable {
        r.call(libc::SYS_prctl, &[PR_SET_DUMPABLE, state.dumpable, 0, 0, 0])
            .map_err(e(format!("PR_SET_DUMPABLE {}", state.dumpable)))?;
    }
    // A change of credentials clears it too.
    if state.pdeathsig != 0 {
        r.call(
            libc::SYS_prctl,
            &[
                libc::PR_SET_PDEATHSIG as u64,
                state.pdeathsig as u64,
                0,
                0,
                0,
            ],
        )
        .map_err(e(format!("PR_SET_PDEATHSIG {}", state.pdeathsig)))?;
    }
    Ok(())
}

fn posix_timers(r: &mut Remote, s: &Scratch, timers: &[PosixTimer]) -> Result<(), String> {
    let pid = r.pid;
    let e = |what: String| move |err: RemoteError| format!("{what}: {err}");
    for t in timers {
        // struct sigevent: value, signo, notify, tid; 64 bytes.
        let mut ev = [0u8; 64];
        ev[0..8].copy_from_slice(&t.value.to_ne_bytes());
        ev[8..12].copy_from_slice(&t.signal.to_ne_bytes());
        ev[12..16].copy_from_slice(&t.notify.to_ne_bytes());
        ev[16..20].copy_from_slice(&t.tid.to_ne_bytes());
        let evp = s.put(pid, S_IN, &ev).map_err(e("sigevent".into()))?;
        let idp = s
            .put(pid, S_ID, &t.id.to_ne_bytes())
            .map_err(e("timer id".into()))?;
        r.call(libc::SYS_timer_create, &[t.clock as u64, evp, idp])
            .map_err(e(format!("timer_create with id {}", t.id)))?;
        let got = s.get(pid, S_ID, 4).map_err(e("timer id".into()))?;
        let got = i32::from_ne_bytes(got[..4].try_into().expect("4 bytes"));
        if got != t.id {
            return Err(format!("timer_create gave id {got}, not {}", t.id));
        }
        if t.remaining_ns != 0 {
            let ns = |v: u64| [v / 1_000_000_000, v % 1_000_000_000];
            let spec = words(&[ns(t.interval_ns), ns(t.remaining_ns)].concat());
            let p = s.put(pid, S_IN, &spec).map_err(e("itimerspec".into()))?;
            r.call(libc::SYS_timer_settime, &[t.id as u64, 0, p, 0])
                .map_err(e(format!("timer_settime {}", t.id)))?;
        }
    }
    Ok(())
}

fn siginfo_bytes(sig: &Siginfo) -> Result<Vec<u8>, String> {
    image::unhex(&sig.raw)
        .filter(|b| b.len() == SIGINFO_SIZE)
        .ok_or_else(|| {
            format!(
                "siginfo of signal {} is not {SIGINFO_SIZE} hex bytes",
                sig.signal
            )
        })
}

/// Restores thread `r.pid` of process `tgid`: its alternate stack and
/// its own queued signals (sent to itself, which any si_code allows).
pub fn restore_thread(
    r: &mut Remote,
    s: &Scratch,
    tgid: i32,
    thread: &ThreadState,
) -> Result<(), String> {
    let tid = r.pid;
    let e = |what: String| move |err: RemoteError| format!("{what}: {err}");
    if let Some(a) = thread.altstack {
        let mut b = [0u8; 24];
        b[0..8].copy_from_slice(&a.sp.to_ne_bytes());
        b[8..12].copy_from_slice(&a.flags.to_ne_bytes());
        b[16..24].copy_from_slice(&a.size.to_ne_bytes());
        let p = s.put(tid, S_IN, &b).map_err(e("stack_t".into()))?;
        r.call(libc::SYS_sigaltstack, &[p, 0])
            .map_err(e(format!("sigaltstack at {:#x}", a.sp)))?;
    }
    for sig in &thread.pending {
        let p = s
            .put(tid, S_IN, &siginfo_bytes(sig)?)
            .map_err(e("siginfo".into()))?;
        r.call(
            libc::SYS_rt_tgsigqueueinfo,
            &[tgid as u64, tid as u64, sig.signal as u64, p],
        )
        .map_err(e(format!("queue signal {} (thread {tid})", sig.signal)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_timers() {
        let text = "ID: 2\nsignal: 36/0000000000000309\nnotify: signal/pid.77\nClockID: 1\n\
                    ID: 5\nsignal: 37/00000000000000ff\nnotify: signal/tid.78\nClockID: 0\n";
        let t = parse_timers(text).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].id, t[0].signal, t[0].value, t[0].clock),
            (2, 36, 0x309, 1)
        );
        assert_eq!(t[0].notify, libc::SIGEV_SIGNAL);
        assert_eq!(t[1].notify, libc::SIGEV_SIGNAL | libc::SIGEV_THREAD_ID);
        assert_eq!(t[1].tid, 78);
        let err =
            parse_timers("ID: 1\nsignal: 14/0\nnotify: pigeon/pid.3\nClockID: 1\n").unwrap_err();
        assert!(err.contains("\"pigeon\""), "{err}");
    }
}
