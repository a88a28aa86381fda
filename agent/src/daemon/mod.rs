//! The resident agent (`palisade agent`): one tokio process per state root
//! that serves `/metrics`, reads the kernel's events and journals them,
//! streams the journal to every subscriber over its API socket, handles
//! containers' OOM conditions and classifies host processes.
//!
//! Nothing a container needs to stay policed lives here: programs, maps
//! and links are pinned, so the agent can be killed, restarted or upgraded
//! under running containers; at start it re-adopts the pins and reconciles
//! them with the state directory.

pub mod classify;
mod metrics;
mod oom;

pub use metrics::{AgentError, serve};

use std::sync::Arc;

use crate::runtime::{
    StateRoot,
    journal::{self, Record},
};

/// What every task of the agent shares.
#[derive(Clone)]
pub struct Ctx {
    pub root: StateRoot,
    /// Woken after each append, so subscribers read what is new.
    grew: Arc<tokio::sync::Notify>,
}

impl Ctx {
    pub fn new(root: StateRoot) -> Self {
        Self {
            root,
            grew: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Journals records (in one write, in this order) and wakes the
    /// subscribers. A journal that cannot be written is logged.
    pub fn emit(&self, records: &[Record]) {
        if let Err(e) = journal::append(&self.root, records) {
            tracing::error!(error = %e, "cannot write to the journal");
        }
        self.grew.notify_waiters();
    }
}
