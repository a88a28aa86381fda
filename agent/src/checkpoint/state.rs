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
mod inventory;

use serde::{Deserialize, Serialize};

pub use creds::Credentials;

use super::{
    CheckpointError, StepError, StepResult, image, proc,
    remote::{Remote, Scratch},
};
use crate::sys::{
    ptrace,
    taskstate::{self, Limit, SIGINFO_SIZE},
};

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
const PR_GET_TSC: u64 = 25;
const PR_SET_TSC: u64 = 26;
const PR_TSC_ENABLE: u64 = 1;
const PR_MCE_KILL: u64 = 33;
const PR_MCE_KILL_GET: u64 = 34;
const PR_MCE_KILL_SET: u64 = 1;
const PR_MCE_KILL_DEFAULT: u64 = 2;
const PR_SET_THP_DISABLE: u64 = 41;
const PR_GET_THP_DISABLE: u64 = 42;
const PR_SCHED_CORE: u64 = 62;
const PR_SCHED_CORE_GET: u64 = 0;
const PR_SET_MDWE: u64 = 65;
const PR_GET_MDWE: u64 = 66;
const PR_GET_MEMORY_MERGE: u64 = 68;
const IOPRIO_WHO_PROCESS: u64 = 1;
const SCHED_DEADLINE: u32 = 6;
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
    /// The file mode creation mask (none in images made before it was
    /// recorded).
    #[serde(default)]
    pub umask: Option<u32>,
    /// /proc/PID/oom_score_adj.
    #[serde(default)]
    pub oom_score_adj: i32,
    /// PR_SET_THP_DISABLE.
    #[serde(default)]
    pub thp_disable: bool,
    /// PR_SET_TSC: 1 enabled (the default), 2 SIGSEGV on rdtsc.
    #[serde(default = "tsc_enabled")]
    pub tsc: u64,
    /// PR_SET_MDWE flags (memory-deny-write-execute).
    #[serde(default)]
    pub mdwe: u64,
    /// PR_MCE_KILL policy (2: the system default).
    #[serde(default = "mce_default")]
    pub mce_kill: u64,
    /// In a group stop (SIGSTOP, SIGTSTP…) when it was checkpointed:
    /// restored stopped.
    #[serde(default)]
    pub stopped: bool,
    /// SECCOMP_MODE_STRICT (in every thread).
    #[serde(default)]
    pub seccomp_strict: bool,
    /// The seccomp filters (shared by every thread), oldest first, read
    /// back with PTRACE_SECCOMP_GET_FILTER.
    #[serde(default)]
    pub seccomp_programs: Vec<SeccompProgram>,
}

/// One seccomp filter: its SECCOMP_FILTER_FLAG_* and its classic BPF
/// program (hex of the struct sock_filter array).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeccompProgram {
    pub flags: u64,
    pub code: String,
}

fn tsc_enabled() -> u64 {
    PR_TSC_ENABLE
}

fn mce_default() -> u64 {
    PR_MCE_KILL_DEFAULT
}

/// Per-thread state (`Image.thread` until images hold threads).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ThreadState {
    pub altstack: Option<AltStack>,
    /// Signals queued for this thread only, oldest first.
    pub pending: Vec<Siginfo>,
    /// CPU affinity (`Cpus_allowed_list`); empty in older images.
    #[serde(default)]
    pub cpus: String,
    /// Scheduling: nice, policy (SCHED_OTHER, FIFO, RR, BATCH, IDLE) and
    /// real-time priority.
    #[serde(default)]
    pub nice: i32,
    #[serde(default)]
    pub policy: u32,
    #[serde(default)]
    pub rt_priority: u32,
    /// ioprio_get(IOPRIO_WHO_PROCESS) of the thread; none in older images.
    #[serde(default)]
    pub ioprio: Option<u64>,
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
    let fail = |what: &str| CheckpointError::remote(tid, what.to_string());
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
    let ioprio = r
        .call(libc::SYS_ioprio_get, &[IOPRIO_WHO_PROCESS, 0])
        .map_err(fail("remote ioprio_get"))?;
    let (cpus, nice, policy, rt_priority) = task_inventory(tid, tid)?;
    Ok(ThreadState {
        altstack,
        pending: siginfos(pending),
        cpus,
        nice,
        policy,
        rt_priority,
        ioprio: Some(ioprio),
    })
}

