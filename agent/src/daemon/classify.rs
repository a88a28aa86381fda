//! Rule-based classification of host processes into containers: the
//! agent configuration's `[[classify]]` rules, applied at each exec.
//!
//! The kernel program (`enforce::classify`) sends the execs some rule may
//! match, and stops (SIGSTOP) those a `hold` rule may match before they
//! run an instruction. Here each is checked against the whole rule list
//! (first match wins), moved into every cgroup of the rule's container
//! (v2 first: its programs police the process from then on; then the v1
//! controllers' groups), journalled as `classified`, and continued. A
//! held process is always continued, whatever happens: it does not match,
//! the container is not running, the move fails, or the agent stops.
//!
//! Never touches a process already in a palisade container (the kernel
//! skips them, and this checks again) nor one no rule matches.

use std::{path::PathBuf, time::Duration};

use aya::maps::{MapData, RingBuf};
use nix::sys::signal::Signal;
use palisade_common::classify::{ExecEvent, FILENAME_BYTES};
use thiserror::Error;
use tokio::io::unix::{AsyncFd, AsyncFdReadyMutGuard};

use super::Ctx;
use crate::{
    cgroups::{self, CgroupError, Hierarchies},
    enforce::classify::{ClassifierError, ExecClassifier, decode},
    runtime::{
        Status,
        journal::{Classified, Record, What},
        reconcile,
    },
    spec::{ClassifyRule, FD_EXEC_PREFIX, compile_classify},
    sys::{pidfd, readiness},
};

