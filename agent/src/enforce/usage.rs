//! What a container consumed, as the kernel programs counted it: network
//! bytes and packets, allowed connects and binds, CPU time, context
//! switches and page faults.

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
