//! `bench-delivery`: the bridge's own cost of delivering remote messages to Matrix.
//!
//! A bench connector creates `--portals` portals, then queues `--messages` text messages
//! round-robin over them from `--ghosts` remote users through `BridgeHandle::queue`, as a
//! connector does: each is stored durably in the outbox, then the portal's worker sends it
//! (`PUT /rooms/{room}/send/m.room.message/{txn}`) and records it in the message map. The
//! bridge is the real one (`run_bridge`, a generated config and registration) on SQLite
//! (default) or PostgreSQL; the homeserver is an in-process fake on its own thread that
//! answers every request at once, so that the bridge's cost dominates. Its CPU time is
//! measured apart and reported.
//!
//! Run pinned to one core to measure what one core does (the fake homeserver included):
//! `taskset -c 0 target/release/bench-delivery --portals 10`

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use bridge_core::bridge::{BridgeHandle, run_bridge};
use bridge_core::config::{
    BridgeConfig, BridgeInfo, NetworkConfig, generate_config, generate_registration,
};
use bridge_core::connector::{
    Connector, ConnectorError, ConnectorInfo, GhostInfo, MatrixMessage, Portal, PortalInfo,
    RemoteEvent, RemoteEventKind, RemoteMessage,
};
use bridge_core::metrics::Metrics;
use clap::Parser;
use serde::Deserialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use trestle_tests::databases::{fresh_postgres, fresh_sqlite};
use trestle_tests::process::free_port;
use trestle_tests::run_dir;

#[derive(Debug, Parser)]
struct Args {
    /// Messages to queue per run.
    #[arg(long, default_value_t = 10_000)]
    messages: usize,
    /// Portals the messages are spread over (round-robin).
    #[arg(long, default_value_t = 10)]
    portals: usize,
    /// Remote users sending them.
    #[arg(long, default_value_t = 50)]
    ghosts: usize,
    /// A database URL to use instead of a fresh SQLite file: `postgres://...`, or
    /// `sqlite://FILE?mode=rwc` for a file elsewhere (on tmpfs, to take fsync out); each
    /// run needs an empty database.
    #[arg(long, conflicts_with = "postgres")]
    database_url: Option<String>,
    /// Use a fresh database on the test bed's throwaway PostgreSQL cluster (as
    /// bench-ingest does).
    #[arg(long)]
    postgres: bool,
    /// Runs, each on a fresh database (peak RSS is the process's, so over all runs so far).
    #[arg(long, default_value_t = 1)]
    runs: usize,
}

const INFO: BridgeInfo = BridgeInfo {
    name: "bench",
    binary: "bench-delivery",
    version: env!("CARGO_PKG_VERSION"),
    default_port: 9399,
};

/// The bench network has nothing to configure.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BenchNetwork {}

impl NetworkConfig for BenchNetwork {
    fn template() -> String {
        "# The benchmark's network: nothing to configure.\nbench: {}\n".to_owned()
    }
}

/// What `getrusage` says of the process or of one thread.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    /// User plus system CPU time.
    cpu: Duration,
    /// Peak resident set size, KiB (the process's, even for a thread).
    max_rss_kib: u64,
    /// Voluntary and involuntary context switches.
    switches: u64,
}

/// `getrusage(who)`: `RUSAGE_SELF` for the whole process (all threads), `RUSAGE_THREAD`
/// for the calling thread.
#[allow(unsafe_code)]
fn usage(who: libc::c_int) -> Usage {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a valid, writable `rusage` (all-zero integers are a valid one),
    // which getrusage fills in; it reads nothing else and keeps no pointer.
    let usage = unsafe {
        if libc::getrusage(who, usage.as_mut_ptr()) != 0 {
            return Usage::default();
        }
        usage.assume_init()
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or_default())
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or_default())
    };
    let count = |n: libc::c_long| u64::try_from(n).unwrap_or_default();
    Usage {
        cpu: time(usage.ru_utime) + time(usage.ru_stime),
        max_rss_kib: count(usage.ru_maxrss),
        switches: count(usage.ru_nvcsw) + count(usage.ru_nivcsw),
    }
}

/// The process's and the fake homeserver thread's usage at one moment.
#[derive(Debug, Clone, Copy)]
struct CpuMark {
    at: Instant,
    process: Usage,
    homeserver: Usage,
}

/// The fake homeserver's state: counters, and the moment the last expected send arrived.
#[derive(Debug)]
struct FakeHomeserver {
    domain: String,
    sends: AtomicUsize,
    /// The send count at which the run is complete (`usize::MAX` until set).
    target: AtomicUsize,
    done: Notify,
    last_send: OnceLock<CpuMark>,
    next_id: AtomicU64,
}

