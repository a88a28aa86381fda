//! Accounting: what containers consumed, from the cgroup controllers
//! (read by `cgroups::stats`) beside the kernel programs' counters and the
//! shaper's (`stats`, for `palisade stats` and the metrics endpoint), and
//! its Prometheus exposition (`metrics`).

pub mod metrics;
mod stats;

pub use stats::{ContainerStats, EgressTotals, stats};
