//! One IRC connection: connect (plain or TLS), register with IRCv3 capability negotiation
//! (CAP LS 302, SASL PLAIN or EXTERNAL), then carry lines both ways.
//!
//! After registration one task owns the socket. It answers PINGs itself, sends a PING of
//! its own when the server has been quiet (and gives up if that goes unanswered), and
//! writes queued lines through a token bucket so a burst cannot get the connection
//! killed for flooding. Every line is built by [`Line::to_wire`], which refuses CR, LF
//! and NUL: this is the one way out to the server.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, BufReader,
};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::ident::{IdentEntry, IdentRegistry};
use crate::isupport::ServerInfo;
use crate::line::{Line, LineError};

/// The capabilities asked for when the server offers them.
const WANTED_CAPS: &[&str] = &[
    "server-time",
    "message-tags",
    "echo-message",
    "labeled-response",
    "batch",
    "chghost",
    "away-notify",
    "account-notify",
    "account-tag",
    "extended-join",
    "multi-prefix",
    "userhost-in-names",
    "setname",
    "cap-notify",
    "draft/relaymsg",
];
/// The longest line read, tags included (IRCv3: 8191 bytes of tags plus 512).
const MAX_READ_LINE: usize = 8191 + 512;
/// How long registration may take.
const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a connection could not be made or was lost.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server could not be reached or the TLS handshake failed.
    #[error("cannot connect to {server}: {reason}")]
    Unreachable {
        /// `host:port`.
        server: String,
        /// Why.
        reason: String,
    },
    /// The server closed the connection or sent ERROR during registration.
    #[error("the server refused the connection: {0}")]
    Refused(String),
    /// Registration did not finish in time.
    #[error("registration timed out")]
    Timeout,
    /// Every nick tried was taken or refused.
    #[error("no nick was accepted ({0})")]
    NoNick(String),
    /// SASL was required and failed.
    #[error("SASL authentication failed: {0}")]
    Sasl(String),
}

/// Why a line was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The line would carry a control character or is malformed: nothing was sent.
    #[error(transparent)]
    Line(#[from] LineError),
    /// The connection is gone.
    #[error("the IRC connection is closed")]
    Closed,
}

/// How to authenticate with SASL.
#[derive(Clone, PartialEq, Eq)]
pub enum Sasl {
    /// PLAIN with an account and password.
    Plain {
        /// The account name.
        account: String,
        /// The password.
        password: String,
    },
    /// EXTERNAL: the TLS client certificate is the credential.
    External,
}

impl Sasl {
    /// The mechanism's name (`PLAIN`, `EXTERNAL`).
    pub fn mechanism(&self) -> &'static str {
        match self {
            Sasl::Plain { .. } => "PLAIN",
            Sasl::External => "EXTERNAL",
        }
    }
}

impl std::fmt::Debug for Sasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sasl::Plain { account, .. } => write!(f, "Plain({account}, <password>)"),
            Sasl::External => f.write_str("External"),
        }
    }
}

/// Flood control: `burst` lines at once, then `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FloodLimits {
    /// Lines that may go at once.
    pub burst: u32,
    /// Lines per second after that.
    pub per_second: f64,
}

/// What a connection needs.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Host name (also the TLS server name).
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS settings, or `None` for plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Server password (PASS), if any.
    pub password: Option<String>,
    /// Nicks to try in order; when all are taken, `_` and digits are appended.
    pub nick: String,
    /// The user name (ident).
    pub username: String,
    /// The real name.
    pub realname: String,
    /// SASL, if the user has credentials.
    pub sasl: Option<Sasl>,
    /// Flood control.
    pub flood: FloodLimits,
    /// Quiet time after which the connection sends a PING; twice that without a line
    /// read ends it.
    pub ping_after: Duration,
    /// Local address to connect from (per-user bind addresses).
    pub bind: Option<std::net::IpAddr>,
    /// The ident server's registry, to name `username` to the server while connected.
    pub ident: Option<IdentRegistry>,
}

/// What registration found out.
#[derive(Debug, Clone, Default)]
pub struct Registered {
    /// The nick the server gave.
    pub nick: String,
    /// Capabilities acknowledged.
    pub caps: HashSet<String>,
    /// The server's ISUPPORT.
    pub server: ServerInfo,
    /// Whether SASL succeeded (`None`: not tried).
    pub sasl: Option<Result<(), String>>,
}

/// A line to write, with who to tell once it is written.
#[derive(Debug)]
struct Outgoing {
    wire: String,
    written: Option<oneshot::Sender<()>>,
}

