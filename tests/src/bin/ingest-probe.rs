//! `ingest-probe`: bridge-core's foundation (store, durable ingest, endpoint) with a
//! handler that appends each event to a log file, for the crash tests that SIGKILL it.
//!
//! The handler is what a careful connector would be: on an event flagged `redelivered`
//! it first checks its own log, so a crash between handling and recording does not
//! repeat an effect. Anything else that repeats or loses an event shows in the log.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bridge_core::appservice::{EndpointOptions, NoQueries};
use bridge_core::ingest::{EventHandler, HandleError};
use bridge_core::metrics::Metrics;
use bridge_core::runtime::{FoundationOptions, run_foundation};
use bridge_core::store::StoredEvent;
use clap::Parser;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
struct Args {
    /// Database URL.
    #[arg(long)]
    database: String,
    /// Address to listen on.
    #[arg(long)]
    bind: std::net::SocketAddr,
    /// The homeserver token.
    #[arg(long)]
    hs_token: String,
    /// The log of handled events: `room<TAB>event_id<TAB>redelivered` per line.
    #[arg(long)]
    log: PathBuf,
    /// Time the handler takes per event, so events pile up between storing and handling.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
}

#[derive(Debug)]
struct LoggingHandler {
    file: Mutex<std::fs::File>,
    seen: Mutex<HashSet<String>>,
    delay: Duration,
}

#[async_trait]
impl EventHandler for LoggingHandler {
    async fn handle(&self, event: &StoredEvent) -> Result<(), HandleError> {
        let Some(event_id) = &event.event_id else {
            return Ok(());
        };
        if event.redelivered && self.seen.lock().map_err(|_| HandleError::Retry("lock".into()))?.contains(event_id) {
            return Ok(());
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let line = format!(
            "{}\t{event_id}\t{}\n",
            event.room_id.as_deref().unwrap_or_default(),
            event.redelivered
        );
        let mut file = self.file.lock().map_err(|_| HandleError::Retry("lock".into()))?;
        file.write_all(line.as_bytes())
            .map_err(|e| HandleError::Retry(e.to_string()))?;
        drop(file);
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(event_id.clone());
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let previous = std::fs::read_to_string(&args.log).unwrap_or_default();
    let seen = previous
        .lines()
        .filter_map(|line| line.split('\t').nth(1).map(str::to_owned))
        .collect();
    let file = std::fs::File::options().create(true).append(true).open(&args.log)?;
    let handler = Arc::new(LoggingHandler {
        file: Mutex::new(file),
        seen: Mutex::new(seen),
        delay: Duration::from_millis(args.delay_ms),
    });
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    let options = FoundationOptions {
        bind: args.bind,
        database_url: args.database,
        max_connections: 8,
        endpoint: EndpointOptions::new(args.hs_token),
    };
    run_foundation(options, handler, Arc::new(NoQueries), Metrics::new(), shutdown).await?;
    Ok(())
}
