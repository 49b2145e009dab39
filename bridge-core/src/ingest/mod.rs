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
//! A room's worker that has had nothing to do for five minutes is let go (and a new one
//! started with the room's next event), so thousands of quiet rooms cost no tasks.
//!
//! Memory stays bounded whatever the backlog: at most [`IN_MEMORY_LIMIT`] events wait in
//! the room queues. Past that, stored events stay in the database only, and the writer
//! refills the queues from it, in arrival order, as they drain. A restart with a large
//! backlog takes the same path.
//!
//! A malformed event is recorded as failed rather than refusing its transaction, and a
//! transaction the database refuses fails alone: a refused transaction is retried by the
//! homeserver forever and would hold back everything behind it.
//!
//! A race in Synapse's scheduler can leave one transaction unsent for good after a
//! recovery (its recoverer only ever sends the oldest unsent one, and only while
//! recovering). For a while after a start or a failed answer, a transaction arriving
//! after a gap in the numbering is therefore refused once: the refusal starts Synapse's
//! recoverer, which sends the missing transaction first, if there is one (the numbers
//! may be other appservices'), then the refused one. See [`gap`].
//!
//! After a crash, rows not yet marked are dispatched again at start, flagged
//! [`StoredEvent::redelivered`]: the homeserver's retry of the same transaction is
//! recognised by its id and not stored twice, so nothing is lost or doubled, and the only
//! event a handler can see twice is one it finished just before the crash, flagged so.

pub mod gap;
mod rows;
mod worker;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::metrics::{EventLabels, Metrics};
use crate::store::{NewInboundRow, Store, StoreError, StoredEvent, now_ms};
use crate::transaction::{Accepted, IncomingTransaction, SinkError, TransactionSink};

pub use worker::{EventHandler, HandleError};

/// How long handled events and transaction ids are kept to recognise repeats.
const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often old rows are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// The most transactions stored in one commit.
const MAX_BATCH: usize = 512;
/// The most events held in the room queues; the rest wait in the database.
pub const IN_MEMORY_LIMIT: usize = 10_000;
/// Rows read from the database per refill.
const REFILL_ROWS: i64 = 1_000;
/// How often a refill is considered while events wait in the database only.
const REFILL_EVERY: Duration = Duration::from_millis(20);
/// How long a room's worker stays without events before it is let go.
const RETIRE_AFTER: Duration = Duration::from_secs(300);
/// How long room workers may take to finish the event in hand at shutdown; past it, the
/// event is left unrecorded and handed over again at the next start.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

struct WriteRequest {
    txn_id: String,
    rows: Vec<NewInboundRow>,
    reply: oneshot::Sender<Result<Accepted, SinkError>>,
}

impl std::fmt::Debug for WriteRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteRequest")
            .field("txn_id", &self.txn_id)
            .finish()
    }
}

/// The endpoint's side of the ingest: stores transactions and waits for the commit.
#[derive(Debug, Clone)]
pub struct Ingest {
    requests: mpsc::Sender<WriteRequest>,
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
        prune(&store).await?;
        let next_seq = store.max_inbound_seq().await?;
        let pending = store.count_pending().await?;
        metrics.ingest_pending.set(pending);
        if pending > 0 {
            tracing::info!(pending, "handling events stored before the last stop");
        }