/// Lines sent with an IRCv3 `label`, waiting for the server's answer to them.
#[derive(Debug, Default)]
struct Labels {
    next: u64,
    waiting: HashMap<String, oneshot::Sender<Line>>,
}

/// The server's answer to one labeled line, once it comes. Dropped unanswered, the label
/// is forgotten: its late answer is then dropped too.
#[derive(Debug)]
pub struct LabeledAnswer {
    label: String,
    receiver: oneshot::Receiver<Line>,
    shared: Arc<Shared>,
}

impl LabeledAnswer {
    /// The answer; `None` if the connection ended first.
    pub async fn get(mut self) -> Option<Line> {
        (&mut self.receiver).await.ok()
    }
}

impl Drop for LabeledAnswer {
    fn drop(&mut self) {
        self.shared.labels().waiting.remove(&self.label);
    }
}

/// What a connection and its task share.
#[derive(Debug)]
struct Shared {
    registered: Mutex<Registered>,
    labels: Mutex<Labels>,
    /// Known to the ident server while the connection is open.
    ident: Mutex<Option<IdentEntry>>,
}

impl Shared {
    fn registered(&self) -> std::sync::MutexGuard<'_, Registered> {
        self.registered.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn labels(&self) -> std::sync::MutexGuard<'_, Labels> {
        self.labels.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A registered connection. Dropping every clone closes it.
#[derive(Debug, Clone)]
pub struct Connection {
    writer: mpsc::UnboundedSender<Outgoing>,
    shared: Arc<Shared>,
}

impl Connection {
    /// Connects and registers; lines from the server after registration (PINGs
    /// excepted) arrive on the receiver, which ends when the connection does.
    pub async fn connect(
        options: &ConnectOptions,
    ) -> Result<(Connection, mpsc::UnboundedReceiver<Line>), ConnectError> {
        let server = format!("{}:{}", options.host, options.port);
        let unreachable = |reason: String| ConnectError::Unreachable {
            server: server.clone(),
            reason,
        };
        let tcp = match options.bind {
            None => TcpStream::connect((options.host.as_str(), options.port))
                .await
                .map_err(|e| unreachable(e.to_string()))?,
            Some(local) => connect_from(local, &options.host, options.port)
                .await
                .map_err(|e| unreachable(e.to_string()))?,
        };
        let _ = tcp.set_nodelay(true);
        // Before registration: the server asks ident as the connection opens.
        let ident = match (&options.ident, tcp.local_addr(), tcp.peer_addr()) {
            (Some(registry), Ok(local), Ok(server)) => {
                Some(registry.register(local, server, &options.username))
            }
            _ => None,
        };
        let stream: Box<dyn Stream> = match &options.tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(options.host.clone())
                    .map_err(|e| unreachable(e.to_string()))?;
                let tls = tokio_rustls::TlsConnector::from(Arc::clone(config))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| unreachable(format!("TLS: {e}")))?;
                Box::new(tls)
            }
        };
        let (read, write) = tokio::io::split(stream);
        let mut reader = LineReader {
            reader: BufReader::with_capacity(1024, read),
            buffer: Vec::new(),
            discarding: false,
        };
        let mut write: Box<dyn AsyncWrite + Send + Unpin> = Box::new(write);
        let registered = tokio::time::timeout(
            REGISTRATION_TIMEOUT,
            register(options, &mut reader, &mut write),
        )
        .await
        .map_err(|_| ConnectError::Timeout)??;
        let (writer, outgoing) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            registered: Mutex::new(registered),
            labels: Mutex::new(Labels::default()),
            ident: Mutex::new(ident),
        });
        tokio::spawn(run(
            reader,
            write,
            outgoing,
            events_tx,
            options.flood,
            options.ping_after,
            Arc::clone(&shared),
        ));
        Ok((Connection { writer, shared }, events))
    }

    /// Sends `line` with a `label` where the server offers labeled-response (with
    /// batch, which it needs), and waits until it is written. The answer is the server's
    /// reply to it: the line's echo (echo-message), a numeric, `ACK` or a `BATCH`.
    /// `None`: no labels here, so no answer to wait for.
    pub async fn send_labeled(&self, line: &Line) -> Result<Option<LabeledAnswer>, SendError> {
        if !(self.has_cap("labeled-response") && self.has_cap("batch")) {
            self.send(line).await?;
            return Ok(None);
        }
        let (answer, answered) = oneshot::channel();
        let label = {
            let mut labels = self.shared.labels();
            labels.next += 1;
            let label = format!("t{}", labels.next);
            labels.waiting.insert(label.clone(), answer);
            label
        };
        let sent = self
            .send(&line.clone().with_tag("label", Some(&label)))
            .await;
        let answer = LabeledAnswer {
            label,
            receiver: answered,
            shared: Arc::clone(&self.shared),
        };
        sent?;
        Ok(Some(answer))
    }

    /// Sends `line` and waits until it is written to the socket.
    pub async fn send(&self, line: &Line) -> Result<(), SendError> {
        let wire = line.to_wire()?;
        let (written, done) = oneshot::channel();
        self.writer
            .send(Outgoing {
                wire,
                written: Some(written),
            })
            .map_err(|_| SendError::Closed)?;
        done.await.map_err(|_| SendError::Closed)
    }

    /// Queues `line` without waiting for it to be written.
    pub fn queue(&self, line: &Line) -> Result<(), SendError> {
        let wire = line.to_wire()?;
        self.writer
            .send(Outgoing {
                wire,
                written: None,
            })
            .map_err(|_| SendError::Closed)
    }

    /// Whether the connection is still up.
    pub fn is_open(&self) -> bool {
        !self.writer.is_closed()
    }

    /// The current nick.
    pub fn nick(&self) -> String {
        self.shared.registered().nick.clone()
    }

    /// Records a nick change the server confirmed.
    pub fn set_nick(&self, nick: &str) {
        nick.clone_into(&mut self.shared.registered().nick);
    }

    /// Whether capability `cap` was acknowledged.
    pub fn has_cap(&self, cap: &str) -> bool {
        self.shared.registered().caps.contains(cap)
    }

    /// How SASL went at registration (`None`: not tried, the server has no SASL).
    pub fn sasl_outcome(&self) -> Option<Result<(), String>> {
        self.shared.registered().sasl.clone()
    }

    /// The server's ISUPPORT.
    pub fn server(&self) -> ServerInfo {
        self.shared.registered().server.clone()
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

type Writer = Box<dyn AsyncWrite + Send + Unpin>;

async fn connect_from(
    local: std::net::IpAddr,
    host: &str,
    port: u16,
) -> std::io::Result<TcpStream> {
    let mut last = None;
    for remote in tokio::net::lookup_host((host, port)).await? {
        if remote.is_ipv4() != local.is_ipv4() {
            continue;
        }
        let socket = if local.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.bind(std::net::SocketAddr::new(local, 0))?;
        match socket.connect(remote).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no address of the bind address's family",
        )
    }))
}