/// Checks thread `tid` of `pid` against the inventory (its status and
/// stat flags) and returns its affinity and scheduling.
fn task_inventory(pid: i32, tid: i32) -> Result<(String, i32, u32, u32), CheckpointError> {
    let unsupported = |what: String| CheckpointError::Unsupported { pid: tid, what };
    let path = proc::path(pid, &format!("task/{tid}/status"));
    let status =
        std::fs::read_to_string(&path).map_err(CheckpointError::file(tid, "read", &path))?;
    let own = std::fs::read_to_string("/proc/thread-self/status").map_err(
        CheckpointError::file(tid, "read our own", "/proc/thread-self/status"),
    )?;
    inventory::check_status(&status, &own).map_err(CheckpointError::step(tid))?;
    let stat = proc::Stat::read_task(pid, tid).map_err(CheckpointError::file(
        tid,
        "read",
        proc::path(pid, &format!("task/{tid}/stat")),
    ))?;
    inventory::check_stat_flags(stat.field(9)).map_err(CheckpointError::step(tid))?;
    let policy = stat.field(41) as u32;
    if policy == SCHED_DEADLINE {
        return Err(unsupported("SCHED_DEADLINE scheduling".into()));
    }
    let cpus = inventory::status_value(&status, "Cpus_allowed_list")
        .unwrap_or_default()
        .to_string();
    Ok((cpus, stat.field(19) as i32, policy, stat.field(40) as u32))
}

