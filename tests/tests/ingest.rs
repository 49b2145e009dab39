//! Durable ingest on both backends: transactions stored before they are acknowledged,
//! repeats recognised, events handled once and in order per room while rooms run in
//! parallel, retries holding a room's later events back, failures recorded, and
//! unhandled events handed over again after a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bridge_core::ingest::{EventHandler, HandleError, Ingest};
use bridge_core::metrics::Metrics;
use bridge_core::store::{Store, StoredEvent};
use bridge_core::transaction::{
    Accepted, IncomingTransaction, SinkError, TransactionBody, TransactionSink,
};
use futures::future::join_all;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use trestle_tests::databases::both_backends;

/// Records what it handled; can be told to fail on certain bodies.
#[derive(Default)]
struct Recorder {
    handled: Mutex<Vec<(String, String, bool)>>,
    retry_first: Mutex<HashMap<String, usize>>,
}

#[async_trait]
impl EventHandler for Recorder {
    async fn handle(&self, event: &StoredEvent) -> Result<(), HandleError> {
        let content: serde_json::Value = serde_json::from_str(&event.content).unwrap_or_default();
        let body = content["content"]["body"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if body == "panic" {
            panic!("handler bug");
        }
        if body == "give up" {
            return Err(HandleError::GiveUp("unbridgeable".into()));
        }
        {
            let mut retries = self.retry_first.lock().unwrap();
            if let Some(left) = retries.get_mut(&body)
                && *left > 0
            {
                *left -= 1;
                return Err(HandleError::Retry("remote down".into()));
            }
        }
        // A slow remote, so rooms overlap in time.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let room = event.room_id.clone().unwrap_or_default();
        self.handled
            .lock()
            .unwrap()
            .push((room, body, event.redelivered));
        Ok(())
    }
}

impl Recorder {
    fn bodies_in(&self, room: &str) -> Vec<String> {
        self.handled
            .lock()
            .unwrap()
            .iter()
            .filter(|(r, _, _)| r == room)
            .map(|(_, b, _)| b.clone())
            .collect()
    }

