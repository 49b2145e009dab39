//! One IRC network at run time.
//!
//! - The *bot* connection sits in every portal channel and queues what happens there on
//!   the portal, in the order the server sent it: messages, joins, parts, quits, kicks,
//!   nick changes and topics. It reconnects with exponential backoff and jitter.
//! - Each Matrix user who talks or joins gets a *puppet*: their own connection, with a
//!   nick from their display name. What puppets say comes from Matrix, so the bot skips
//!   it. Errors the server answers a puppet with (banned, channel moderated) go back to
//!   the Matrix user as a notice.
//! - New connections wait for a slot: at most `connects_per_second` per network, so a
//!   restart with thousands of puppets cannot trip the server's connection throttle.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bridge_core::bridge::{BridgeHandle, Permission};
use bridge_core::connector::{
    ConnectorError, DirectChat, GhostInfo, MessageKind, PortalInfo, RemoteEvent, RemoteEventKind,
    RemoteMessage,
};
use bridge_core::format::mention_pill;
use bridge_core::store::Login;
use ruma::{OwnedUserId, UserId};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client_cert::ClientCert;
use crate::config::{BindPrefix, EditStyle, IrcNetwork, MemberSync, is_valid_nick};
use crate::connection::{ConnectError, ConnectOptions, Connection, FloodLimits, Sasl, SendError};
use crate::edits::RecentTexts;
use crate::formatting::{irc_to_html_mentioning, strip_formatting};
use crate::ident::IdentRegistry;
use crate::ids::{
    CHANNEL, NICK, NameTemplate, direct_id, ghost_id, is_valid_channel, nick_for,
    parse_server_time, portal_id,
};
use crate::isupport::ServerInfo;
use crate::line::Line;
use crate::netsplit::{HeldQuit, Splits};

/// How long joining a channel for a new portal may take.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a channel operator has to agree to a link.
const CONSENT_TIMEOUT: Duration = Duration::from_secs(120);
/// Quiet time after which a connection checks the server is alive.
const PING_AFTER: Duration = Duration::from_secs(120);
/// How long the server may take to answer a labeled message line before the line counts
/// as delivered without confirmation.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Numerics that refuse a JOIN, with the channel as their second parameter.
const JOIN_ERRORS: &[&str] = &[
    "403", "405", "437", "471", "473", "474", "475", "476", "477", "480", "489", "520",
];
/// Numerics that refuse a message, with the target as their second parameter.
const SEND_ERRORS: &[&str] = &[
    "401", "403", "404", "406", "441", "442", "471", "473", "474", "475", "477", "482",
];
/// WHOIS replies, up to its end (318) or a missing nick (401).
const WHOIS_REPLIES: &[&str] = &[
    "311", "312", "313", "317", "319", "330", "671", "401", "318",
];

/// A channel the bot is in.
#[derive(Debug, Default)]
struct Channel {
    /// Whether its member list is complete (the end of NAMES came).
    synced: bool,
    topic: Option<String>,
    /// Members by folded nick.
    members: HashMap<String, Member>,
    /// With `members: lazy`, the members (folded nicks) whose ghosts are in the room:
    /// those who spoke. (With `full`, every member's ghost is.)
    shown: HashSet<String>,
    /// Which of the access modes (`i`, `k`, `s`, `p`) it has, once the server said.
    access_modes: Option<String>,
}

/// Channel modes that say who may join (`i`nvite-only, `k`ey) and who may see it
/// (`s`ecret, `p`rivate).
const ACCESS_MODES: &str = "iksp";

/// A member of a channel the bot is in.
#[derive(Debug, Default, Clone)]
struct Member {
    /// The nick as written.
    nick: String,
    /// The prefix modes they hold (`o`, `v`).
    modes: String,
}

/// A link waiting for a channel operator's answer.
#[derive(Debug)]
struct Consent {
    /// The channel asked about.
    channel: String,
    /// The code the answer must carry, so that it answers this question.
    code: String,
    /// Who waits for the answer.
    answer: oneshot::Sender<bool>,
}

/// A Matrix user's own connection.
#[derive(Debug)]
pub struct Puppet {
    /// The connection.
    pub connection: Connection,
    /// Channels joined (folded).
    channels: Mutex<HashSet<String>>,
    /// When its Matrix user last spoke or joined through it (for idle disconnects).
    last_active: Mutex<Instant>,
}

/// Told when a JOIN of the bot is answered: the member list, or a refusal.
type JoinWaiter = oneshot::Sender<Result<(), String>>;
/// A WHOIS the bot asked: the replies so far, and who waits for all of them.
type PendingWhois = (Vec<Line>, Vec<oneshot::Sender<Vec<Line>>>);
/// A Matrix user's puppet, once connected; locked while it connects.
type PuppetSlot = Arc<tokio::sync::Mutex<Option<Arc<Puppet>>>>;

/// What a Matrix user told the bridge about themselves on a network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PuppetLogin {
    /// The nick they asked for.
    pub nick: Option<String>,
    /// Their services account, if they stored a password.
    pub sasl: Option<Sasl>,
    /// The user name (ident) they asked for.
    pub username: Option<String>,
    /// Their client certificate, for SASL EXTERNAL over TLS.
    pub cert: Option<ClientCert>,
}

/// The longest user name (ident) a puppet asks for: most servers keep 10 characters.
pub const MAX_USERNAME_LEN: usize = 10;

/// Whether `name` may be a puppet's user name: 1 to [`MAX_USERNAME_LEN`] ASCII letters,
/// digits, `_`, `.` and `-`, not starting with `-` or `.`.
pub fn is_valid_username(name: &str) -> bool {
    (1..=MAX_USERNAME_LEN).contains(&name.len())
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// One network: its bot, its puppets, and what the bot knows of its channels.
#[derive(Debug)]
pub struct Network {
    /// Its config.
    pub config: IrcNetwork,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The CAs `tls` trusts, for connections with a user's own client certificate.
    tls_roots: Option<Arc<rustls::RootCertStore>>,
    /// The servers (the configured one, then the fallbacks) and which is in use.
    servers: Vec<(String, u16)>,
    server_in_use: std::sync::atomic::AtomicUsize,
    bind_prefix: Option<BindPrefix>,
    /// The ident server's registry, if it runs.
    ident: Option<IdentRegistry>,
    /// How its ghosts' localparts and its portals' aliases are spelled.
    pub ghost_template: NameTemplate,
    alias_template: NameTemplate,
    bridge: OnceLock<BridgeHandle>,
    /// The bot's connection while it is up.
    bot: tokio::sync::watch::Sender<Option<Connection>>,
    server: Mutex<ServerInfo>,
    channels: Mutex<HashMap<String, Channel>>,
    /// Joins waiting for the member list (folded channel → waiters).
    joins: Mutex<HashMap<String, Vec<JoinWaiter>>>,
    /// One slot per Matrix user, so that their puppet connects once.
    puppets: Mutex<HashMap<OwnedUserId, PuppetSlot>>,
    /// Puppet nicks (folded) and whose they are.
    puppet_nicks: Mutex<HashMap<String, OwnedUserId>>,
    /// WHOIS asked by the bot and not answered in full yet (folded nick → lines so far,
    /// and who waits).
    whois: Mutex<HashMap<String, PendingWhois>>,
    /// Away messages of Matrix users who are not plainly online, for their puppets.
    aways: Mutex<HashMap<OwnedUserId, String>>,
    /// Channel operators asked to agree to a link (folded nick → the question).
    consents: Mutex<HashMap<String, Consent>>,
    /// Quits held while a netsplit heals (the bot's view).
    splits: Mutex<Splits>,
    /// What recent Matrix messages said on IRC, for edits as substitutions.
    recent_texts: Mutex<RecentTexts>,
    /// When the next connection may start.
    next_connect: tokio::sync::Mutex<Instant>,
    stop: CancellationToken,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Exponential backoff with jitter: 1 s doubling to 5 min, each wait between half and
/// all of that, so that many connections lost at once do not come back at once.
#[derive(Debug)]
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(Duration::from_secs(1))
    }

    fn next(&mut self) -> Duration {
        let ceiling = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(300));
        ceiling.mul_f64(rand::random_range(0.5..=1.0))
    }
}

impl Network {
    /// A network from its config; TLS settings are read now, so a bad CA file is an error
    /// at start.
    pub fn new(config: IrcNetwork, ident: Option<IdentRegistry>) -> anyhow::Result<Network> {
        let tls_roots = if config.tls {
            Some(Arc::new(crate::tls::roots(config.ca_file.as_deref())?))
        } else {
            None
        };
        let tls = tls_roots
            .as_ref()
            .map(|roots| crate::tls::config_with(Arc::clone(roots), None).map(Arc::new))
            .transpose()?;
        let grace = Duration::from_secs(config.split_grace_seconds);
        let servers = std::iter::once((config.host.clone(), config.port))
            .chain(
                config
                    .fallback_servers
                    .iter()
                    .map(|server| (server.host.clone(), server.port.unwrap_or(config.port))),
            )
            .collect();
        let bind_prefix = config
            .bind_prefix
            .as_deref()
            .map(BindPrefix::parse)
            .transpose()
            .map_err(|reason| anyhow::anyhow!("bind_prefix: {reason}"))?;
        let ghost_template = NameTemplate::parse(&config.ghost_template, NICK, &config.name)
            .map_err(|reason| anyhow::anyhow!("ghost_template: {reason}"))?;
        let alias_template = NameTemplate::parse(&config.alias_template, CHANNEL, &config.name)
            .map_err(|reason| anyhow::anyhow!("alias_template: {reason}"))?;
        Ok(Network {
            ghost_template,
            alias_template,
            servers,
            server_in_use: std::sync::atomic::AtomicUsize::new(0),
            bind_prefix,
            ident,
            splits: Mutex::new(Splits::new(grace)),
            recent_texts: Mutex::new(RecentTexts::default()),
            whois: Mutex::new(HashMap::new()),
            consents: Mutex::new(HashMap::new()),
            aways: Mutex::new(HashMap::new()),
            config,
            tls,
            tls_roots,
            bridge: OnceLock::new(),
            bot: tokio::sync::watch::Sender::new(None),
            server: Mutex::new(ServerInfo::default()),
            channels: Mutex::new(HashMap::new()),
            joins: Mutex::new(HashMap::new()),
            puppets: Mutex::new(HashMap::new()),
            puppet_nicks: Mutex::new(HashMap::new()),
            next_connect: tokio::sync::Mutex::new(Instant::now()),
            stop: CancellationToken::new(),
            tasks: Mutex::new(Vec::new()),
        })
    }

