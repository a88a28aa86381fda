//! Accounting: what containers consumed, from the cgroup controllers
//! (read by `cgroups::stats`) beside the kernel programs' counters and the
//! shaper's (`stats`, for `palisade stats` and the metrics endpoint), and
//! its Prometheus exposition (`metrics`), and what a container sees of
//! itself in `/proc` and `/sys` (`view`).

pub mod metrics;
mod stats;
pub mod view;

pub use stats::{ContainerStats, EgressTotals, stats};
