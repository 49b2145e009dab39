//! `bench-irc`: bridge-irc under load, end to end, beside heisenbridge: one test bed
//! Synapse and one InspIRCd (with Atheme) on loopback, the `bridge-irc` binary built
//! beside this one (logging at `info`, SQLite) and heisenbridge (a pinned release from
//! PyPI in a venv of its own, `tests/install-deps.sh --print-heisenbridge-venv`), both
//! registered with the same Synapse.
//!
//! Each bridge gets a channel of its own, an IRC user in it and a Matrix user in its room:
//! - bridge-irc: `alice` joins the portal `#irc_bench_#bench:localhost` (a dynamic
//!   portal), `carol` is in `#bench` on IRC; alice speaks on IRC through her puppet.
//!   The network `bench` runs with flood control raised (`--flood-burst`,
//!   `--lines-per-second`); a second network `stock` on the same server, with the
//!   defaults (5 lines at once, then 2 a second), serves the flood-limited run (`amy`
//!   in `#irc_stock_#stock:localhost`, `sam` in `#stock`).
//! - heisenbridge: its owner `hbowner` gets the control room, then `ADDNETWORK`,
//!   `ADDSERVER`, `OPEN`, `CONNECT` and `JOIN #hb` create the channel's room;
//!   `hcarol` is in `#hb` on IRC. The owner's one IRC connection speaks as `hbowner`;
//!   IRC users come to Matrix as heisenbridge's puppets (`@hb_bench_<nick>`).
//!   Heisenbridge's flood control is fixed in its code (after about 5 lines sent in
//!   quick succession it sleeps 1.5 s after each line), so it runs Matrix to IRC only in
//!   the flood-limited run.
//!
//! Heisenbridge is set up first, then bridge-irc's portals, and each is warmed up (one
//! message each way). Then, for bridge-irc and then heisenbridge, in order:
//! - IRC to Matrix: the IRC user writes `--messages` PRIVMSGs back to back; the rate is
//!   timed from the first write until the Matrix user's sync has seen the last line
//!   (heisenbridge merges a sender's lines that come within 0.1 s into one event, so
//!   lines are counted, not events);
//! - Matrix to IRC: the Matrix user (a session of its own) sends `--messages` one
//!   request after another, timed until the IRC user has read the last (bridge-irc on
//!   `bench` only);
//! - latency each way: `--samples` rounds, one message IRC to Matrix then one Matrix to
//!   IRC, each timed from its send until it is seen on the other side; a round starts
//!   `--gap-ms` after the one before at the earliest, so that neither bridge's flood
//!   control delays a sample;
//! - Matrix to IRC under each bridge's default flood control: `--flood-messages` the
//!   same way (bridge-irc on `stock`, heisenbridge as it is);
//! - every run checks what arrived: how many, how many out of order or twice;
//! - each bridge's resident memory (`VmRSS`) before and after its runs.
//!
//! Then a probe: one Matrix message to bridge-irc after heisenbridge's runs. Synapse
//! numbers the transactions of all its appservices from one sequence, so bridge-irc's
//! numbers skip those heisenbridge got; the probe shows what such a gap costs (once a
//! minute, before bridge-core's ingest learnt that gaps are normal; see
//! `bridge-core/src/ingest/gap.rs`). The count of gap refusals in bridge-irc's log is
//! printed. Last, the baselines: the same samples between
//! two IRC clients in a channel no bridge is in (InspIRCd alone) and between two Matrix
//! users in a room no bridge is in (Synapse alone).
//!
//! `cargo build --release -p bridge-irc -p trestle-tests --bin bench-irc --bin bridge-irc`,
//! then `target/release/bench-irc`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use ruma::{OwnedRoomId, RoomId};
use serde_json::{Value, json};
use trestle_tests::bridge_process::BridgeProcess;
use trestle_tests::irc::IrcClient;
use trestle_tests::matrix::MatrixClient;
use trestle_tests::measure::{percentiles, rss_kib};
use trestle_tests::process::{ServerProcess, free_port};
use trestle_tests::{InspIrcd, Synapse, run_dir, workspace_binary, workspace_root};