    /// The network's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The channel an alias suffix (after the alias prefix) names, if it is this
    /// network's spelling.
    pub fn channel_of_alias<'a>(&self, suffix: &'a str) -> Option<&'a str> {
        self.alias_template.read(suffix)
    }

    fn bridge(&self) -> &BridgeHandle {
        self.bridge
            .get()
            .expect("the network is started before it is used")
    }

    /// The server's ISUPPORT, as the bot last saw it.
    pub fn server(&self) -> ServerInfo {
        lock(&self.server).clone()
    }

    /// `name` folded with the server's CASEMAPPING.
    pub fn fold(&self, name: &str) -> String {
        lock(&self.server).casemapping.fold(name)
    }

    /// Starts the bot.
    pub fn start(self: &Arc<Self>, bridge: BridgeHandle) {
        let _ = self.bridge.set(bridge);
        let task = tokio::spawn(Arc::clone(self).run_bot());
        lock(&self.tasks).push(task);
        let task = tokio::spawn(Arc::clone(self).link_mappings());
        lock(&self.tasks).push(task);
        if self.config.idle_disconnect_seconds > 0 {
            let task = tokio::spawn(Arc::clone(self).disconnect_idle());
            lock(&self.tasks).push(task);
        }
    }

    /// Disconnects puppets whose Matrix users have been quiet for
    /// `idle_disconnect_seconds`, looking a few times per period.
    async fn disconnect_idle(self: Arc<Self>) {
        let idle = Duration::from_secs(self.config.idle_disconnect_seconds);
        let every = (idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = self.stop.cancelled() => return,
            }
            let slots: Vec<(OwnedUserId, PuppetSlot)> = lock(&self.puppets)
                .iter()
                .map(|(user, slot)| (user.clone(), Arc::clone(slot)))
                .collect();
            for (user, slot) in slots {
                // A puppet connecting or in use right now is not idle.
                let Ok(mut slot) = slot.try_lock() else {
                    continue;
                };
                let quiet = slot
                    .as_ref()
                    .is_some_and(|puppet| lock(&puppet.last_active).elapsed() >= idle);
                if quiet && let Some(puppet) = slot.take() {
                    tracing::info!(network = %self.name(), %user, "idle puppet disconnected");
                    let _ = puppet.connection.send(&Line::new("QUIT", ["Idle"])).await;
                }
            }
        }
    }

    /// Disconnects everything.
    pub async fn stop(&self) {
        self.stop.cancel();
        let quit = Line::new("QUIT", ["Bridge shutting down"]);
        let puppets: Vec<_> = lock(&self.puppets).values().cloned().collect();
        for slot in puppets {
            if let Some(puppet) = slot.lock().await.as_ref() {
                let _ = puppet.connection.queue(&quit);
            }
        }
        let bot = self.bot.borrow().clone();
        if let Some(bot) = bot {
            let _ = tokio::time::timeout(Duration::from_secs(2), bot.send(&quit)).await;
        }
        let tasks: Vec<_> = lock(&self.tasks).drain(..).collect();
        for task in tasks {
            task.abort();
        }
    }

    /// Waits for a connection slot (`connects_per_second`).
    async fn connect_slot(&self) {
        let wait_until = {
            let mut next = self.next_connect.lock().await;
            let slot = (*next).max(Instant::now());
            *next = slot + Duration::from_secs_f64(1.0 / self.config.connects_per_second);
            slot
        };
        tokio::time::sleep_until(wait_until).await;
    }

    /// The server connections go to now (`host`, `port`).
    pub fn server_address(&self) -> (String, u16) {
        let index = self
            .server_in_use
            .load(std::sync::atomic::Ordering::Relaxed);
        self.servers[index % self.servers.len()].clone()
    }

    /// `host:port` could not be reached: the next server is tried from now on (unless
    /// another connection moved on already).
    fn server_unreachable(&self, host: &str, port: u16) {
        let index = self
            .server_in_use
            .load(std::sync::atomic::Ordering::Relaxed);
        if self.servers[index % self.servers.len()] == (host.to_owned(), port)
            && self.servers.len() > 1
        {
            let next = &self.servers[(index + 1) % self.servers.len()];
            tracing::warn!(network = %self.name(), %host, port, next = %format!("{}:{}", next.0, next.1), "server unreachable; trying the next");
            let _ = self.server_in_use.compare_exchange(
                index,
                index + 1,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
    }

    /// Connects with `options`; a server that cannot be reached hands over to the next.
    async fn connect(
        &self,
        options: &ConnectOptions,
    ) -> Result<(Connection, mpsc::UnboundedReceiver<Line>), ConnectError> {
        let result = Connection::connect(options).await;
        if let Err(ConnectError::Unreachable { .. } | ConnectError::Timeout) = &result {
            self.server_unreachable(&options.host, options.port);
        }
        result
    }

    fn options(&self, nick: String, username: String, realname: String) -> ConnectOptions {
        let (host, port) = self.server_address();
        ConnectOptions {
            host,
            port,
            tls: self.tls.clone(),
            password: self.config.password.clone(),
            nick,
            username,
            realname,
            sasl: None,
            flood: FloodLimits {
                burst: self.config.flood_burst,
                per_second: self.config.lines_per_second,
            },
            ping_after: PING_AFTER,
            bind: None,
            ident: self.ident.clone(),
        }
    }

    // ----- the bot -------------------------------------------------------------------

    async fn run_bot(self: Arc<Self>) {
        let mut backoff = Backoff::new();
        while !self.stop.is_cancelled() {
            self.connect_slot().await;
            let options = self.options(
                self.config.bot_nick.clone(),
                "trestle".to_owned(),
                "Trestle Matrix bridge".to_owned(),
            );
            match self.connect(&options).await {
                Ok((connection, events)) => {
                    backoff = Backoff::new();
                    tracing::info!(network = %self.name(), nick = %connection.nick(), "bot connected");
                    *lock(&self.server) = connection.server();
                    self.bot.send_replace(Some(connection.clone()));
                    self.rejoin_portals(&connection).await;
                    self.pump(events).await;
                    self.bot.send_replace(None);
                    lock(&self.channels).clear();
                    lock(&self.joins).clear();
                    tracing::warn!(network = %self.name(), "bot connection lost");
                }
                Err(error) => {
                    tracing::warn!(network = %self.name(), %error, "bot cannot connect");
                }
            }
            let wait = backoff.next();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.stop.cancelled() => return,
            }
        }
    }

    /// Joins the channel of every portal of this network.
    async fn rejoin_portals(&self, connection: &Connection) {
        let portals = match self.bridge().portals().await {
            Ok(portals) => portals,
            Err(error) => {
                tracing::warn!(%error, "cannot list portals to rejoin");
                return;
            }
        };
        let prefix = format!("{}/", self.name());
        let server = connection.server();
        for portal in portals {
            if let Some(channel) = portal.remote_id.strip_prefix(&prefix)
                && server.is_channel(channel)
                && let Err(error) = connection.queue(&self.join_line(channel).await)
            {
                tracing::warn!(%channel, %error, "cannot rejoin a channel");
            }
        }
    }

    /// The bot's JOIN of `channel` (folded), with the channel's key if it has one.
    async fn join_line(&self, channel: &str) -> Line {
        match self.channel_key(channel).await {
            Some(key) => Line::new("JOIN", [channel, key.as_str()]),
            None => Line::new("JOIN", [channel]),
        }
    }

    /// Where a channel's key is kept, so the bot can join again after a restart.
    fn key_state(&self, channel: &str) -> String {
        format!("irc:{}:key:{channel}", self.name())
    }

    /// The key (`+k`) of `channel` (folded), as the bot last saw it.
    async fn channel_key(&self, channel: &str) -> Option<String> {
        let state = self.key_state(channel);
        let sealed = match self.bridge().state(&state).await {
            Ok(sealed) => sealed.filter(|sealed| !sealed.is_empty())?,
            Err(error) => {
                tracing::warn!(%channel, %error, "cannot read a channel's key");
                return None;
            }
        };
        match self.bridge().secrets().open(&sealed, &state) {
            Ok(key) => Some(key),
            Err(error) => {
                tracing::warn!(%channel, %error, "a channel's stored key cannot be opened");
                None
            }
        }
    }

    /// Records the key of `channel` (folded), sealed like passwords; `None`: it has none.
    async fn remember_key(&self, channel: &str, key: Option<&str>) {
        // Every join asks the modes again: an unchanged key is not written again.
        if self.channel_key(channel).await.as_deref() == key {
            return;
        }
        let state = self.key_state(channel);
        let sealed = key
            .map(|key| self.bridge().secrets().seal(key, &state))
            .unwrap_or_default();
        let stored = self.bridge().set_state(&state, &sealed).await;
        if let Err(error) = stored {
            tracing::warn!(%channel, %error, "cannot record a channel's key");
        }
    }

    /// Handles the bot's lines in order until its connection ends.
    async fn pump(&self, mut events: mpsc::UnboundedReceiver<Line>) {
        loop {
            let due = lock(&self.splits).next_due();
            let line = tokio::select! {
                biased;
                () = self.stop.cancelled() => return,
                line = events.recv() => line,
                () = sleep_until_some(due) => {
                    let quits = lock(&self.splits).due(Instant::now());
                    self.show_quits(quits).await;
                    continue;
                }
            };
            let Some(line) = line else {
                let quits = lock(&self.splits).drain();
                self.show_quits(quits).await;
                return;
            };
            tracing::trace!(network = %self.name(), command = %line.command, params = ?line.params, "bot read");
            self.on_bot_line(&line).await;
        }
    }

    fn bot_nick(&self) -> Option<String> {
        self.bot.borrow().as_ref().map(Connection::nick)
    }

    /// Whether `nick` is the bot or a puppet: what they do came from Matrix (or is the
    /// bridge's own business).
    fn is_ours(&self, nick: &str) -> bool {
        let folded = self.fold(nick);
        self.bot_nick().is_some_and(|bot| self.fold(&bot) == folded)
            || lock(&self.puppet_nicks).contains_key(&folded)
    }

    fn ghost(&self, nick: &str) -> GhostInfo {
        GhostInfo {
            id: ghost_id(self.name(), &self.fold(nick)),
            name: Some(nick.to_owned()),
            avatar: None,
        }
    }

    async fn on_bot_line(&self, line: &Line) {
        let nick = line.source_nick().unwrap_or_default().to_owned();
        let timestamp = line.tag("time").and_then(parse_server_time);
        match line.command.as_str() {
            "PRIVMSG" | "NOTICE" => {
                let target = line.param(0);
                if line.command == "PRIVMSG" && !self.server().is_channel(target) {
                    self.on_consent(&nick, line.param(1));
                    return;
                }
                if !self.server().is_channel(target) || self.is_ours(&nick) || nick.is_empty() {
                    return;
                }
                let Some(message) = self.message_of(line) else {
                    return;
                };
                self.show_speaker(&self.fold(target), &nick).await;
                let event = RemoteEvent {
                    id: line.tag("msgid").map(str::to_owned),
                    sender: self.ghost(&nick),
                    timestamp,
                    kind: RemoteEventKind::Message(message),
                };
                self.queue(target, event).await;
            }
            "BATCH" => lock(&self.splits).batch(line.param(0), line.param(1)),
            code if WHOIS_REPLIES.contains(&code) => {
                let folded = self.fold(line.param(1));
                let mut pending = lock(&self.whois);
                if let Some((lines, _)) = pending.get_mut(&folded) {
                    lines.push(line.clone());
                }
                if matches!(code, "318" | "401")
                    && let Some((lines, waiters)) = pending.remove(&folded)
                {
                    for waiter in waiters {
                        let _ = waiter.send(lines.clone());
                    }
                }
            }
            "TAGMSG" => {
                let target = line.param(0);
                let typing = match line.tag("+typing") {
                    Some("active") => true,
                    Some("paused" | "done") => false,
                    _ => return,
                };
                if !self.server().is_channel(target) || self.is_ours(&nick) || nick.is_empty() {
                    return;
                }
                // Typing would bring a ghost into the room; with `members: lazy` only one
                // already shown types.
                if !self.is_shown(&self.fold(target), &nick) {
                    return;
                }
                // Typing is shown at once and never waits in the queue: it must not hold
                // up the messages behind it.
                let bridge = self.bridge().clone();
                let portal = portal_id(self.name(), &self.fold(target));
                let ghost = self.ghost(&nick);
                tokio::spawn(async move {
                    if let Err(error) = bridge.set_typing(&portal, &ghost, typing).await {
                        tracing::debug!(%error, "typing not shown");
                    }
                });
            }
            "JOIN" => {
                let channel = self.fold(line.param(0));
                let ours = self.is_ours(&nick);
                let folded = self.fold(&nick);
                lock(&self.channels)
                    .entry(channel.clone())
                    .or_default()
                    .members
                    .insert(
                        folded.clone(),
                        Member {
                            nick: nick.clone(),
                            modes: String::new(),
                        },
                    );
                let back_from_split = lock(&self.splits).rejoined(&folded, &channel);
                if !ours && !back_from_split {
                    self.queue_member(&channel, &nick, timestamp, RemoteEventKind::Join)
                        .await;
                }
            }
            "353" => {
                let server = self.server();
                let channel = self.fold(line.param(2));
                let mut channels = lock(&self.channels);
                let entry = channels.entry(channel).or_default();
                for name in line.param(3).split(' ').filter(|n| !n.is_empty()) {
                    let (member, modes) = server.strip_prefixes(name);
                    let member = Member {
                        nick: member.to_owned(),
                        modes,
                    };
                    entry
                        .members
                        .insert(server.casemapping.fold(&member.nick), member);
                }
            }
            "MODE" => {
                let channel = self.fold(line.param(0));
                if !self.server().is_channel(&channel) || line.params.len() < 2 {
                    return;
                }
                self.on_channel_modes(&channel, line.param(1), &line.params[2..], timestamp)
                    .await;
            }
            "366" => {
                let channel = self.fold(line.param(1));
                lock(&self.channels)
                    .entry(channel.clone())
                    .or_default()
                    .synced = true;
                // The member list is complete: the room's ghosts and ranks follow it (a
                // no-op where the room has them already).
                self.sync_members(&channel).await;
                self.sync_levels(&channel).await;
                // Its modes say who may join: asked now, mirrored on the answer (324).
                if let Some(bot) = self.bot.borrow().clone()
                    && let Err(error) = bot.queue(&Line::new("MODE", [channel.as_str()]))
                {
                    tracing::debug!(%channel, %error, "cannot ask a channel's modes");
                }
                let waiters = lock(&self.joins).remove(&channel).unwrap_or_default();
                for waiter in waiters {
                    let _ = waiter.send(Ok(()));
                }
            }
            "324" => {
                let channel = self.fold(line.param(1));
                let modes: String = line
                    .param(2)
                    .chars()
                    .filter(|mode| ACCESS_MODES.contains(*mode))
                    .collect();
                let key = self
                    .server()
                    .mode_changes(line.param(2), line.params.get(3..).unwrap_or_default())
                    .into_iter()
                    .find(|change| change.mode == 'k')
                    .and_then(|change| change.arg);
                self.remember_key(&channel, key.as_deref()).await;
                lock(&self.channels)
                    .entry(channel.clone())
                    .or_default()
                    .access_modes = Some(modes);
                self.queue_access(&channel, timestamp).await;
            }
            "332" => {
                let channel = self.fold(line.param(1));
                lock(&self.channels).entry(channel).or_default().topic =
                    Some(line.param(2).to_owned());
            }
            code if JOIN_ERRORS.contains(&code) => {
                let channel = self.fold(line.param(1));
                let waiters = lock(&self.joins).remove(&channel).unwrap_or_default();
                let reason = line.params.last().cloned().unwrap_or_default();
                if waiters.is_empty() {
                    // A rejoin (after a restart, a reconnect or a kick) was refused: the
                    // room is not bridged until the bot is let in, so its members are told.
                    self.tell_rejoin_refused(&channel, code, &reason).await;
                }
                for waiter in waiters {
                    let _ = waiter.send(Err(reason.clone()));
                }
            }
            "AWAY" => {
                // away-notify: an IRC user's away message is their ghost's presence.
                let shown = self
                    .channels_of(&nick)
                    .iter()
                    .any(|channel| self.is_shown(channel, &nick));
                if self.is_ours(&nick) || !shown {
                    return;
                }
                let message = line.params.first().filter(|m| !m.is_empty());
                let (presence, status) = match message {
                    Some(message) => ("unavailable", Some(strip_formatting(message))),
                    None => ("online", None),
                };
                let set = self
                    .bridge()
                    .set_presence(&self.ghost(&nick), presence, status.as_deref())
                    .await;
                if let Err(error) = set {
                    tracing::debug!(%nick, %error, "cannot set a ghost's presence");
                }
            }
            "INVITE" => {
                // Invited to a portal's channel it could not join (+i, +k): join now.
                let channel = self.fold(line.param(1));
                let portal = portal_id(self.name(), &channel);
                if matches!(self.bridge().portal(&portal).await, Ok(Some(_))) {
                    tracing::info!(%channel, by = %nick, "invited back into a portal's channel");
                    let join = self.join_line(&channel).await;
                    let bot = self.bot.borrow().clone();
                    if let Some(bot) = bot {
                        let _ = bot.queue(&join);
                    }
                }
            }
            "TOPIC" => {
                let channel = self.fold(line.param(0));
                let topic = line.param(1).to_owned();
                lock(&self.channels)
                    .entry(channel.clone())
                    .or_default()
                    .topic = Some(topic.clone());
                if !self.is_ours(&nick) {
                    // The setter's ghost sets the topic, so it is in the room from now on.
                    self.show_speaker(&channel, &nick).await;
                    let event = RemoteEvent {
                        id: line.tag("msgid").map(str::to_owned),
                        sender: self.ghost(&nick),
                        timestamp,
                        kind: RemoteEventKind::Topic {
                            topic: strip_formatting(&topic),
                        },
                    };
                    self.queue(&channel, event).await;
                }
            }
            "PART" => {
                let channel = self.fold(line.param(0));
                self.remove_member(&channel, &nick);
                if !self.is_ours(&nick) {
                    let reason = line.params.get(1).map(|r| strip_formatting(r));
                    self.queue_member(
                        &channel,
                        &nick,
                        timestamp,
                        RemoteEventKind::Leave { reason },
                    )
                    .await;
                }
            }
            "KICK" => {
                let channel = self.fold(line.param(0));
                let target = line.param(1).to_owned();
                self.remove_member(&channel, &target);
                if self
                    .bot_nick()
                    .is_some_and(|bot| self.fold(&bot) == self.fold(&target))
                {
                    // The bot must stay to keep bridging: rejoin.
                    let join = self.join_line(&channel).await;
                    let bot = self.bot.borrow().clone();
                    if let Some(bot) = bot {
                        let _ = bot.queue(&join);
                    }
                } else if !self.is_ours(&target) {
                    let reason = format!("kicked by {nick}: {}", strip_formatting(line.param(2)));
                    let kind = RemoteEventKind::Leave {
                        reason: Some(reason),
                    };
                    self.queue_member(&channel, &target, timestamp, kind).await;
                }
            }
            "QUIT" => {
                if self.is_ours(&nick) {
                    return;
                }
                let reason = strip_formatting(line.param(0));
                let channels = self.channels_of(&nick);
                for channel in &channels {
                    self.remove_member(channel, &nick);
                }
                let split = lock(&self.splits).is_split(&reason, line.tag("batch"));
                if split {
                    let folded = self.fold(&nick);
                    lock(&self.splits).hold(folded, &nick, channels, &reason, timestamp);
                    return;
                }
                let reason = Some(reason);
                for channel in channels {
                    let kind = RemoteEventKind::Leave {
                        reason: reason.clone(),
                    };
                    self.queue_member(&channel, &nick, timestamp, kind).await;
                }
            }
            "NICK" => {
                let new = line.param(0).to_owned();
                // A puppet's new nick is known at once, so what it says next under it is
                // not taken for an IRC user's (its own task may see the NICK later).
                let owner = lock(&self.puppet_nicks).get(&self.fold(&nick)).cloned();
                if let Some(owner) = owner {
                    lock(&self.puppet_nicks).insert(self.fold(&new), owner);
                }
                if self.is_ours(&nick) || self.is_ours(&new) {
                    return;
                }
                for channel in self.channels_of(&nick) {
                    let modes = self
                        .remove_member(&channel, &nick)
                        .map(|m| m.modes)
                        .unwrap_or_default();
                    let level = self.level_of(&modes);
                    lock(&self.channels)
                        .entry(channel.clone())
                        .or_default()
                        .members
                        .insert(
                            self.fold(&new),
                            Member {
                                nick: new.clone(),
                                modes,
                            },
                        );
                    let leave = RemoteEventKind::Leave {
                        reason: Some(format!("changed nick to {new}")),
                    };
                    self.queue_member(&channel, &nick, timestamp, leave).await;
                    self.queue_member(&channel, &new, timestamp, RemoteEventKind::Join)
                        .await;
                    if level != 0 {
                        self.queue_level(&channel, &nick, 0, timestamp).await;
                        self.queue_level(&channel, &new, level, timestamp).await;
                    }
                }
            }
            _ => {}
        }
    }

    /// Shows held quits as leaves.
    async fn show_quits(&self, quits: Vec<HeldQuit>) {
        for quit in quits {
            for channel in &quit.channels {
                let kind = RemoteEventKind::Leave {
                    reason: Some(quit.reason.clone()),
                };
                self.queue_member(channel, &quit.nick, quit.timestamp, kind)
                    .await;
            }
        }
    }

    fn channels_of(&self, nick: &str) -> Vec<String> {
        let folded = self.fold(nick);
        lock(&self.channels)
            .iter()
            .filter(|(_, channel)| channel.members.contains_key(&folded))
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn remove_member(&self, channel: &str, nick: &str) -> Option<Member> {
        let folded = self.fold(nick);
        lock(&self.channels)
            .get_mut(channel)
            .and_then(|entry| entry.members.remove(&folded))
    }

    /// The power level of a member holding prefix `modes`: the highest the config maps
    /// any of them to, else 0.
    fn level_of(&self, modes: &str) -> i64 {
        modes
            .chars()
            .filter_map(|mode| {
                self.config
                    .mode_power_levels
                    .get(&mode.to_string())
                    .copied()
            })
            .max()
            .unwrap_or(0)
    }

    /// Queues `nick`'s new power level in `channel`.
    async fn queue_level(&self, channel: &str, nick: &str, level: i64, timestamp: Option<i64>) {
        // A rank is given only to a ghost in the room; taken always (a nick's ghost is
        // its next owner's too).
        if level != 0 && !self.is_shown(channel, nick) {
            return;
        }
        // The target stands as the sender too: a mode may come from a server or services,
        // which have no ghost.
        let event = RemoteEvent {
            id: None,
            sender: self.ghost(nick),
            timestamp,
            kind: RemoteEventKind::PowerLevel {
                target: self.ghost(nick),
                level,
            },
        };
        self.queue(channel, event).await;
    }

    /// A channel MODE line: prefix modes given or taken change members' power levels.
    /// The arguments are matched to modes as the server's CHANMODES and PREFIX say, so
    /// `+lo 10 alice` ops alice, not `10`.
    async fn on_channel_modes(
        &self,
        channel: &str,
        modes: &str,
        args: &[String],
        timestamp: Option<i64>,
    ) {
        let server = self.server();
        let mut changed: Vec<(String, i64)> = Vec::new();
        let mut access_changed = false;
        for change in server.mode_changes(modes, args) {
            if change.mode == 'k' {
                let key = change.arg.as_deref().filter(|_| change.adding);
                self.remember_key(channel, key).await;
            }
            if ACCESS_MODES.contains(change.mode) {
                let mut channels = lock(&self.channels);
                if let Some(access) = channels
                    .get_mut(channel)
                    .and_then(|entry| entry.access_modes.as_mut())
                {
                    let had = access.contains(change.mode);
                    if change.adding && !had {
                        access.push(change.mode);
                    } else if !change.adding && had {
                        access.retain(|mode| mode != change.mode);
                    }
                    access_changed |= had != change.adding;
                }
                continue;
            }
            let (true, Some(target)) = (server.prefix_rank(change.mode).is_some(), change.arg)
            else {
                continue;
            };
            let folded = server.casemapping.fold(&target);
            let update = {
                let mut channels = lock(&self.channels);
                let Some(member) = channels
                    .get_mut(channel)
                    .and_then(|entry| entry.members.get_mut(&folded))
                else {
                    continue;
                };
                if change.adding {
                    if !member.modes.contains(change.mode) {
                        member.modes.push(change.mode);
                    }
                } else {
                    member.modes.retain(|m| m != change.mode);
                }
                (member.nick.clone(), member.modes.clone())
            };
            let level = self.level_of(&update.1);
            changed.retain(|(nick, _)| self.fold(nick) != folded);
            changed.push((update.0, level));
        }
        for (nick, level) in changed {
            if !self.is_ours(&nick) {
                self.queue_level(channel, &nick, level, timestamp).await;
            }
        }
        if access_changed {
            self.queue_access(channel, timestamp).await;
        }
    }

    /// Tells the portal room of `channel` (folded) that the bot could not join it again.
    async fn tell_rejoin_refused(&self, channel: &str, code: &str, reason: &str) {
        let Ok(Some(portal)) = self.bridge().portal(&portal_id(self.name(), channel)).await else {
            return;
        };
        let bot = self
            .bot_nick()
            .unwrap_or_else(|| self.config.bot_nick.clone());
        tracing::warn!(%channel, %reason, "the bot cannot join a portal's channel again");
        let advice = match code {
            // Invite-only: an invitation is what lets it in.
            "473" => format!("A channel operator can let it in: /invite {bot} {channel}"),
            "475" => format!(
                "The channel's key changed: a channel operator can remove it, or /invite {bot} {channel} where invitations pass keys"
            ),
            _ => "A channel operator can let it in.".to_owned(),
        };
        let text = format!(
            "The bridge cannot join {channel} on {} again ({reason}), so this room is not bridged for now. {advice}",
            self.name()
        );
        if let Err(error) = self.bridge().notice(&portal.room_id, &text).await {
            tracing::warn!(%error, "cannot tell a room its channel refused the bridge");
        }
    }

    /// Queues the access of `channel` (folded) as its modes say, once known: `+i` or `+k`
    /// make the room invite-only, `+s` or `+p` keep it out of the directory.
    pub async fn queue_access(&self, channel: &str, timestamp: Option<i64>) {
        let modes = lock(&self.channels)
            .get(channel)
            .and_then(|entry| entry.access_modes.clone());
        let Some(modes) = modes else { return };
        let event = RemoteEvent {
            id: None,
            // Not used: the bot sets access (a server may have set the modes).
            sender: self.ghost(self.config.bot_nick.as_str()),
            timestamp,
            kind: RemoteEventKind::Access {
                invite_only: modes.contains(['i', 'k']),
                listed: !modes.contains(['s', 'p']),
            },
        };
        self.queue(channel, event).await;
    }

    /// Queues the power level of every member of `channel` who has one.
    pub async fn sync_levels(&self, channel: &str) {
        let members: Vec<Member> = lock(&self.channels)
            .get(channel)
            .map(|entry| entry.members.values().cloned().collect())
            .unwrap_or_default();
        for member in members {
            let level = self.level_of(&member.modes);
            if level != 0 && !self.is_ours(&member.nick) {
                self.queue_level(channel, &member.nick, level, None).await;
            }
        }
    }

    /// Whether `nick`'s ghost is in the room of `channel` (folded).
    fn is_shown(&self, channel: &str, nick: &str) -> bool {
        if self.config.members == MemberSync::Full {
            return true;
        }
        let folded = self.fold(nick);
        lock(&self.channels)
            .get(channel)
            .is_some_and(|state| state.shown.contains(&folded))
    }

    /// Queues a JOIN or a leave of `nick` in `channel` (folded). With `members: lazy`, a
    /// JOIN is not shown (the ghost joins when it speaks), nor is the leave of a member
    /// never shown.
    async fn queue_member(
        &self,
        channel: &str,
        nick: &str,
        timestamp: Option<i64>,
        kind: RemoteEventKind,
    ) {
        if self.config.members == MemberSync::Lazy {
            let folded = self.fold(nick);
            let shown = match kind {
                RemoteEventKind::Join => false,
                _ => lock(&self.channels)
                    .get_mut(channel)
                    .is_some_and(|state| state.shown.remove(&folded)),
            };
            if !shown {
                return;
            }
        }
        let event = RemoteEvent {
            id: None,
            sender: self.ghost(nick),
            timestamp,
            kind,
        };
        self.queue(channel, event).await;
    }

    /// With `members: lazy`, shows `nick` in `channel` (folded) as they first speak: their
    /// ghost joins with the message, and their rank follows.
    async fn show_speaker(&self, channel: &str, nick: &str) {
        if self.config.members != MemberSync::Lazy {
            return;
        }
        let folded = self.fold(nick);
        let modes = {
            let mut channels = lock(&self.channels);
            let Some(state) = channels.get_mut(channel) else {
                return;
            };
            if !state.shown.insert(folded.clone()) {
                return;
            }
            state.members.get(&folded).map(|m| m.modes.clone())
        };
        let level = self.level_of(&modes.unwrap_or_default());
        if level != 0 {
            self.queue_level(channel, nick, level, None).await;
        }
    }

    /// Brings the ghosts in the room of `channel` (folded) in line with its member list,
    /// which the bot has just read in full: after a start or a reconnect, people came and
    /// went unseen. Ghosts of those gone leave; with `members: full`, those missing join.
    async fn sync_members(&self, channel: &str) {
        let bridge = self.bridge();
        let portal = match bridge.portal(&portal_id(self.name(), channel)).await {
            Ok(Some(portal)) => portal,
            // A new portal's room is made with the members of the list.
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%channel, %error, "cannot read a portal to sync its members");
                return;
            }
        };
        let in_room = match bridge.matrix().bot().joined_members(&portal.room_id).await {
            Ok(members) => members,
            Err(error) => {
                tracing::warn!(%channel, %error, "cannot read a portal's members to sync them");
                return;
            }
        };
        let prefix = format!("{}/", self.name());
        let ghosts: HashSet<String> = in_room
            .iter()
            .filter_map(|user| bridge.ghost_id_of(user))
            .filter_map(|id| id.strip_prefix(&prefix).map(str::to_owned))
            .collect();
        let members: Vec<(String, String)> = lock(&self.channels)
            .get(channel)
            .map(|state| {
                state
                    .members
                    .iter()
                    .map(|(folded, member)| (folded.clone(), member.nick.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let members: Vec<(String, String)> = members
            .into_iter()
            .filter(|(_, nick)| !self.is_ours(nick))
            .collect();
        let full = self.config.members == MemberSync::Full;
        let joins: Vec<String> = members
            .iter()
            .filter(|(folded, _)| full && !ghosts.contains(folded))
            .map(|(_, nick)| nick.clone())
            .collect();
        if !full && let Some(state) = lock(&self.channels).get_mut(channel) {
            state.shown = members
                .iter()
                .filter(|(folded, _)| ghosts.contains(folded))
                .map(|(folded, _)| folded.clone())
                .collect();
        }
        let gone: Vec<String> = ghosts
            .into_iter()
            .filter(|ghost| !members.iter().any(|(folded, _)| folded == ghost))
            .collect();
        for folded in gone {
            // Named by id alone: the ghost's profile stays as it was.
            let event = RemoteEvent {
                id: None,
                sender: GhostInfo {
                    id: ghost_id(self.name(), &folded),
                    name: None,
                    avatar: None,
                },
                timestamp: None,
                kind: RemoteEventKind::Leave { reason: None },
            };
            self.queue(channel, event).await;
        }
        for nick in joins {
            let event = RemoteEvent {
                id: None,
                sender: self.ghost(&nick),
                timestamp: None,
                kind: RemoteEventKind::Join,
            };
            self.queue(channel, event).await;
        }
    }

    /// Queues `event` on the portal of `channel`; until it is stored nothing else from
    /// the bot is handled, which keeps the order. A channel without a portal is skipped.
    async fn queue(&self, channel: &str, event: RemoteEvent) {
        let portal = portal_id(self.name(), &self.fold(channel));
        self.queue_on(&portal, event).await;
    }

    /// Queues `event` on the portal `portal` (a remote id).
    async fn queue_on(&self, portal: &str, event: RemoteEvent) {
        self.bridge()
            .queue_retrying(portal, &event, &self.stop)
            .await;
    }

    /// Joins `channel` with the bot (if not in it) and describes it for its portal.
    pub async fn open_channel(&self, channel: &str) -> Result<PortalInfo, ConnectorError> {
        // Right after a start the bot may still be registering: give it a moment.
        let mut watch = self.bot.subscribe();
        let bot = tokio::time::timeout(JOIN_TIMEOUT, watch.wait_for(Option::is_some))
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|bot| bot.clone())
            .ok_or_else(|| ConnectorError::Retry(format!("not connected to {}", self.name())))?;
        let server = self.server();
        if !is_valid_channel(channel, &server.chantypes) {
            return Err(ConnectorError::Refused(format!(
                "{channel:?} is not a channel name on {}",
                self.name()
            )));
        }
        let folded = server.casemapping.fold(channel);
        let joined = lock(&self.channels)
            .get(&folded)
            .is_some_and(|state| state.synced);
        if !joined {
            let (done, result) = oneshot::channel();
            lock(&self.joins)
                .entry(folded.clone())
                .or_default()
                .push(done);
            bot.send(&Line::new("JOIN", [channel]))
                .await
                .map_err(send_error)?;
            match tokio::time::timeout(JOIN_TIMEOUT, result).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(reason))) => {
                    return Err(ConnectorError::Refused(format!(
                        "cannot join {channel}: {reason}"
                    )));
                }
                Ok(Err(_)) | Err(_) => {
                    // Nobody waits any more (a later JOIN registers anew).
                    lock(&self.joins).remove(&folded);
                    return Err(ConnectorError::Retry(format!(
                        "no answer joining {channel}"
                    )));
                }
            }
        }
        let channels = lock(&self.channels);
        let state = channels.get(&folded);
        // With `members: lazy`, the room starts with nobody from IRC.
        let members = state
            .filter(|_| self.config.members == MemberSync::Full)
            .map(|state| {
                state
                    .members
                    .values()
                    .filter(|member| !self.is_ours(&member.nick))
                    .map(|member| self.ghost(&member.nick))
                    .collect()
            })
            .unwrap_or_default();
        Ok(PortalInfo {
            remote_id: portal_id(self.name(), &folded),
            name: Some(channel.to_owned()),
            topic: state
                .and_then(|s| s.topic.clone())
                .filter(|t| !t.is_empty()),
            alias_suffix: Some(self.alias_template.render(&folded)),
            public: true,
            members,
            ..PortalInfo::default()
        })
    }

    // ----- links ---------------------------------------------------------------------

    /// Whether `nick` is an operator (`o` or above) of `channel`, as the bot sees it.
    pub fn is_operator(&self, channel: &str, nick: &str) -> bool {
        let channels = lock(&self.channels);
        channels
            .get(&self.fold(channel))
            .and_then(|state| state.members.get(&self.fold(nick)))
            .is_some_and(|member| member.modes.contains(['o', 'a', 'q']))
    }

    /// Asks `operator`, an operator of `channel`, whether `user` may bridge it to
    /// `room`; waits for their `yes` (or `no`) to the bot.
    pub async fn ask_consent(
        &self,
        channel: &str,
        operator: &str,
        user: &UserId,
        room: &ruma::RoomId,
    ) -> Result<(), ConnectorError> {
        if !is_valid_nick(operator) || !self.is_operator(channel, operator) {
            return Err(ConnectorError::Refused(format!(
                "{operator} is not an operator of {channel}"
            )));
        }
        let bot =
            self.bot.borrow().clone().ok_or_else(|| {
                ConnectorError::Retry(format!("not connected to {}", self.name()))
            })?;
        let (answer, answered) = oneshot::channel();
        let folded = self.fold(operator);
        let code = format!("{:04}", rand::random_range(0..10_000));
        {
            let mut consents = lock(&self.consents);
            if consents.contains_key(&folded) {
                return Err(ConnectorError::Refused(format!(
                    "{operator} is being asked about another link; try again in a moment"
                )));
            }
            consents.insert(
                folded.clone(),
                Consent {
                    channel: channel.to_owned(),
                    code: code.clone(),
                    answer,
                },
            );
        }
        let question = format!(
            "{user} asks to bridge {channel} to the Matrix room {room}. Answer \"yes {code}\" \
             to agree or \"no {code}\" to refuse, within {} minutes.",
            CONSENT_TIMEOUT.as_secs() / 60
        );
        let asked = bot.send(&Line::new("PRIVMSG", [operator, &question])).await;
        if let Err(error) = asked {
            lock(&self.consents).remove(&folded);
            return Err(send_error(error));
        }
        let agreed = tokio::time::timeout(CONSENT_TIMEOUT, answered).await;
        let mut consents = lock(&self.consents);
        // Only this question's entry: a later one for the same operator stays.
        if consents.get(&folded).is_some_and(|c| c.code == code) {
            consents.remove(&folded);
        }
        drop(consents);
        match agreed {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(ConnectorError::Refused(format!(
                "{operator} refused to bridge {channel}"
            ))),
            Ok(Err(_)) | Err(_) => Err(ConnectorError::Refused(format!(
                "{operator} did not answer in time"
            ))),
        }
    }

    /// A private message to the bot: the answer of an operator asked about a link, with
    /// its code, counted only while they are still an operator of the channel.
    fn on_consent(&self, nick: &str, text: &str) {
        let mut words = text.split_whitespace();
        let agreed = match words.next().map(str::to_lowercase).as_deref() {
            Some("yes" | "y") => true,
            Some("no" | "n") => false,
            _ => return,
        };
        let Some(code) = words.next() else { return };
        let folded = self.fold(nick);
        let mut consents = lock(&self.consents);
        let answers = consents
            .get(&folded)
            .is_some_and(|c| c.code == code && self.is_operator(&c.channel, nick));
        if answers && let Some(consent) = consents.remove(&folded) {
            let _ = consent.answer.send(agreed);
        }
    }

    /// Takes the bot and every puppet out of `channel` and forgets it: its portal is
    /// unlinked, or its link refused.
    pub async fn leave_channel(&self, channel: &str) -> Result<(), ConnectorError> {
        let folded = self.fold(channel);
        lock(&self.channels).remove(&folded);
        let part = Line::new("PART", [channel]);
        let puppets: Vec<_> = lock(&self.puppets).values().cloned().collect();
        // The channel is forgotten whatever happens: after a reconnect only portals are
        // joined again.
        let mut connections = Vec::new();
        for slot in puppets {
            let puppet = slot.lock().await.clone();
            if let Some(puppet) = puppet
                && lock(&puppet.channels).remove(&folded)
            {
                connections.push(puppet.connection.clone());
            }
        }
        connections.extend(self.bot.borrow().clone());
        for connection in connections {
            if let Err(error) = connection.send(&part).await {
                tracing::warn!(%channel, %error, "cannot part an unlinked channel");
            }
        }
        Ok(())
    }

    /// Whether the config maps `channel` to the room `room` (its portal is not to be
    /// unlinked).
    pub async fn is_mapped(&self, channel: &str, room: &ruma::RoomId) -> bool {
        let folded = self.fold(channel);
        let mapped = self
            .config
            .mappings
            .iter()
            .find(|m| self.fold(&m.channel) == folded);
        match mapped {
            Some(mapping) => self.bridge().is_room(&mapping.room, room).await,
            None => false,
        }
    }

    /// Links the rooms the config maps to channels.
    async fn link_mappings(self: Arc<Self>) {
        for mapping in &self.config.mappings {
            self.bridge()
                .link_mapping(
                    &mapping.room,
                    || self.open_channel(&mapping.channel),
                    &self.stop,
                )
                .await;
        }
    }

    // ----- puppets -------------------------------------------------------------------

    /// The puppet of `user`, connected (again, if its connection was lost).
    pub async fn puppet(
        self: &Arc<Self>,
        user: &UserId,
        display_name: Option<&str>,
    ) -> Result<Arc<Puppet>, ConnectorError> {
        let slot = Arc::clone(lock(&self.puppets).entry(user.to_owned()).or_default());
        let mut slot = slot.lock().await;
        if let Some(puppet) = slot.as_ref()
            && puppet.connection.is_open()
        {
            *lock(&puppet.last_active) = Instant::now();
            return Ok(Arc::clone(puppet));
        }
        if self.stop.is_cancelled() {
            return Err(ConnectorError::Retry("the bridge is stopping".to_owned()));
        }
        let server = self.server();
        let login = self.login(user).await?;
        let nick = login.nick.clone().unwrap_or_else(|| {
            nick_for(
                display_name,
                user.localpart(),
                &self.config.nick_suffix,
                server.nicklen,
            )
        });
        let username = login.username.clone().unwrap_or_else(|| {
            let derived: String = user
                .localpart()
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(MAX_USERNAME_LEN)
                .collect();
            if derived.is_empty() {
                "matrix".to_owned()
            } else {
                derived
            }
        });
        let mut options = self.options(nick, username, user.to_string());
        options.sasl = login.sasl.clone();
        if let (Some(cert), Some(roots)) = (&login.cert, &self.tls_roots) {
            // The certificate logs them in where no password is stored (SASL EXTERNAL).
            match cert
                .der()
                .map_err(anyhow::Error::from)
                .and_then(|client| crate::tls::config_with(Arc::clone(roots), Some(client)))
            {
                Ok(config) => {
                    options.tls = Some(Arc::new(config));
                    options.sasl.get_or_insert(Sasl::External);
                }
                Err(error) => {
                    tracing::warn!(%user, %error, "cannot present the user's client certificate");
                }
            }
        }
        options.bind = self
            .bind_prefix
            .map(|prefix| prefix.address_for(user.as_str()));
        self.connect_slot().await;
        // A puppet's failure (its bind address, its login) says nothing of the server:
        // only the bot moves the network on to the next one.
        let (connection, events) =
            Connection::connect(&options)
                .await
                .map_err(|error| match error {
                    ConnectError::Unreachable { .. }
                    | ConnectError::Timeout
                    | ConnectError::Refused(_) => ConnectorError::Retry(error.to_string()),
                    ConnectError::NoNick(_) | ConnectError::Sasl(_) => {
                        ConnectorError::Refused(error.to_string())
                    }
                })?;
        let nick = connection.nick();
        let sasl = match (&options.sasl, connection.sasl_outcome()) {
            (None, _) => "none".to_owned(),
            (Some(sasl), None) => format!("{} not offered", sasl.mechanism()),
            (Some(sasl), Some(Ok(()))) => format!("{} logged in", sasl.mechanism()),
            (Some(sasl), Some(Err(reason))) => format!("{} refused: {reason}", sasl.mechanism()),
        };
        tracing::info!(network = %self.name(), %user, %nick, %sasl, "puppet connected");
        self.identify(&connection, user, &login).await;
        let away = lock(&self.aways).get(user).cloned();
        if let Some(away) = away
            && let Err(error) = connection.send(&Line::new("AWAY", [away])).await
        {
            tracing::debug!(%user, %error, "cannot mark a new puppet away");
        }
        lock(&self.puppet_nicks).insert(self.fold(&nick), user.to_owned());
        let puppet = Arc::new(Puppet {
            connection,
            channels: Mutex::new(HashSet::new()),
            last_active: Mutex::new(Instant::now()),
        });
        *slot = Some(Arc::clone(&puppet));
        let task = tokio::spawn(Arc::clone(self).run_puppet(
            user.to_owned(),
            Arc::downgrade(&puppet),
            nick,
            events,
        ));
        lock(&self.tasks).push(task);
        Ok(puppet)
    }

    /// Marks `user`'s puppet away with `message` (`None`: back), if it is connected and
    /// that is a change; a puppet connected later is marked as it connects.
    pub async fn set_away(&self, user: &UserId, message: Option<&str>) {
        {
            let mut aways = lock(&self.aways);
            if aways.get(user).map(String::as_str) == message {
                return;
            }
            match message {
                Some(message) => aways.insert(user.to_owned(), message.to_owned()),
                None => aways.remove(user),
            };
        }
        let slot = lock(&self.puppets).get(user).cloned();
        let Some(slot) = slot else { return };
        let puppet = slot.lock().await.clone();
        let Some(puppet) = puppet.filter(|p| p.connection.is_open()) else {
            return;
        };
        let line = match message {
            Some(message) => Line::new("AWAY", [message]),
            None => Line::new("AWAY", Vec::<String>::new()),
        };
        if let Err(error) = puppet.connection.send(&line).await {
            tracing::debug!(%user, %error, "cannot mark a puppet away");
        }
    }

    /// The puppet of `user`, a member of `channel` (folded).
    pub async fn puppet_in(
        self: &Arc<Self>,
        user: &UserId,
        display_name: Option<&str>,
        channel: &str,
    ) -> Result<Arc<Puppet>, ConnectorError> {
        let puppet = self.puppet(user, display_name).await?;
        let joined = lock(&puppet.channels).contains(channel);
        if !joined {
            // The server handles a connection's lines in order: what is sent after the
            // JOIN reaches the channel, or is refused with a numeric the puppet reports.
            puppet
                .connection
                .send(&Line::new("JOIN", [channel]))
                .await
                .map_err(send_error)?;
            lock(&puppet.channels).insert(channel.to_owned());
        }
        Ok(puppet)
    }

    /// The network id of logins (`irc:<network>`).
    fn login_network(&self) -> String {
        format!("irc:{}", self.name())
    }

    /// The network id of users' client certificates (`irc:<network>/cert`), kept apart
    /// from their login so the key is sealed as a secret of its own.
    fn cert_network(&self) -> String {
        format!("irc:{}/cert", self.name())
    }

    /// Whether connections to this network use TLS (client certificates need it).
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// `user`'s client certificate, made now if they have none yet.
    pub async fn client_cert(&self, user: &UserId) -> Result<ClientCert, ConnectorError> {
        if let Some(cert) = self.login(user).await?.cert {
            return Ok(cert);
        }
        let cert = ClientCert::generate(user.as_str())
            .map_err(|error| ConnectorError::Refused(error.to_string()))?;
        let row = Login {
            user_id: user.to_string(),
            network: self.cert_network(),
            remote_id: None,
            settings: serde_json::json!({ "cert": cert.cert_pem }).to_string(),
            secret: Some(cert.key_pem.clone()),
        };
        let bridge = self.bridge();
        bridge
            .store()
            .save_login(&row, bridge.secrets())
            .await
            .map_err(|error| ConnectorError::Retry(error.to_string()))?;
        Ok(cert)
    }

    /// What `user` told the bridge about themselves on this network.
    pub async fn login(&self, user: &UserId) -> Result<PuppetLogin, ConnectorError> {
        let bridge = self.bridge();
        let load = async |network: String| {
            bridge
                .store()
                .load_login(user.as_str(), &network, bridge.secrets())
                .await
                .map_err(|error| ConnectorError::Retry(error.to_string()))
        };
        let cert = load(self.cert_network()).await?.and_then(|stored| {
            let settings: serde_json::Value =
                serde_json::from_str(&stored.settings).unwrap_or_default();
            Some(ClientCert {
                cert_pem: settings["cert"].as_str()?.to_owned(),
                key_pem: stored.secret?,
            })
        });
        let Some(stored) = load(self.login_network()).await? else {
            return Ok(PuppetLogin {
                cert,
                ..PuppetLogin::default()
            });
        };
        let settings: serde_json::Value =
            serde_json::from_str(&stored.settings).unwrap_or_default();
        let account = settings["account"].as_str().map(str::to_owned);
        let sasl = match (account, stored.secret) {
            (Some(account), Some(password)) => Some(Sasl::Plain { account, password }),
            _ => None,
        };
        Ok(PuppetLogin {
            nick: stored.remote_id,
            sasl,
            username: settings["username"]
                .as_str()
                .filter(|name| is_valid_username(name))
                .map(str::to_owned),
            cert,
        })
    }

    /// Saves what `user` told the bridge about themselves on this network.
    pub async fn save_login(
        &self,
        user: &UserId,
        login: &PuppetLogin,
    ) -> Result<(), ConnectorError> {
        let (account, secret) = match &login.sasl {
            Some(Sasl::Plain { account, password }) => {
                (Some(account.clone()), Some(password.clone()))
            }
            _ => (None, None),
        };
        let row = Login {
            user_id: user.to_string(),
            network: self.login_network(),
            remote_id: login.nick.clone(),
            settings: serde_json::json!({ "account": account, "username": login.username })
                .to_string(),
            secret,
        };
        let bridge = self.bridge();
        bridge
            .store()
            .save_login(&row, bridge.secrets())
            .await
            .map_err(|error| ConnectorError::Retry(error.to_string()))
    }

    /// Connects `user`'s puppet again, now with their client certificate, and once it is
    /// logged in with SASL asks NickServ to add the certificate to the account
    /// (`CERT ADD` names the connection's own). Whether it could ask.
    pub async fn add_cert_to_account(
        self: &Arc<Self>,
        user: &UserId,
    ) -> Result<bool, ConnectorError> {
        // Without a password the puppet is not logged in to ask: no reconnect for nothing.
        if !matches!(self.login(user).await?.sasl, Some(Sasl::Plain { .. })) {
            return Ok(false);
        }
        self.disconnect(user, "Client certificate").await;
        let puppet = self.puppet(user, None).await?;
        if puppet.connection.sasl_outcome() != Some(Ok(())) {
            return Ok(false);
        }
        puppet
            .connection
            .send(&Line::new("PRIVMSG", ["NickServ", "CERT ADD"]))
            .await
            .map_err(send_error)?;
        Ok(true)
    }

    /// Logs a new puppet connection in with NickServ when SASL was not possible.
    async fn identify(&self, connection: &Connection, user: &UserId, login: &PuppetLogin) {
        let Some(Sasl::Plain { account, password }) = &login.sasl else {
            return;
        };
        match connection.sasl_outcome() {
            Some(Ok(())) => {}
            Some(Err(reason)) => {
                tracing::warn!(network = %self.name(), %user, %reason, "SASL login refused");
            }
            None => {
                let identify = Line::new(
                    "PRIVMSG",
                    ["NickServ", &format!("IDENTIFY {account} {password}")],
                );
                if let Err(error) = connection.send(&identify).await {
                    tracing::warn!(%error, "cannot identify with NickServ");
                }
            }
        }
    }

    /// Disconnects `user`'s puppet, if connected; the next message connects it again.
    pub async fn disconnect(&self, user: &UserId, reason: &str) {
        let slot = lock(&self.puppets).get(user).cloned();
        let Some(slot) = slot else { return };
        let puppet = slot.lock().await.take();
        if let Some(puppet) = puppet {
            let _ = puppet.connection.send(&Line::new("QUIT", [reason])).await;
        }
    }

    /// Asks for a new nick for `user`'s puppet, if connected; the server's NICK confirms.
    pub async fn change_nick(&self, user: &UserId, nick: &str) -> Result<bool, ConnectorError> {
        let slot = lock(&self.puppets).get(user).cloned();
        let Some(slot) = slot else { return Ok(false) };
        let puppet = slot.lock().await.clone();
        let Some(puppet) = puppet.filter(|p| p.connection.is_open()) else {
            return Ok(false);
        };
        puppet
            .connection
            .send(&Line::new("NICK", [nick]))
            .await
            .map_err(send_error)?;
        Ok(true)
    }

    /// Shows `user` typing in `channel` (folded) with the IRCv3 `+typing` tag, if their
    /// puppet is connected, in the channel, and the server carries client tags.
    pub async fn typing(&self, user: &UserId, channel: &str, typing: bool) {
        let slot = lock(&self.puppets).get(user).cloned();
        let Some(slot) = slot else { return };
        let puppet = slot.lock().await.clone();
        let Some(puppet) = puppet else { return };
        if !puppet.connection.has_cap("message-tags") || !lock(&puppet.channels).contains(channel) {
            return;
        }
        let state = if typing { "active" } else { "done" };
        let line = Line::new("TAGMSG", [channel]).with_tag("+typing", Some(state));
        if let Err(error) = puppet.connection.queue(&line) {
            tracing::debug!(%error, "typing not sent");
        }
    }

    /// The nick of `user`'s puppet, if connected.
    pub async fn puppet_nick(&self, user: &UserId) -> Option<String> {
        let slot = lock(&self.puppets).get(user).cloned()?;
        let puppet = slot.lock().await.clone()?;
        puppet
            .connection
            .is_open()
            .then(|| puppet.connection.nick())
    }

    /// Whether `user` is relayed through the bot rather than given a puppet: their
    /// permission is `relay`.
    pub fn is_relayed(&self, user: &UserId) -> bool {
        self.bridge().permission(user) < Permission::User
    }

    /// Says `lines` (one message) through the bot's connection (relay mode); the msgids
    /// of the lines, as [`deliver_lines`] gives them.
    pub async fn relay(&self, lines: &[Line]) -> Result<Vec<String>, ConnectorError> {
        let bot =
            self.bot.borrow().clone().ok_or_else(|| {
                ConnectorError::Retry(format!("not connected to {}", self.name()))
            })?;
        deliver_lines(&bot, lines).await
    }

    /// The public link of a Matrix file, served by the bridge.
    pub fn media_link(&self, mxc: &ruma::MxcUri, file_name: Option<&str>) -> Option<String> {
        self.bridge().media_link(mxc, file_name)
    }

    /// A link to `text` as a file, uploaded to Matrix by the bot and served by the bridge.
    pub async fn text_link(&self, text: &str) -> Option<String> {
        let bridge = self.bridge();
        let uploaded = bridge
            .matrix()
            .bot()
            .upload_media(
                text.as_bytes(),
                "text/plain; charset=utf-8",
                Some("message.txt"),
            )
            .await;
        match uploaded {
            Ok(mxc) => bridge.media_link(&mxc, Some("message.txt")),
            Err(error) => {
                tracing::warn!(%error, "cannot upload a long message; it is cut");
                None
            }
        }
    }

    /// What the server says of `nick` (WHOIS through the bot), as text.
    pub async fn whois(&self, nick: &str) -> Result<String, ConnectorError> {
        if !crate::config::is_valid_nick(nick) {
            return Ok(format!("{nick:?} is not a nick."));
        }
        let bot =
            self.bot.borrow().clone().ok_or_else(|| {
                ConnectorError::Retry(format!("not connected to {}", self.name()))
            })?;
        let (done, answer) = oneshot::channel();
        let folded = self.fold(nick);
        let first = {
            let mut pending = lock(&self.whois);
            let entry = pending.entry(folded.clone()).or_default();
            entry.1.push(done);
            entry.1.len() == 1
        };
        // One WHOIS on the wire per nick; everyone asking gets its answer.
        if first {
            bot.send(&Line::new("WHOIS", [nick]))
                .await
                .map_err(send_error)?;
        }
        let lines = match tokio::time::timeout(JOIN_TIMEOUT, answer).await {
            Ok(Ok(lines)) => lines,
            Ok(Err(_)) => return Err(ConnectorError::Retry("the connection closed".to_owned())),
            Err(_) => {
                lock(&self.whois).remove(&folded);
                return Err(ConnectorError::Retry(format!("no answer to WHOIS {nick}")));
            }
        };
        let mut text = Vec::new();
        for line in &lines {
            let p = |i: usize| line.param(i);
            match line.command.as_str() {
                "311" => text.push(format!("{} is {}@{} ({})", p(1), p(2), p(3), p(5))),
                "312" => text.push(format!("on server {} ({})", p(2), p(3))),
                "313" => text.push("an IRC operator".to_owned()),
                "317" => text.push(format!("idle {} s", p(2))),
                "319" => text.push(format!("in {}", p(2))),
                "330" => text.push(format!("logged in as {}", p(2))),
                "671" => text.push("on a secure connection".to_owned()),
                "401" => text.push(format!("{nick} is not on {}", self.name())),
                _ => {}
            }
        }
        Ok(crate::split::sanitize_line(&text.join("; ")))
    }

    /// Whether the bot is connected.
    pub fn is_connected(&self) -> bool {
        self.bot.borrow().is_some()
    }

    /// Parts `channel` (folded) with `user`'s puppet, if it is there.
    pub async fn part(&self, user: &UserId, channel: &str) -> Result<(), ConnectorError> {
        let slot = lock(&self.puppets).get(user).cloned();
        let Some(slot) = slot else { return Ok(()) };
        let puppet = slot.lock().await.clone();
        let Some(puppet) = puppet else { return Ok(()) };
        if lock(&puppet.channels).remove(channel) {
            puppet
                .connection
                .send(&Line::new("PART", [channel]))
                .await
                .map_err(send_error)?;
        }
        Ok(())
    }

    /// A puppet's lines: its nick and channels kept current, refusals and kicks reported
    /// to its Matrix user, private messages opened as direct chats.
    async fn run_puppet(
        self: Arc<Self>,
        user: OwnedUserId,
        puppet: std::sync::Weak<Puppet>,
        mut nick: String,
        mut events: mpsc::UnboundedReceiver<Line>,
    ) {
        // A channel the puppet is no longer in must be joined again before it speaks.
        let left = |channel: &str| {
            if let Some(puppet) = puppet.upgrade() {
                lock(&puppet.channels).remove(&self.fold(channel));
            }
        };
        while let Some(line) = events.recv().await {
            match line.command.as_str() {
                "NICK"
                    if line
                        .source_nick()
                        .is_some_and(|n| self.fold(n) == self.fold(&nick)) =>
                {
                    let new = line.param(0).to_owned();
                    let mut nicks = lock(&self.puppet_nicks);
                    nicks.remove(&self.fold(&nick));
                    nicks.insert(self.fold(&new), user.clone());
                    nick = new;
                }
                "PRIVMSG" | "NOTICE" if self.fold(line.param(0)) == self.fold(&nick) => {
                    self.on_private_message(&user, &line).await;
                }
                "KICK" if self.fold(line.param(1)) == self.fold(&nick) => {
                    let channel = line.param(0).to_owned();
                    left(&channel);
                    let by = line.source_nick().unwrap_or_default();
                    let reason = format!("kicked by {by}: {}", line.param(2));
                    self.report(&user, &channel, &reason).await;
                }
                "PART"
                    if line
                        .source_nick()
                        .is_some_and(|n| self.fold(n) == self.fold(&nick)) =>
                {
                    left(line.param(0));
                }
                code if SEND_ERRORS.contains(&code) || JOIN_ERRORS.contains(&code) => {
                    let target = line.param(1).to_owned();
                    if JOIN_ERRORS.contains(&code) {
                        left(&target);
                    }
                    let reason = line.params.last().cloned().unwrap_or_default();
                    self.report(&user, &target, &reason).await;
                }
                _ => {}
            }
        }
        // Only this connection's entry: a newer connection of the same user may hold the
        // same nick by now.
        let current = puppet.upgrade();
        let replaced = match lock(&self.puppets).get(&user).cloned() {
            Some(slot) => match slot.try_lock() {
                Ok(guard) => guard
                    .as_ref()
                    .is_some_and(|p| current.as_ref().is_none_or(|c| !Arc::ptr_eq(p, c))),
                // Locked: a reconnection is under way; it sets its own entry.
                Err(_) => true,
            },
            None => false,
        };
        if !replaced {
            lock(&self.puppet_nicks).remove(&self.fold(&nick));
        }
        tracing::info!(network = %self.name(), %user, "puppet disconnected");
    }

    /// The direct chat between `nick` and `user`, as a portal.
    pub fn direct_chat(&self, user: &UserId, nick: &str) -> PortalInfo {
        let ghost = self.ghost(nick);
        PortalInfo {
            remote_id: direct_id(self.name(), &self.fold(nick), user),
            members: vec![ghost.clone()],
            direct: Some(DirectChat {
                user: user.to_owned(),
                ghost,
            }),
            ..PortalInfo::default()
        }
    }

    /// A private message to `user`'s puppet: it goes to their direct chat with the
    /// sender, which is made on the first one.
    async fn on_private_message(&self, user: &UserId, line: &Line) {
        let Some(sender) = line.source_nick().map(str::to_owned) else {
            return;
        };
        // Servers and services (no `user@host`), and the bridge's own users, are not chats.
        let from_server = line.source.as_deref().is_none_or(|s| !s.contains('!'));
        if from_server || self.is_ours(&sender) {
            return;
        }
        let Some(message) = self.message_of(line) else {
            return;
        };
        let info = self.direct_chat(user, &sender);
        if let Err(error) = self.bridge().create_portal(&info).await {
            tracing::warn!(%user, %sender, %error, "cannot open a direct chat; the message is lost");
            return;
        }
        let event = RemoteEvent {
            id: line.tag("msgid").map(str::to_owned),
            sender: self.ghost(&sender),
            timestamp: line.tag("time").and_then(parse_server_time),
            kind: RemoteEventKind::Message(message),
        };
        self.queue_on(&info.remote_id, event).await;
    }

    /// Tells `user`, in the portal of `target`, that the server refused something.
    async fn report(&self, user: &UserId, target: &str, reason: &str) {
        let portal = if self.server().is_channel(target) {
            portal_id(self.name(), &self.fold(target))
        } else {
            direct_id(self.name(), &self.fold(target), user)
        };
        let Ok(Some(portal)) = self.bridge().portal(&portal).await else {
            tracing::info!(%user, %target, %reason, "IRC refused a puppet");
            return;
        };
        let text = format!("{user}: IRC refused what you sent to {target}: {reason}");
        if let Err(error) = self.bridge().notice(&portal.room_id, &text).await {
            tracing::warn!(%error, "cannot report an IRC refusal");
        }
    }

    /// A PRIVMSG or NOTICE as a remote message (see [`message_of`]), with this network's
    /// puppets' nicks as pills.
    fn message_of(&self, line: &Line) -> Option<RemoteMessage> {
        message_of(line, &|word| {
            lock(&self.puppet_nicks).get(&self.fold(word)).cloned()
        })
    }

    /// Remembers what Matrix message `event_id` said on IRC, for a later substitution.
    pub fn remember_text(&self, event_id: &str, text: &str) {
        if self.config.edits == EditStyle::Substitution {
            lock(&self.recent_texts).remember(event_id, text);
        }
    }

    /// What Matrix message `event_id` said on IRC last, if it is recent.
    pub fn recent_text(&self, event_id: &str) -> Option<String> {
        lock(&self.recent_texts).get(event_id).map(str::to_owned)
    }

    /// The nick of a ghost or Matrix user, for `nick: ` reply prefixes.
    pub fn nick_of_sender(&self, sender: &str) -> Option<String> {
        if let Some((network, nick)) = crate::ids::split_id(sender) {
            if network != self.name() {
                return None;
            }
            let channels = lock(&self.channels);
            let written = channels
                .values()
                .find_map(|channel| channel.members.get(nick).map(|m| m.nick.clone()));
            return Some(written.unwrap_or_else(|| nick.to_owned()));
        }
        let user = UserId::parse(sender).ok()?;
        let nicks = lock(&self.puppet_nicks);
        nicks
            .iter()
            .find(|(_, owner)| **owner == user)
            .map(|(nick, _)| nick.clone())
    }
}