        let mut tasks = JoinSet::new();
        let (marks, marks_rx) = mpsc::unbounded_channel();
        tasks.spawn(worker::run_marker(
            store.clone(),
            marks_rx,
            metrics.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(run_pruner(store.clone(), shutdown.clone()));
        // What was pending at the last stop comes from the database, by refills.
        let dispatcher = Dispatcher {
            rooms: HashMap::new(),
            handler,
            marks,
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
            workers: JoinSet::new(),
            last_dispatched: 0,
            overflowed: pending > 0,
            stored_before_start: next_seq,
        };

        let gaps = gap::GapWatch::new(
            store.last_transaction_id().await?.as_deref(),
            Instant::now(),
        );
        let (requests, requests_rx) = mpsc::channel(4 * MAX_BATCH);
        let writer = Writer {
            store,
            dispatcher,
            next_seq,
            metrics,
            gaps,
        };
        tasks.spawn(writer.run(requests_rx, shutdown));
        Ok((Ingest { requests }, IngestTasks { tasks }))
    }

    /// Whether transactions are still taken (false once the writer has stopped).
    pub fn is_accepting(&self) -> bool {
        !self.requests.is_closed()
    }
}

#[async_trait]
impl TransactionSink for Ingest {
    async fn accept(&self, transaction: IncomingTransaction) -> Result<Accepted, SinkError> {
        let rows = rows::rows_of(&transaction);
        let (reply, answer) = oneshot::channel();
        let request = WriteRequest {
            txn_id: transaction.txn_id.to_string(),
            rows,
            reply,
        };
        self.requests
            .send(request)
            .await
            .map_err(|_| SinkError::Failed("the bridge is shutting down".into()))?;
        answer
            .await
            .map_err(|_| SinkError::Failed("the bridge is shutting down".into()))?
    }
}

/// Routes stored events to their room's worker, starting workers as rooms appear.
struct Dispatcher {
    rooms: HashMap<String, RoomQueue>,
    handler: Arc<dyn EventHandler>,
    marks: mpsc::UnboundedSender<(i64, Option<String>)>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    workers: JoinSet<()>,
    /// The highest `seq` handed to a worker: rows above it were never dispatched.
    last_dispatched: i64,
    /// True while stored events wait in the database only: new ones must then come from
    /// there too, after them, to keep each room's order.
    overflowed: bool,
    /// The highest `seq` stored before this start: those rows may have been handed over
    /// before a crash, so they are flagged `redelivered`.
    stored_before_start: i64,
}

/// A room's worker, as the dispatcher holds it.
#[derive(Debug)]
struct RoomQueue {
    sender: mpsc::UnboundedSender<StoredEvent>,
    /// Events given to the worker and not yet handled (the worker counts them down).
    unhandled: Arc<AtomicUsize>,
    /// Tokio's clock, so that tests can move it.
    last_used: tokio::time::Instant,
}

impl Dispatcher {
    /// Lets the workers of rooms quiet for [`RETIRE_AFTER`] go: with thousands of rooms,
    /// idle workers would otherwise stay forever. A worker is retired only when it has
    /// nothing left to handle, by dropping its queue's only sender, so no event is left
    /// behind and none can overtake another (the room's next event gets a new worker).
    fn retire_idle(&mut self) {
        self.rooms.retain(|_, room| {
            room.unhandled.load(Ordering::Acquire) > 0 || room.last_used.elapsed() < RETIRE_AFTER
        });
        // Reap the finished ones.
        while self.workers.try_join_next().is_some() {}
    }

    /// Dispatches a newly stored event, unless the queues are full or events wait in the
    /// database (it is stored: a refill will bring it).
    fn offer(&mut self, event: StoredEvent) {
        if self.overflowed || self.queued() >= IN_MEMORY_LIMIT {
            self.overflowed = true;
            return;
        }
        self.dispatch(event);
    }

    /// Refills the queues from the database while they have room; clears the overflow
    /// once everything stored has been dispatched.
    async fn refill(&mut self, store: &Store) {
        while self.overflowed && self.queued() < IN_MEMORY_LIMIT / 2 {
            let rows = match store
                .pending_events_after(self.last_dispatched, REFILL_ROWS)
                .await
            {
                Ok(rows) => rows,
                Err(error) => {
                    tracing::warn!(%error, "cannot read stored events; will try again");
                    return;
                }
            };
            let caught_up = rows.len() < usize::try_from(REFILL_ROWS).unwrap_or(usize::MAX);
            for mut event in rows {
                event.redelivered = event.seq <= self.stored_before_start;
                self.dispatch(event);
            }
            if caught_up {
                self.overflowed = false;
            }
        }
    }

    /// Events in the room queues (handed over, not yet handled).
    fn queued(&self) -> usize {
        usize::try_from(self.metrics.ingest_queued.get()).unwrap_or(0)
    }

    fn dispatch(&mut self, event: StoredEvent) {
        self.metrics.ingest_queued.inc();
        self.last_dispatched = self.last_dispatched.max(event.seq);
        // Events without a room (presence, to-device, device lists) share one queue.
        let key = event.room_id.clone().unwrap_or_default();
        let event = match self.rooms.get_mut(&key) {
            None => event,
            Some(room) => {
                room.unhandled.fetch_add(1, Ordering::AcqRel);
                room.last_used = tokio::time::Instant::now();
                match room.sender.send(event) {
                    Ok(()) => return,
                    // The room's worker is gone (it cannot record marks any more): replace it.
                    Err(mpsc::error::SendError(event)) => {
                        tracing::error!(room = %key, "a room worker stopped; starting a new one");
                        event
                    }
                }
            }
        };
        let (sender, events) = mpsc::unbounded_channel();
        let unhandled = Arc::new(AtomicUsize::new(1));
        self.workers.spawn(worker::run_room(
            events,
            Arc::clone(&unhandled),
            self.handler.clone(),
            self.marks.clone(),
            self.metrics.clone(),
            self.shutdown.clone(),
        ));
        // The receiver was just created and is held by the new worker.
        let _ = sender.send(event);
        self.rooms.insert(
            key,
            RoomQueue {
                sender,
                unhandled,
                last_used: tokio::time::Instant::now(),
            },
        );
    }

