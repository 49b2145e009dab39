//! The `ingest-probe` binary as a test fixture: bridge-core's foundation with a handler
//! that logs each event, started, SIGKILLed and restarted by crash tests.
//!
//! The probe is owned like a server ([`ServerProcess`]), so a test binary that dies never
//! leaves one running, and a probe that cannot start fails with its output. A test ends a
//! run with [`IngestProbe::stop`] and reads the log only then: once the probe has exited
//! the log is final, so "nothing more arrives" needs no sleep.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::process::ServerProcess;
use crate::{Error, Result, run_dir};

/// How long a probe may take to drain and exit after SIGTERM before it counts as hung.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// One call of the probe's handler, as its log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The event's room (empty for events without one).
    pub room_id: String,
    /// The event id (empty for events without one, such as typing notifications).
    pub event_id: String,
    /// Whether the framework flagged it as possibly handed over before a restart.
    pub redelivered: bool,
    /// Whether the handler applied it; false when it skipped a redelivered event it had
    /// already applied.
    pub applied: bool,
}

/// A probe process listening on a fixed port across restarts.
#[derive(Debug)]
pub struct IngestProbe {
    binary: PathBuf,
    database: String,
    port: u16,
    hs_token: String,
    log: PathBuf,
    output: PathBuf,
    delay_ms: u64,
    process: Option<ServerProcess>,
}

impl IngestProbe {
    /// A probe (not started) of the `ingest-probe` binary at `binary`, logging handler
    /// calls to `log`; its own output goes to a file of the run folder named after the port.
    pub fn new(
        binary: &Path,
        database: &str,
        port: u16,
        hs_token: &str,
        log: &Path,
        delay_ms: u64,
    ) -> Self {
        IngestProbe {
            binary: binary.to_path_buf(),
            database: database.to_owned(),
            port,
            hs_token: hs_token.to_owned(),
            log: log.to_path_buf(),
            output: run_dir().join(format!("ingest-probe-{port}.out")),
            delay_ms,
            process: None,
        }
    }

    /// Starts it (killing a previous run still going) and waits until `/health/ready`
    /// answers. Fails with its output if it exits first.
    pub async fn start(&mut self) -> Result<()> {
        self.kill();
        let mut command = std::process::Command::new(&self.binary);
        command
            .args(["--database", &self.database])
            .args(["--bind", &format!("127.0.0.1:{}", self.port)])
            .args(["--hs-token", &self.hs_token])
            .args(["--delay-ms", &self.delay_ms.to_string(), "--log"])
            .arg(&self.log);
        let process = ServerProcess::spawn("ingest-probe", command, &self.output)?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(Error::http("building an HTTP client"))?;
        let ready = format!("http://127.0.0.1:{}/health/ready", self.port);
        process
            .wait_ready(Duration::from_secs(20), || {
                let request = http.get(&ready).send();
                async move { matches!(request.await, Ok(r) if r.status().is_success()) }
            })
            .await?;
        self.process = Some(process);
        Ok(())
    }

    /// SIGKILLs it (its whole process group) and reaps it; nothing is drained or recorded.
    pub fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill();
        }
    }

    /// Stops it as a bridge is stopped (SIGTERM: the endpoint closes, the ingest finishes
    /// and records the events in hand) and waits for it to exit. Fails if it does not exit
    /// cleanly within a grace period; after this the log is final.
    pub async fn stop(&mut self) -> Result<()> {
        let Some(process) = self.process.take() else {
            return Ok(());
        };
        process.stop(STOP_GRACE).await;
        match process.exit_status() {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(Error::Protocol(format!(
                "ingest-probe did not stop cleanly on SIGTERM ({status}); its output:\n{}",
                process.log_tail(40)
            ))),
            None => Err(Error::Protocol(format!(
                "ingest-probe still runs after being stopped; its output:\n{}",
                process.log_tail(40)
            ))),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every handler call so far, in order, across restarts.
    pub fn deliveries(&self) -> Result<Vec<Delivery>> {
        let text = match std::fs::read_to_string(&self.log) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io(format!("reading {}", self.log.display()))(e)),
        };
        text.lines().map(|line| self.parse(line)).collect()
    }

    /// The effects so far: `(room_id, event_id)` of each applied delivery, in order.
    pub fn applied(&self) -> Result<Vec<(String, String)>> {
        Ok(self
            .deliveries()?
            .into_iter()
            .filter(|d| d.applied)
            .map(|d| (d.room_id, d.event_id))
            .collect())
    }

    /// Waits until every one of `event_ids` has been applied. Events may still be in hand
    /// afterwards: [`stop`](Self::stop) the probe before judging the log.
    pub async fn wait_until_applied(&self, event_ids: &[String], timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let applied: HashSet<String> = self.applied()?.into_iter().map(|(_, id)| id).collect();
            let missing_at: Vec<usize> = event_ids
                .iter()
                .enumerate()
                .filter(|(_, id)| !applied.contains(*id))
                .map(|(index, _)| index)
                .collect();
            let missing = missing_at.len();
            if missing == 0 {
                return Ok(());
            }
            if let Some(process) = &self.process
                && let Some(status) = process.exit_status()
            {
                return Err(Error::Protocol(format!(
                    "ingest-probe exited with {status} while {missing} events were missing; \
                     its output:\n{}",
                    process.log_tail(40)
                )));
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!(
                        "{missing} of {} events to be applied (missing at positions {missing_at:?}; \
                         log {})",
                        event_ids.len(),
                        self.log.display()
                    ),
                    seconds: timeout.as_secs_f64(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn parse(&self, line: &str) -> Result<Delivery> {
        let malformed = || {
            Error::Protocol(format!(
                "malformed line in {}: {line:?}",
                self.log.display()
            ))
        };
        let fields: Vec<&str> = line.split('\t').collect();
        let [room_id, event_id, redelivered, applied] = fields[..] else {
            return Err(malformed());
        };
        Ok(Delivery {
            room_id: room_id.to_owned(),
            event_id: event_id.to_owned(),
            redelivered: redelivered.parse().map_err(|_| malformed())?,
            applied: applied.parse().map_err(|_| malformed())?,
        })
    }
}