#[derive(Debug, Parser)]
struct Args {
    /// Messages per throughput run, each way.
    #[arg(long, default_value_t = 1000)]
    messages: usize,
    /// Messages per flood-limited run (Matrix to IRC under each bridge's default flood
    /// control).
    #[arg(long, default_value_t = 100)]
    flood_messages: usize,
    /// Messages timed one at a time, each way.
    #[arg(long, default_value_t = 50)]
    samples: usize,
    /// The least time between two latency rounds, in ms.
    #[arg(long, default_value_t = 2000)]
    gap_ms: u64,
    /// bridge-irc's `flood_burst` on the network `bench`.
    #[arg(long, default_value_t = 50)]
    flood_burst: u32,
    /// bridge-irc's `lines_per_second` on the network `bench`.
    #[arg(long, default_value_t = 500.0)]
    lines_per_second: f64,
    /// Measure bridge-irc alone.
    #[arg(long)]
    no_heisenbridge: bool,
}

/// How long a wait for a bridge's setup may take.
const LONG: Duration = Duration::from_secs(120);
/// How long a run waits for the next message before counting the rest as lost.
const IDLE: Duration = Duration::from_secs(60);
const SERVER: &str = "localhost";

/// One bridged pair: an IRC user in a channel and a Matrix user in its room.
struct Side {
    name: &'static str,
    irc: IrcClient,
    channel: String,
    matrix: MatrixClient,
    /// The Matrix user's localpart and password, for a second session that sends.
    login: (String, String),
    room: OwnedRoomId,
}

/// What one throughput run delivered.
#[derive(Debug, Clone, Copy)]
struct Run {
    sent: usize,
    received: usize,
    out_of_order: usize,
    duplicates: usize,
    /// From the first send until the last message was seen.
    seconds: f64,
    /// From the first send until the last send was accepted (Matrix to IRC only).
    send_seconds: Option<f64>,
    /// Matrix events the lines came in (IRC to Matrix only; heisenbridge merges a
    /// sender's lines that come within 0.1 s of each other into one event).
    events: Option<usize>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.received as f64 / self.seconds
    }

    fn cell(&self) -> String {
        let mut text = format!("{:.1} messages/s", self.rate());
        if let Some(events) = self.events.filter(|events| *events != self.received) {
            text = format!(
                "{} lines in {events} Matrix event(s), the last seen after {:.2} s",
                self.received, self.seconds
            );
        }
        if self.received != self.sent || self.out_of_order > 0 || self.duplicates > 0 {
            text.push_str(&format!(
                " (**{} of {} arrived, {} out of order, {} twice**)",
                self.received, self.sent, self.out_of_order, self.duplicates
            ));
        }
        text
    }
}

/// The indices in arrival order, checked: how many out of order, how many twice.
fn checked(
    sent: usize,
    arrived: &[usize],
    seconds: f64,
    send_seconds: Option<f64>,
    events: Option<usize>,
) -> Run {
    let mut seen = vec![false; sent];
    let mut duplicates = 0;
    let mut out_of_order = 0;
    let mut highest = None;
    for &index in arrived {
        if seen[index] {
            duplicates += 1;
        }
        seen[index] = true;
        if highest.is_some_and(|h| index < h) {
            out_of_order += 1;
        }
        highest = highest.max(Some(index));
    }
    Run {
        sent,
        received: seen.iter().filter(|s| **s).count(),
        out_of_order,
        duplicates,
        seconds,
        send_seconds,
        events,
    }
}

/// The index in `text` after `prefix`, if it is one of `count`.
fn index_of(text: &str, prefix: &str, count: usize) -> Option<usize> {
    text.strip_prefix(prefix)
        .and_then(|rest| rest.parse::<usize>().ok())
        .filter(|index| *index < count)
}

/// Whether `event` is a message in the room from someone other than `me` with `prefix`.
fn bridged_message<'e>(event: &'e Value, me: &str, prefix: &str) -> Option<&'e str> {
    if event["type"] != "m.room.message" || event["sender"] == me {
        return None;
    }
    event["content"]["body"]
        .as_str()
        .filter(|body| body.starts_with(prefix))
}