    async fn stop(mut self) {
        self.rooms.clear();
        let all_stopped = async { while self.workers.join_next().await.is_some() {} };
        if tokio::time::timeout(STOP_DEADLINE, all_stopped)
            .await
            .is_err()
        {
            tracing::warn!(
                "handlers still busy at shutdown; their events will be handed over again"
            );
            self.workers.abort_all();
        }
    }
}

/// Stores batches of transactions and dispatches what they added.
struct Writer {
    store: Store,
    dispatcher: Dispatcher,
    next_seq: i64,
    metrics: Arc<Metrics>,
    gaps: gap::GapWatch,
}

impl Writer {
    async fn run(
        mut self,
        mut requests: mpsc::Receiver<WriteRequest>,
        shutdown: CancellationToken,
    ) {
        let mut retire = tokio::time::interval(RETIRE_AFTER / 4);
        loop {
            let first = tokio::select! {
                request = requests.recv() => request,
                () = shutdown.cancelled() => None,
                _ = retire.tick() => {
                    self.dispatcher.retire_idle();
                    continue;
                }
                () = tokio::time::sleep(REFILL_EVERY), if self.dispatcher.overflowed => {
                    self.dispatcher.refill(&self.store).await;
                    continue;
                }
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            batch = self.refuse_after_gaps(batch);
            if batch.is_empty() {
                continue;
            }
            if let Err(error) = self.store_and_answer(&mut batch).await {
                // A batch fails as a whole; store its transactions one by one so that one
                // the database refuses fails alone.
                tracing::warn!(%error, size = batch.len(), "storing a batch failed");
                if batch.len() > 1 {
                    for request in batch {
                        let mut single = vec![request];
                        if let Err(error) = self.store_and_answer(&mut single).await {
                            self.refuse(single, &error);
                        }
                    }
                } else {
                    self.refuse(batch, &error);
                }
            }
            // Here too, not only when idle: under steady traffic the timer never fires.
            if self.dispatcher.overflowed {
                self.dispatcher.refill(&self.store).await;
            }
        }
        // Refuse what is still queued: the homeserver retries it after the restart.
        requests.close();
        while let Some(request) = requests.recv().await {
            let _ = request
                .reply
                .send(Err(SinkError::Failed("the bridge is shutting down".into())));
        }
        self.dispatcher.stop().await;
    }

    /// Stores a batch in one commit, answers each request, and dispatches the new rows.
    /// On failure nothing is answered and the batch is left to the caller.
    async fn store_and_answer(&mut self, batch: &mut Vec<WriteRequest>) -> Result<(), StoreError> {
        let transactions: Vec<(String, Vec<NewInboundRow>)> = batch
            .iter_mut()
            .map(|r| (r.txn_id.clone(), std::mem::take(&mut r.rows)))
            .collect();
        let started = Instant::now();
        let outcome = match self
            .store
            .store_transactions(&transactions, &mut self.next_seq)
            .await
        {
            Ok(outcome) => outcome,
            Err(error) => {
                // Give the rows back: the caller retries them one transaction at a time.
                for (request, (_, rows)) in batch.iter_mut().zip(transactions) {
                    request.rows = rows;
                }
                self.recover_after_failure().await;
                return Err(error);
            }
        };
        self.metrics
            .commit_latency
            .observe(started.elapsed().as_secs_f64());
        for (request, new) in batch.drain(..).zip(outcome.new_transactions) {
            if new {
                self.gaps.stored(&request.txn_id);
            } else {
                // Sent again: the homeserver missed our answer, and recovers.
                self.gaps.failed(Instant::now());
            }
            let accepted = if new {
                Accepted::Stored
            } else {
                Accepted::AlreadySeen
            };
            let _ = request.reply.send(Ok(accepted));
        }
        for event in outcome.stored {
            self.metrics
                .events_received
                .get_or_create(&EventLabels::for_type(&event.event_type))
                .inc();
            self.metrics.ingest_pending.inc();
            self.dispatcher.offer(event);
        }
        Ok(())
    }

    /// After a failed commit, which may have been applied all the same: continue numbering
    /// above whatever is stored, and let a refill dispatch rows it may have stored.
    async fn recover_after_failure(&mut self) {
        if let Ok(max) = self.store.max_inbound_seq().await {
            self.next_seq = self.next_seq.max(max);
        }
        self.dispatcher.overflowed = true;
    }

    /// Answers the transactions that follow a gap in the homeserver's numbering with an
    /// error, so that it resends the missing one first; returns the others.
    fn refuse_after_gaps(&mut self, batch: Vec<WriteRequest>) -> Vec<WriteRequest> {
        let mut kept = Vec::with_capacity(batch.len());
        for request in batch {
            match self.gaps.check(&request.txn_id, Instant::now()) {
                gap::Verdict::Accept => kept.push(request),
                gap::Verdict::WaitFor(missing) => {
                    tracing::info!(txn_id = ?request.txn_id, missing, "a gap in the transaction numbering after a recovery; refusing once so the homeserver sends any of ours it left unsent first");
                    let _ = request.reply.send(Err(SinkError::OutOfOrder(missing)));
                }
            }
        }
        kept
    }

    fn refuse(&mut self, batch: Vec<WriteRequest>, error: &StoreError) {
        tracing::error!(%error, "could not store a transaction; the homeserver will retry");
        self.gaps.failed(Instant::now());
        for request in batch {
            let _ = request
                .reply
                .send(Err(SinkError::Failed(error.to_string())));
        }
    }
}

async fn prune(store: &Store) -> Result<(), StoreError> {
    let cutoff = now_ms() - i64::try_from(RETENTION.as_millis()).unwrap_or(i64::MAX);
    let pruned = store.prune_inbound(cutoff).await?;
    if pruned > 0 {
        tracing::info!(pruned, "forgot handled events past the retention horizon");
    }
    Ok(())
}

async fn run_pruner(store: Store, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(PRUNE_EVERY) => {}
        }
        if let Err(error) = prune(&store).await {
            tracing::warn!(%error, "pruning old events failed; will try again");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::store::EventKind;

    /// Records what it handles; events of room `!slow` wait until released.
    #[derive(Debug, Default)]
    struct Recorder {
        seen: Mutex<Vec<i64>>,
        release: tokio::sync::Notify,
    }

    #[async_trait]
    impl EventHandler for Recorder {
        async fn handle(&self, event: &StoredEvent) -> Result<(), HandleError> {
            if event.room_id.as_deref() == Some("!slow") {
                self.release.notified().await;
            }
            self.seen.lock().unwrap().push(event.seq);
            Ok(())
        }
    }

    fn event(seq: i64, room: &str) -> StoredEvent {
        StoredEvent {
            seq,
            kind: EventKind::Timeline,
            event_id: Some(format!("$e{seq}")),
            room_id: Some(room.to_owned()),
            event_type: "m.room.message".to_owned(),
            content: Arc::from("{}"),
            received_at: 0,
            redelivered: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_room_workers_are_retired_and_busy_ones_kept() {
        let recorder = Arc::new(Recorder::default());
        let (marks, mut marked) = mpsc::unbounded_channel();
        let mut dispatcher = Dispatcher {
            rooms: HashMap::new(),
            handler: recorder.clone(),
            marks,
            metrics: Metrics::new(),
            shutdown: CancellationToken::new(),
            workers: JoinSet::new(),
            last_dispatched: 0,
            overflowed: false,
            stored_before_start: 0,
        };
        dispatcher.dispatch(event(1, "!quiet"));
        dispatcher.dispatch(event(2, "!slow"));
        assert_eq!(marked.recv().await.map(|m| m.0), Some(1));
        tokio::time::advance(RETIRE_AFTER + Duration::from_secs(1)).await;
        dispatcher.retire_idle();
        assert!(
            !dispatcher.rooms.contains_key("!quiet"),
            "an idle worker stays"
        );
        assert!(
            dispatcher.rooms.contains_key("!slow"),
            "a busy worker was retired"
        );
        // The quiet room's next event gets a new worker, and is handled.
        dispatcher.dispatch(event(3, "!quiet"));
        assert_eq!(marked.recv().await.map(|m| m.0), Some(3));
        recorder.release.notify_one();
        assert_eq!(marked.recv().await.map(|m| m.0), Some(2));
        assert_eq!(*recorder.seen.lock().unwrap(), [1, 3, 2]);
    }
}
