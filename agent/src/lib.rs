//! palisade: containers built from namespaces and cgroups, with policy
//! enforced by eBPF programs on their cgroups.
//!
//! One folder per concern; each talks to the others through a small typed
//! API. `cli` parses and renders, and never reaches into `sys`.

pub mod accounting;
pub mod cgroups;
pub mod checkpoint;
pub mod cli;
pub mod daemon;
pub mod enforce;
pub mod exit;
pub mod report;
pub mod runtime;
pub mod spec;
pub mod sys;
