//! What a container consumed: network bytes and packets and allowed
//! connects and binds, as the kernel programs counted them; context
//! switches, as the kernel counts them per thread (/proc for live threads,
//! the exit program for gone ones); CPU time and page faults, as its
//! cgroup's controllers count them.

use palisade_common::{ExitedThread, USAGE_V4, USAGE_V6};
use serde::Serialize;

/// A count split by IP family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ByFamily {
    pub ipv4: u64,
    pub ipv6: u64,
}

impl ByFamily {
    pub fn total(&self) -> u64 {
        self.ipv4 + self.ipv6
    }
}

/// A container's usage, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// CPU time of the container's tasks, as its CPU controller counts it
    /// (cpu.stat `usage_usec` on v2, cpuacct.usage on v1): the kernel
    /// charges a running task's time at each tick and switch.
    pub cpu_ns: u64,
    /// Context switches of the container's threads (voluntary and
    /// involuntary), live ones as /proc counts them now, exited ones as of
    /// their exit.
    pub context_switches: u64,
    /// Page faults of its tasks (`memory.stat` pgfault: minor and major,
    /// user and kernel mode).
    pub page_faults: u64,
    /// IP bytes (headers included, as on the wire below the link layer)
    /// and packets sent and received by the container's sockets.
    pub tx_bytes: ByFamily,
    pub tx_packets: ByFamily,
    pub rx_bytes: ByFamily,
    pub rx_packets: ByFamily,
    /// connect() calls the policy allowed.
    pub connects_allowed: u64,
    /// bind() calls the policy allowed.
    pub binds_allowed: u64,
}

impl Usage {
    /// What the kernel programs counted (summed over CPUs); CPU time, page
    /// faults and the live threads' switches are the caller's to add.
    pub(super) fn from_kernel(k: palisade_common::Usage) -> Self {
        let by_family = |v: [u64; 2]| ByFamily {
            ipv4: v[USAGE_V4],
            ipv6: v[USAGE_V6],
        };
        Self {
            cpu_ns: 0,
            context_switches: k.exited_switches,
            page_faults: 0,
            tx_bytes: by_family(k.tx_bytes),
            tx_packets: by_family(k.tx_packets),
            rx_bytes: by_family(k.rx_bytes),
            rx_packets: by_family(k.rx_packets),
            connects_allowed: k.connects_allowed,
            binds_allowed: k.binds_allowed,
        }
    }
}

/// The per-CPU records of one container, added up.
pub(super) fn sum<'a>(
    per_cpu: impl Iterator<Item = &'a palisade_common::Usage>,
) -> palisade_common::Usage {
    let add = |a: [u64; 2], b: [u64; 2]| [a[0] + b[0], a[1] + b[1]];
    per_cpu.fold(palisade_common::Usage::default(), |t, c| {
        palisade_common::Usage {
            exited_switches: t.exited_switches + c.exited_switches,
            exited_threads: t.exited_threads + c.exited_threads,
            tx_bytes: add(t.tx_bytes, c.tx_bytes),
            tx_packets: add(t.tx_packets, c.tx_packets),
            rx_bytes: add(t.rx_bytes, c.rx_bytes),
            rx_packets: add(t.rx_packets, c.rx_packets),
            connects_allowed: t.connects_allowed + c.connects_allowed,
            binds_allowed: t.binds_allowed + c.binds_allowed,
        }
    })
}