/// Reads the process-wide state of `r.pid` (stopped, with `scratch`
/// mapped); refuses what restore could not reproduce.
pub fn dump_process(r: &mut Remote, scratch: &Scratch) -> Result<ProcessState, CheckpointError> {
    let pid = r.pid;
    let unsupported = |what: String| CheckpointError::Unsupported { pid, what };
    let fail = |what: String| CheckpointError::remote(pid, what);
    let pending = taskstate::peek_siginfo(pid, true).map_err(CheckpointError::sys(
        pid,
        "PTRACE_PEEKSIGINFO (shared queue)",
    ))?;
    let status = std::fs::read_to_string(proc::path(pid, "status")).map_err(
        CheckpointError::file(pid, "read", proc::path(pid, "status")),
    )?;
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
    // Seccomp: the task was seized with PTRACE_O_SUSPEND_SECCOMP (see
    // dump::freeze), so no injected call is filtered or killed.
    let seccomp_strict = field("Seccomp:") == "1";
    let seccomp_filters: u32 = field("Seccomp_filters:").parse().unwrap_or(0);
    let seccomp_programs = seccomp_programs(pid, seccomp_filters)?;
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

    let text = std::fs::read_to_string(proc::path(pid, "timers")).map_err(
        CheckpointError::file(pid, "read", proc::path(pid, "timers")),
    )?;
    let mut posix_timers =
        parse_timers(&text).map_err(|e| CheckpointError::step(pid)(e.at("POSIX timer")))?;
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

    // The rest of the prctl inventory: each either restored or refused.
    let mut get = |op: u64, what: &str| {
        r.call(libc::SYS_prctl, &[op, 0, 0, 0, 0])
            .map_err(fail(format!("remote prctl {what}")))
    };
    let thp_disable = get(PR_GET_THP_DISABLE, "PR_GET_THP_DISABLE")? != 0;
    let mce_kill = get(PR_MCE_KILL_GET, "PR_MCE_KILL_GET")?;
    // Older kernels: EINVAL, and the setting does not exist.
    let older = |v: Result<u64, CheckpointError>| match v {
        Err(CheckpointError::Step { source, .. })
            if source.errno() == Some(nix::errno::Errno::EINVAL) =>
        {
            Ok(0)
        }
        other => other,
    };
    let mdwe = older(get(PR_GET_MDWE, "PR_GET_MDWE"))?;
    if older(get(PR_GET_MEMORY_MERGE, "PR_GET_MEMORY_MERGE"))? != 0 {
        return Err(unsupported(
            "KSM merging of its whole memory (PR_SET_MEMORY_MERGE needs CAP_SYS_RESOURCE to restore)".into(),
        ));
    }
    let cookie = r.call(
        libc::SYS_prctl,
        &[PR_SCHED_CORE, PR_SCHED_CORE_GET, 0, 0, scratch.addr + S_OUT],
    );
    if cookie.is_ok() {
        let b = scratch
            .get(pid, S_OUT, 8)
            .map_err(fail("read the core scheduling cookie".into()))?;
        if word(&b, 0) != 0 {
            return Err(unsupported(
                "a core scheduling cookie (PR_SCHED_CORE)".into(),
            ));
        }
    }
    r.call(
        libc::SYS_prctl,
        &[PR_GET_TSC, scratch.addr + S_OUT, 0, 0, 0],
    )
    .map_err(fail("remote prctl PR_GET_TSC".into()))?;
    let tsc = u64::from(int(r)? as u32);
    let umask = inventory::status_value(&status, "Umask")
        .and_then(|u| u32::from_str_radix(u, 8).ok())
        .ok_or_else(|| CheckpointError::Process {
            pid,
            what: "no Umask in /proc/PID/status".into(),
        })?;
    let oom_score_adj = std::fs::read_to_string(proc::path(pid, "oom_score_adj"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| CheckpointError::Process {
            pid,
            what: "unreadable /proc/PID/oom_score_adj".into(),
        })?;

    Ok(ProcessState {
        umask: Some(umask),
        oom_score_adj,
        thp_disable,
        tsc,
        mdwe,
        mce_kill,
        // Known before the task was seized (see dump::freeze).
        stopped: false,
        seccomp_strict,
        seccomp_programs,
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

/// Reads the `count` seccomp filters of process `pid` (oldest first) and
/// checks every thread has the same mode and filters.
fn seccomp_programs(pid: i32, count: u32) -> Result<Vec<SeccompProgram>, CheckpointError> {
    let unsupported = |what: String| CheckpointError::Unsupported { pid, what };
    let read = |tid: i32| -> Result<Vec<SeccompProgram>, CheckpointError> {
        let mut out = Vec::new();
        for index in (0..u64::from(count)).rev() {
            let (code, flags) =
                ptrace::seccomp_filter(tid, index).map_err(CheckpointError::sys(
                    tid,
                    "PTRACE_SECCOMP_GET_FILTER (reading seccomp filters needs CAP_SYS_ADMIN)",
                ))?;
            const SECCOMP_FILTER_FLAG_NEW_LISTENER: u64 = 8;
            if flags & SECCOMP_FILTER_FLAG_NEW_LISTENER != 0 {
                return Err(unsupported(
                    "a seccomp filter with a user notification listener (its supervisor is another process)"
                        .into(),
                ));
            }
            out.push(SeccompProgram {
                flags,
                code: image::hex(&code),
            });
        }
        Ok(out)
    };
    let mine = read(pid)?;
    let status = |tid: i32, key: &str| {
        std::fs::read_to_string(proc::path(pid, &format!("task/{tid}/status")))
            .ok()
            .and_then(|s| inventory::status_value(&s, key).map(str::to_string))
    };
    for tid in proc::tids(pid).into_iter().filter(|t| *t != pid) {
        let same = status(tid, "Seccomp") == status(pid, "Seccomp")
            && status(tid, "Seccomp_filters") == status(pid, "Seccomp_filters")
            && (count == 0 || read(tid)? == mine);
        if !same {
            return Err(unsupported(format!(
                "thread {tid} has other seccomp filters or mode than its process (per-thread seccomp)"
            )));
        }
    }
    Ok(mine)
}

/// Parses /proc/PID/timers:
/// `ID: n`, `signal: SIG/VALUE`, `notify: KIND/pid.N` or `/tid.N`,
/// `ClockID: c`, one block per timer.
fn parse_timers(text: &str) -> StepResult<Vec<PosixTimer>> {
    let mut out: Vec<PosixTimer> = Vec::new();
    for line in text.lines() {
        let Some((key, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        let bad =
            || StepError::Unsupported(format!("unparsable line {line:?} of /proc/PID/timers"));
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
                    other => {
                        return Err(StepError::Unsupported(format!(
                            "timer {} notifies by {other:?}",
                            t.id
                        )));
                    }
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
pub fn restore(r: &mut Remote, state: &ProcessState, thread: &ThreadState) -> StepResult<()> {
    let pid = r.pid;
    let scratch = map_scratch(r)?;
    let result = restore_with(r, &scratch, state, thread);
    let unmapped = scratch
        .unmap(r)
        .map_err(StepError::remote(pid, "unmap the scratch page"));
    result.and(unmapped)
}

/// A scratch page in task `r.pid`, where it has nothing mapped.
fn map_scratch(r: &mut Remote) -> StepResult<Scratch> {
    let pid = r.pid;
    let busy: Vec<(u64, u64)> = proc::maps(pid)
        .map_err(StepError::file("read", proc::path(pid, "maps")))?
        .iter()
        .map(|m| (m.start, m.end))
        .collect();
    Scratch::map(r, &busy).map_err(StepError::remote(pid, "map a scratch page"))
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
) -> StepResult<()> {
    let pid = r.pid;
    let scratch = map_scratch(r)?;
    let result = taskstate::set_sigmask(pid, u64::MAX)
        .map_err(StepError::task(pid, "PTRACE_SETSIGMASK"))
        .and_then(|()| restore_thread(r, &scratch, tgid, thread))
        .and_then(|()| creds::restore(r, &scratch, &state.creds));
    let unmapped = scratch
        .unmap(r)
        .map_err(StepError::remote(pid, "unmap the scratch page"));
    result.and(unmapped)
}

/// The last step before the registers: the blocked mask the task had.
pub fn unblock(pid: i32, sigmask: u64) -> StepResult<()> {
    taskstate::set_sigmask(pid, sigmask).map_err(StepError::task(pid, "PTRACE_SETSIGMASK"))
}

fn restore_with(
    r: &mut Remote,
    s: &Scratch,
    state: &ProcessState,
    thread: &ThreadState,
) -> StepResult<()> {
    let pid = r.pid;
    let e = |what: String| StepError::remote(pid, what);
    taskstate::set_sigmask(pid, u64::MAX).map_err(StepError::task(pid, "PTRACE_SETSIGMASK"))?;

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
    if let Some(umask) = state.umask {
        r.call(libc::SYS_umask, &[umask.into()])
            .map_err(e(format!("umask {umask:o}")))?;
    }
    if state.thp_disable {
        r.call(libc::SYS_prctl, &[PR_SET_THP_DISABLE, 1, 0, 0, 0])
            .map_err(e("PR_SET_THP_DISABLE".into()))?;
    }
    if state.tsc != PR_TSC_ENABLE {
        r.call(libc::SYS_prctl, &[PR_SET_TSC, state.tsc, 0, 0, 0])
            .map_err(e(format!("PR_SET_TSC {}", state.tsc)))?;
    }
    if state.mce_kill != PR_MCE_KILL_DEFAULT {
        r.call(
            libc::SYS_prctl,
            &[PR_MCE_KILL, PR_MCE_KILL_SET, state.mce_kill, 0, 0],
        )
        .map_err(e(format!("PR_MCE_KILL {}", state.mce_kill)))?;
    }
    set_oom_score_adj(pid, state.oom_score_adj)?;

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
            let e = StepError::task(pid, format!("prlimit {} to {limit:?}", l.resource))(err);
            if err == nix::errno::Errno::EPERM {
                e.hint("raising a hard limit above the restorer's needs CAP_SYS_RESOURCE")
            } else {
                e
            }
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
    // Last: it forbids making memory executable from then on.
    if state.mdwe != 0 {
        r.call(libc::SYS_prctl, &[PR_SET_MDWE, state.mdwe, 0, 0, 0])
            .map_err(e(format!("PR_SET_MDWE {:#x}", state.mdwe)))?;
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

/// Writes /proc/PID/oom_score_adj of the new process, if it differs
/// from what it inherited (lowering it needs CAP_SYS_RESOURCE).
fn set_oom_score_adj(pid: i32, value: i32) -> StepResult<()> {
    let file = proc::path(pid, "oom_score_adj");
    let now: Option<i32> = std::fs::read_to_string(&file)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    if now == Some(value) {
        return Ok(());
    }
    std::fs::write(&file, value.to_string()).map_err(|err| {
        let denied = err.raw_os_error() == Some(libc::EACCES);
        let e = StepError::file(format!("write {value} to"), &file)(err);
        if denied {
            e.hint("lowering it below the restorer's needs CAP_SYS_RESOURCE")
        } else {
            e
        }
    })
}

/// A thread's affinity, scheduling and I/O priority, by remote calls in
/// the thread itself, each only where it differs from what it inherited.
fn restore_scheduling(r: &mut Remote, s: &Scratch, thread: &ThreadState) -> StepResult<()> {
    let tid = r.pid;
    let e = |what: String| StepError::remote(tid, format!("thread {tid}: {what}"));
    if !thread.cpus.is_empty() {
        let mask = inventory::cpu_mask(&thread.cpus).ok_or_else(|| {
            StepError::Image(format!("thread {tid}: bad CPU list {:?}", thread.cpus))
        })?;
        let p = s.put(tid, S_IN, &mask).map_err(e("cpu mask".into()))?;
        r.call(libc::SYS_sched_setaffinity, &[0, mask.len() as u64, p])
            .map_err(e(format!("sched_setaffinity {}", thread.cpus)))?;
    }
    if thread.policy != 0 || thread.rt_priority != 0 {
        let p = s
            .put(tid, S_IN, &thread.rt_priority.to_ne_bytes())
            .map_err(e("sched_param".into()))?;
        r.call(libc::SYS_sched_setscheduler, &[0, thread.policy.into(), p])
            .map_err(e(format!(
                "sched_setscheduler policy {} priority {}",
                thread.policy, thread.rt_priority
            )))?;
    }
    r.call(
        libc::SYS_setpriority,
        &[libc::PRIO_PROCESS as u64, 0, thread.nice as i64 as u64],
    )
    .map_err(e(format!("setpriority nice {}", thread.nice)))?;
    if let Some(want) = thread.ioprio {
        let now = r
            .call(libc::SYS_ioprio_get, &[IOPRIO_WHO_PROCESS, 0])
            .map_err(e("ioprio_get".into()))?;
        if now != want {
            r.call(libc::SYS_ioprio_set, &[IOPRIO_WHO_PROCESS, 0, want])
                .map_err(e(format!("ioprio_set {want:#x}")))?;
        }
    }
    Ok(())
}

fn posix_timers(r: &mut Remote, s: &Scratch, timers: &[PosixTimer]) -> StepResult<()> {
    let pid = r.pid;
    let e = |what: String| StepError::remote(pid, what);
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
            return Err(StepError::failed(format!(
                "timer_create gave id {got}, not {}",
                t.id
            )));
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

fn siginfo_bytes(sig: &Siginfo) -> StepResult<Vec<u8>> {
    image::unhex(&sig.raw)
        .filter(|b| b.len() == SIGINFO_SIZE)
        .ok_or_else(|| {
            StepError::Image(format!(
                "siginfo of signal {} is not {SIGINFO_SIZE} hex bytes",
                sig.signal
            ))
        })
}

/// Restores thread `r.pid` of process `tgid`: its alternate stack and
/// its own queued signals (sent to itself, which any si_code allows).
pub fn restore_thread(
    r: &mut Remote,
    s: &Scratch,
    tgid: i32,
    thread: &ThreadState,
) -> StepResult<()> {
    let tid = r.pid;
    let e = |what: String| StepError::remote(tid, what);
    restore_scheduling(r, s, thread)?;
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
        assert!(err.to_string().contains("\"pigeon\""), "{err}");
    }
}