/// Reads lines from the server. Over-long lines are dropped whole and invalid UTF-8 is
/// replaced, so a hostile server cannot grow memory. Reading is cancel-safe: a partial
/// line stays in the buffer for the next call (the connection's task selects on it).
struct LineReader {
    reader: BufReader<tokio::io::ReadHalf<Box<dyn Stream>>>,
    buffer: Vec<u8>,
    /// The rest of an over-long line is being skipped.
    discarding: bool,
}

impl LineReader {
    /// The next line; `None` at the end of the stream.
    async fn next(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            if self.buffer.len() >= MAX_READ_LINE {
                self.discarding = true;
                self.buffer.clear();
            }
            let room = (MAX_READ_LINE - self.buffer.len()) as u64;
            let read = (&mut self.reader)
                .take(room)
                .read_until(b'\n', &mut self.buffer)
                .await?;
            if read == 0 {
                return Ok(None);
            }
            if self.buffer.last() != Some(&b'\n') {
                continue;
            }
            let raw = std::mem::take(&mut self.buffer);
            if std::mem::take(&mut self.discarding) {
                continue;
            }
            let text = String::from_utf8_lossy(&raw).replace('\0', "");
            if let Ok(line) = Line::parse(&text) {
                return Ok(Some(line));
            }
        }
    }
}

async fn write_line(write: &mut Writer, line: &Line) -> Result<(), ConnectError> {
    let wire = line
        .to_wire()
        .map_err(|e| ConnectError::Refused(e.to_string()))?;
    write
        .write_all(wire.as_bytes())
        .await
        .map_err(|e| ConnectError::Refused(e.to_string()))
}

/// Nick `attempt` (0 is the wanted one): then `_` appended, then digits, cut to fit.
fn nick_attempt(nick: &str, attempt: usize, nicklen: usize) -> String {
    let suffix = match attempt {
        0 => String::new(),
        1 => "_".to_owned(),
        n => (n - 1).to_string(),
    };
    let keep = nicklen.saturating_sub(suffix.len()).max(1);
    let mut base: String = nick.chars().take(keep).collect();
    base.push_str(&suffix);
    base
}

