//! Durable ingest: a transaction is acknowledged only once everything it carried is
//! stored, and each stored event is handed to the bridge once, in order per room.
//!
//! Three kinds of task:
//! - the writer takes transactions from the endpoint in batches and stores each batch in
//!   one database commit (group commit: throughput without giving up durability), then
//!   answers every waiting request and dispatches the new rows;
//! - one worker per room hands its events to the [`EventHandler`] strictly in order,
//!   retrying with backoff while the handler asks to; rooms run in parallel;
//! - the marker records handled events in batches.
//!
//! After a crash, rows not yet marked are dispatched again at start, flagged
//! [`StoredEvent::redelivered`]: the homeserver's retry of the same transaction is
//! recognised by its id and not stored twice, so nothing is lost or doubled, and the only
//! event a handler can see twice is one it finished just before the crash, flagged so.

mod rows;
mod worker;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::{NewInboundRow, Store, StoreError, StoredEvent, now_ms};
use crate::transaction::{
    Accepted, EventEnvelope, IncomingTransaction, SinkError, TransactionSink,
};

pub use worker::{EventHandler, HandleError};

/// How long handled events and transaction ids are kept to recognise repeats.
const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// The most transactions stored in one commit.
const MAX_BATCH: usize = 512;

struct WriteRequest {
    txn_id: String,
    rows: Vec<NewInboundRow>,
    reply: oneshot::Sender<Result<Accepted, SinkError>>,
}

/// The endpoint's side of the ingest: stores transactions and waits for the commit.
#[derive(Debug, Clone)]
pub struct Ingest {
    requests: mpsc::Sender<WriteRequest>,
}

impl std::fmt::Debug for WriteRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteRequest")
            .field("txn_id", &self.txn_id)
            .finish()
    }
}

/// The running ingest tasks; awaiting it waits until they stopped after `shutdown`.
#[derive(Debug)]
pub struct IngestTasks {
    tasks: JoinSet<()>,
}

impl IngestTasks {
    /// Waits until every task has finished (after the shutdown token was cancelled).
    pub async fn join(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Ingest {
    /// Starts the ingest: prunes old rows, dispatches what was stored and not handled
    /// before the last stop, then accepts new transactions.
    pub async fn start(
        store: Store,
        handler: Arc<dyn EventHandler>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Result<(Ingest, IngestTasks), StoreError> {
        let cutoff = now_ms() - i64::try_from(RETENTION.as_millis()).unwrap_or(i64::MAX);
        let pruned = store.prune_inbound(cutoff).await?;
        if pruned > 0 {
            tracing::info!(pruned, "forgot handled events past the retention horizon");
        }
        let next_seq = store.max_inbound_seq().await?;
        let pending = store.pending_events().await?;
        if !pending.is_empty() {
            tracing::info!(
                count = pending.len(),
                "handling events stored before the last stop"
            );
        }

        let mut tasks = JoinSet::new();
        let (marks, marks_rx) = mpsc::unbounded_channel();
        tasks.spawn(worker::run_marker(store.clone(), marks_rx, metrics.clone()));
        let mut dispatcher = Dispatcher {
            rooms: HashMap::new(),
            handler,
            marks,
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
            workers: JoinSet::new(),
        };
        for event in pending {
            dispatcher.dispatch(event);
        }

        let (requests, requests_rx) = mpsc::channel(4 * MAX_BATCH);
        tasks.spawn(run_writer(
            store,
            requests_rx,
            dispatcher,
            next_seq,
            metrics,
            shutdown,
        ));
        Ok((Ingest { requests }, IngestTasks { tasks }))
    }
}

#[async_trait]
impl TransactionSink for Ingest {
    async fn accept(
        &self,
        transaction: IncomingTransaction,
        envelopes: Vec<EventEnvelope>,
    ) -> Result<Accepted, SinkError> {
        let rows = rows::rows_of(&transaction, &envelopes);
        let (reply, answer) = oneshot::channel();
        let request = WriteRequest {
            txn_id: transaction.txn_id.to_string(),
            rows,
            reply,
        };
        self.requests
            .send(request)
            .await
            .map_err(|_| SinkError("the bridge is shutting down".into()))?;
        answer
            .await
            .map_err(|_| SinkError("the bridge is shutting down".into()))?
    }
}

/// Routes stored events to their room's worker, starting workers as rooms appear.
struct Dispatcher {
    rooms: HashMap<String, mpsc::UnboundedSender<StoredEvent>>,
    handler: Arc<dyn EventHandler>,
    marks: mpsc::UnboundedSender<(i64, Option<String>)>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    workers: JoinSet<()>,
}

impl Dispatcher {
    fn dispatch(&mut self, event: StoredEvent) {
        self.metrics.ingest_pending.inc();
        // Events without a room (presence, to-device, device lists) share one queue.
        let key = event.room_id.clone().unwrap_or_default();
        let queue = self.rooms.entry(key).or_insert_with(|| {
            let (queue, events) = mpsc::unbounded_channel();
            self.workers.spawn(worker::run_room(
                events,
                self.handler.clone(),
                self.marks.clone(),
                self.metrics.clone(),
                self.shutdown.clone(),
            ));
            queue
        });
        // A worker only stops at shutdown, when nothing more is dispatched.
        let _ = queue.send(event);
    }

    async fn stop(mut self) {
        self.rooms.clear();
        while self.workers.join_next().await.is_some() {}
    }
}

async fn run_writer(
    store: Store,
    mut requests: mpsc::Receiver<WriteRequest>,
    mut dispatcher: Dispatcher,
    mut next_seq: i64,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            request = requests.recv() => request,
            () = shutdown.cancelled() => None,
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let transactions: Vec<(String, Vec<NewInboundRow>)> = batch
            .iter_mut()
            .map(|r| (r.txn_id.clone(), std::mem::take(&mut r.rows)))
            .collect();
        let started = Instant::now();
        match store.store_transactions(&transactions, &mut next_seq).await {
            Ok(outcome) => {
                metrics
                    .commit_latency
                    .observe(started.elapsed().as_secs_f64());
                for (request, new) in batch.into_iter().zip(outcome.new_transactions) {
                    let accepted = if new {
                        Accepted::Stored
                    } else {
                        Accepted::AlreadySeen
                    };
                    let _ = request.reply.send(Ok(accepted));
                }
                for event in outcome.stored {
                    dispatcher.dispatch(event);
                }
            }
            Err(error) => {
                tracing::error!(%error, "storing received transactions failed");
                for request in batch {
                    let _ = request.reply.send(Err(SinkError(error.to_string())));
                }
            }
        }
    }
    // Refuse what is still queued: the homeserver retries it after the restart.
    requests.close();
    while let Some(request) = requests.recv().await {
        let _ = request
            .reply
            .send(Err(SinkError("the bridge is shutting down".into())));
    }
    dispatcher.stop().await;
}