impl FakeHomeserver {
    fn new(domain: &str) -> FakeHomeserver {
        FakeHomeserver {
            domain: domain.to_owned(),
            sends: AtomicUsize::new(0),
            target: AtomicUsize::new(usize::MAX),
            done: Notify::new(),
            last_send: OnceLock::new(),
            next_id: AtomicU64::new(1),
        }
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

type Fake = State<Arc<FakeHomeserver>>;

fn json(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn versions() -> Response {
    json(r#"{"versions":["v1.11","v1.12"]}"#.to_owned())
}

async fn ping() -> Response {
    json(r#"{"duration_ms":0}"#.to_owned())
}

async fn empty() -> Response {
    json("{}".to_owned())
}

async fn register(State(hs): Fake, body: Bytes) -> Response {
    #[derive(Deserialize)]
    struct Register {
        username: String,
    }
    match serde_json::from_slice::<Register>(&body) {
        Ok(register) => json(format!(
            r#"{{"user_id":"@{}:{}"}}"#,
            register.username, hs.domain
        )),
        Err(error) => (
            axum::http::StatusCode::BAD_REQUEST,
            json(format!(r#"{{"errcode":"M_BAD_JSON","error":"{error}"}}"#)),
        )
            .into_response(),
    }
}

async fn create_room(State(hs): Fake, _body: Bytes) -> Response {
    json(format!(
        r#"{{"room_id":"!room{}:{}"}}"#,
        hs.next_id(),
        hs.domain
    ))
}

async fn join(axum::extract::Path(room): axum::extract::Path<String>, _body: Bytes) -> Response {
    json(serde_json::json!({ "room_id": room }).to_string())
}

async fn send(State(hs): Fake, _body: Bytes) -> Response {
    let count = hs.sends.fetch_add(1, Ordering::Relaxed) + 1;
    if count == hs.target.load(Ordering::Relaxed) {
        // Requests are answered on the homeserver's own thread.
        let mark = CpuMark {
            at: Instant::now(),
            process: usage(libc::RUSAGE_SELF),
            homeserver: usage(libc::RUSAGE_THREAD),
        };
        let _ = hs.last_send.set(mark);
        hs.done.notify_one();
    }
    json(format!(r#"{{"event_id":"$ev{}"}}"#, hs.next_id()))
}

/// State events (`PUT .../state/{type}/{key}`, the key possibly empty) and anything else.
async fn fallback(State(hs): Fake, method: Method, uri: Uri, _body: Bytes) -> Response {
    if method == Method::PUT && uri.path().contains("/state/") {
        return json(format!(r#"{{"event_id":"$ev{}"}}"#, hs.next_id()));
    }
    empty().await
}

/// Serves the fake homeserver on its own thread (a single-threaded runtime), so that its
/// CPU time can be told apart. Returns its address, a handle to its runtime, and what
/// stops it.
fn start_homeserver(
    hs: Arc<FakeHomeserver>,
) -> anyhow::Result<(
    SocketAddr,
    tokio::runtime::Handle,
    CancellationToken,
    std::thread::JoinHandle<()>,
)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    let stop = CancellationToken::new();
    let app = axum::Router::new()
        .route("/_matrix/client/versions", get(versions))
        .route("/_matrix/client/v1/appservice/{id}/ping", post(ping))
        .route("/_matrix/client/v1/media/config", get(empty))
        .route("/_matrix/client/v3/register", post(register))
        .route("/_matrix/client/v3/profile/{user}/{field}", put(empty))
        .route("/_matrix/client/v3/createRoom", post(create_room))
        .route("/_matrix/client/v3/join/{room}", post(join))
        .route(
            "/_matrix/client/v3/rooms/{room}/send/{event_type}/{txn}",
            put(send),
        )
        .fallback(fallback)
        .with_state(hs);
    let stopped = stop.clone();
    let thread = std::thread::Builder::new()
        .name("fake-homeserver".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    eprintln!("the fake homeserver cannot listen");
                    return;
                };
                if let Err(error) = axum::serve(listener, app)
                    .with_graceful_shutdown(stopped.cancelled_owned())
                    .await
                {
                    eprintln!("the fake homeserver failed: {error}");
                }
            });
        })?;
    Ok((address, handle, stop, thread))
}

/// The fake homeserver thread's usage, read on that thread.
async fn homeserver_usage(runtime: &tokio::runtime::Handle) -> Usage {
    runtime
        .spawn(async { usage(libc::RUSAGE_THREAD) })
        .await
        .unwrap_or_default()
}

/// What the bench connector saw while queuing.
#[derive(Debug)]
struct Queued {
    start: CpuMark,
    done: Instant,
}

/// The bench connector: its `start` spawns a task that creates the portals and queues the
/// messages.
#[derive(Debug)]
struct BenchConnector {
    bench: Arc<Bench>,
}

/// The plan of a run and what the connector's task saw.
#[derive(Debug)]
struct Bench {
    messages: usize,
    portals: usize,
    ghosts: usize,
    homeserver: Arc<FakeHomeserver>,
    homeserver_runtime: tokio::runtime::Handle,
    handle: OnceLock<BridgeHandle>,
    queued: Mutex<Option<anyhow::Result<Queued>>>,
    queuing_done: Notify,
}

impl Bench {
    async fn drive(self: Arc<Self>, bridge: BridgeHandle) {
        let result = self.queue_all(&bridge).await;
        *self.queued.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
        self.queuing_done.notify_one();
    }

    /// Creates the portals, then queues every message, one after the other as a network
    /// connection's reader does.
    async fn queue_all(&self, bridge: &BridgeHandle) -> anyhow::Result<Queued> {
        let mut portals = Vec::with_capacity(self.portals);
        for p in 0..self.portals {
            let info = PortalInfo {
                remote_id: format!("chat{p}"),
                name: Some(format!("Bench chat {p}")),
                ..PortalInfo::default()
            };
            bridge.create_portal(&info).await?;
            portals.push(info.remote_id);
        }
        let ghosts: Vec<GhostInfo> = (0..self.ghosts)
            .map(|g| GhostInfo {
                id: format!("user{g}"),
                name: Some(format!("Bench user {g}")),
                avatar: None,
            })
            .collect();
        // Room setup sent no message, but count from here whatever it did.
        let before = self.homeserver.sends.load(Ordering::Relaxed);
        self.homeserver
            .target
            .store(before + self.messages, Ordering::Relaxed);
        let homeserver = homeserver_usage(&self.homeserver_runtime).await;
        let start = CpuMark {
            at: Instant::now(),
            process: usage(libc::RUSAGE_SELF),
            homeserver,
        };
        let timestamp = 1_700_000_000_000;
        for i in 0..self.messages {
            // Message i goes to portal i mod P from ghost (i div P) mod G: every ghost
            // speaks in every portal.
            let event = RemoteEvent {
                id: Some(format!("m{i}")),
                sender: ghosts[(i / self.portals) % self.ghosts].clone(),
                timestamp: Some(timestamp + i64::try_from(i).unwrap_or_default()),
                kind: RemoteEventKind::Message(RemoteMessage::text(format!(
                    "benchmark message {i} with some ordinary length text"
                ))),
            };
            let queued = bridge.queue(&portals[i % self.portals], &event).await?;
            anyhow::ensure!(queued, "message {i} was not queued");
        }
        Ok(Queued {
            start,
            done: Instant::now(),
        })
    }

    /// Waits until everything is queued, or the bridge stopped.
    async fn wait_queued(
        &self,
        bridge: &mut tokio::task::JoinHandle<Result<(), bridge_core::bridge::RunError>>,
    ) -> anyhow::Result<Queued> {
        loop {
            let notified = self.queuing_done.notified();
            if let Some(result) = self.queued.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return result;
            }
            tokio::select! {
                () = notified => {}
                stopped = &mut *bridge => anyhow::bail!("the bridge stopped: {:?}", stopped?),
            }
        }
    }
}

#[async_trait]
impl Connector for BenchConnector {
    fn info(&self) -> ConnectorInfo {
        ConnectorInfo {
            network: "bench",
            display_name: "Bench",
            capabilities: Default::default(),
        }
    }

    async fn start(&self, bridge: BridgeHandle) -> Result<(), ConnectorError> {
        let _ = self.bench.handle.set(bridge.clone());
        tokio::spawn(Arc::clone(&self.bench).drive(bridge));
        Ok(())
    }

    async fn handle_message(
        &self,
        _portal: &Portal,
        _message: &MatrixMessage,
    ) -> Result<Vec<String>, ConnectorError> {
        Err(ConnectorError::Unsupported)
    }
}

/// Writes a generated config, loads it with the overrides, and writes its registration.
fn configure(
    dir: &Path,
    homeserver: SocketAddr,
    database_url: &str,
) -> anyhow::Result<(BridgeConfig<BenchNetwork>, registration::Registration)> {
    let path = dir.join("config.yaml");
    std::fs::write(&path, generate_config::<BenchNetwork>(&INFO))?;
    let port = free_port()?;
    let registration_path = dir.join("registration.yaml");
    let config = BridgeConfig::<BenchNetwork>::load_with_env(
        &path,
        INFO,
        [
            ("TRESTLE__HOMESERVER__URL", format!("http://{homeserver}")),
            ("TRESTLE__HOMESERVER__DOMAIN", "localhost".to_owned()),
            ("TRESTLE__APPSERVICE__BIND", format!("127.0.0.1:{port}")),
            (
                "TRESTLE__APPSERVICE__URL",
                format!("http://127.0.0.1:{port}"),
            ),
            (
                "TRESTLE__APPSERVICE__REGISTRATION",
                registration_path.display().to_string(),
            ),
            ("TRESTLE__DATABASE__URL", database_url.to_owned()),
        ],
    )?;
    let registration = generate_registration(&config)?.registration;
    Ok((config, registration))
}

async fn run_once(args: &Args, run: usize) -> anyhow::Result<()> {
    let (backend, database_url) = match (&args.database_url, args.postgres) {
        (Some(url), _) if url.starts_with("sqlite:") => ("sqlite", url.clone()),
        (Some(url), _) => ("postgres", url.clone()),
        (None, true) => ("postgres", fresh_postgres().await?.url),
        (None, false) => ("sqlite", fresh_sqlite().url),
    };
    let dir = run_dir().join(format!("bench-delivery-{run}"));
    std::fs::create_dir_all(&dir)?;
    let hs = Arc::new(FakeHomeserver::new("localhost"));
    let (address, hs_runtime, hs_stop, hs_thread) = start_homeserver(Arc::clone(&hs))?;
    let (config, registration) = configure(&dir, address, &database_url)?;

    let bench = Arc::new(Bench {
        messages: args.messages,
        portals: args.portals.max(1),
        ghosts: args.ghosts.max(1),
        homeserver: Arc::clone(&hs),
        homeserver_runtime: hs_runtime,
        handle: OnceLock::new(),
        queued: Mutex::new(None),
        queuing_done: Notify::new(),
    });
    let shutdown = CancellationToken::new();
    let mut bridge = {
        let connector: Arc<dyn Connector> = Arc::new(BenchConnector {
            bench: Arc::clone(&bench),
        });
        let stop = shutdown.clone().cancelled_owned();
        tokio::spawn(async move {
            run_bridge(&config, &registration, connector, Metrics::new(), stop).await
        })
    };
    let queued = bench.wait_queued(&mut bridge).await?;
    let delivered = loop {
        let done = hs.done.notified();
        if let Some(mark) = hs.last_send.get() {
            break *mark;
        }
        tokio::time::timeout(Duration::from_secs(600), done)
            .await
            .context("not every message reached the homeserver")?;
    };
    let handle = bench.handle.get().context("the connector never started")?;
    // The last sends are recorded in the message map just after; wait for the outbox to
    // empty before stopping (outside the measurement).
    let drained = Instant::now();
    while !handle.store().outbox_portals().await?.is_empty() {
        anyhow::ensure!(
            drained.elapsed() < Duration::from_secs(60),
            "the outbox did not empty"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    bridge.await??;
    hs_stop.cancel();
    tokio::task::spawn_blocking(move || hs_thread.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the fake homeserver panicked"))?;
    let sends = hs.sends.load(Ordering::Relaxed);
    let expected = hs.target.load(Ordering::Relaxed);
    anyhow::ensure!(
        sends == expected,
        "the homeserver got {sends} sends, expected {expected}"
    );

    #[allow(clippy::cast_precision_loss)]
    let messages = args.messages as f64;
    let start = queued.start;
    let wall = delivered.at - start.at;
    let process = delivered.process.cpu.saturating_sub(start.process.cpu);
    let homeserver = delivered
        .homeserver
        .cpu
        .saturating_sub(start.homeserver.cpu);
    let bridge_cpu = process.saturating_sub(homeserver);
    let switches = delivered.process.switches - start.process.switches;
    let per_message = |d: Duration| d.as_secs_f64() * 1e6 / messages;
    #[allow(clippy::cast_precision_loss)]
    let (switches, peak_rss_mib) = (
        switches as f64 / messages,
        usage(libc::RUSAGE_SELF).max_rss_kib as f64 / 1024.0,
    );
    println!(
        "| {backend} | {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
        bench.portals,
        bench.ghosts,
        args.messages,
        messages / (queued.done - start.at).as_secs_f64(),
        messages / wall.as_secs_f64(),
        wall.as_secs_f64(),
        per_message(process),
        per_message(homeserver),
        per_message(bridge_cpu),
        process.as_secs_f64() * 100.0 / wall.as_secs_f64(),
        switches,
        peak_rss_mib,
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    anyhow::ensure!(
        args.runs == 1 || args.database_url.is_none(),
        "--database-url needs an empty database: give one run"
    );
    println!(
        "{} messages over {} portals from {} ghosts\n",
        args.messages, args.portals, args.ghosts
    );
    println!(
        "| backend | portals | ghosts | messages | queued msg/s | delivered msg/s | wall s | CPU µs/msg | of which fake HS µs/msg | bridge CPU µs/msg | CPU use % | context switches/msg | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for run in 0..args.runs {
        run_once(&args, run).await?;
    }
    Ok(())
}