#[derive(Debug, Error)]
pub enum ClassifyError {
    #[error(transparent)]
    Cgroups(#[from] CgroupError),
    #[error(transparent)]
    Classifier(#[from] ClassifierError),
    #[error("classifier: cannot watch the kernel's ring of execs: {0}")]
    Ring(std::io::Error),
}

/// Classifies host processes by `rules` until the future is dropped (the
/// agent stops) or the ring cannot be read. With no rules it returns at
/// once and loads nothing, so the host pays nothing. Every process held
/// when it stops is continued.
pub async fn run(ctx: Ctx, rules: Vec<ClassifyRule>) -> Result<(), ClassifyError> {
    if rules.is_empty() {
        return Ok(());
    }
    let hierarchies = Hierarchies::detect()?;
    let skip = cgroups::parent_v2(&hierarchies);
    let mut classifier = ExecClassifier::load(&compile_classify(&rules), skip, kernel_log_level())?;
    let logger = classifier
        .take_logger()
        .and_then(|logger| readiness::readable(logger).ok());
    let ring = classifier.take_ring()?;
    let mut session = Session {
        classifier,
        ring: readiness::readable(ring).map_err(ClassifyError::Ring)?,
        skipping: skip.is_some(),
        hierarchies,
    };
    tracing::info!(rules = rules.len(), "classifying host processes at exec");
    match logger {
        Some(mut logger) => loop {
            let events = tokio::select! {
                ready = session.ring.readable_mut() => take_events(ready)?,
                ready = logger.readable_mut() => {
                    let mut ready = ready.map_err(ClassifyError::Ring)?;
                    ready.get_inner_mut().flush();
                    ready.clear_ready();
                    continue;
                }
            };
            session.handle_all(&ctx, &rules, events);
        },
        None => loop {
            let events = take_events(session.ring.readable_mut().await)?;
            session.handle_all(&ctx, &rules, events);
        },
    }
}

/// Everything the ring holds, once it is readable.
fn take_events(
    ready: std::io::Result<AsyncFdReadyMutGuard<'_, RingBuf<MapData>>>,
) -> Result<Vec<ExecEvent>, ClassifyError> {
    let mut ready = ready.map_err(ClassifyError::Ring)?;
    let mut events = Vec::new();
    while let Some(record) = ready.get_inner_mut().next() {
        events.extend(decode(&record));
    }
    ready.clear_ready();
    Ok(events)
}

/// The attached classifier and its ring; dropping it (the agent stops, or
/// `run` is aborted) detaches the program and continues every process
/// held that was not handled yet.
struct Session {
    classifier: ExecClassifier,
    ring: AsyncFd<RingBuf<MapData>>,
    /// Whether the kernel already skips palisade's containers (their
    /// parent cgroup existed, or has been found since).
    skipping: bool,
    hierarchies: Hierarchies,
}

impl Session {
    fn handle_all(&mut self, ctx: &Ctx, rules: &[ClassifyRule], events: Vec<ExecEvent>) {
        for event in events {
            self.handle(ctx, rules, &event);
        }
    }

    fn handle(&mut self, ctx: &Ctx, rules: &[ClassifyRule], event: &ExecEvent) {
        let pid = event.tgid as i32;
        let held = event.held != 0;
        let outcome = self.classify(ctx, rules, event);
        if held {
            resume(pid);
        }
        if let Some(record) = outcome {
            ctx.emit(&[record]);
        }
    }

    /// Moves the process if a rule matches and its container runs; the
    /// record of the move, or `None` if the process was left where it is.
    fn classify(&mut self, ctx: &Ctx, rules: &[ClassifyRule], event: &ExecEvent) -> Option<Record> {
        let pid = event.tgid as i32;
        match cgroups::in_palisade(pid) {
            // Gone already: nothing to move.
            None => return None,
            Some(true) => {
                self.skip_containers();
                return None;
            }
            Some(false) => {}
        }
        let exe = exe_of(event);
        let Some(rule) = rules
            .iter()
            .find(|rule| rule.matches(event.uid, event.gid, exe.as_deref()))
        else {
            tracing::debug!(pid, uid = event.uid, gid = event.gid, exe = ?exe, "exec matches no classify rule");
            return None;
        };
        let name = &rule.container;
        let state = match ctx.root.load(name) {
            Ok(state) => reconcile(&ctx.root, state),
            Err(e) => {
                tracing::warn!(pid, container = %name, rule = %rule, error = %e, "cannot classify: the rule's container is not there; process left where it is");
                return None;
            }
        };
        if state.status != Status::Running || state.paused {
            let status = if state.paused {
                "paused".to_string()
            } else {
                state.status.to_string()
            };
            tracing::warn!(pid, container = %name, rule = %rule, status, "cannot classify: the rule's container is not running; process left where it is");
            return None;
        }
        if let Err(e) = cgroups::move_process(&state.cgroups, pid) {
            tracing::warn!(pid, container = %name, rule = %rule, error = %e, "cannot classify: moving the process failed");
            return None;
        }
        let latency = monotonic_ns().saturating_sub(event.ktime_ns);
        tracing::debug!(pid, container = %name, latency_us = latency / 1000, "classified");
        Some(Record::now(
            name,
            What::Classified(Classified {
                pid: event.tgid,
                uid: event.uid,
                gid: event.gid,
                exe: exe.unwrap_or_default(),
                rule: rule.to_string(),
                latency_us: latency / 1000,
                held: event.held != 0,
            }),
        ))
    }

    /// Tells the kernel program to skip palisade's containers, once their
    /// parent cgroup exists (the agent may have started before any).
    fn skip_containers(&mut self) {
        if self.skipping {
            return;
        }
        if let Some((id, level)) = cgroups::parent_v2(&self.hierarchies) {
            match self.classifier.set_skip(id, level) {
                Ok(()) => self.skipping = true,
                Err(e) => {
                    tracing::warn!(error = %e, "classifier: cannot skip containers' processes in the kernel")
                }
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // No new hold once detached; then what is left in the ring.
        self.classifier.detach();
        let ring = self.ring.get_mut();
        while let Some(record) = ring.next() {
            if let Some(event) = decode(&record)
                && event.held != 0
            {
                resume(event.tgid as i32);
            }
        }
    }
}

/// The path the exec'ed file was given by, if absolute and known; else
/// the kernel's `/proc/PID/exe` (a relative path, an exec through a
/// descriptor, or a name too long for the event).
fn exe_of(event: &ExecEvent) -> Option<String> {
    let len = usize::try_from(event.filename_len).ok();
    if let Some(len) = len.filter(|&l| l < FILENAME_BYTES - 1) {
        let name = String::from_utf8_lossy(&event.filename[..len]);
        if name.starts_with('/') && !name.starts_with(FD_EXEC_PREFIX) {
            return Some(name.into_owned());
        }
    }
    let link: PathBuf = std::fs::read_link(format!("/proc/{}/exe", event.tgid)).ok()?;
    Some(link.to_string_lossy().into_owned())
}

/// Continues a held process (SIGCONT through a pidfd). One gone already
/// needs nothing.
fn resume(pid: i32) {
    let sent = pidfd::open(pid).and_then(|fd| pidfd::send_signal(&fd, Signal::SIGCONT));
    if let Err(e) = sent
        && e != nix::errno::Errno::ESRCH
    {
        tracing::error!(pid, error = %e, "cannot continue a held process: send it SIGCONT");
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| Duration::from(t).as_nanos() as u64)
        .unwrap_or(0)
}

/// The kernel log level matching the agent's: records below it are
/// never written (aya-log's numbering is `log`'s).
fn kernel_log_level() -> u8 {
    use tracing::level_filters::LevelFilter;
    match LevelFilter::current() {
        LevelFilter::OFF => 0,
        LevelFilter::ERROR => 1,
        LevelFilter::WARN => 2,
        LevelFilter::INFO => 3,
        LevelFilter::DEBUG => 4,
        _ => 5,
    }
}
