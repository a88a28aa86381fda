//! `palisade stats` and the metrics endpoint: one snapshot of what each
//! container consumed and what was refused, from the kernel programs'
//! counters, the cgroup controllers and the shaper.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::{
    cgroups::CgroupStats,
    enforce::{CounterView, Enforcer, Pins, Usage},
    runtime::{RuntimeError, State, StateRoot, Status, open_loaded, reconcile, shaping},
};

/// One container at one instant.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerStats {
    pub name: String,
    pub status: Status,
    /// Why it is `dead` (its creator or monitor died), else `None`.
    pub reason: Option<&'static str>,
    pub pid: Option<i32>,
    /// CPU use over the sampling interval, in % of one CPU (`None` for a
    /// single sample or a container that is not running).
    pub cpu_percent: Option<f64>,
    /// What the kernel programs counted; `None` once the container has
    /// exited (its counters go with it).
    pub usage: Option<Usage>,
    pub denied: Option<CounterView>,
    /// What the controllers report; `None` once the container has exited.
    pub cgroup: Option<CgroupStats>,
    /// The outbound shaper's counts, summed over devices (`None`: not shaped).
    pub egress: Option<EgressTotals>,
}

/// A shaped container's class counts, over every device it is on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EgressTotals {
    pub rate_bits_per_second: u64,
    pub bytes: u64,
    pub packets: u64,
    pub delayed: u64,
    pub dropped: u64,
}

/// The containers named (all of the state root's if none), read once, or
/// twice `interval` apart to compute CPU %.
pub fn stats(
    root: &StateRoot,
    names: &[String],
    interval: Option<Duration>,
) -> Result<Vec<ContainerStats>, RuntimeError> {
    let states = select(root, names)?;
    let live = |s: &State| matches!(s.status, Status::Running | Status::Created);
    let enforcer = if states.iter().any(live) {
        Some(open_loaded(root, &Pins::for_state_root(root.dir()))?)
    } else {
        None
    };
    let first = sample(&states, enforcer.as_ref());
    let Some(interval) = interval else {
        return Ok(first.into_iter().map(|(s, _)| s).collect());
    };
    std::thread::sleep(interval);
    let second = sample(&states, enforcer.as_ref());
    Ok(first
        .into_iter()
        .zip(second)
        .map(|((before, t0), (mut after, t1))| {
            after.cpu_percent = match (&before.usage, &after.usage) {
                (Some(a), Some(b)) => {
                    let wall = t1.duration_since(t0).as_nanos() as f64;
                    Some(b.cpu_ns.saturating_sub(a.cpu_ns) as f64 / wall * 100.0)
                }
                _ => None,
            };
            after
        })
        .collect())
}

/// The states asked for, in the order asked (all, by name, if none).
fn select(root: &StateRoot, names: &[String]) -> Result<Vec<State>, RuntimeError> {
    if names.is_empty() {
        let mut all: Vec<State> = root
            .list()?
            .into_iter()
            .map(|s| reconcile(root, s))
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        return Ok(all);
    }
    names
        .iter()
        .map(|n| {
            root.load(n)
                .map(|s| reconcile(root, s))
                .map_err(RuntimeError::from)
        })
        .collect()
}

fn sample(states: &[State], enforcer: Option<&Enforcer>) -> Vec<(ContainerStats, Instant)> {
    states
        .iter()
        .map(|state| (one(state, enforcer), Instant::now()))
        .collect()
}

fn one(state: &State, enforcer: Option<&Enforcer>) -> ContainerStats {
    let running = matches!(state.status, Status::Running | Status::Created);
    let kernel = match (running, state.cgroup_id, enforcer) {
        (true, Some(id), Some(e)) => Some((
            e.usage(id, &state.cgroups),
            CounterView::from(e.counters(id)),
        )),
        _ => None,
    };
    ContainerStats {
        name: state.name.clone(),
        status: state.status,
        reason: state.dead_reason,
        pid: state.pid.filter(|_| running),
        cpu_percent: None,
        usage: kernel.as_ref().map(|k| k.0),
        denied: kernel.map(|k| k.1),
        cgroup: running.then(|| crate::cgroups::stats::read(&state.cgroups)),
        egress: if running { egress(state) } else { None },
    }
}

fn egress(state: &State) -> Option<EgressTotals> {
    let s = state.shaping.as_ref()?;
    let netns = s.netns(state.pid)?;
    let per_device = shaping::stats(netns, &s.devices, s.minor).ok()?;
    Some(per_device.iter().fold(
        EgressTotals {
            rate_bits_per_second: s.rate,
            ..Default::default()
        },
        |t, d| EgressTotals {
            bytes: t.bytes + d.bytes,
            packets: t.packets + d.packets,
            delayed: t.delayed + d.delayed,
            dropped: t.dropped + d.dropped,
            ..t
        },
    ))
}