/// A remote message from a PRIVMSG or NOTICE line; `None` for CTCP other than ACTION. An
/// IRCv3 reply tag names the message replied to by its msgid. Words that are a puppet's
/// nick, as `puppet_of` finds them, become pills of its Matrix user.
fn message_of(
    line: &Line,
    puppet_of: &dyn Fn(&str) -> Option<OwnedUserId>,
) -> Option<RemoteMessage> {
    let (command, text) = (line.command.as_str(), line.param(1));
    let (kind, text) = match text.strip_prefix('\x01') {
        Some(ctcp) => {
            let ctcp = ctcp.strip_suffix('\x01').unwrap_or(ctcp);
            (MessageKind::Emote, ctcp.strip_prefix("ACTION ")?)
        }
        None if command == "NOTICE" => (MessageKind::Notice, text),
        None => (MessageKind::Text, text),
    };
    Some(RemoteMessage {
        kind,
        body: strip_formatting(text),
        html: irc_to_html_mentioning(text, &|word| {
            puppet_of(word).map(|user| mention_pill(&user, word))
        }),
        reply_to: line
            .tag("+draft/reply")
            .or_else(|| line.tag("+reply"))
            .map(str::to_owned),
        file: None,
    })
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Sends `lines` in order (tags dropped where the server takes none). A failure before
/// the first line is worth a retry; after it, a retry would repeat what went, so the
/// rest is refused and the sender told.
pub async fn send_lines(connection: &Connection, lines: &[Line]) -> Result<(), ConnectorError> {
    for (index, line) in lines.iter().enumerate() {
        connection
            .send(&tags_if_taken(connection, line))
            .await
            .map_err(|error| lost(index, lines.len(), error))?;
    }
    Ok(())
}

/// Says `lines` (one message) like [`send_lines`], and where the server answers
/// labeled lines (labeled-response), waits for its answers: delivery is confirmed by
/// each line's echo, whose msgids are returned (echo-message), and an error numeric or
/// `FAIL` refuses the message. A connection lost after a line went, before its answer,
/// is reported to the sender, not retried: the server may have had the line, and a line
/// that gets the connection killed would otherwise be sent for ever.
pub async fn deliver_lines(
    connection: &Connection,
    lines: &[Line],
) -> Result<Vec<String>, ConnectorError> {
    let mut answers = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        let answer = connection
            .send_labeled(&tags_if_taken(connection, line))
            .await
            .map_err(|error| lost(index, lines.len(), error))?;
        answers.push(answer);
    }
    // One deadline for the whole message, so a silent server holds a room up once.
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let own_nick = connection.nick();
    let mut msgids = Vec::new();
    for answer in answers.into_iter().flatten() {
        let Ok(answer) = tokio::time::timeout_at(deadline, answer.get()).await else {
            tracing::warn!(
                "the IRC server did not answer a labeled line in time; taken as delivered"
            );
            break;
        };
        let Some(answer) = answer else {
            return Err(ConnectorError::Refused(
                "the IRC connection was lost before the server confirmed it; it may not have arrived".to_owned(),
            ));
        };
        let command = answer.command.as_str();
        let is_error = command == "FAIL" || (command.len() == 3 && command.starts_with(['4', '5']));
        if is_error {
            // `404 me #chan :Cannot send to channel`, or `FAIL PRIVMSG CODE :text`.
            let reason = answer.params.last().cloned().unwrap_or_default();
            let target = answer.param(1);
            return Err(ConnectorError::Refused(
                if command != "FAIL" && !target.is_empty() {
                    format!("IRC refused it ({target}: {reason})")
                } else {
                    format!("IRC refused it ({reason})")
                },
            ));
        }
        let echoed = matches!(command, "PRIVMSG" | "NOTICE")
            && answer
                .source_nick()
                .is_some_and(|nick| nick.eq_ignore_ascii_case(&own_nick));
        if echoed {
            msgids.extend(answer.tag("msgid").map(str::to_owned));
        }
    }
    Ok(msgids)
}

