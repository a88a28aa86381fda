//! Reporting a refusal (or, in audit mode, a would-be refusal): a counter
//! that always counts, and an event in the `EVENTS` ring buffer, rate
//! limited per container and CPU so a flood cannot starve the reader
//! (what the limit or a full buffer drops is counted too).

use aya_ebpf::helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns};
use palisade_common::{Counters, EVENT_AUDITED, EVENTS_PER_SECOND, Event, HOOKS, RateWindow};

use crate::maps::{COUNTERS, EVENTS, RATE};

const SECOND_NS: u64 = 1_000_000_000;

/// What was refused, for one report.
pub struct Refusal {
    pub cgroup: u64,
    pub hook: u32,
    /// [`palisade_common::EVENT_DENIED`] or [`EVENT_AUDITED`].
    pub verdict: u8,
    pub family: u32,
    pub addr: [u32; 4],
    pub port: u16,
    pub proto: u8,
    /// The calling task is the one responsible (not for packets).
    pub task: bool,
}

#[inline(always)]
pub fn report(r: &Refusal) {
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let counters = counters(r.cgroup);
    if let Some(c) = counters {
        // SAFETY: a non-null per-CPU map value, only this CPU's copy, and
        // programs do not migrate while they run.
        unsafe {
            if r.verdict == EVENT_AUDITED {
                (*c).audited += 1;
            } else if (r.hook as usize) < HOOKS {
                (*c).denied[r.hook as usize] += 1;
            }
        }
    }
    if !within_rate(r.cgroup, now) {
        if let Some(c) = counters {
            // SAFETY: as above.
            unsafe { (*c).events_dropped += 1 };
        }
        return;
    }
    let (pid, comm) = if r.task {
        (
            (bpf_get_current_pid_tgid() >> 32) as u32,
            bpf_get_current_comm().unwrap_or([0; 16]),
        )
    } else {
        (0, [0; 16])
    };
    let event = Event {
        time_ns: now,
        cgroup: r.cgroup,
        pid,
        hook: r.hook,
        proto: r.proto,
        verdict: r.verdict,
        family: r.family as u8,
        _pad: 0,
        port: r.port,
        _pad2: 0,
        addr: r.addr,
        comm,
    };
    if EVENTS.output::<Event>(&event, 0).is_err()
        && let Some(c) = counters
    {
        // SAFETY: as above.
        unsafe { (*c).events_dropped += 1 };
    }
}

/// This CPU's counters of `cgroup`, created on first use.
#[inline(always)]
fn counters(cgroup: u64) -> Option<*mut Counters> {
    if let Some(c) = COUNTERS.get_ptr_mut(cgroup) {
        return Some(c);
    }
    let _ = COUNTERS.insert(cgroup, Counters::default(), 0);
    COUNTERS.get_ptr_mut(cgroup)
}

/// True if `cgroup` may emit one more event this second (on this CPU).
#[inline(always)]
fn within_rate(cgroup: u64, now: u64) -> bool {
    let Some(w) = RATE.get_ptr_mut(cgroup) else {
        return RATE
            .insert(
                cgroup,
                RateWindow {
                    start_ns: now,
                    count: 1,
                },
                0,
            )
            .is_ok();
    };
    // SAFETY: a non-null per-CPU map value, this CPU's copy only.
    unsafe {
        if now.wrapping_sub((*w).start_ns) >= SECOND_NS {
            (*w).start_ns = now;
            (*w).count = 0;
        }
        (*w).count += 1;
        (*w).count <= EVENTS_PER_SECOND
    }
}

/// Turns a decision into the program's return value (1 pass, 0 refuse),
/// reporting a refusal or an audit hit on the way.
#[inline(always)]
pub fn conclude(decision: i32, mut r: Refusal) -> i32 {
    if decision & crate::policy::ALLOW == 0 {
        r.verdict = palisade_common::EVENT_DENIED;
        report(&r);
        0
    } else {
        if decision & crate::policy::AUDITED != 0 {
            r.verdict = EVENT_AUDITED;
            report(&r);
        }
        1
    }
}