    async fn wait_for(&self, count: usize) {
        for _ in 0..500 {
            if self.handled.lock().unwrap().len() >= count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "only {} of {count} events handled",
            self.handled.lock().unwrap().len()
        );
    }
}

fn transaction(txn: &str, events: &[(&str, &str, &str)]) -> IncomingTransaction {
    let events: Vec<_> = events
        .iter()
        .map(|(id, room, body)| {
            json!({
                "type": "m.room.message", "event_id": id, "room_id": room,
                "sender": "@alice:example.org", "origin_server_ts": 1,
                "content": {"msgtype": "m.text", "body": body}
            })
        })
        .collect();
    let text = json!({"events": events}).to_string();
    let body = TransactionBody::parse(text.as_bytes()).unwrap();
    IncomingTransaction {
        txn_id: txn.into(),
        body,
    }
}

/// How many durable commits the ingest made, from its metrics.
fn commit_count(metrics: &Metrics) -> u64 {
    metrics
        .encode()
        .lines()
        .find_map(|line| line.strip_prefix("trestle_ingest_commit_seconds_count "))
        .and_then(|count| count.trim().parse().ok())
        .expect("the ingest exports its commit count")
}

async fn send(ingest: &Ingest, txn: IncomingTransaction) -> Accepted {
    ingest.accept(txn).await.unwrap()
}

#[tokio::test]
async fn events_are_handled_once_in_order_per_room_with_rooms_in_parallel() {
    for db in both_backends().await.unwrap() {
        let store = Store::connect(&db.url, 8).await.unwrap();
        let recorder = Arc::new(Recorder::default());
        let shutdown = CancellationToken::new();
        let metrics = Metrics::new();
        let (ingest, tasks) = Ingest::start(
            store.clone(),
            recorder.clone(),
            metrics.clone(),
            shutdown.clone(),
        )
        .await
        .unwrap();

        // 20 transactions of 10 events over 8 rooms, sent concurrently in groups of 4, so
        // that several transactions share a commit. The transactions of a group touch
        // disjoint rooms (two each): the order between them is not defined, but each
        // room's order still is, by group.
        let mut expected: HashMap<String, Vec<String>> = HashMap::new();
        for group in 0..5 {
            let transactions: Vec<IncomingTransaction> = (0..4)
                .map(|slot| {
                    let t = group * 4 + slot;
                    let events: Vec<(String, String, String)> = (0..10)
                        .map(|i| {
                            let n = t * 10 + i;
                            let room = format!("!room{}:x", slot * 2 + i % 2);
                            (format!("$e{n}"), room, format!("m{n}"))
                        })
                        .collect();
                    for (_, room, body) in &events {
                        expected.entry(room.clone()).or_default().push(body.clone());
                    }
                    let refs: Vec<(&str, &str, &str)> = events
                        .iter()
                        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
                        .collect();
                    transaction(&format!("t{t}"), &refs)
                })
                .collect();
            let outcomes = join_all(transactions.into_iter().map(|txn| send(&ingest, txn))).await;
            assert_eq!(outcomes, vec![Accepted::Stored; 4], "{}", db.backend);
        }
        let commits = commit_count(&metrics);
        assert!(
            (1..20).contains(&commits),
            "{}: {commits} commits for 20 transactions: none was shared",
            db.backend
        );
        // The homeserver retries a transaction: recognised, nothing handled again.
        let again = transaction("t3", &[("$e30", "!room6:x", "m30")]);
        assert_eq!(send(&ingest, again).await, Accepted::AlreadySeen);

        recorder.wait_for(200).await;
        // Stopped, the ingest hands nothing more over: the count is final.
        shutdown.cancel();
        tasks.join().await;
        assert_eq!(
            recorder.handled.lock().unwrap().len(),
            200,
            "{}",
            db.backend
        );
        for (room, bodies) in &expected {
            assert_eq!(
                &recorder.bodies_in(room),
                bodies,
                "{}: order in {room}",
                db.backend
            );
        }
        assert!(
            store.pending_events().await.unwrap().is_empty(),
            "{}",
            db.backend
        );
    }
}

#[tokio::test]
async fn a_retrying_event_holds_back_its_room_only_and_failures_are_recorded() {
    for db in both_backends().await.unwrap() {
        let store = Store::connect(&db.url, 8).await.unwrap();
        let recorder = Arc::new(Recorder::default());
        recorder
            .retry_first
            .lock()
            .unwrap()
            .insert("flaky".into(), 2);
        let shutdown = CancellationToken::new();
        let (ingest, tasks) = Ingest::start(
            store.clone(),
            recorder.clone(),
            Metrics::new(),
            shutdown.clone(),
        )
        .await
        .unwrap();
        let txn = transaction(
            "t1",
            &[
                ("$1", "!slow:x", "flaky"),
                ("$2", "!slow:x", "after flaky"),
                ("$3", "!fast:x", "quick"),
                ("$4", "!fast:x", "give up"),
                ("$5", "!fast:x", "panic"),
                ("$6", "!fast:x", "still here"),
            ],
        );
        send(&ingest, txn).await;
        recorder.wait_for(4).await;
        assert_eq!(
            recorder.bodies_in("!slow:x"),
            vec!["flaky", "after flaky"],
            "{}",
            db.backend
        );
        assert_eq!(
            recorder.bodies_in("!fast:x"),
            vec!["quick", "still here"],
            "{}",
            db.backend
        );
        // The fast room finished first: the slow room's retries did not hold it back.
        let order: Vec<String> = recorder
            .handled
            .lock()
            .unwrap()
            .iter()
            .map(|h| h.1.clone())
            .collect();
        assert_eq!(order[0], "quick", "{}", db.backend);
        shutdown.cancel();
        tasks.join().await;

        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
        let errors: Vec<(String,)> =
            sqlx::query_as("SELECT error FROM inbound_events WHERE error IS NOT NULL ORDER BY seq")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(
            errors,
            vec![
                ("unbridgeable".to_owned(),),
                ("the handler panicked".to_owned(),)
            ],
            "{}",
            db.backend
        );
    }
}

#[tokio::test]
async fn unhandled_events_are_handed_over_again_after_a_restart() {
    for db in both_backends().await.unwrap() {
        let store = Store::connect(&db.url, 8).await.unwrap();
        // First run: the handler keeps failing, as if the remote were down at shutdown.
        let stuck = Arc::new(Recorder::default());
        stuck
            .retry_first
            .lock()
            .unwrap()
            .insert("first".into(), usize::MAX);
        let shutdown = CancellationToken::new();
        let (ingest, tasks) = Ingest::start(
            store.clone(),
            stuck.clone(),
            Metrics::new(),
            shutdown.clone(),
        )
        .await
        .unwrap();
        send(
            &ingest,
            transaction("t1", &[("$1", "!r:x", "first"), ("$2", "!r:x", "second")]),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        shutdown.cancel();
        tasks.join().await;
        assert!(stuck.handled.lock().unwrap().is_empty());

        // Second run: both come back, in order, flagged as possibly seen before; the
        // homeserver's retry of t1 is recognised; a new transaction follows them.
        let recorder = Arc::new(Recorder::default());
        let shutdown = CancellationToken::new();
        let (ingest, tasks) = Ingest::start(
            store.clone(),
            recorder.clone(),
            Metrics::new(),
            shutdown.clone(),
        )
        .await
        .unwrap();
        let retry = transaction("t1", &[("$1", "!r:x", "first"), ("$2", "!r:x", "second")]);
        assert_eq!(send(&ingest, retry).await, Accepted::AlreadySeen);
        send(&ingest, transaction("t2", &[("$3", "!r:x", "third")])).await;
        recorder.wait_for(3).await;
        let handled = recorder.handled.lock().unwrap().clone();
        assert_eq!(
            handled,
            vec![
                ("!r:x".into(), "first".into(), true),
                ("!r:x".into(), "second".into(), true),
                ("!r:x".into(), "third".into(), false),
            ],
            "{}",
            db.backend
        );
        shutdown.cancel();
        tasks.join().await;
    }
}

/// A race in Synapse's scheduler can leave one transaction unsent after a recovery, and
/// Synapse numbers the transactions of all its appservices from one sequence. Right after
/// a start, a transaction after a gap is refused once (so Synapse's recoverer sends any
/// unsent one of ours first) and accepted when offered again.
#[tokio::test]
async fn a_transaction_after_a_gap_in_the_numbering_is_refused_once_after_a_start() {
    let db = trestle_tests::databases::fresh_sqlite();
    let store = Store::connect(&db.url, 8).await.unwrap();
    let recorder = Arc::new(Recorder::default());
    let shutdown = CancellationToken::new();
    let (ingest, tasks) = Ingest::start(
        store.clone(),
        recorder.clone(),
        Metrics::new(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let accept = |txn: &str, id: &str, body: &str| {
        let ingest = ingest.clone();
        let txn = transaction(txn, &[(id, "!r:x", body)]);
        async move { ingest.accept(txn).await }
    };
    assert!(accept("1", "$1", "one").await.is_ok());
    assert!(accept("2", "$2", "two").await.is_ok());
    // 3 was left unsent: 4 is refused as out of order (a 409 on the wire, not a server
    // error), and the homeserver's recoverer sends 3, then 4.
    assert!(matches!(
        accept("4", "$4", "four").await,
        Err(SinkError::OutOfOrder(3))
    ));
    assert_eq!(accept("3", "$3", "three").await.unwrap(), Accepted::Stored);
    assert_eq!(accept("4", "$4", "four").await.unwrap(), Accepted::Stored);
    // 5 to 9 were another appservice's: 10 is refused once, then taken when offered again.
    assert!(matches!(
        accept("10", "$10", "ten").await,
        Err(SinkError::OutOfOrder(5))
    ));
    assert_eq!(accept("10", "$10", "ten").await.unwrap(), Accepted::Stored);
    recorder.wait_for(5).await;
    shutdown.cancel();
    tasks.join().await;
    assert_eq!(
        recorder.bodies_in("!r:x"),
        vec!["one", "two", "three", "four", "ten"]
    );

    // After a restart the numbering is remembered from the store.
    let shutdown = CancellationToken::new();
    let (ingest, tasks) = Ingest::start(
        store.clone(),
        recorder.clone(),
        Metrics::new(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let refused = ingest
        .accept(transaction("12", &[("$12", "!r:x", "twelve")]))
        .await;
    assert!(
        matches!(refused, Err(SinkError::OutOfOrder(11))),
        "11 may be missing after the restart too"
    );
    shutdown.cancel();
    tasks.join().await;
}

/// Handles nothing until the gate opens, then records like [`Recorder`].
struct Gated {
    open: tokio::sync::watch::Receiver<bool>,
    recorder: Recorder,
}

#[async_trait]
impl EventHandler for Gated {
    async fn handle(&self, event: &StoredEvent) -> Result<(), HandleError> {
        let mut open = self.open.clone();
        let _ = open.wait_for(|open| *open).await;
        self.recorder.handle(event).await
    }
}

/// Stores `transactions` x 500 events over 10 rooms; returns the expected order per room.
async fn store_backlog(
    ingest: &Ingest,
    prefix: &str,
    transactions: usize,
) -> HashMap<String, Vec<String>> {
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    for t in 0..transactions {
        let events: Vec<(String, String, String)> = (0..500)
            .map(|i| {
                let n = t * 500 + i;
                (
                    format!("${prefix}{n}"),
                    format!("!backlog{}:x", n % 10),
                    format!("{prefix}{n}"),
                )
            })
            .collect();
        for (_, room, body) in &events {
            expected.entry(room.clone()).or_default().push(body.clone());
        }
        let refs: Vec<(&str, &str, &str)> = events
            .iter()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
            .collect();
        assert_eq!(
            send(ingest, transaction(&format!("{prefix}{t}"), &refs)).await,
            Accepted::Stored
        );
    }
    expected
}

/// A backlog larger than the in-memory limit waits in the database: memory holds at
/// most the limit, and every event is still handled once, in order per room, both in
/// the same run and after a restart.
#[tokio::test]
async fn a_backlog_beyond_the_memory_limit_waits_in_the_database() {
    use bridge_core::ingest::IN_MEMORY_LIMIT;
    let db = trestle_tests::databases::fresh_sqlite();
    let store = Store::connect(&db.url, 8).await.unwrap();
    let (gate, open) = tokio::sync::watch::channel(false);
    let handler = Arc::new(Gated {
        open,
        recorder: Recorder::default(),
    });
    let metrics = Metrics::new();
    let shutdown = CancellationToken::new();
    let (ingest, tasks) = Ingest::start(
        store.clone(),
        handler.clone(),
        metrics.clone(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let expected = store_backlog(&ingest, "a", 30).await;
    let queued = usize::try_from(metrics.ingest_queued.get()).unwrap();
    assert!(queued <= IN_MEMORY_LIMIT, "{queued} events in memory");
    assert_eq!(metrics.ingest_pending.get(), 15_000);

    gate.send(true).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while handler.recorder.handled.lock().unwrap().len() < 15_000 {
        assert!(std::time::Instant::now() < deadline, "backlog not handled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    tasks.join().await;
    assert_eq!(handler.recorder.handled.lock().unwrap().len(), 15_000);
    for (room, bodies) in &expected {
        assert_eq!(&handler.recorder.bodies_in(room), bodies, "order in {room}");
    }

    // A backlog left at a stop comes back from the database, in order, after a restart.
    let (gate, open) = tokio::sync::watch::channel(false);
    let stuck = Arc::new(Gated {
        open,
        recorder: Recorder::default(),
    });
    let shutdown = CancellationToken::new();
    let (ingest, tasks) = Ingest::start(store.clone(), stuck, Metrics::new(), shutdown.clone())
        .await
        .unwrap();
    let expected = store_backlog(&ingest, "b", 24).await;
    shutdown.cancel();
    tasks.join().await;
    drop(gate);

    let recorder = Arc::new(Recorder::default());
    let metrics = Metrics::new();
    let shutdown = CancellationToken::new();
    let (_ingest, tasks) = Ingest::start(
        store.clone(),
        recorder.clone(),
        metrics.clone(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    assert_eq!(metrics.ingest_pending.get(), 12_000);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while recorder.handled.lock().unwrap().len() < 12_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "backlog not handled after restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    tasks.join().await;
    assert_eq!(recorder.handled.lock().unwrap().len(), 12_000);
    assert!(
        recorder
            .handled
            .lock()
            .unwrap()
            .iter()
            .all(|(_, _, redelivered)| *redelivered)
    );
    for (room, bodies) in &expected {
        assert_eq!(
            &recorder.bodies_in(room),
            bodies,
            "order in {room} after restart"
        );
    }
}
