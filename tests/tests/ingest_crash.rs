//! Kill-and-redeliver: the foundation is SIGKILLed mid-burst, twice, and restarted; the
//! homeserver retries what was not acknowledged and repeats some of what was. Every event
//! must be handled exactly once, in order per room, on SQLite and on PostgreSQL.
//!
//! The homeserver here is scripted because the faults are the point: a real one does not
//! resend an acknowledged transaction, or race a request against a kill, on demand. The
//! same bridge against a real Synapse is tested in `foundation_synapse.rs`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bridge_core::store::Store;
use serde_json::json;
use trestle_tests::databases::{TestDatabase, both_backends};
use trestle_tests::probe::IngestProbe;
use trestle_tests::process::free_port;
use trestle_tests::run_dir;

const TOKEN: &str = "hs-token-for-the-crash-test";
const TRANSACTIONS: usize = 60;
const EVENTS_PER_TRANSACTION: usize = 20;
const ROOMS: usize = 5;
/// The handler's time per event: slow enough that events pile up between storing and
/// handling even when the machine is loaded and the pushes slow down. At 2 ms as few as
/// 30 of the 420 events stored by the first kill were still unhandled; at 10 ms over 300
/// were, with both cores otherwise busy.
const HANDLER_DELAY_MS: u64 = 10;

fn transaction_body(t: usize) -> serde_json::Value {
    let events: Vec<_> = (0..EVENTS_PER_TRANSACTION)
        .map(|i| {
            let n = t * EVENTS_PER_TRANSACTION + i;
            json!({
                "type": "m.room.message", "event_id": format!("$ev{n}"),
                "room_id": format!("!room{}:example.org", n % ROOMS),
                "sender": "@alice:example.org", "origin_server_ts": n,
                "content": {"msgtype": "m.text", "body": format!("message {n}")}
            })
        })
        .collect();
    json!({"events": events})
}

/// One attempt, as the homeserver makes it: true on 200.
async fn push(http: &reqwest::Client, port: u16, t: usize) -> bool {
    let url = format!("http://127.0.0.1:{port}/_matrix/app/v1/transactions/txn{t}");
    matches!(
        http.put(url).bearer_auth(TOKEN).json(&transaction_body(t)).send().await,
        Ok(r) if r.status().is_success()
    )
}

/// Retries like a homeserver until the transaction is acknowledged.
async fn push_until_acknowledged(http: &reqwest::Client, port: u16, t: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !push(http, port, t).await {
        assert!(Instant::now() < deadline, "txn{t} never acknowledged");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn kill_mid_burst_and_check(db: TestDatabase) {
    let log = run_dir().join(format!("crash-{}-{}.log", db.backend, std::process::id()));
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_ingest-probe"));
    let mut probe = IngestProbe::new(
        binary,
        &db.url,
        free_port().unwrap(),
        TOKEN,
        &log,
        HANDLER_DELAY_MS,
    );
    probe.start().await.unwrap();
    let http = reqwest::Client::new();
    for t in 0..TRANSACTIONS {
        if t == 40 {
            // Race a request against the kill: whether txn40 was stored is unknown, so
            // the homeserver retries it after the restart.
            let request = push(&http, probe.port(), t);
            let kill = async {
                tokio::time::sleep(Duration::from_millis(3)).await;
                probe.kill();
            };
            let _ = tokio::join!(request, kill);
            probe.start().await.unwrap();
        }
        push_until_acknowledged(&http, probe.port(), t).await;
        if t == 20 {
            // Acknowledged, so stored; with the handler's delay, hundreds are not handled
            // yet, and the kill lands in the window a restart must redeliver.
            let acknowledged = (t + 1) * EVENTS_PER_TRANSACTION;
            let applied = probe.applied().unwrap().len();
            assert!(
                applied < acknowledged,
                "{}: all {acknowledged} events were handled before the kill, so it tests \
                 no redelivery",
                db.backend
            );
            probe.kill();
            probe.start().await.unwrap();
            // The homeserver repeats transactions it had been answered for.
            for repeat in 10..=20 {
                push_until_acknowledged(&http, probe.port(), repeat).await;
            }
        }
    }

    let total = TRANSACTIONS * EVENTS_PER_TRANSACTION;
    let all: Vec<String> = (0..total).map(|n| format!("$ev{n}")).collect();
    probe
        .wait_until_applied(&all, Duration::from_secs(60))
        .await
        .unwrap();
    // Once stopped, the log is final: whatever would repeat has shown by now.
    probe.stop().await.unwrap();
    let deliveries = probe.deliveries().unwrap();
    let handled = probe.applied().unwrap();

    let mut per_room: HashMap<String, Vec<usize>> = HashMap::new();
    for (room, event_id) in &handled {
        let n: usize = event_id.trim_start_matches("$ev").parse().unwrap();
        per_room.entry(room.clone()).or_default().push(n);
    }
    assert_eq!(
        handled.len(),
        total,
        "{}: each event handled exactly once",
        db.backend
    );
    for (room, numbers) in per_room {
        let expected: Vec<usize> = (0..total)
            .filter(|n| format!("!room{}:example.org", n % ROOMS) == room)
            .collect();
        assert_eq!(numbers, expected, "{}: order in {room}", db.backend);
    }

    // The handler's skip of a redelivered event would hide the framework handing an event
    // over twice; only a redelivery after a restart may repeat one.
    let mut first_deliveries = HashSet::new();
    for delivery in deliveries.iter().filter(|d| !d.redelivered) {
        assert!(
            first_deliveries.insert(delivery.event_id.as_str()),
            "{}: {} handed over twice without the redelivered flag",
            db.backend,
            delivery.event_id
        );
    }
    let redelivered = deliveries.iter().filter(|d| d.redelivered).count();
    assert!(
        redelivered > 0,
        "{}: the kills caused no redelivery",
        db.backend
    );

    // Nothing is left to hand over on a next start.
    let store = Store::connect(&db.url, 2).await.unwrap();
    let pending = store.pending_events().await.unwrap();
    assert!(
        pending.is_empty(),
        "{}: {} events still pending",
        db.backend,
        pending.len()
    );
    store.close().await;
}

#[tokio::test]
async fn every_event_is_handled_exactly_once_in_order_across_kills() {
    for db in both_backends().await.unwrap() {
        kill_mid_burst_and_check(db).await;
    }
}
