//! Handing stored events to the bridge: one worker per room, strictly in order, with
//! retries while the handler asks for them; and the marker that records what is done.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::{EventLabels, Metrics};
use crate::store::{Store, StoredEvent, now_ms};

/// What the bridge does with each stored event.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// Handles one event. Events of one room come one at a time, in the order the
    /// homeserver sent them; an event flagged `redelivered` may have been handled just
    /// before a crash, and a handler with effects outside the store should check.
    async fn handle(&self, event: &StoredEvent) -> Result<(), HandleError>;
}

/// Why a handler did not finish an event.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// A passing failure (the remote network is down): the same event is offered again
    /// after a backoff, and the room's later events wait for it.
    #[error("will retry: {0}")]
    Retry(String),
    /// The event cannot be handled, now or later: it is recorded with this reason and
    /// the room moves on.
    #[error("gave up: {0}")]
    GiveUp(String),
}

const FIRST_RETRY: Duration = Duration::from_millis(200);
const LONGEST_RETRY: Duration = Duration::from_secs(300);

/// Hands a room's events to the handler in order until shutdown.
pub(super) async fn run_room(
    mut events: mpsc::UnboundedReceiver<StoredEvent>,
    unhandled: Arc<AtomicUsize>,
    handler: Arc<dyn EventHandler>,
    marks: mpsc::UnboundedSender<(i64, Option<String>)>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            // Finish the event in hand before stopping, never start a new one.
            biased;
            () = shutdown.cancelled() => return,
            event = events.recv() => event,
        };
        let Some(event) = event else { return };
        let mut wait = FIRST_RETRY;
        let outcome = loop {
            let attempt = AssertUnwindSafe(handler.handle(&event))
                .catch_unwind()
                .await;
            match attempt {
                Ok(Ok(())) => break None,
                Ok(Err(HandleError::GiveUp(reason))) => {
                    tracing::warn!(seq = event.seq, event_id = ?event.event_id, %reason, "event not handled");
                    break Some(reason);
                }
                Err(_) => {
                    tracing::error!(seq = event.seq, event_id = ?event.event_id, "the handler panicked");
                    break Some("the handler panicked".to_owned());
                }
                Ok(Err(HandleError::Retry(reason))) => {
                    tracing::info!(seq = event.seq, event_id = ?event.event_id, %reason, retry_in = ?wait, "event will be retried");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(LONGEST_RETRY);
                }
            }
        };
        metrics
            .events_handled
            .get_or_create(&EventLabels::for_type(&event.event_type))
            .inc();
        let waited_ms = now_ms().saturating_sub(event.received_at).max(0);
        #[allow(clippy::cast_precision_loss)]
        metrics.handling_latency.observe(waited_ms as f64 / 1000.0);
        metrics.ingest_queued.dec();
        if marks.send((event.seq, outcome)).is_err() {
            return;
        }
        // Only now may the dispatcher retire this worker: the event is done.
        unhandled.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Records handled events in batches, retrying a failed commit (the marks are kept).
/// Once shutting down it stops retrying after a few attempts: unrecorded events are
/// handed over again at the next start, flagged, which is safe; hanging is not.
pub(super) async fn run_marker(
    store: Store,
    mut marks: mpsc::UnboundedReceiver<(i64, Option<String>)>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut wait = FIRST_RETRY;
    // Runs until every room worker (each holds a sender) has stopped, then flushes.
    while let Some(first) = marks.recv().await {
        let mut batch = vec![first];
        while let Ok(mark) = marks.try_recv() {
            batch.push(mark);
            if batch.len() >= 4096 {
                break;
            }
        }
        let mut attempts_left_at_shutdown = 3;
        loop {
            match store.mark_handled(&batch).await {
                Ok(()) => {
                    metrics
                        .ingest_pending
                        .dec_by(i64::try_from(batch.len()).unwrap_or(i64::MAX));
                    wait = FIRST_RETRY;
                    break;
                }
                Err(error) if shutdown.is_cancelled() => {
                    attempts_left_at_shutdown -= 1;
                    if attempts_left_at_shutdown == 0 {
                        tracing::warn!(%error, events = batch.len(), "could not record handled events before stopping; they will be handed over again");
                        break;
                    }
                    tokio::time::sleep(FIRST_RETRY).await;
                }
                Err(error) => {
                    tracing::error!(%error, "recording handled events failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = shutdown.cancelled() => {}
                    }
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}