/// `line`, without its tags where the server takes none.
fn tags_if_taken(connection: &Connection, line: &Line) -> Line {
    if line.tags.is_empty() || connection.has_cap("message-tags") {
        line.clone()
    } else {
        Line {
            tags: Vec::new(),
            ..line.clone()
        }
    }
}

/// A failure at line `index` of `count`: retried if nothing went yet, else refused.
fn lost(index: usize, count: usize, error: SendError) -> ConnectorError {
    if index == 0 {
        send_error(error)
    } else {
        ConnectorError::Refused(format!(
            "the IRC connection was lost after {index} of {count} lines"
        ))
    }
}

/// A send failure as the framework takes it.
pub fn send_error(error: SendError) -> ConnectorError {
    match error {
        SendError::Closed => ConnectorError::Retry("the IRC connection closed".to_owned()),
        SendError::Line(error) => ConnectorError::Refused(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_actions_are_told_apart() {
        let parse = |raw: &str| message_of(&Line::parse(raw).unwrap(), &|_| None);
        let action = parse(":a PRIVMSG #c :\x01ACTION waves\x01").unwrap();
        assert_eq!(
            (action.kind, action.body.as_str()),
            (MessageKind::Emote, "waves")
        );
        let notice = parse(":a NOTICE #c :hi").unwrap();
        assert_eq!(notice.kind, MessageKind::Notice);
        let bold = parse(":a PRIVMSG #c :\x02bold\x02 text").unwrap();
        assert_eq!(bold.body, "bold text");
        assert_eq!(bold.html.as_deref(), Some("<b>bold</b> text"));
        assert!(parse(":a PRIVMSG #c :\x01VERSION\x01").is_none());
        let reply = parse("@+draft/reply=m1 :a PRIVMSG #c :yes").unwrap();
        assert_eq!(reply.reply_to.as_deref(), Some("m1"));
    }

    #[test]
    fn backoff_grows_with_jitter() {
        let mut backoff = Backoff::new();
        let first = backoff.next();
        assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1));
        for _ in 0..20 {
            backoff.next();
        }
        let late = backoff.next();
        assert!(late >= Duration::from_secs(150) && late <= Duration::from_secs(300));
    }
}
