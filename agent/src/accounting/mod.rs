//! Accounting: what containers consumed, from the cgroup controllers
//! (`cgroup_stats`) beside the kernel programs' counters, and its
//! Prometheus exposition (`metrics`).

pub mod cgroup_stats;
pub mod metrics;