impl Side {
    /// The IRC user writes `count` lines back to back; the Matrix user's sync reads them.
    async fn irc_to_matrix(&mut self, prefix: &str, count: usize) -> anyhow::Result<Run> {
        let me = self.matrix.user_id().to_string();
        let started = Instant::now();
        for i in 0..count {
            self.irc
                .privmsg(&self.channel, &format!("{prefix}{i}"))
                .await?;
        }
        let mut arrived = Vec::new();
        let mut events = 0;
        let mut last = started.elapsed();
        while arrived.len() < count {
            let event = self
                .matrix
                .wait_for_event(&self.room, IDLE, |e| {
                    bridged_message(e, &me, prefix).is_some()
                })
                .await;
            let Ok(event) = event else { break };
            last = started.elapsed();
            events += 1;
            // One event may hold several lines (heisenbridge merges them).
            let body = bridged_message(&event, &me, prefix).unwrap_or_default();
            arrived.extend(
                body.lines()
                    .filter_map(|line| index_of(line, prefix, count)),
            );
        }
        Ok(checked(
            count,
            &arrived,
            last.as_secs_f64(),
            None,
            Some(events),
        ))
    }

    /// A second session of the Matrix user sends `count` texts one request after another;
    /// the IRC user reads them.
    async fn matrix_to_irc(
        &mut self,
        synapse: &Synapse,
        prefix: &str,
        count: usize,
    ) -> anyhow::Result<Run> {
        let sender = MatrixClient::login(&synapse.url(), &self.login.0, &self.login.1).await?;
        let started = Instant::now();
        let sending = sender.spawn_texts(self.room.clone(), prefix, count);
        let sent_at = tokio::spawn(async move {
            let result = sending.await;
            (result, started.elapsed())
        });
        let mut arrived = Vec::new();
        let mut last = started.elapsed();
        let channel = self.channel.clone();
        while arrived.len() < count {
            let line = self
                .irc
                .wait_for(IDLE, |l| {
                    l.command == "PRIVMSG"
                        && l.params
                            .first()
                            .is_some_and(|t| t.eq_ignore_ascii_case(&channel))
                        && l.text().starts_with(prefix)
                })
                .await;
            let Ok(line) = line else { break };
            last = started.elapsed();
            if let Some(index) = index_of(line.text(), prefix, count) {
                arrived.push(index);
            }
        }
        let (result, send_elapsed) = sent_at.await?;
        result??;
        Ok(checked(
            count,
            &arrived,
            last.as_secs_f64(),
            Some(send_elapsed.as_secs_f64()),
            None,
        ))
    }

    /// `samples` rounds: one line IRC to Matrix, then one text Matrix to IRC, each timed
    /// until seen; a round every `gap` at most.
    async fn latencies(
        &mut self,
        samples: usize,
        gap: Duration,
    ) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
        let mut to_matrix = Vec::new();
        let mut to_irc = Vec::new();
        for k in 0..samples {
            let round = Instant::now();
            let body = format!("li{k}");
            let sent = Instant::now();
            self.irc.privmsg(&self.channel, &body).await?;
            self.matrix
                .wait_for_text(&self.room, &body, LONG)
                .await
                .with_context(|| format!("{}: {body} did not reach Matrix", self.name))?;
            to_matrix.push(sent.elapsed());
            let body = format!("lm{k}");
            let sent = Instant::now();
            self.matrix.send_text(&self.room, &body).await?;
            self.irc
                .wait_for_privmsg(&self.channel, &body, LONG)
                .await
                .with_context(|| format!("{}: {body} did not reach IRC", self.name))?;
            to_irc.push(sent.elapsed());
            tokio::time::sleep(gap.saturating_sub(round.elapsed())).await;
        }
        Ok((to_matrix, to_irc))
    }

    /// One message each way, so puppets exist and have joined before anything is timed.
    async fn warm_up(&mut self) -> anyhow::Result<()> {
        self.irc.privmsg(&self.channel, "warm").await?;
        self.matrix
            .wait_for_text(&self.room, "warm", LONG)
            .await
            .with_context(|| format!("{}: warm-up to Matrix", self.name))?;
        self.matrix.send_text(&self.room, "warm too").await?;
        self.irc
            .wait_for_privmsg(&self.channel, "warm too", LONG)
            .await
            .with_context(|| format!("{}: warm-up to IRC", self.name))?;
        Ok(())
    }
}