/// CAP LS 302, CAP REQ, SASL, NICK/USER, until the end of the MOTD.
async fn register(
    options: &ConnectOptions,
    reader: &mut LineReader,
    write: &mut Writer,
) -> Result<Registered, ConnectError> {
    let mut registered = Registered::default();
    let mut offered: Vec<String> = Vec::new();
    let mut negotiating = true;
    let mut attempt = 0;
    let mut welcomed = false;
    write_line(write, &Line::new("CAP", ["LS", "302"])).await?;
    if let Some(password) = &options.password {
        write_line(write, &Line::new("PASS", [password.as_str()])).await?;
    }
    write_line(write, &Line::new("NICK", [options.nick.as_str()])).await?;
    write_line(
        write,
        &Line::new(
            "USER",
            [
                options.username.as_str(),
                "0",
                "*",
                options.realname.as_str(),
            ],
        ),
    )
    .await?;
    loop {
        let Some(line) = reader
            .next()
            .await
            .map_err(|e| ConnectError::Refused(e.to_string()))?
        else {
            return Err(ConnectError::Refused(
                "the connection closed during registration".to_owned(),
            ));
        };
        match line.command.as_str() {
            "PING" => write_line(write, &Line::new("PONG", line.params.clone())).await?,
            "ERROR" => return Err(ConnectError::Refused(line.param(0).to_owned())),
            "CAP" => match line.param(1) {
                "LS" => {
                    // `CAP * LS * :caps` continues; `CAP * LS :caps` is the last.
                    let more = line.params.len() > 3 && line.param(2) == "*";
                    let list = line.params.last().cloned().unwrap_or_default();
                    offered.extend(
                        list.split(' ')
                            .map(|cap| cap.split('=').next().unwrap_or(cap).to_owned()),
                    );
                    if !more {
                        let mut wanted: Vec<&str> = WANTED_CAPS
                            .iter()
                            .copied()
                            .filter(|cap| offered.iter().any(|o| o == cap))
                            .collect();
                        if options.sasl.is_some() && offered.iter().any(|o| o == "sasl") {
                            wanted.push("sasl");
                        }
                        if wanted.is_empty() {
                            negotiating = false;
                            write_line(write, &Line::new("CAP", ["END"])).await?;
                        } else {
                            write_line(write, &Line::new("CAP", ["REQ", &wanted.join(" ")]))
                                .await?;
                        }
                    }
                }
                "ACK" => {
                    let acked = line.params.last().cloned().unwrap_or_default();
                    registered.caps.extend(
                        acked
                            .split(' ')
                            .filter(|c| !c.is_empty())
                            .map(str::to_owned),
                    );
                    match (&options.sasl, registered.caps.contains("sasl")) {
                        (Some(sasl), true) => {
                            write_line(write, &Line::new("AUTHENTICATE", [sasl.mechanism()]))
                                .await?;
                        }
                        _ => {
                            negotiating = false;
                            write_line(write, &Line::new("CAP", ["END"])).await?;
                        }
                    }
                }
                "NAK" => {
                    negotiating = false;
                    write_line(write, &Line::new("CAP", ["END"])).await?;
                }
                _ => {}
            },
            "AUTHENTICATE" if line.param(0) == "+" => match &options.sasl {
                Some(Sasl::Plain { account, password }) => {
                    let token = base64::engine::general_purpose::STANDARD
                        .encode(format!("{account}\0{account}\0{password}"));
                    // Sent in 400-byte pieces; a piece of exactly 400 is followed by `+`.
                    let mut pieces: Vec<&str> = token
                        .as_bytes()
                        .chunks(400)
                        .map(|c| std::str::from_utf8(c).unwrap_or_default())
                        .collect();
                    if token.len() % 400 == 0 {
                        pieces.push("+");
                    }
                    for piece in pieces {
                        write_line(write, &Line::new("AUTHENTICATE", [piece])).await?;
                    }
                }
                _ => write_line(write, &Line::new("AUTHENTICATE", ["+"])).await?,
            },
            // 903 success; 902, 904-907 failure: registration goes on without it.
            "903" | "902" | "904" | "905" | "906" | "907" => {
                registered.sasl = Some(if line.command == "903" {
                    Ok(())
                } else {
                    Err(line.params.last().cloned().unwrap_or_default())
                });
                if negotiating {
                    negotiating = false;
                    write_line(write, &Line::new("CAP", ["END"])).await?;
                }
            }
            "433" | "432" | "436" | "437" if !welcomed => {
                attempt += 1;
                if attempt > 10 {
                    return Err(ConnectError::NoNick(
                        line.params.last().cloned().unwrap_or_default(),
                    ));
                }
                let nick = nick_attempt(&options.nick, attempt, registered.server.nicklen.max(9));
                write_line(write, &Line::new("NICK", [nick.as_str()])).await?;
            }
            "001" => {
                welcomed = true;
                registered.nick = line.param(0).to_owned();
            }
            "005" if line.params.len() > 2 => {
                registered
                    .server
                    .apply(&line.params[1..line.params.len() - 1]);
            }
            "376" | "422" if welcomed => return Ok(registered),
            _ => {}
        }
    }
}

