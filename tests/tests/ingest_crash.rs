//! Kill-and-redeliver: the foundation is SIGKILLed mid-burst, twice, and restarted; the
//! homeserver retries what was not acknowledged and repeats some of what was. Every event
//! must be handled exactly once, in order per room, on SQLite and on PostgreSQL.
//!
//! The homeserver here is scripted because the faults are the point: a real one does not
//! resend an acknowledged transaction, or race a request against a kill, on demand. The
//! same bridge against a real Synapse is tested in `foundation_synapse.rs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::process::{Child, Command};
use trestle_tests::databases::{TestDatabase, both_backends};
use trestle_tests::process::free_port;
use trestle_tests::run_dir;

const TOKEN: &str = "hs-token-for-the-crash-test";
const TRANSACTIONS: usize = 60;
const EVENTS_PER_TRANSACTION: usize = 20;
const ROOMS: usize = 5;

struct Probe {
    database: String,
    port: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl Probe {
    async fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_ingest-probe"))
            .args(["--database", &self.database, "--bind", &format!("127.0.0.1:{}", self.port)])
            .args(["--hs-token", TOKEN, "--delay-ms", "2", "--log"])
            .arg(&self.log)
            .kill_on_drop(true)
            .spawn()
            .expect("start ingest-probe");
        self.child = Some(child);
        let ready = format!("http://127.0.0.1:{}/health/ready", self.port);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(reqwest::get(&ready).await, Ok(r) if r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("ingest-probe did not become ready");
    }

    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().expect("SIGKILL the probe");
            let _ = child.wait().await;
        }
    }
}

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

fn read_log(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            Some((fields.next()?.to_owned(), fields.next()?.to_owned()))
        })
        .collect()
}

async fn kill_mid_burst_and_check(db: TestDatabase) {
    let log = run_dir().join(format!("crash-{}-{}.log", db.backend, std::process::id()));
    let mut probe = Probe {
        database: db.url.clone(),
        port: free_port().unwrap(),
        log: log.clone(),
        child: None,
    };
    probe.start().await;
    let http = reqwest::Client::new();
    for t in 0..TRANSACTIONS {
        if t == 40 {
            // Race a request against the kill: whether txn40 was stored is unknown, so
            // the homeserver retries it after the restart.
            let request = push(&http, probe.port, t);
            let kill = async {
                tokio::time::sleep(Duration::from_millis(3)).await;
                probe.kill().await;
            };
            let _ = tokio::join!(request, kill);
            probe.start().await;
        }
        push_until_acknowledged(&http, probe.port, t).await;
        if t == 20 {
            // Acknowledged, with hundreds of events stored and not yet handled.
            probe.kill().await;
            probe.start().await;
            // The homeserver repeats transactions it had been answered for.
            for repeat in 10..=20 {
                push_until_acknowledged(&http, probe.port, repeat).await;
            }
        }
    }

    let total = TRANSACTIONS * EVENTS_PER_TRANSACTION;
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_log(&log).len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Anything extra would arrive now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    probe.kill().await;

    let handled = read_log(&log);
    let mut per_room: HashMap<String, Vec<usize>> = HashMap::new();
    for (room, event_id) in &handled {
        let n: usize = event_id.trim_start_matches("$ev").parse().unwrap();
        per_room.entry(room.clone()).or_default().push(n);
    }
    assert_eq!(handled.len(), total, "{}: each event handled exactly once", db.backend);
    for (room, numbers) in per_room {
        let expected: Vec<usize> = (0..total)
            .filter(|n| format!("!room{}:example.org", n % ROOMS) == room)
            .collect();
        assert_eq!(numbers, expected, "{}: order in {room}", db.backend);
    }
}

#[tokio::test]
async fn every_event_is_handled_exactly_once_in_order_across_kills() {
    for db in both_backends().await.unwrap() {
        kill_mid_burst_and_check(db).await;
    }
}