/// bridge-irc with two networks on the InspIRCd at `port`: `bench` with flood control
/// raised, `stock` with the defaults. Logging at `info`, SQLite in its folder.
fn prepare_bridge_irc(port: u16, args: &Args) -> anyhow::Result<(BridgeProcess, PathBuf)> {
    let section = format!(
        "  networks:\n    - name: \"bench\"\n      host: \"127.0.0.1\"\n      port: {port}\n      tls: false\n      flood_burst: {}\n      lines_per_second: {}\n      connects_per_second: 50\n    - name: \"stock\"\n      host: \"127.0.0.1\"\n      port: {port}\n      tls: false\n      bot_nick: \"trestlestock\"\n",
        args.flood_burst, args.lines_per_second
    );
    let prepared = BridgeProcess::prepare(
        workspace_binary("bridge-irc")?,
        "irc-bridge",
        &[("TRESTLE__LOGGING__LEVEL", "info".to_owned())],
        None,
        move |config| config.replace("  networks: []\n", &section),
    )?;
    Ok(prepared)
}

/// Heisenbridge's venv (installed on first use by `tests/install-deps.sh`).
fn heisenbridge_venv() -> anyhow::Result<PathBuf> {
    let script = workspace_root().join("tests/install-deps.sh");
    let output = Command::new("bash")
        .arg(&script)
        .arg("--print-heisenbridge-venv")
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    let venv = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if !output.status.success() || !venv.join("bin/python").exists() {
        bail!(
            "no heisenbridge venv: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(venv)
}

/// Heisenbridge's folder, port and registration file (its puppets under `@hb_`, so the
/// namespace does not overlap bridge-irc's `@irc_`).
struct Heisenbridge {
    python: PathBuf,
    dir: PathBuf,
    registration: PathBuf,
}

impl Heisenbridge {
    fn prepare() -> anyhow::Result<Heisenbridge> {
        let venv = heisenbridge_venv()?;
        let python = venv.join("bin/python");
        let dir = run_dir().join("heisenbridge");
        std::fs::create_dir_all(&dir)?;
        let registration = dir.join("registration.yaml");
        let port = free_port()?;
        let status = Command::new(&python)
            .args(["-m", "heisenbridge", "--generate", "-l", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .arg("-c")
            .arg(&registration)
            .output()?;
        if !status.status.success() {
            bail!(
                "heisenbridge --generate: {}",
                String::from_utf8_lossy(&status.stderr)
            );
        }
        let text = std::fs::read_to_string(&registration)?;
        if !text.contains("'@irc_.*'") {
            bail!("unexpected heisenbridge registration:\n{text}");
        }
        std::fs::write(&registration, text.replace("'@irc_.*'", "'@hb_.*'"))?;
        Ok(Heisenbridge {
            python,
            dir,
            registration,
        })
    }

    /// Starts it against `synapse` for `owner`, and waits until it runs.
    async fn start(&self, synapse: &Synapse, owner: &str) -> anyhow::Result<ServerProcess> {
        let log = self.dir.join("heisenbridge.log");
        let mut command = Command::new(&self.python);
        command
            .env("PYTHONUNBUFFERED", "1")
            .args(["-m", "heisenbridge", "-v", "-c"])
            .arg(&self.registration)
            .args(["-o", owner])
            .arg(synapse.url());
        let process = ServerProcess::spawn("heisenbridge", command, &log)?;
        wait_for_log(&process, &log, "bridge is now running").await?;
        Ok(process)
    }
}

async fn wait_for_log(process: &ServerProcess, log: &Path, text: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + LONG;
    loop {
        if std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains(text)
        {
            return Ok(());
        }
        if process.exit_status().is_some() || Instant::now() > deadline {
            bail!(
                "{} did not start:\n{}",
                process.name(),
                process.log_tail(40)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for a notice from `bot` in `room` containing `text`.
async fn bot_says(user: &MatrixClient, room: &RoomId, bot: &str, text: &str) -> anyhow::Result<()> {
    user.wait_for_notice(room, bot, text, LONG)
        .await
        .with_context(|| format!("waiting for {bot} to say {text:?}"))?;
    Ok(())
}

/// Heisenbridge's owner sets up the network and the channel `#hb` through its commands,
/// and joins the channel's room.
async fn heisenbridge_side(
    owner: MatrixClient,
    irc: &InspIrcd,
    bridge: &ServerProcess,
) -> anyhow::Result<Side> {
    let bot = format!("@heisenbridge:{SERVER}");
    let channel = "#hb".to_owned();
    let mut hcarol = irc.client("hcarol").await?;
    hcarol.join(&channel).await?;
    let control = owner
        .wait_for_invite(LONG)
        .await
        .context("heisenbridge's control room")?;
    owner.join(control.as_str()).await?;
    owner.send_text(&control, "ADDNETWORK bench").await?;
    bot_says(&owner, &control, &bot, "Network added").await?;
    owner
        .send_text(
            &control,
            &format!("ADDSERVER bench 127.0.0.1 {}", irc.port()),
        )
        .await?;
    bot_says(&owner, &control, &bot, "Server added").await?;
    owner.send_text(&control, "OPEN bench").await?;
    let network = owner
        .wait_for_invite(LONG)
        .await
        .context("heisenbridge's network room")?;
    owner.join(network.as_str()).await?;
    owner.send_text(&network, "CONNECT").await?;
    // JOIN needs the connection registered (InspIRCd registers on a once-a-second tick);
    // heisenbridge refuses it until then, so ask again until hcarol sees the owner join.
    let mut joined = false;
    for _ in 0..20 {
        owner
            .send_text(&network, &format!("JOIN {channel}"))
            .await?;
        let seen = hcarol
            .wait_for(Duration::from_secs(3), |l| {
                l.command == "JOIN" && l.source_nick() == Some("hbowner")
            })
            .await;
        if seen.is_ok() {
            joined = true;
            break;
        }
    }
    if !joined {
        bail!(
            "heisenbridge's owner never joined {channel}:\n{}",
            bridge.log_tail(60)
        );
    }
    let room = owner
        .wait_for_invite(LONG)
        .await
        .context("heisenbridge's channel room")?;
    owner.join(room.as_str()).await?;
    Ok(Side {
        name: "heisenbridge",
        irc: hcarol,
        channel,
        matrix: owner,
        login: ("hbowner".to_owned(), "hbowner-password".to_owned()),
        room,
    })
}

/// A bridge-irc portal: `user` joins the alias of `channel` on `network`, where `nick` is.
async fn bridge_irc_side(
    synapse: &Synapse,
    irc: &InspIrcd,
    network: &str,
    channel: &str,
    nick: &str,
    user: &str,
) -> anyhow::Result<Side> {
    let mut client = irc.client(nick).await?;
    client.join(channel).await?;
    let password = format!("{user}-password");
    let matrix = synapse.register_user(user, &password, false).await?;
    let room = matrix
        .join(&format!("#irc_{network}_{channel}:{SERVER}"))
        .await?;
    Ok(Side {
        name: "bridge-irc",
        irc: client,
        channel: channel.to_owned(),
        matrix,
        login: (user.to_owned(), password),
        room,
    })
}

/// The baselines: IRC client to IRC client in a channel without a bridge, and Matrix user
/// to Matrix user in a room without a bridge.
async fn baselines(
    synapse: &Synapse,
    irc: &InspIrcd,
    samples: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let channel = "#nobridge";
    let mut erin = irc.client("erin").await?;
    erin.join(channel).await?;
    let mut frank = irc.client("frank").await?;
    frank.join(channel).await?;
    let gina = synapse
        .register_user("gina", "gina-password", false)
        .await?;
    let hugo = synapse
        .register_user("hugo", "hugo-password", false)
        .await?;
    let room = gina
        .create_room(json!({"preset": "public_chat", "invite": [hugo.user_id().to_string()]}))
        .await?;
    hugo.join(room.as_str()).await?;
    gina.send_text(&room, "warm").await?;
    hugo.wait_for_text(&room, "warm", LONG).await?;
    let mut irc_alone = Vec::new();
    let mut matrix_alone = Vec::new();
    for k in 0..samples {
        let body = format!("bi{k}");
        let sent = Instant::now();
        erin.privmsg(channel, &body).await?;
        frank.wait_for_privmsg(channel, &body, LONG).await?;
        irc_alone.push(sent.elapsed());
        let body = format!("bm{k}");
        let sent = Instant::now();
        gina.send_text(&room, &body).await?;
        hugo.wait_for_text(&room, &body, LONG).await?;
        matrix_alone.push(sent.elapsed());
    }
    Ok((irc_alone, matrix_alone))
}

/// The results of one bridge.
struct Results {
    to_matrix: Run,
    to_irc: Option<Run>,
    flood_limited: Option<Run>,
    latency_to_matrix: (f64, f64),
    latency_to_irc: (f64, f64),
    rss_set_up: u64,
    rss_after: u64,
}

/// One bridge's runs but the flood-limited one, in order: IRC to Matrix; Matrix to IRC
/// with flood control raised (when `raised`); latency. Latency goes before the
/// flood-limited run: heisenbridge's flood control remembers a burst for as many seconds
/// as it had lines.
async fn measure(
    side: &mut Side,
    raised: bool,
    synapse: &Synapse,
    pid: u32,
    args: &Args,
) -> anyhow::Result<Results> {
    let name = side.name;
    let rss_set_up = rss_kib(pid).context("no VmRSS")?;
    eprintln!("{name}: IRC to Matrix, {} messages", args.messages);
    let to_matrix = side.irc_to_matrix("i", args.messages).await?;
    eprintln!("{name}: {to_matrix:?}");
    let mut to_irc = None;
    if raised {
        eprintln!("{name}: Matrix to IRC, {} messages", args.messages);
        let run = side.matrix_to_irc(synapse, "m", args.messages).await?;
        eprintln!("{name}: {run:?}");
        to_irc = Some(run);
    }
    eprintln!("{name}: latency, {} samples", args.samples);
    let (to_matrix_latency, to_irc_latency) = side
        .latencies(args.samples, Duration::from_millis(args.gap_ms))
        .await?;
    Ok(Results {
        to_matrix,
        to_irc,
        flood_limited: None,
        latency_to_matrix: percentiles(to_matrix_latency),
        latency_to_irc: percentiles(to_irc_latency),
        rss_set_up,
        rss_after: rss_set_up,
    })
}

/// The flood-limited run on `side`, after 5 s for its bucket to fill again; then the
/// bridge's memory after the runs.
async fn flood_run(
    results: &mut Results,
    side: &mut Side,
    synapse: &Synapse,
    pid: u32,
    args: &Args,
) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_secs(5)).await;
    eprintln!(
        "{}: Matrix to IRC under the default flood control, {} messages",
        side.name, args.flood_messages
    );
    let run = side
        .matrix_to_irc(synapse, "f", args.flood_messages)
        .await?;
    eprintln!("{}: {run:?}", side.name);
    results.flood_limited = Some(run);
    results.rss_after = rss_kib(pid).context("no VmRSS")?;
    Ok(())
}

/// A side set aside: its IRC client keeps answering the server's PINGs (InspIRCd drops a
/// client that has not answered for 120-240 s), the lines it reads kept for later.
struct Parked {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Side>,
}

fn park(mut side: Side) -> Parked {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        while let Err(tokio::sync::oneshot::error::TryRecvError::Empty) = stopped.try_recv() {
            let _ = side.irc.wait_for(Duration::from_secs(1), |_| false).await;
        }
        side
    });
    Parked { stop, task }
}

async fn unpark(parked: Parked) -> anyhow::Result<Side> {
    let _ = parked.stop.send(());
    Ok(parked.task.await?)
}

/// How many lines of `log` tell of a gap in the homeserver's transaction numbering.
fn gap_warnings(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("a transaction is missing before this one"))
        .count()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let irc = InspIrcd::start().await.context("starting InspIRCd")?;
    let (mut bridge, registration) = prepare_bridge_irc(irc.port(), &args)?;
    let heisenbridge = match args.no_heisenbridge {
        true => None,
        false => Some(Heisenbridge::prepare()?),
    };
    let mut registrations = vec![registration];
    registrations.extend(heisenbridge.as_ref().map(|h| h.registration.clone()));
    let synapse = Synapse::start(&registrations).await?;
    bridge.start(&synapse.url()).await?;
    let pid = bridge.pid().context("bridge-irc is not running")?;

    // Heisenbridge is set up first, before bridge-irc has had a transaction: Synapse
    // numbers all appservices' transactions from one sequence, and bridge-irc takes a
    // skipped number for a lost transaction (see the probe below).
    let mut hb_process = None;
    let mut hb_parked = None;
    if let Some(heisenbridge) = &heisenbridge {
        let owner = synapse
            .register_user("hbowner", "hbowner-password", false)
            .await?;
        let process = heisenbridge
            .start(&synapse, &format!("@hbowner:{SERVER}"))
            .await?;
        let mut side = heisenbridge_side(owner, &irc, &process)
            .await
            .with_context(|| format!("heisenbridge's log:\n{}", process.log_tail(60)))?;
        side.warm_up().await?;
        hb_parked = Some(park(side));
        hb_process = Some(process);
    }
    let mut irc_side = bridge_irc_side(&synapse, &irc, "bench", "#bench", "carol", "alice").await?;
    let mut stock_side = bridge_irc_side(&synapse, &irc, "stock", "#stock", "sam", "amy").await?;
    irc_side.warm_up().await?;
    stock_side.warm_up().await?;

    let stock_parked = park(stock_side);
    let mut irc_results = measure(&mut irc_side, true, &synapse, pid, &args).await?;
    let mut stock_side = unpark(stock_parked).await?;
    flood_run(&mut irc_results, &mut stock_side, &synapse, pid, &args).await?;
    let gaps_in_runs = gap_warnings(&bridge.full_log());
    let mut hb_results = None;
    let mut probe = None;
    if let (Some(process), Some(parked)) = (&hb_process, hb_parked) {
        let irc_parked = park(irc_side);
        let stock_parked = park(stock_side);
        let mut side = unpark(parked).await?;
        let hb_pid = process.pid();
        let mut results = measure(&mut side, false, &synapse, hb_pid, &args).await?;
        flood_run(&mut results, &mut side, &synapse, hb_pid, &args).await?;
        hb_results = Some(results);
        let _parked = park(side);
        irc_side = unpark(irc_parked).await?;
        let _stock = unpark(stock_parked).await?;
        // The probe: one message to bridge-irc now that heisenbridge's transactions have
        // taken numbers in between.
        eprintln!("bridge-irc: one message after heisenbridge's runs");
        let sent = Instant::now();
        irc_side
            .matrix
            .send_text(&irc_side.room, "after heisenbridge")
            .await?;
        let seen = irc_side
            .irc
            .wait_for_privmsg(
                &irc_side.channel,
                "after heisenbridge",
                Duration::from_secs(300),
            )
            .await;
        if let Err(error) = &seen {
            eprintln!("probe: {error}");
        }
        probe = Some(seen.ok().map(|_| sent.elapsed()));
    }
    eprintln!("baselines, {} samples", args.samples);
    let (irc_alone, matrix_alone) = baselines(&synapse, &irc, args.samples).await?;
    let (irc50, irc95) = percentiles(irc_alone);
    let (matrix50, matrix95) = percentiles(matrix_alone);

    print_table(&args, &irc_results, hb_results.as_ref());
    if let Some(probe) = probe {
        let cell = probe.map_or("not within 300 s".to_owned(), |d| {
            format!("{:.1} s", d.as_secs_f64())
        });
        println!(
            "| bridge-irc: one Matrix message after heisenbridge's runs (other transactions numbered in between) | {cell} | |"
        );
    }
    println!();
    println!("| baseline (no bridge) | median / p95 |\n| --- | --- |");
    println!("| InspIRCd alone (client to client in a channel) | {irc50:.1} / {irc95:.1} ms |");
    println!(
        "| Synapse alone (a send to another user's sync) | {matrix50:.1} / {matrix95:.1} ms |"
    );
    println!();
    println!(
        "bridge-irc's share at most (median less InspIRCd's): IRC to Matrix {:.1} ms, Matrix to IRC {:.1} ms",
        irc_results.latency_to_matrix.0 - irc50,
        irc_results.latency_to_irc.0 - irc50
    );
    if let Some(hb) = &hb_results {
        println!(
            "heisenbridge's share at most: IRC to Matrix {:.1} ms, Matrix to IRC {:.1} ms",
            hb.latency_to_matrix.0 - irc50,
            hb.latency_to_irc.0 - irc50
        );
    }
    let log = bridge.full_log();
    println!(
        "bridge-irc log ({}): transaction-gap refusals during its runs {gaps_in_runs}, in all {}; WARN/ERROR lines:",
        bridge.dir().display(),
        gap_warnings(&log)
    );
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for line in log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
    {
        // Without the timestamp and the fields.
        let text = line.split_once(' ').map_or(line, |(_, rest)| rest);
        let text = text.split(" txn_id=").next().unwrap_or(text);
        *kinds.entry(text.trim().to_owned()).or_default() += 1;
    }
    for (text, count) in kinds {
        println!("- {count}× {text}");
    }
    if let Some(process) = &hb_process {
        let text = std::fs::read_to_string(process.log_path()).unwrap_or_default();
        let problems = text
            .lines()
            .filter(|l| l.starts_with("WARNING") || l.starts_with("ERROR"))
            .count();
        println!(
            "heisenbridge log ({}): {problems} WARNING/ERROR lines",
            process.log_path().display()
        );
        process.stop(Duration::from_secs(10)).await;
    }
    bridge.stop().await;
    Ok(())
}

fn print_table(args: &Args, irc: &Results, hb: Option<&Results>) {
    let n = args.messages;
    let f = args.flood_messages;
    let none = "not run".to_owned();
    let hb_cell = |cell: &dyn Fn(&Results) -> String| hb.map_or(none.clone(), cell);
    let row = |measure: String, ours: String, theirs: String| {
        println!("| {measure} | {ours} | {theirs} |");
    };
    println!("| measure | bridge-irc | heisenbridge |\n| --- | --- | --- |");
    row(
        format!("IRC to Matrix, {n} messages back to back"),
        irc.to_matrix.cell(),
        hb_cell(&|r| r.to_matrix.cell()),
    );
    row(
        format!(
            "Matrix to IRC, {n} messages one request after another, flood control raised ({} lines at once, then {}/s)",
            args.flood_burst, args.lines_per_second
        ),
        irc.to_irc.map_or(none.clone(), |r| r.cell()),
        hb_cell(&|_| "not run: its flood control is fixed".to_owned()),
    );
    row(
        "… of which Synapse accepting the sends".to_owned(),
        irc.to_irc
            .and_then(|r| r.send_seconds)
            .map_or(none.clone(), |s| format!("{:.1} sends/s", n as f64 / s)),
        "".to_owned(),
    );
    row(
        format!("Matrix to IRC, {f} messages, each bridge's default flood control"),
        irc.flood_limited.map_or(none.clone(), |r| r.cell()),
        hb_cell(&|r| r.flood_limited.map_or("not run".to_owned(), |r| r.cell())),
    );
    row(
        format!(
            "IRC to Matrix latency, median / p95 ({} samples)",
            args.samples
        ),
        format!(
            "{:.1} / {:.1} ms",
            irc.latency_to_matrix.0, irc.latency_to_matrix.1
        ),
        hb_cell(&|r| {
            format!(
                "{:.1} / {:.1} ms",
                r.latency_to_matrix.0, r.latency_to_matrix.1
            )
        }),
    );
    row(
        "Matrix to IRC latency, median / p95".to_owned(),
        format!(
            "{:.1} / {:.1} ms",
            irc.latency_to_irc.0, irc.latency_to_irc.1
        ),
        hb_cell(&|r| format!("{:.1} / {:.1} ms", r.latency_to_irc.0, r.latency_to_irc.1)),
    );
    let mib = |kib: u64| kib as f64 / 1024.0;
    row(
        "bridge RSS set up / after the runs".to_owned(),
        format!("{:.1} / {:.1} MiB", mib(irc.rss_set_up), mib(irc.rss_after)),
        hb_cell(&|r| format!("{:.1} / {:.1} MiB", mib(r.rss_set_up), mib(r.rss_after))),
    );
}
