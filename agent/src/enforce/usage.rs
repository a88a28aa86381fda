//! What a container consumed, as the kernel programs counted it: network
//! bytes and packets, allowed connects and binds, CPU time and context
//! switches; and its page faults, as its memory controller counts them.

use palisade_common::{USAGE_V4, USAGE_V6};
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
    /// CPU time of the container's tasks, including the current slice of
    /// any of them running now.
    pub cpu_ns: u64,
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
    /// The kernel's counters (summed over CPUs), plus `running_ns` of
    /// slices not finished yet.
    pub(super) fn from_kernel(k: palisade_common::Usage, running_ns: u64) -> Self {
        let by_family = |v: [u64; 2]| ByFamily {
            ipv4: v[USAGE_V4],
            ipv6: v[USAGE_V6],
        };
        Self {
            cpu_ns: k.cpu_ns + running_ns,
            context_switches: k.context_switches,
            page_faults: k.page_faults,
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
            cpu_ns: t.cpu_ns + c.cpu_ns,
            context_switches: t.context_switches + c.context_switches,
            page_faults: t.page_faults + c.page_faults,
            tx_bytes: add(t.tx_bytes, c.tx_bytes),
            tx_packets: add(t.tx_packets, c.tx_packets),
            rx_bytes: add(t.rx_bytes, c.rx_bytes),
            rx_packets: add(t.rx_packets, c.rx_packets),
            connects_allowed: t.connects_allowed + c.connects_allowed,
            binds_allowed: t.binds_allowed + c.binds_allowed,
        }
    })
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`, which
/// stamps [`palisade_common::Running::since_ns`].
pub(super) fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_records_add_up_by_field_and_family() {
        let a = palisade_common::Usage {
            cpu_ns: 5,
            context_switches: 1,
            page_faults: 2,
            tx_bytes: [100, 7],
            tx_packets: [2, 1],
            rx_bytes: [40, 0],
            rx_packets: [1, 0],
            connects_allowed: 1,
            binds_allowed: 0,
        };
        let b = palisade_common::Usage {
            cpu_ns: 10,
            tx_bytes: [1, 2],
            binds_allowed: 3,
            ..Default::default()
        };
        let usage = Usage::from_kernel(sum([a, b].iter()), 20);
        assert_eq!(usage.cpu_ns, 35);
        assert_eq!(usage.tx_bytes, ByFamily { ipv4: 101, ipv6: 9 });
        assert_eq!(usage.tx_packets.total(), 3);
        assert_eq!(usage.rx_bytes.ipv4, 40);
        assert_eq!((usage.connects_allowed, usage.binds_allowed), (1, 3));
        assert_eq!((usage.context_switches, usage.page_faults), (1, 2));
    }
}