/// The context switches of the threads `tids` (host thread ids, a
/// cgroup's) that the per-CPU records `records` do not hold: live
/// threads' as /proc/TID/status counts them, and those of threads that
/// exited after the records were read, from `exited` (the `EXITED` map).
/// `records` is called between two walks of the threads (see
/// [`palisade_common::ExitedThread`] for why this is exact); what it read
/// is returned with the count.
pub(super) fn beyond_records(
    tids: &[u32],
    exited: impl Fn(u32) -> Option<ExitedThread>,
    records: impl FnOnce() -> Vec<palisade_common::Usage>,
) -> (Vec<palisade_common::Usage>, u64) {
    // An entry for a thread id is this thread's if its start time matches,
    // or if the thread is gone from /proc (its own exit wrote the entry).
    let exited = |tid: u32| {
        exited(tid).filter(|e| {
            start_ticks(tid).is_none_or(|ticks| ticks == e.start_boottime_ns / ns_per_tick())
        })
    };
    let walked: Vec<(u32, Option<u64>)> = tids
        .iter()
        .map(|&tid| match exited(tid) {
            Some(_) => (tid, None),
            None => (tid, thread_switches(tid)),
        })
        .collect();
    let records = records();
    let beyond = walked
        .into_iter()
        .map(|(tid, live)| match exited(tid) {
            Some(e) => {
                let counted = records
                    .get(e.cpu as usize)
                    .is_some_and(|r| r.exited_threads >= e.seq);
                if counted { 0 } else { e.switches }
            }
            None => live.unwrap_or(0),
        })
        .sum();
    (records, beyond)
}

/// /proc/TID/status: voluntary_ctxt_switches + nonvoluntary_ctxt_switches.
fn thread_switches(tid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok())
    };
    Some(value("voluntary_ctxt_switches:")? + value("nonvoluntary_ctxt_switches:")?)
}

/// /proc/TID/stat's `starttime` (field 22), in clock ticks since boot.
fn start_ticks(tid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at 3.
    let (_, rest) = text.rsplit_once(") ")?;
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// Nanoseconds per clock tick of /proc's times (USER_HZ).
fn ns_per_tick() -> u64 {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&hz| hz > 0)
        .unwrap_or(100);
    1_000_000_000 / hz as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_records_add_up_by_field_and_family() {
        let a = palisade_common::Usage {
            exited_switches: 4,
            exited_threads: 1,
            tx_bytes: [100, 7],
            tx_packets: [2, 1],
            rx_bytes: [40, 0],
            rx_packets: [1, 0],
            connects_allowed: 1,
            binds_allowed: 0,
        };
        let b = palisade_common::Usage {
            exited_switches: 3,
            exited_threads: 2,
            tx_bytes: [1, 2],
            binds_allowed: 3,
            ..Default::default()
        };
        let total = sum([a, b].iter());
        assert_eq!((total.exited_switches, total.exited_threads), (7, 3));
        let usage = Usage::from_kernel(total);
        assert_eq!(usage.context_switches, 7);
        assert_eq!(usage.tx_bytes, ByFamily { ipv4: 101, ipv6: 9 });
        assert_eq!(usage.tx_packets.total(), 3);
        assert_eq!(usage.rx_bytes.ipv4, 40);
        assert_eq!((usage.connects_allowed, usage.binds_allowed), (1, 3));
    }

    #[test]
    fn live_threads_are_read_and_exited_ones_taken_from_the_records_or_their_entry() {
        let me = nix::unistd::gettid().as_raw() as u32;
        let own = thread_switches(me).expect("this thread's status");
        let start = start_ticks(me).expect("this thread's stat") * ns_per_tick();
        let no_records = Vec::new;
        assert!(beyond_records(&[me], |_| None, no_records).1 >= own);
        // Exited, and counted in CPU 1's record: nothing beyond it.
        let entry = ExitedThread {
            start_boottime_ns: start,
            switches: 7,
            seq: 3,
            cpu: 1,
            _pad: 0,
        };
        let counted = || {
            let cpu1 = palisade_common::Usage {
                exited_threads: 3,
                ..Default::default()
            };
            vec![Default::default(), cpu1]
        };
        assert_eq!(beyond_records(&[me], |_| Some(entry), counted).1, 0);
        // Exited after the records were read: its count at exit.
        assert_eq!(beyond_records(&[me], |_| Some(entry), no_records).1, 7);
        // An earlier thread with the same id: this one is live.
        let earlier = ExitedThread {
            start_boottime_ns: start.saturating_sub(10 * ns_per_tick()),
            ..entry
        };
        assert!(beyond_records(&[me], |_| Some(earlier), no_records).1 >= own);
        // Gone from /proc, with no entry: nothing to read.
        assert_eq!(beyond_records(&[u32::MAX], |_| None, no_records).1, 0);
    }
}
