//! `ingest-probe`: bridge-core's foundation (store, durable ingest, endpoint) with a
//! handler that appends each event to a log file, for the crash tests that SIGKILL it.
//!
//! The handler is what a careful connector would be: on an event flagged `redelivered`
//! it first checks its own log, so a crash between handling and recording does not
//! repeat an effect. Anything else that repeats or loses an event shows in the log.
//!
//! Every call of the handler is logged, skipped ones included: a skip hides a repeat from
//! the effects, so the tests need to see it to tell a redelivery after a crash (expected)
//! from the framework handing an event over twice (a bug the skip would otherwise mask).

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
use tokio::signal::unix::{SignalKind, signal};

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
    /// The log of handler calls: `room<TAB>event_id<TAB>redelivered<TAB>applied` per line,
    /// `applied` false when a redelivered event already applied was skipped.
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

impl LoggingHandler {
    fn log(&self, event: &StoredEvent, event_id: &str, applied: bool) -> Result<(), HandleError> {
        let line = format!(
            "{}\t{event_id}\t{}\t{applied}\n",
            event.room_id.as_deref().unwrap_or_default(),
            event.redelivered
        );
        let mut file = self
            .file
            .lock()
            .map_err(|_| HandleError::Retry("lock".into()))?;
        // One write(2) of an O_APPEND file: a SIGKILL cannot leave half a line behind for
        // the next run to append to.
        file.write_all(line.as_bytes())
            .map_err(|e| HandleError::Retry(e.to_string()))
    }
}

#[async_trait]
impl EventHandler for LoggingHandler {
    async fn handle(&self, event: &StoredEvent) -> Result<(), HandleError> {
        let event_id = event.event_id.as_deref().unwrap_or_default();
        let already_applied = !event_id.is_empty()
            && self
                .seen
                .lock()
                .map_err(|_| HandleError::Retry("lock".into()))?
                .contains(event_id);
        if event.redelivered && already_applied {
            return self.log(event, event_id, false);
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.log(event, event_id, true)?;
        if !event_id.is_empty()
            && let Ok(mut seen) = self.seen.lock()
        {
            seen.insert(event_id.to_owned());
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Warnings (a refused transaction, a retried event) go to the probe's output file.
    tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_writer(std::io::stderr)
        .init();
    let previous = std::fs::read_to_string(&args.log).unwrap_or_default();
    let seen = previous
        .lines()
        .filter(|line| line.split('\t').nth(3) == Some("true"))
        .filter_map(|line| line.split('\t').nth(1).map(str::to_owned))
        .collect();
    let file = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&args.log)?;
    let handler = Arc::new(LoggingHandler {
        file: Mutex::new(file),
        seen: Mutex::new(seen),
        delay: Duration::from_millis(args.delay_ms),
    });
    // Installed before the foundation starts, so a SIGTERM sent as soon as it is ready
    // stops it cleanly instead of killing it with the default action.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    };
    let options = FoundationOptions {
        bind: args.bind,
        database_url: args.database,
        max_connections: 8,
        endpoint: EndpointOptions::new(args.hs_token),
    };
    run_foundation(
        options,
        handler,
        Arc::new(NoQueries),
        Metrics::new(),
        shutdown,
    )
    .await?;
    Ok(())
}
