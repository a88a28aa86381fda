//! Accounting: what containers consumed, from the cgroup controllers
//! (read by `cgroups::stats`) beside the kernel programs' counters, and its
//! Prometheus exposition (`metrics`).

pub mod metrics;
