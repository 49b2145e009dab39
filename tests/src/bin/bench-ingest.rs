//! `bench-ingest`: throughput and latency of bridge-core's durable ingest path, over HTTP,
//! on SQLite and PostgreSQL. Transactions of synthetic `m.room.message` events are pushed
//! as a homeserver would (`--in-flight 1` is Synapse's one-at-a-time), each acknowledged
//! only after its durable commit; the handler records when each event reached it.
//!
//! Run pinned to one core to measure what one core does (the load generator included):
//! `taskset -c 0 cargo run --release -p trestle-tests --bin bench-ingest`

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bridge_core::appservice::{EndpointOptions, NoQueries};
use bridge_core::ingest::{EventHandler, HandleError};
use bridge_core::metrics::Metrics;
use bridge_core::runtime::{FoundationOptions, run_foundation};
use bridge_core::store::StoredEvent;
use clap::Parser;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use trestle_tests::databases::{fresh_postgres, fresh_sqlite};
use trestle_tests::process::free_port;

#[derive(Debug, Parser)]
struct Args {
    /// Transactions to push per run.
    #[arg(long, default_value_t = 2000)]
    transactions: usize,
    /// Events per transaction.
    #[arg(long, default_value_t = 50)]
    events: usize,
    /// Rooms the events are spread over.
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    /// Transactions in flight at once (one per run, comma-separated).
    #[arg(long, default_value = "1,8,32", value_delimiter = ',')]
    in_flight: Vec<usize>,
    /// Backends to measure.
    #[arg(long, default_value = "sqlite,postgres", value_delimiter = ',')]
    backends: Vec<String>,
}

/// Counts handled events and when each transaction's events arrived.
#[derive(Debug, Default)]
struct Timing {
    handled: AtomicUsize,
    sent: Mutex<HashMap<usize, Instant>>,
    delays: Mutex<Vec<Duration>>,
    all_done: Notify,
    expected: AtomicUsize,
}

#[async_trait]
impl EventHandler for Timing {
    async fn handle(&self, event: &StoredEvent) -> Result<(), HandleError> {
        let txn = event
            .event_id
            .as_deref()
            .and_then(|id| id.trim_start_matches("$b").split('_').next())
            .and_then(|t| t.parse::<usize>().ok());
        let sent = txn.and_then(|t| self.sent.lock().ok()?.get(&t).copied());
        if let (Some(sent), Ok(mut delays)) = (sent, self.delays.lock()) {
            delays.push(sent.elapsed());
        }
        if self.handled.fetch_add(1, Ordering::Relaxed) + 1 == self.expected.load(Ordering::Relaxed)
        {
            self.all_done.notify_one();
        }
        Ok(())
    }
}

fn body(t: usize, events: usize, rooms: usize) -> Vec<u8> {
    let events: Vec<_> = (0..events)
        .map(|i| {
            serde_json::json!({
                "type": "m.room.message", "event_id": format!("$b{t}_{i}"),
                "room_id": format!("!bench{}:example.org", (t * 7 + i) % rooms),
                "sender": "@someone:example.org", "origin_server_ts": 1_700_000_000_000u64,
                "content": {"msgtype": "m.text", "body": format!("benchmark message {t}/{i} with some ordinary length text")}
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({"events": events})).unwrap_or_default()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

async fn run_once(
    args: &Args,
    backend: &str,
    database: String,
    in_flight: usize,
) -> anyhow::Result<()> {
    let port = free_port()?;
    let timing = Arc::new(Timing::default());
    let total = args.transactions * args.events;
    timing.expected.store(total, Ordering::Relaxed);
    let shutdown = CancellationToken::new();
    let options = FoundationOptions {
        bind: format!("127.0.0.1:{port}").parse()?,
        database_url: database,
        max_connections: 8,
        endpoint: EndpointOptions::new("bench-token"),
    };
    let server = tokio::spawn(run_foundation(
        options,
        timing.clone(),
        Arc::new(NoQueries),
        Metrics::new(),
        shutdown.clone().cancelled_owned(),
    ));
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    while http
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let bodies: Vec<Vec<u8>> = (0..args.transactions)
        .map(|t| body(t, args.events, args.rooms))
        .collect();
    let acks = Arc::new(Mutex::new(Vec::with_capacity(args.transactions)));
    let next = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(bodies);
    let started = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..in_flight {
        let (http, base, bodies, next, acks, timing) = (
            http.clone(),
            base.clone(),
            bodies.clone(),
            next.clone(),
            acks.clone(),
            timing.clone(),
        );
        senders.push(tokio::spawn(async move {
            loop {
                let t = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(t) else { break };
                let sent = Instant::now();
                if let Ok(mut map) = timing.sent.lock() {
                    map.insert(t, sent);
                }
                let response = http
                    .put(format!("{base}/_matrix/app/v1/transactions/bench{t}"))
                    .bearer_auth("bench-token")
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status().is_success() => {
                        if let Ok(mut acks) = acks.lock() {
                            acks.push(sent.elapsed());
                        }
                    }
                    other => eprintln!("txn {t} failed: {other:?}"),
                }
            }
        }));
    }
    for sender in senders {
        sender.await?;
    }
    let acknowledged = started.elapsed();
    if timing.handled.load(Ordering::Relaxed) < total {
        tokio::time::timeout(Duration::from_secs(120), timing.all_done.notified()).await?;
    }
    let handled = started.elapsed();
    shutdown.cancel();
    server.await??;

    let mut acks = acks.lock().map(|a| a.clone()).unwrap_or_default();
    acks.sort_unstable();
    let mut delays = timing.delays.lock().map(|d| d.clone()).unwrap_or_default();
    delays.sort_unstable();
    #[allow(clippy::cast_precision_loss)]
    let rate = |d: Duration| total as f64 / d.as_secs_f64();
    println!(
        "| {backend} | {in_flight} | {} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} |",
        args.events,
        rate(acknowledged),
        rate(handled),
        percentile(&acks, 0.5).as_secs_f64() * 1000.0,
        percentile(&acks, 0.99).as_secs_f64() * 1000.0,
        percentile(&delays, 0.5).as_secs_f64() * 1000.0,
        percentile(&delays, 0.99).as_secs_f64() * 1000.0,
    );
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "{} transactions x {} events over {} rooms\n",
        args.transactions, args.events, args.rooms
    );
    println!(
        "| backend | in flight | events/txn | stored events/s | handled events/s | ack p50 ms | ack p99 ms | to handler p50 ms | to handler p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for backend in &args.backends {
        for &in_flight in &args.in_flight {
            let database = match backend.as_str() {
                "sqlite" => fresh_sqlite().url,
                "postgres" => fresh_postgres().await?.url,
                other => anyhow::bail!("unknown backend {other}"),
            };
            run_once(&args, backend, database, in_flight).await?;
        }
    }
    Ok(())
}