/// The connection after registration: reads, answers PINGs, writes with flood control.
async fn run(
    mut reader: LineReader,
    mut write: Writer,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    events: mpsc::UnboundedSender<Line>,
    flood: FloodLimits,
    ping_after: Duration,
    shared: Arc<Shared>,
) {
    let mut tokens = f64::from(flood.burst);
    let mut refilled = Instant::now();
    let mut last_read = Instant::now();
    let mut pinged = false;
    let mut pending: Option<Outgoing> = None;
    loop {
        // Refill the bucket for the time passed.
        let now = Instant::now();
        tokens = (tokens + now.duration_since(refilled).as_secs_f64() * flood.per_second)
            .min(f64::from(flood.burst));
        refilled = now;
        let wait_for_token = if tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - tokens) / flood.per_second.max(0.001))
        };
        let ping_at = last_read + if pinged { ping_after * 2 } else { ping_after };
        tokio::select! {
            read = reader.next() => {
                let Ok(Some(line)) = read else { break };
                last_read = Instant::now();
                pinged = false;
                match line.command.as_str() {
                    "PING" => {
                        let pong = Line::new("PONG", line.params.clone());
                        if let Ok(wire) = pong.to_wire()
                            && write.write_all(wire.as_bytes()).await.is_err()
                        {
                            break;
                        }
                    }
                    "PONG" => {}
                    "ERROR" => {
                        tracing::info!(reason = line.param(0), "the IRC server closed the connection");
                        break;
                    }
                    _ => {
                        track(&mut shared.registered(), &line);
                        // A labeled answer is for whoever sent the line (every label is
                        // ours): once they stopped waiting, it is dropped, so a refusal
                        // they reported is not reported again.
                        if let Some(label) = line.tag("label") {
                            let waiter = shared.labels().waiting.remove(label);
                            match waiter {
                                Some(waiter) => {
                                    let _ = waiter.send(line);
                                }
                                None => tracing::debug!(%label, command = %line.command, "a late answer to a labeled line"),
                            }
                            continue;
                        }
                        if events.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
            next = outgoing.recv(), if pending.is_none() => {
                let Some(next) = next else { break };
                pending = Some(next);
            }
            () = tokio::time::sleep(wait_for_token), if pending.is_some() => {
                if let Some(line) = pending.take() {
                    tokens -= 1.0;
                    if write.write_all(line.wire.as_bytes()).await.is_err() {
                        break;
                    }
                    if let Some(written) = line.written {
                        let _ = written.send(());
                    }
                }
            }
            () = tokio::time::sleep_until(ping_at) => {
                if pinged {
                    tracing::info!("the IRC server stopped answering; closing the connection");
                    break;
                }
                pinged = true;
                let ping = Line::new("PING", ["trestle"]);
                if let Ok(wire) = ping.to_wire()
                    && write.write_all(wire.as_bytes()).await.is_err()
                {
                    break;
                }
            }
        }
    }
    // Whoever still waits for an answer learns that none will come.
    shared.labels().waiting.clear();
    shared
        .ident
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let _ = write.shutdown().await;
}

/// Keeps the connection's own view current: its nick, and caps added or removed.
fn track(state: &mut Registered, line: &Line) {
    match line.command.as_str() {
        "NICK" if line.source_nick().is_some_and(|n| n == state.nick) => {
            state.nick = line.param(0).to_owned();
        }
        "005" if line.params.len() > 2 => {
            let tokens = line.params[1..line.params.len() - 1].to_vec();
            state.server.apply(&tokens);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nick_attempts_fit_nicklen() {
        assert_eq!(nick_attempt("alice", 0, 9), "alice");
        assert_eq!(nick_attempt("alice", 1, 9), "alice_");
        assert_eq!(nick_attempt("alice", 3, 9), "alice2");
        assert_eq!(nick_attempt("abcdefghij", 1, 9), "abcdefgh_");
        assert_eq!(nick_attempt("abcdefghij", 12, 9), "abcdefg11");
    }
}
