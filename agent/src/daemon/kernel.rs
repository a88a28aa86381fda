//! The one reader of the kernel's event ring: every denial (and audit hit)
//! goes into the journal, from which every subscriber reads it. The
//! kernel's per-container rate limit, not this reader, is what drops
//! events in a flood (and counts what it drops).

use std::time::Duration;

use super::Ctx;
use crate::{
    runtime::{KernelEvents, journal::Record},
    sys::readiness,
};

/// How often the reader looks for a new ring (and drains the current one)
/// without being woken: a safety net, not the path events take.
const RECHECK: Duration = Duration::from_secs(2);

/// How long the reader lets events gather after a read.
const COALESCE: Duration = Duration::from_millis(10);

/// The most events journaled in one write.
const BATCH: usize = 4096;

/// Flush requests: each is answered once the ring's events are journaled.
pub(super) type Flushes = tokio::sync::mpsc::UnboundedReceiver<tokio::sync::oneshot::Sender<()>>;

pub(super) async fn read(ctx: Ctx, mut flushes: Flushes) {
    let mut kernel = loop {
        match KernelEvents::open(&ctx.root) {
            Ok(k) => break k,
            Err(e) => {
                tracing::error!(error = %e, "cannot open the kernel's event ring; trying again");
                tokio::time::sleep(RECHECK).await;
            }
        }
    };
    loop {
        drain(&ctx, &mut kernel);
        // A duplicate of the ring's descriptor, registered anew for each
        // ring.
        let ready = kernel
            .fd()
            .map(|fd| fd.try_clone_to_owned().and_then(readiness::readable));
        let ready = match ready {
            Some(Ok(r)) => Some(r),
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot wait on the kernel's event ring");
                None
            }
            None => None,
        };
        loop {
            tokio::select! {
                guard = async { ready.as_ref().expect("a ring").readable().await }, if ready.is_some() => {
                    if let Ok(mut guard) = guard {
                        guard.clear_ready();
                    }
                    drain(&ctx, &mut kernel);
                    // A flood is read in batches, not a wake-up an event.
                    tokio::time::sleep(COALESCE).await;
                }
                Some(done) = flushes.recv() => {
                    drain(&ctx, &mut kernel);
                    let _ = done.send(());
                }
                _ = ctx.ring_hint.notified() => {}
                _ = tokio::time::sleep(RECHECK) => drain(&ctx, &mut kernel),
            }
            match kernel.refresh() {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot open the root's new event ring"),
            }
        }
        drop(ready);
    }
}

/// Journals what the ring holds.
fn drain(ctx: &Ctx, kernel: &mut KernelEvents) {
    loop {
        let mut batch = Vec::new();
        while batch.len() < BATCH {
            let Some(event) = kernel.take() else { break };
            batch.push(Record::denial(&event));
        }
        if batch.is_empty() {
            return;
        }
        ctx.info().records_from_kernel += batch.len() as u64;
        let full = batch.len() == BATCH;
        ctx.emit(&batch);
        if !full {
            return;
        }
    }
}
