//! The XMPP side at run time: the component connection, the bot that listens in every
//! bridged group chat, the puppets that speak for Matrix users, and every stanza the
//! server sends, handled one at a time in the order it came.
//!
//! The bot is the component's own domain with the resource `trestle`; it joins each
//! portal's room and is the one occupant whose copy of a message or presence is bridged
//! (every occupant gets one). A Matrix user's puppet joins a room the first time they
//! speak or join there, under their display name; a taken nick is retried with a suffix.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bridge_core::bridge::{BridgeHandle, Permission};
use bridge_core::connector::{
    ConnectorError, DirectChat, GhostInfo, MessageKind, PortalInfo, RemoteEvent, RemoteEventKind,
    RemoteFile, RemoteMessage,
};
use ruma::{OwnedUserId, UserId};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_xmpp::Stanza;
use tokio_xmpp::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::minidom::{Element, rxml};
use tokio_xmpp::parsers::delay::Delay;
use tokio_xmpp::parsers::displayed_markers::{Displayed, Markable};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::parsers::message_correct::Replace;
use tokio_xmpp::parsers::muc::Muc;
use tokio_xmpp::parsers::muc::muc::History;
use tokio_xmpp::parsers::muc::user::{MucUser, Status};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::occupant_id::OccupantId;
use tokio_xmpp::parsers::oob::Oob;
use tokio_xmpp::parsers::presence::{Presence, Show, Type as PresenceType};
use tokio_xmpp::parsers::reactions::Reactions;
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};
use tokio_xmpp::parsers::stanza_id::{OriginId, StanzaId};
use tokio_xmpp::parsers::vcard::{VCard, VCardQuery};
use tokio_xmpp::parsers::vcard_update::VCardUpdate;
use tokio_xmpp::parsers::version::VersionResult;

use crate::component::{Component, ComponentOptions, SendError};
use crate::config::XmppConfig;
use crate::disco;
use crate::ids::{
    GhostId, RESOURCE, alias_suffix, direct_id, parse_room_address, puppet_full_jid, user_of_puppet,
};
use crate::payloads::{
    ApplyToModerate, Fallback, Moderate, Moderate0, NS_MODERATE, NS_MODERATE_0, NS_REPLY,
    NS_RETRACT, Reply, Retract, RetractAsked, RetractAsked0, moderation_of, strip_fallback,
};
use crate::rooms::{JoinRefusal, Occupant, Rooms, level_of, matrix_presence, nick_candidates};
use crate::stanza_ids::StanzaIds;
use crate::styling::styling_to_html;

/// How long a join may take before it counts as failed.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);
/// Held while one occupant joins one room.
type JoinLock = Arc<tokio::sync::Mutex<()>>;

/// The most reactions one user's set may carry.
const MAX_REACTIONS: usize = 20;
/// The most reaction sets kept.
const MAX_REACTION_SETS: usize = 100_000;
/// How many rooms the bot joins at once after a reconnect.
const CONCURRENT_JOINS: usize = 16;
/// History asked for beyond the last message seen, for clocks that differ.
const HISTORY_SLACK_SECONDS: i64 = 60;
/// How long the bot waits for the answer to an IQ it asked.
const IQ_TIMEOUT: Duration = Duration::from_secs(15);
/// How a ghost's avatar source starts: `xmpp-avatar:<photo hash>`, fetched from the vCard
/// of an occupant last seen with that hash. Keyed by the hash alone, so that the same
/// picture seen in several rooms is fetched once.
pub const AVATAR_SOURCE: &str = "xmpp-avatar:";
/// Most avatar hashes remembered with an occupant to fetch them from.
const MAX_AVATAR_HOLDERS: usize = 10_000;
/// How long a new portal waits for its room's subject after the bot is in.
const SUBJECT_WAIT: Duration = Duration::from_secs(3);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a puppet shows its Matrix user's presence: `show` (none: available) and status.
type Shown = (Option<Show>, Option<String>);

/// When a room's last bridged message was sent, and when that was last saved.
#[derive(Debug)]
struct LastSeen {
    at: i64,
    saved: Option<std::time::Instant>,
}

fn puppet_ids_key(room: &BareJid) -> String {
    format!("puppets:{room}")
}

fn last_seen_key(room: &BareJid) -> String {
    format!("last-seen:{room}")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// No history: for puppets, and for a room's first join.
fn no_history() -> History {
    History {
        maxchars: None,
        maxstanzas: Some(0),
        seconds: None,
        since: None,
    }
}

/// A send failure, as the framework takes it: try again later.
fn retry(error: SendError) -> ConnectorError {
    ConnectorError::Retry(error.to_string())
}

/// Where a Matrix user's message goes on XMPP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum To {
    /// A group chat, through the user's puppet in it.
    Room(BareJid),
    /// An XMPP user, in a direct chat.
    Chat(BareJid),
}

impl To {
    /// The room, or the other user: where the ids messages name live.
    pub fn scope(&self) -> &BareJid {
        match self {
            To::Room(jid) | To::Chat(jid) => jid,
        }
    }
}

/// The XMPP side of the bridge.
#[derive(Debug)]
pub struct Gateway {
    config: XmppConfig,
    component: Arc<Component>,
    bridge: OnceLock<BridgeHandle>,
    rooms: Mutex<Rooms>,
    /// Occupant ids of puppets per room, as saved (so that a restart knows them).
    puppet_ids: Mutex<HashMap<BareJid, HashMap<String, OwnedUserId>>>,
    /// One lock per (joiner, room), so that joins of the same occupant do not cross.
    join_locks: Mutex<HashMap<(FullJid, BareJid), JoinLock>>,
    /// When the last message bridged from each room was sent.
    last_seen: Mutex<HashMap<BareJid, LastSeen>>,
    /// The ids rooms gave recent messages.
    stanza_ids: Mutex<StanzaIds>,
    /// Who is typing where (portal, ghost id), to tell Matrix of changes only.
    typing: Mutex<HashSet<(String, String)>>,
    /// Matrix users' presence as their puppets show it (`show`, status), when not plainly
    /// online.
    presences: Mutex<HashMap<OwnedUserId, Shown>>,
    /// IQs the bot asked and not answered yet: id → who must answer, and the waiter.
    pending_iqs: Mutex<HashMap<String, (Jid, oneshot::Sender<Iq>)>>,
    /// Avatar hashes, and an occupant last seen with each (to ask for the picture).
    avatar_holders: Mutex<HashMap<String, FullJid>>,
    /// What each room said it supports (XEP-0030), per connection.
    room_features: Mutex<HashMap<BareJid, BTreeSet<String>>>,
    /// Each user's reactions to each message, by room (XMPP sends the whole set).
    reactions: Mutex<HashMap<(BareJid, String, String), BTreeSet<String>>>,
    stop: CancellationToken,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Gateway {
    /// The gateway for `config`; nothing connects before [`Gateway::start`].
    pub fn new(config: XmppConfig) -> Arc<Gateway> {
        let component = Component::new(ComponentOptions {
            domain: config.component_domain.clone(),
            host: config.server_host.clone(),
            port: config.server_port,
            secret: config.component_secret.expose().to_owned(),
            keepalive: Duration::from_secs(config.keepalive_seconds),
        });
        Arc::new(Gateway {
            config,
            component,
            bridge: OnceLock::new(),
            rooms: Mutex::new(Rooms::default()),
            join_locks: Mutex::new(HashMap::new()),
            puppet_ids: Mutex::new(HashMap::new()),
            last_seen: Mutex::new(HashMap::new()),
            stanza_ids: Mutex::new(StanzaIds::default()),
            reactions: Mutex::new(HashMap::new()),
            typing: Mutex::new(HashSet::new()),
            presences: Mutex::new(HashMap::new()),
            pending_iqs: Mutex::new(HashMap::new()),
            room_features: Mutex::new(HashMap::new()),
            avatar_holders: Mutex::new(HashMap::new()),
            stop: CancellationToken::new(),
            tasks: Mutex::new(Vec::new()),
        })
    }

    /// The framework, once started.
    pub fn bridge(&self) -> &BridgeHandle {
        self.bridge
            .get()
            .expect("the gateway is started before anything uses it")
    }

    /// The bot's full JID.
    fn bot_jid(&self) -> FullJid {
        BareJid::new(&self.config.component_domain)
            .and_then(|domain| domain.with_resource_str(RESOURCE))
            .expect("the component domain was validated as a domain name")
    }

    /// Connects, and keeps the bot in every portal's room.
    pub fn start(self: &Arc<Self>, bridge: BridgeHandle) {
        let _ = self.bridge.set(bridge);
        let (inbound, mut stanzas) = mpsc::channel(1024);
        let mut tasks = lock(&self.tasks);
        tasks.push(tokio::spawn(
            self.component.clone().run(inbound, self.stop.clone()),
        ));
        let gateway = self.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(stanza) = stanzas.recv().await {
                gateway.on_stanza(stanza).await;
            }
        }));
        let gateway = self.clone();
        tasks.push(tokio::spawn(
            async move { gateway.rejoin_on_connect().await },
        ));
        let gateway = self.clone();
        tasks.push(tokio::spawn(async move { gateway.link_mappings().await }));
        let gateway = self.clone();
        tasks.push(tokio::spawn(async move { gateway.self_ping().await }));
    }

    /// Links the rooms the config maps to group chats.
    async fn link_mappings(self: Arc<Self>) {
        for mapping in &self.config.mappings {
            let Some(muc) = parse_room_address(&mapping.muc) else {
                continue;
            };
            self.bridge()
                .link_mapping(&mapping.room, || self.open_room(&muc), &self.stop)
                .await;
        }
    }

    /// The Matrix room the config maps `room` to, if it does.
    pub fn mapped_room(&self, room: &BareJid) -> Option<&ruma::RoomOrAliasId> {
        self.config
            .mappings
            .iter()
            .find(|m| parse_room_address(&m.muc).as_ref() == Some(room))
            .map(|m| &*m.room)
    }

    /// Disconnects.
    pub async fn stop(&self) {
        self.stop.cancel();
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    /// On every new connection: nobody is in any room any more, so the bot joins every
    /// portal's room again (puppets join again when they next speak).
    async fn rejoin_on_connect(self: Arc<Self>) {
        use futures::StreamExt as _;
        let mut connected = self.component.connected();
        // The generation whose rooms are joined; the connection may be up before this
        // task looks, so the first one counts as a change too.
        let mut joined = None;
        loop {
            let generation = tokio::select! {
                seen = connected.wait_for(|now| *now != joined) => match seen {
                    Ok(now) => *now,
                    Err(_) => return,
                },
                () = self.stop.cancelled() => return,
            };
            // Whether or not the gap was seen, nobody is in any room on a new connection.
            lock(&self.rooms).reset();
            lock(&self.room_features).clear();
            if generation.is_none() {
                joined = None;
                continue;
            }
            let portals = match self.bridge().portals().await {
                Ok(portals) => portals,
                Err(error) => {
                    tracing::warn!(%error, "cannot list the portals to join their rooms; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            joined = generation;
            let rooms = portals
                .iter()
                .filter(|p| p.direct.is_none())
                .filter_map(|p| BareJid::new(&p.remote_id).ok());
            let gateway = &self;
            futures::stream::iter(rooms)
                .for_each_concurrent(CONCURRENT_JOINS, |room| async move {
                    if let Err(error) = gateway.join_bot(&room).await {
                        tracing::warn!(%room, %error, "the bot cannot join a portal's room");
                    }
                })
                .await;
        }
    }

    // ----- joining -------------------------------------------------------------------

    /// Joins `room` as `who` under the first of `nicks` the room takes; returns the nick
    /// it gave.
    async fn join(
        &self,
        room: &BareJid,
        who: &FullJid,
        nicks: &[String],
        history: Option<History>,
    ) -> Result<String, ConnectorError> {
        for nick in nicks {
            let Ok(occupant) = room.with_resource_str(nick) else {
                continue;
            };

            let (done, answer) = oneshot::channel();
            {
                let mut rooms = lock(&self.rooms);
                rooms.joins.insert((who.clone(), room.clone()), done);
                rooms.room(room).joining.insert(nick.clone());
            }
            // Without history asked for, an occupant changes nick (no MUC payload).
            let mut presence = self
                .puppet_presence(who)
                .with_to(occupant)
                .with_payload(disco::puppet_caps());
            if let Some(history) = &history {
                presence.add_payload(Muc {
                    password: None,
                    history: Some(history.clone()),
                });
            }
            let mut presence = presence;
            presence.from = Some(Jid::from(who.clone()));
            let sent = self.component.send(presence).await;
            let answer = match sent {
                Ok(()) => tokio::time::timeout(JOIN_TIMEOUT, answer).await,
                Err(error) => {
                    lock(&self.rooms).room(room).joining.remove(nick);
                    return Err(retry(error));
                }
            };
            if !matches!(answer, Ok(Ok(Ok(_)))) {
                lock(&self.rooms).room(room).joining.remove(nick);
            }
            match answer {
                // The caller records the nick, and only then is it no longer "joining".
                Ok(Ok(Ok(given))) => {
                    if given != *nick {
                        lock(&self.rooms).room(room).joining.remove(nick);
                    }
                    return Ok(given);
                }
                Ok(Ok(Err(JoinRefusal::Conflict))) => {}
                Ok(Ok(Err(JoinRefusal::Other(reason)))) => {
                    return Err(ConnectorError::Refused(format!(
                        "cannot join {room}: {reason}"
                    )));
                }
                Ok(Err(_)) | Err(_) => {
                    lock(&self.rooms).joins.remove(&(who.clone(), room.clone()));
                    return Err(ConnectorError::Retry(format!("no answer joining {room}")));
                }
            }
        }
        Err(ConnectorError::Refused(format!(
            "every nick tried in {room} is taken"
        )))
    }

    /// The lock that keeps joins of `who` to `room` one at a time.
    fn join_lock(&self, who: &FullJid, room: &BareJid) -> JoinLock {
        lock(&self.join_locks)
            .entry((who.clone(), room.clone()))
            .or_default()
            .clone()
    }

    /// Puts the bot in `room` (if it is not there). The room's history since the last
    /// message bridged from it comes too, so nothing said while the bridge was away is
    /// lost (the framework drops what it already has by message id); a room never seen
    /// before gives none.
    async fn join_bot(&self, room: &BareJid) -> Result<(), ConnectorError> {
        if lock(&self.rooms).room(room).bot_nick.is_some() {
            return Ok(());
        }
        let bot = self.bot_jid();
        let join_lock = self.join_lock(&bot, room);
        let _one_join = join_lock.lock().await;
        if lock(&self.rooms).room(room).bot_nick.is_some() {
            return Ok(());
        }
        let history = match self.last_seen(room).await {
            Some(seen) => {
                let age = (now_ms() - seen).max(0) / 1000;
                History {
                    seconds: Some(u32::try_from(age + HISTORY_SLACK_SECONDS).unwrap_or(u32::MAX)),
                    maxstanzas: None,
                    ..no_history()
                }
            }
            None => no_history(),
        };
        let nicks = nick_candidates(&self.config.bot_nick, "bridge");
        let nick = self.join(room, &bot, &nicks, Some(history)).await?;
        let mut rooms = lock(&self.rooms);
        let state = rooms.room(room);
        state.joining.remove(&nick);
        state.bot_nick = Some(nick);
        Ok(())
    }

    /// Joins `room` with the bot and describes it for its portal.
    pub async fn open_room(&self, room: &BareJid) -> Result<PortalInfo, ConnectorError> {
        if room.node().is_none() {
            return Err(ConnectorError::Refused(format!(
                "{room} is not a group chat"
            )));
        }
        self.wait_connected().await?;
        self.join_bot(room).await?;
        // The room sends its subject after the occupants: wait for it a moment.
        let deadline = tokio::time::Instant::now() + SUBJECT_WAIT;
        while !lock(&self.rooms).room(room).subject_seen && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let rooms = lock(&self.rooms);
        let state = rooms.rooms.get(room);
        let members = state
            .map(|state| {
                state
                    .occupants
                    .iter()
                    .map(|(nick, occupant)| ghost_info(&occupant.ghost, nick))
                    .collect()
            })
            .unwrap_or_default();
        Ok(PortalInfo {
            remote_id: room.to_string(),
            name: room.node().map(|node| node.to_string()),
            topic: state
                .and_then(|s| s.subject.clone())
                .filter(|s| !s.is_empty()),
            alias_suffix: Some(alias_suffix(room)),
            public: true,
            members,
            ..PortalInfo::default()
        })
    }

    /// When the last message bridged from `room` was sent (ms since the epoch), if one
    /// ever was.
    async fn last_seen(&self, room: &BareJid) -> Option<i64> {
        if let Some(seen) = lock(&self.last_seen).get(room) {
            return Some(seen.at);
        }
        match self.bridge().state(&last_seen_key(room)).await {
            Ok(value) => value.and_then(|v| v.parse().ok()),
            Err(error) => {
                tracing::warn!(%error, "cannot read when a room was last seen");
                None
            }
        }
    }

    /// Notes that a message sent at `at` was bridged from `room`. It is saved at most
    /// once a second per room: an older mark only asks for more history, which the
    /// framework recognises by message id.
    async fn seen(&self, room: &BareJid, at: i64) {
        let save = {
            let mut all = lock(&self.last_seen);
            let seen = all
                .entry(room.clone())
                .or_insert(LastSeen { at, saved: None });
            seen.at = seen.at.max(at);
            let due = seen
                .saved
                .is_none_or(|saved| saved.elapsed() >= Duration::from_secs(1));
            if due {
                seen.saved = Some(std::time::Instant::now());
            }
            due.then_some(seen.at)
        };
        if let Some(at) = save
            && let Err(error) = self
                .bridge()
                .set_state(&last_seen_key(room), &at.to_string())
                .await
        {
            tracing::warn!(%error, "cannot save when a room was last seen");
        }
    }

    /// Queues the ranks of `room`'s occupants, for a portal made after the bot learnt
    /// them.
    pub async fn sync_levels(&self, room: &BareJid) {
        let ranked: Vec<(GhostInfo, i64)> = lock(&self.rooms)
            .room(room)
            .occupants
            .iter()
            .filter(|(_, occupant)| occupant.level != 0)
            .map(|(nick, occupant)| (ghost_info(&occupant.ghost, nick), occupant.level))
            .collect();
        for (ghost, level) in ranked {
            let event = presence_event(
                ghost.clone(),
                RemoteEventKind::PowerLevel {
                    target: ghost,
                    level,
                },
            );
            self.queue(room.as_str(), event).await;
        }
    }

    /// Waits a moment for the connection, right after a start.
    async fn wait_connected(&self) -> Result<(), ConnectorError> {
        let mut connected = self.component.connected();
        tokio::time::timeout(JOIN_TIMEOUT, connected.wait_for(Option::is_some))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|_| ())
            .ok_or_else(|| ConnectorError::Retry("not connected to the XMPP server".into()))
    }

    /// `user`'s puppet in `room` (joining it under `name` if it is not there); returns
    /// its nick.
    pub async fn puppet_in(
        &self,
        room: &BareJid,
        user: &UserId,
        name: Option<&str>,
    ) -> Result<String, ConnectorError> {
        let jid = self.puppet_jid(user)?;
        let join_lock = self.join_lock(&jid, room);
        let _one_join = join_lock.lock().await;
        let current = lock(&self.rooms).room(room).puppets.get(user).cloned();
        if let Some(nick) = current {
            return match name {
                Some(name) if !nick_candidates(name, "matrix").contains(&nick) => {
                    // A name the room does not take leaves the nick as it is.
                    match self.rename_puppet(room, user, name).await {
                        Ok(renamed) => Ok(renamed),
                        Err(error) => {
                            tracing::info!(%room, %user, %error, "the puppet keeps its nick");
                            Ok(nick)
                        }
                    }
                }
                _ => Ok(nick),
            };
        }
        self.join_bot(room).await?;
        let nicks = nick_candidates(name.unwrap_or(user.localpart()), "matrix");
        let nick = self.join(room, &jid, &nicks, Some(no_history())).await?;
        let mut rooms = lock(&self.rooms);
        let state = rooms.room(room);
        state.puppets.insert(user.to_owned(), nick.clone());
        state.joining.remove(&nick);
        Ok(nick)
    }

    /// The puppets known to have been in `room`, by occupant id (kept in the database,
    /// read once per room).
    async fn puppets_by_occupant_id(&self, room: &BareJid) -> HashMap<String, OwnedUserId> {
        if let Some(known) = lock(&self.puppet_ids).get(room) {
            return known.clone();
        }
        let known: HashMap<String, OwnedUserId> =
            match self.bridge().state(&puppet_ids_key(room)).await {
                Ok(value) => value
                    .and_then(|v| serde_json::from_str(&v).ok())
                    .unwrap_or_default(),
                Err(error) => {
                    tracing::warn!(%error, "cannot read a room's puppets");
                    return HashMap::new();
                }
            };
        lock(&self.puppet_ids).insert(room.clone(), known.clone());
        known
    }

    /// The Matrix user whose puppet has occupant id `id` in `room`, if one has.
    async fn puppet_with_occupant_id(&self, room: &BareJid, id: &str) -> Option<OwnedUserId> {
        self.puppets_by_occupant_id(room).await.get(id).cloned()
    }

    /// Remembers that `user`'s puppet has occupant id `id` in `room`.
    async fn remember_puppet(&self, room: &BareJid, id: &str, user: &UserId) {
        let mut known = self.puppets_by_occupant_id(room).await;
        if known.get(id).map(|u| u.as_str()) == Some(user.as_str()) {
            return;
        }
        known.insert(id.to_owned(), user.to_owned());
        lock(&self.puppet_ids).insert(room.clone(), known.clone());
        let value = serde_json::to_string(&known).unwrap_or_default();
        if let Err(error) = self.bridge().set_state(&puppet_ids_key(room), &value).await {
            tracing::warn!(%error, "cannot save a room's puppets");
        }
    }

    /// Changes the nick of `user`'s puppet in `room` to follow their new `name`.
    async fn rename_puppet(
        &self,
        room: &BareJid,
        user: &UserId,
        name: &str,
    ) -> Result<String, ConnectorError> {
        let jid = self.puppet_jid(user)?;
        let nicks = nick_candidates(name, "matrix");
        let nick = self.join(room, &jid, &nicks, None).await?;
        let mut rooms = lock(&self.rooms);
        let state = rooms.room(room);
        state.puppets.insert(user.to_owned(), nick.clone());
        state.joining.remove(&nick);
        Ok(nick)
    }

    /// Takes the bot and every puppet out of `room` and forgets it, and what was last
    /// seen there: its portal is unlinked, and a later link starts afresh.
    pub async fn leave_room(&self, room: &BareJid) -> Result<(), ConnectorError> {
        let Some(state) = lock(&self.rooms).rooms.remove(room) else {
            return Ok(());
        };
        lock(&self.last_seen).remove(room);
        if let Err(error) = self.bridge().set_state(&last_seen_key(room), "").await {
            tracing::warn!(%error, "cannot forget when an unlinked room was last seen");
        }
        let bot = (self.bot_jid(), state.bot_nick);
        let puppets = state.puppets.into_iter().filter_map(|(user, nick)| {
            let jid = self.puppet_jid(&user).ok()?;
            Some((jid, Some(nick)))
        });
        for (jid, nick) in puppets.chain([bot]) {
            let Some(occupant) = nick.and_then(|nick| room.with_resource_str(&nick).ok()) else {
                continue;
            };
            let mut presence = Presence::unavailable().with_to(occupant);
            presence.from = Some(Jid::from(jid));
            // The room is forgotten whatever happens: after a reconnect only portals are
            // joined again.
            if let Err(error) = self.component.send(presence).await {
                tracing::warn!(%room, %error, "cannot leave an unlinked room");
            }
        }
        Ok(())
    }

    /// Takes `user`'s puppet out of `room`.
    pub async fn puppet_leave(&self, room: &BareJid, user: &UserId) -> Result<(), ConnectorError> {
        let nick = {
            let mut rooms = lock(&self.rooms);
            let state = rooms.room(room);
            let Some(nick) = state.puppets.remove(user) else {
                return Ok(());
            };
            // The room tells the bot of the leave too: that is not an XMPP user leaving.
            state.left(&nick);
            nick
        };
        let Ok(occupant) = room.with_resource_str(&nick) else {
            return Ok(());
        };
        let mut presence = Presence::unavailable().with_to(occupant);
        presence.from = Some(Jid::from(self.puppet_jid(user)?));
        self.component.send(presence).await.map_err(retry)
    }

    /// The full JID of `user`'s puppet.
    pub fn puppet_jid(&self, user: &UserId) -> Result<FullJid, ConnectorError> {
        puppet_full_jid(user, &self.config.component_domain)
            .ok_or_else(|| ConnectorError::Refused(format!("{user} makes no valid XMPP address")))
    }

    /// Sends a message to `to` as `user`'s puppet (which joins a group chat first), with
    /// `id` as the message and origin id, and `body` if it has one.
    pub async fn say(
        &self,
        to: &To,
        user: &UserId,
        name: Option<&str>,
        id: &str,
        body: Option<&str>,
        payloads: Vec<Element>,
    ) -> Result<(), ConnectorError> {
        let mut message = match to {
            To::Room(room) => {
                self.puppet_in(room, user, name).await?;
                Message::groupchat(Some(Jid::from(room.clone())))
            }
            To::Chat(jid) => Message::chat(Some(Jid::from(jid.clone()))),
        };
        message.from = Some(Jid::from(self.puppet_jid(user)?));
        message.id = Some(tokio_xmpp::parsers::message::Id(id.to_owned()));
        if let Some(body) = body {
            message.bodies.insert(Lang::default(), body.to_owned());
            // Clients tell when they have shown it, for Matrix read receipts.
            message.payloads.push(Markable.into());
        }
        message.payloads.push(OriginId { id: id.to_owned() }.into());
        message.payloads.extend(payloads);
        self.component.send(message).await.map_err(retry)
    }

    /// Says `body` in `room` as the bot, for a Matrix user without an XMPP identity.
    pub async fn relay(
        &self,
        room: &BareJid,
        id: &str,
        body: &str,
        payloads: Vec<Element>,
    ) -> Result<(), ConnectorError> {
        self.join_bot(room).await?;
        let mut message = Message::groupchat(Some(Jid::from(room.clone())));
        message.from = Some(Jid::from(self.bot_jid()));
        message.id = Some(tokio_xmpp::parsers::message::Id(id.to_owned()));
        message.bodies.insert(Lang::default(), body.to_owned());
        message.payloads.push(OriginId { id: id.to_owned() }.into());
        message.payloads.extend(payloads);
        self.component.send(message).await.map_err(retry)
    }

    /// Shows `user`'s Matrix presence on their puppet wherever it is: away while
    /// `unavailable`, extended away while `offline` (it stays in its rooms), with their
    /// status message. Only changes are sent.
    pub async fn set_puppet_presence(
        &self,
        user: &UserId,
        presence: &ruma::presence::PresenceState,
        status: Option<&str>,
    ) -> Result<(), ConnectorError> {
        use ruma::presence::PresenceState;
        let show = match presence {
            PresenceState::Unavailable => Some(Show::Away),
            PresenceState::Offline => Some(Show::Xa),
            _ => None,
        };
        let shown = (show, status.filter(|s| !s.is_empty()).map(str::to_owned));
        {
            let mut presences = lock(&self.presences);
            let before = presences.get(user).cloned().unwrap_or((None, None));
            if before == shown {
                return Ok(());
            }
            if shown == (None, None) {
                presences.remove(user);
            } else {
                presences.insert(user.to_owned(), shown);
            }
        }
        let jid = self.puppet_jid(user)?;
        let occupants: Vec<FullJid> = lock(&self.rooms)
            .rooms
            .iter()
            .filter_map(|(room, state)| room.with_resource_str(state.puppets.get(user)?).ok())
            .collect();
        for occupant in occupants {
            let presence = self
                .puppet_presence(&jid)
                .with_to(occupant)
                .with_payload(disco::puppet_caps());
            let mut presence = presence;
            presence.from = Some(Jid::from(jid.clone()));
            self.component.send(presence).await.map_err(retry)?;
        }
        Ok(())
    }

    /// An available presence with the Matrix presence of the puppet `who` (none for the
    /// bot).
    fn puppet_presence(&self, who: &FullJid) -> Presence {
        let mut presence = Presence::available();
        let Some(user) = user_of_puppet(&who.to_bare()) else {
            return presence;
        };
        if let Some((show, status)) = lock(&self.presences).get(&user).cloned() {
            presence.show = show;
            if let Some(status) = status {
                presence.statuses.insert(Lang::default(), status);
            }
        }
        presence
    }

    /// Asks `to` an IQ get with `payload`, as the bot; the answer's payload.
    async fn ask(&self, to: Jid, payload: Element) -> Result<Element, ConnectorError> {
        self.ask_as(self.bot_jid(), to, false, payload)
            .await?
            .ok_or_else(|| ConnectorError::Refused("an empty answer".to_owned()))
    }

    /// Sends `to` an IQ (a set, else a get) with `payload` from `from`, the bot or a
    /// puppet; the answer's payload, if it has one. An error answer is refused with what
    /// it says.
    async fn ask_as(
        &self,
        from: FullJid,
        to: Jid,
        set: bool,
        payload: Element,
    ) -> Result<Option<Element>, ConnectorError> {
        match self.ask_iq(from, to, set, payload).await? {
            Iq::Result { payload, .. } => Ok(payload),
            Iq::Error { error, .. } => Err(ConnectorError::Refused(describe(&error))),
            _ => Err(ConnectorError::Refused("not an answer".to_owned())),
        }
    }

    /// Sends `to` an IQ (a set, else a get) and waits for the answer, whatever it is.
    async fn ask_iq(
        &self,
        from: FullJid,
        to: Jid,
        set: bool,
        payload: Element,
    ) -> Result<Iq, ConnectorError> {
        let id = format!("trestle-{:016x}", rand::random::<u64>());
        let (waiter, answer) = oneshot::channel();
        lock(&self.pending_iqs).insert(id.clone(), (to.clone(), waiter));
        let (from, to, id_sent) = (Some(Jid::from(from)), Some(to), id.clone());
        let iq = if set {
            Iq::Set {
                from,
                to,
                id: id_sent,
                payload,
            }
        } else {
            Iq::Get {
                from,
                to,
                id: id_sent,
                payload,
            }
        };
        let sent = self.component.send(iq).await;
        let answer = match sent {
            Ok(()) => tokio::time::timeout(IQ_TIMEOUT, answer).await,
            Err(error) => {
                lock(&self.pending_iqs).remove(&id);
                return Err(retry(error));
            }
        };
        match answer {
            Ok(Ok(iq)) => Ok(iq),
            Ok(Err(_)) | Err(_) => {
                lock(&self.pending_iqs).remove(&id);
                Err(ConnectorError::Retry("no answer".to_owned()))
            }
        }
    }

    /// Every `self_ping_seconds`, checks that each room still has the bot (XEP-0410: it
    /// pings its own occupant address); one that does not is joined again, and sends what
    /// was said since the last message seen.
    async fn self_ping(self: Arc<Self>) {
        let every = Duration::from_secs(self.config.self_ping_seconds);
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = self.stop.cancelled() => return,
            }
            let joined: Vec<(BareJid, String)> = lock(&self.rooms)
                .rooms
                .iter()
                .filter_map(|(room, state)| Some((room.clone(), state.bot_nick.clone()?)))
                .collect();
            for (room, nick) in joined {
                if self.still_in(&room, &nick).await {
                    continue;
                }
                // Only a room that is still a portal, and still followed (it may have been
                // unlinked while the ping was out).
                let portal = self.bridge().portal(room.as_str()).await;
                let followed = match lock(&self.rooms).rooms.get_mut(&room) {
                    Some(state) if matches!(portal, Ok(Some(_))) => {
                        state.left_for_good();
                        true
                    }
                    _ => false,
                };
                if !followed {
                    continue;
                }
                tracing::warn!(%room, "the room no longer has the bot; joining again");
                if let Err(error) = self.join_bot(&room).await {
                    tracing::warn!(%room, %error, "the bot cannot join a portal's room again");
                }
            }
        }
    }

    /// Whether `room` still has the bot as `nick`, as XEP-0410 reads the answer: a result,
    /// or `service-unavailable`, `feature-not-implemented` (the ping reached an occupant
    /// that does not answer pings) or `item-not-found` (the nick changed) say yes; any
    /// other error says no; silence says nothing (the connection's keepalive looks after
    /// that).
    async fn still_in(&self, room: &BareJid, nick: &str) -> bool {
        let Ok(occupant) = room.with_resource_str(nick) else {
            return true;
        };
        let ping = tokio_xmpp::parsers::ping::Ping.into();
        match self
            .ask_iq(self.bot_jid(), Jid::from(occupant), false, ping)
            .await
        {
            Ok(Iq::Error { error, .. }) => matches!(
                error.defined_condition,
                DefinedCondition::ServiceUnavailable
                    | DefinedCondition::FeatureNotImplemented
                    | DefinedCondition::ItemNotFound
            ),
            _ => true,
        }
    }

    /// Whether `user`'s puppet is an owner or admin of `room`: it is on the room's list of
    /// either (which the room shows to owners and admins, and an admin not the owners').
    pub async fn administers(&self, room: &BareJid, user: &UserId) -> Result<bool, ConnectorError> {
        const NS_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
        let puppet = self.puppet_jid(user)?;
        let mine = puppet.to_bare();
        for affiliation in ["owner", "admin"] {
            let query = Element::builder("query", NS_ADMIN)
                .append(
                    Element::builder("item", NS_ADMIN)
                        .attr(rxml::xml_ncname!("affiliation").to_owned(), affiliation)
                        .build(),
                )
                .build();
            let answer = self
                .ask_iq(puppet.clone(), Jid::from(room.clone()), false, query)
                .await?;
            let Iq::Result {
                payload: Some(list),
                ..
            } = answer
            else {
                // Refused: the puppet may not see this list.
                continue;
            };
            let listed = list
                .children()
                .filter(|item| item.is("item", NS_ADMIN))
                .any(|item| {
                    item.attr("jid")
                        .and_then(|jid| BareJid::new(jid).ok())
                        .is_some_and(|jid| jid == mine)
                });
            if listed {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The features `room` says it has (XEP-0030), asked once per connection.
    async fn room_features(&self, room: &BareJid) -> Result<BTreeSet<String>, ConnectorError> {
        if let Some(features) = lock(&self.room_features).get(room) {
            return Ok(features.clone());
        }
        let answer = self
            .ask(
                Jid::from(room.clone()),
                tokio_xmpp::parsers::disco::DiscoInfoQuery { node: None }.into(),
            )
            .await?;
        let info = tokio_xmpp::parsers::disco::DiscoInfoResult::try_from(answer).map_err(|_| {
            ConnectorError::Refused("the room's features are unreadable".to_owned())
        })?;
        lock(&self.room_features).insert(room.clone(), info.features.clone());
        Ok(info.features)
    }

    /// Asks `room`, as `user`'s puppet, to retract the message `message_id` for everyone
    /// (XEP-0425, in the version the room speaks). The room checks that the puppet is a
    /// moderator; its refusal is returned.
    pub async fn moderate(
        &self,
        room: &BareJid,
        user: &UserId,
        message_id: &str,
        reason: Option<&str>,
    ) -> Result<(), ConnectorError> {
        self.puppet_in(room, user, None).await?;
        let id = self.room_stanza_id(room, message_id);
        let reason = reason.map(str::to_owned);
        let features = self.room_features(room).await?;
        let request: Element = if features.contains(NS_MODERATE) {
            Moderate {
                id,
                retract: RetractAsked,
                reason,
            }
            .into()
        } else if features.contains(NS_MODERATE_0) {
            ApplyToModerate {
                id,
                moderate: Moderate0 {
                    retract: RetractAsked0,
                    reason,
                },
            }
            .into()
        } else {
            return Err(ConnectorError::Refused(format!(
                "{room} has no message moderation (XEP-0425), so only authors can take back messages"
            )));
        };
        let puppet = self.puppet_jid(user)?;
        self.ask_as(puppet, Jid::from(room.clone()), true, request)
            .await
            .map(drop)
    }

    /// A moderator retracted the message the room knows as `stanza` (XEP-0425): it is
    /// redacted on Matrix, unless the moderator is one of ours (a Matrix redaction).
    async fn moderated(&self, room: &BareJid, stanza: &str, by: Option<&str>) {
        let nick = by
            .and_then(|by| FullJid::new(by).ok())
            .map(|by| by.resource().to_string())
            .unwrap_or_else(|| "moderator".to_owned());
        let ghost = {
            let mut rooms = lock(&self.rooms);
            let state = rooms.room(room);
            if state.is_ours(&nick) {
                return;
            }
            state
                .occupants
                .get(&nick)
                .map(|o| o.ghost.clone())
                .unwrap_or_else(|| GhostId::Nick {
                    room: room.clone(),
                    nick: nick.clone(),
                })
        };
        let target = lock(&self.stanza_ids).message_id(room, stanza);
        let kind = RemoteEventKind::Delete { target };
        self.queue(
            room.as_str(),
            presence_event(ghost_info(&ghost, &nick), kind),
        )
        .await;
    }

    /// The picture whose hash is `hash`, within `limit` bytes: the photo of the vCard of
    /// an occupant last seen with it.
    pub async fn avatar(
        &self,
        hash: &str,
        limit: u64,
    ) -> Result<(Vec<u8>, String), ConnectorError> {
        let holder = lock(&self.avatar_holders).get(hash).cloned();
        let holder = holder.ok_or_else(|| {
            ConnectorError::Refused("nobody in a bridged room shows this avatar now".to_owned())
        })?;
        self.vcard_photo(&holder, limit).await
    }

    /// The photo of the vCard (XEP-0054) of whoever is `occupant` (the room passes the
    /// question on to their account), within `limit` bytes: its bytes and type.
    pub async fn vcard_photo(
        &self,
        occupant: &FullJid,
        limit: u64,
    ) -> Result<(Vec<u8>, String), ConnectorError> {
        let answer = self
            .ask(Jid::from(occupant.clone()), VCardQuery.into())
            .await?;
        let vcard = VCard::try_from(answer)
            .map_err(|_| ConnectorError::Refused("the answer is no vCard".to_owned()))?;
        let photo = vcard
            .photo
            .ok_or_else(|| ConnectorError::Refused("the vCard has no photo".to_owned()))?;
        if u64::try_from(photo.binval.data.len()).unwrap_or(u64::MAX) > limit {
            return Err(ConnectorError::Refused("the photo is too large".to_owned()));
        }
        let kind = photo.type_.data.trim().to_ascii_lowercase();
        let kind = if kind.starts_with("image/") && !kind.contains(['\r', '\n']) {
            kind
        } else {
            "application/octet-stream".to_owned()
        };
        Ok((photo.binval.data, kind))
    }

    /// Sets `room`'s subject to `subject` as `user`'s puppet (which joins first). The room
    /// may allow only moderators to; its refusal comes back as an error, reported.
    pub async fn set_subject(
        &self,
        room: &BareJid,
        user: &UserId,
        subject: &str,
    ) -> Result<(), ConnectorError> {
        self.puppet_in(room, user, None).await?;
        let mut message = Message::groupchat(Some(Jid::from(room.clone())));
        message.from = Some(Jid::from(self.puppet_jid(user)?));
        message.subjects.insert(Lang::default(), subject.to_owned());
        self.component.send(message).await.map_err(retry)
    }

    /// Tells `to` that `user` has read up to the message `message_id` (a displayed marker,
    /// XEP-0333), if their puppet is there: a reader does not join a room to say so.
    pub async fn displayed(
        &self,
        to: &To,
        user: &UserId,
        message_id: &str,
    ) -> Result<(), ConnectorError> {
        let (mut message, id) = match to {
            To::Room(room) => {
                if !lock(&self.rooms).room(room).puppets.contains_key(user) {
                    return Ok(());
                }
                // In a group chat, markers name the room's stanza id.
                let id = self.room_stanza_id(room, message_id);
                (Message::groupchat(Some(Jid::from(room.clone()))), id)
            }
            To::Chat(jid) => (
                Message::chat(Some(Jid::from(jid.clone()))),
                message_id.to_owned(),
            ),
        };
        message.from = Some(Jid::from(self.puppet_jid(user)?));
        message.payloads.push(
            Displayed {
                id: tokio_xmpp::parsers::message::Id(id),
            }
            .into(),
        );
        self.component.send(message).await.map_err(retry)
    }

    /// Tells `to` that `user` is typing or stopped (XEP-0085), if their puppet is there.
    pub async fn typing(&self, to: &To, user: &UserId, typing: bool) -> Result<(), ConnectorError> {
        let mut message = match to {
            To::Room(room) => {
                if !lock(&self.rooms).room(room).puppets.contains_key(user) {
                    return Ok(());
                }
                Message::groupchat(Some(Jid::from(room.clone())))
            }
            To::Chat(jid) => Message::chat(Some(Jid::from(jid.clone()))),
        };
        message.from = Some(Jid::from(self.puppet_jid(user)?));
        let state = if typing { "composing" } else { "active" };
        message
            .payloads
            .push(Element::builder(state, ns::CHATSTATES).build());
        self.component.send(message).await.map_err(retry)
    }

    /// The portal of the direct chat between `user` and the XMPP user `jid`.
    pub fn direct_chat(&self, user: &UserId, jid: &BareJid) -> PortalInfo {
        PortalInfo {
            remote_id: direct_id(user, jid),
            direct: Some(DirectChat {
                user: user.to_owned(),
                ghost: GhostInfo {
                    id: GhostId::Jid(jid.clone()).to_string(),
                    name: Some(jid.to_string()),
                    avatar: None,
                },
            }),
            ..PortalInfo::default()
        }
    }

    // ----- what the server sends -----------------------------------------------------

    async fn on_stanza(&self, stanza: Stanza) {
        tracing::trace!(?stanza, "stanza from the server");
        match stanza {
            Stanza::Presence(presence) => self.on_presence(presence).await,
            Stanza::Message(message) => self.on_message(message).await,
            Stanza::Iq(iq) => self.on_iq(iq).await,
        }
    }

    /// Whether the bot is in `room`, or joining it.
    fn is_listening_in(&self, room: &BareJid) -> bool {
        let rooms = lock(&self.rooms);
        rooms.rooms.get(room).is_some_and(|r| r.bot_nick.is_some())
            || rooms.joins.keys().any(|(_, joining)| joining == room)
    }

    /// Whether `jid` is the bot.
    fn is_bot(&self, jid: Option<&Jid>) -> bool {
        jid.is_some_and(|jid| jid.as_str() == self.bot_jid().as_str())
    }

    async fn on_presence(&self, presence: Presence) {
        let (Some(from), Some(to)) = (presence.from.clone(), presence.to.clone()) else {
            return;
        };
        let Ok(occupant) = from.clone().try_into_full() else {
            return;
        };
        let room = occupant.to_bare();
        let nick = occupant.resource().to_string();
        let Ok(to) = to.try_into_full() else {
            return;
        };
        let muc_user = parse_payload::<MucUser>(&presence.payloads, "x", ns::MUC_USER);
        let statuses = muc_user
            .as_ref()
            .map(|x| x.status.clone())
            .unwrap_or_default();

        if presence.type_ == PresenceType::Error {
            let refusal =
                match parse_payload::<StanzaError>(&presence.payloads, "error", ns::DEFAULT_NS) {
                    Some(error) if error.defined_condition == DefinedCondition::Conflict => {
                        JoinRefusal::Conflict
                    }
                    Some(error) => JoinRefusal::Other(describe(&error)),
                    None => JoinRefusal::Other("refused".to_owned()),
                };
            if let Some(waiter) = lock(&self.rooms).joins.remove(&(to.clone(), room.clone())) {
                let _ = waiter.send(Err(refusal));
            }
            return;
        }

        // Only rooms the bot is in, or joining, speak to the bridge: anyone else's
        // presence is ignored, so no one can make ghosts or rename them from outside.
        if !self.is_listening_in(&room) {
            return;
        }
        if statuses.contains(&Status::SelfPresence) {
            self.on_self_presence(&room, &to, &nick, &presence, &statuses)
                .await;
            return;
        }
        // Every occupant of ours gets a copy: only the bot's is bridged.
        if to != self.bot_jid() {
            return;
        }
        let item = muc_user.as_ref().and_then(|x| x.items.first());
        let level = item.map(|i| level_of(&i.affiliation, &i.role)).unwrap_or(0);
        let ghost = if let Some(id) = occupant_id(&presence.payloads) {
            GhostId::Occupant {
                room: room.clone(),
                id,
            }
        } else if let Some(jid) = item.and_then(|i| i.jid.as_ref()) {
            GhostId::Jid(jid.to_bare())
        } else {
            GhostId::Nick {
                room: room.clone(),
                nick: nick.clone(),
            }
        };
        tracing::trace!(%room, %nick, %ghost, level, parsed = muc_user.is_some(), "occupant presence");
        // A puppet of ours from before a restart is still in the room (the server keeps
        // a component's occupants): it is taken up again, never shown as an XMPP user.
        if let GhostId::Occupant { id, .. } = &ghost
            && let Some(user) = self.puppet_with_occupant_id(&room, id).await
        {
            let mut rooms = lock(&self.rooms);
            let state = rooms.room(&room);
            if presence.type_ == PresenceType::Unavailable {
                if state.puppets.get(&user) == Some(&nick) {
                    state.puppets.remove(&user);
                }
            } else {
                state.puppets.insert(user, nick.clone());
            }
            return;
        }
        let bot_in = {
            let mut rooms = lock(&self.rooms);
            let state = rooms.room(&room);
            if state.is_ours(&nick) {
                return;
            }
            state.bot_nick.is_some()
        };
        if presence.type_ == PresenceType::Unavailable {
            let known = lock(&self.rooms).room(&room).occupants.remove(&nick);
            let ghost = known.map(|o| o.ghost).unwrap_or(ghost);
            if statuses.contains(&Status::NewNick) {
                // The new nick's presence follows; a ghost known by nick only is another
                // ghost under the new nick.
                if !matches!(ghost, GhostId::Nick { .. }) {
                    return;
                }
            }
            self.presence(&ghost_info(&ghost, &nick), "offline", None)
                .await;
            let reason = if statuses.contains(&Status::Kicked) {
                Some(with_reason(
                    "kicked",
                    item.and_then(|i| i.reason.as_ref()).map(|r| r.0.as_str()),
                ))
            } else if statuses.contains(&Status::Banned) {
                Some(with_reason(
                    "banned",
                    item.and_then(|i| i.reason.as_ref()).map(|r| r.0.as_str()),
                ))
            } else {
                presence.statuses.values().next().cloned()
            };
            self.queue(
                room.as_str(),
                presence_event(ghost_info(&ghost, &nick), RemoteEventKind::Leave { reason }),
            )
            .await;
            return;
        }
        let presence_now = (
            matrix_presence(presence.show.as_ref()).to_owned(),
            presence.statuses.values().next().cloned(),
        );
        let photo = parse_payload::<VCardUpdate>(&presence.payloads, "x", ns::VCARD_UPDATE)
            .and_then(|update| update.photo)
            .and_then(|photo| photo.data)
            .map(|hash| hash.iter().map(|b| format!("{b:02x}")).collect::<String>());
        let before = lock(&self.rooms).room(&room).occupants.insert(
            nick.clone(),
            Occupant {
                ghost: ghost.clone(),
                level,
                presence: presence_now.clone(),
                photo: photo.clone(),
            },
        );
        let sender = ghost_info(&ghost, &nick);
        let photo_changed = before.as_ref().and_then(|o| o.photo.as_ref()) != photo.as_ref();
        if let Some(hash) = photo.filter(|_| photo_changed) {
            if let Ok(occupant) = FullJid::try_from(from.clone()) {
                let mut holders = lock(&self.avatar_holders);
                if holders.len() >= MAX_AVATAR_HOLDERS {
                    holders.clear();
                }
                holders.insert(hash.clone(), occupant);
            }
            // Fetched in a task of its own: the answer comes through this dispatcher.
            let ghost = GhostInfo {
                avatar: Some(format!("{AVATAR_SOURCE}{hash}")),
                ..sender.clone()
            };
            let bridge = self.bridge().clone();
            tokio::spawn(async move {
                if let Err(error) = bridge.update_ghost(&ghost).await {
                    tracing::warn!(ghost = %ghost.id, %error, "cannot update a ghost's avatar");
                }
            });
        }
        if before.as_ref().map(|o| &o.presence) != Some(&presence_now) {
            self.presence(&sender, &presence_now.0, presence_now.1.as_deref())
                .await;
        }
        if !bot_in {
            // The occupant list sent before the bot's own presence: the portal's members.
            return;
        }
        if before.is_none() {
            self.queue(
                room.as_str(),
                presence_event(sender.clone(), RemoteEventKind::Join),
            )
            .await;
        }
        if before.map(|o| o.level).unwrap_or(0) != level {
            self.queue(
                room.as_str(),
                presence_event(
                    sender.clone(),
                    RemoteEventKind::PowerLevel {
                        target: sender,
                        level,
                    },
                ),
            )
            .await;
        }
    }

    /// A presence the room sends about one of our own occupants.
    async fn on_self_presence(
        &self,
        room: &BareJid,
        to: &FullJid,
        nick: &str,
        presence: &Presence,
        statuses: &[Status],
    ) {
        if presence.type_ != PresenceType::Unavailable {
            // Who is in is recorded here, before the room's history (which follows) is
            // handled; the joiner learns the nick from the waiter.
            let (waiter, puppet) = {
                let mut rooms = lock(&self.rooms);
                let waiter = rooms.joins.remove(&(to.clone(), room.clone()));
                let is_bot = *to == self.bot_jid();
                let state = rooms.room(room);
                state.joining.remove(nick);
                let mut puppet = None;
                if is_bot {
                    state.bot_nick = Some(nick.to_owned());
                } else if let Some(user) = user_of_puppet(&to.to_bare()) {
                    state.puppets.insert(user.clone(), nick.to_owned());
                    puppet = Some(user);
                }
                (waiter, puppet)
            };
            if let Some(user) = puppet
                && let Some(id) = occupant_id(&presence.payloads)
            {
                self.remember_puppet(room, &id, &user).await;
            }
            if let Some(waiter) = waiter {
                let _ = waiter.send(Ok(nick.to_owned()));
            }
            return;
        }
        if statuses.contains(&Status::NewNick) {
            return;
        }
        // Out of the room: kicked, banned, or the room went away.
        let user = {
            let mut rooms = lock(&self.rooms);
            let state = rooms.room(room);
            if *to == self.bot_jid() {
                state.bot_nick = None;
                None
            } else {
                state.puppet_with_nick(nick).cloned().inspect(|user| {
                    state.puppets.remove(user);
                })
            }
        };
        if let Some(user) = user
            && (statuses.contains(&Status::Kicked) || statuses.contains(&Status::Banned))
        {
            self.report(room, &user, &format!("{room} removed you ({nick})"))
                .await;
        }
    }

    async fn on_message(&self, message: Message) {
        let (Some(from), Some(to)) = (message.from.clone(), message.to.clone()) else {
            return;
        };
        match message.type_ {
            MessageType::Groupchat if self.is_bot(Some(&to)) => {
                self.on_groupchat(&from, message).await;
            }
            MessageType::Chat | MessageType::Normal => self.on_direct(&from, &to, message).await,
            MessageType::Error => {
                let Some(user) = user_of_puppet(&to.to_bare()) else {
                    return;
                };
                let error =
                    parse_payload::<StanzaError>(&message.payloads, "error", ns::DEFAULT_NS);
                let room = from.to_bare();
                if error
                    .as_ref()
                    .is_some_and(|e| e.defined_condition == DefinedCondition::NotAcceptable)
                {
                    // The room no longer has the puppet: it joins again on the next message.
                    if let Some(state) = lock(&self.rooms).rooms.get_mut(&room) {
                        state.puppets.remove(&user);
                    }
                }
                let reason = error
                    .as_ref()
                    .map(describe)
                    .unwrap_or_else(|| "refused".to_owned());
                self.report(
                    &room,
                    &user,
                    &format!("{room} did not take your message: {reason}"),
                )
                .await;
            }
            _ => {}
        }
    }

    /// A message from an XMPP user to a puppet: the direct chat between them, made if
    /// new. Only users the bridge serves (permission `user`) take direct chats.
    async fn on_direct(&self, from: &Jid, to: &Jid, message: Message) {
        let jid = from.to_bare();
        let Some(user) = user_of_puppet(&to.to_bare()) else {
            return;
        };
        // Private messages through a group chat (from an occupant) are not direct chats.
        if jid.node().is_none() || lock(&self.rooms).rooms.contains_key(&jid) {
            return;
        }
        let nothing_to_bridge = message.bodies.is_empty()
            && !message.payloads.iter().any(|p| {
                p.is("reactions", ns::REACTIONS)
                    || p.is("retract", NS_RETRACT)
                    || p.ns() == ns::CHATSTATES
            });
        if nothing_to_bridge {
            return;
        }
        if self.bridge().permission(&user) < Permission::User {
            tracing::debug!(%user, from = %jid, "a direct message to a user the bridge does not serve");
            return;
        }
        let info = self.direct_chat(&user, &jid);
        if let Err(error) = self.bridge().create_portal(&info).await {
            tracing::warn!(%user, from = %jid, %error, "cannot open a direct chat; the message is lost");
            return;
        }
        let timestamp = parse_payload::<Delay>(&message.payloads, "delay", ns::DELAY)
            .map(|d| d.stamp.0.timestamp_millis());
        let id = message.id.as_ref().map(|id| id.0.clone());
        let sender = ghost_info(&GhostId::Jid(jid.clone()), jid.as_str());
        self.chat_state(&info.remote_id, &sender, &message).await;
        self.bridge_content(&info.remote_id, &jid, id, sender, timestamp, &message)
            .await;
    }

    async fn on_groupchat(&self, from: &Jid, message: Message) {
        let room = from.to_bare();
        if !self.is_listening_in(&room) {
            return;
        }
        let nick = from.resource().map(|r| r.to_string());
        let timestamp = parse_payload::<Delay>(&message.payloads, "delay", ns::DELAY)
            .map(|d| d.stamp.0.timestamp_millis());
        // The sender's id, else the one the room gave (XEP-0359): a message seen again
        // in history is recognised by it.
        let at = |id, sender, kind| RemoteEvent {
            id,
            sender,
            timestamp,
            kind,
        };
        let room_id = stanza_id(&message.payloads, &room);
        let id = message
            .id
            .as_ref()
            .map(|id| id.0.clone())
            .or(room_id.clone());
        if let (Some(id), Some(room_id)) = (&id, &room_id) {
            lock(&self.stanza_ids).insert(&room, room_id, id);
        }
        // What puppets and the bot sent carries its Matrix event id as origin id: seen
        // again in history after a restart (before the puppets are back), it is not
        // taken for an XMPP user's.
        let from_matrix = message
            .payloads
            .iter()
            .filter_map(|p| OriginId::try_from(p.clone()).ok())
            .any(|origin| origin.id.starts_with('$'));
        if from_matrix {
            return;
        }
        // A moderator's retraction, which the room announces as itself (XEP-0425).
        if nick.is_none()
            && let Some((stanza, by, _reason)) = moderation_of(&message.payloads)
        {
            self.moderated(&room, &stanza, by.as_deref()).await;
            return;
        }
        let (ghost, subject_changed) = {
            let mut rooms = lock(&self.rooms);
            let state = rooms.room(&room);
            // A subject without a body sets it; the room sends it last to whoever joins,
            // so the first one after the bot's join is the room's, not a change.
            let mut changed = false;
            if let Some((_, subject)) = message.get_best_subject(vec![])
                && message.bodies.is_empty()
            {
                let first = !state.subject_seen;
                state.subject_seen = true;
                changed = !first && state.subject.as_ref() != Some(subject);
                state.subject = Some(subject.clone());
                if !changed {
                    return;
                }
            }
            let Some(nick) = nick.as_deref().filter(|nick| !state.is_ours(nick)) else {
                // From the room itself, or a puppet's message reflected: it came from
                // Matrix.
                return;
            };
            (state.occupants.get(nick).map(|o| o.ghost.clone()), changed)
        };
        let nick = nick.unwrap_or_default();
        let ghost = ghost
            .or_else(|| {
                occupant_id(&message.payloads).map(|id| GhostId::Occupant {
                    room: room.clone(),
                    id,
                })
            })
            .unwrap_or_else(|| GhostId::Nick {
                room: room.clone(),
                nick: nick.clone(),
            });
        let sender = ghost_info(&ghost, &nick);
        if subject_changed {
            let topic = message
                .get_best_subject(vec![])
                .map(|(_, subject)| subject.clone())
                .unwrap_or_default();
            self.queue(
                room.as_str(),
                at(id, sender, RemoteEventKind::Topic { topic }),
            )
            .await;
            return;
        }
        // Typing (XEP-0085) is carried apart; a message ends it.
        self.chat_state(room.as_str(), &sender, &message).await;
        self.bridge_content(room.as_str(), &room, id, sender, timestamp, &message)
            .await;
        self.seen(&room, timestamp.unwrap_or_else(now_ms)).await;
    }

    /// Sets `ghost`'s Matrix presence. A ghost known in several rooms has one presence:
    /// the last said anywhere.
    async fn presence(&self, ghost: &GhostInfo, presence: &str, status: Option<&str>) {
        if let Err(error) = self.bridge().set_presence(ghost, presence, status).await {
            tracing::debug!(%error, "cannot set a ghost's presence");
        }
    }

    /// Shows `sender` typing in `portal` while a chat state (XEP-0085) says they
    /// compose, and not once another says they stopped; only changes reach Matrix.
    async fn chat_state(&self, portal: &str, sender: &GhostInfo, message: &Message) {
        let Some(state) = message
            .payloads
            .iter()
            .find(|p| p.ns() == ns::CHATSTATES)
            .map(|p| p.name().to_owned())
        else {
            return;
        };
        let composing = state == "composing";
        let changed = {
            let mut typing = lock(&self.typing);
            let key = (portal.to_owned(), sender.id.clone());
            if composing {
                typing.insert(key)
            } else {
                typing.remove(&key)
            }
        };
        // A message ends typing on Matrix by itself.
        if changed
            && (composing || message.bodies.is_empty())
            && let Err(error) = self.bridge().set_typing(portal, sender, composing).await
        {
            tracing::debug!(%error, "cannot show typing");
        }
    }

    /// Bridges what a message from `sender` carries to `portal`: a retraction, a set of
    /// reactions, a correction, or a message (with its reply and file). `scope` is where
    /// the ids it names live: the room, or in a direct chat the other user.
    async fn bridge_content(
        &self,
        portal: &str,
        scope: &BareJid,
        id: Option<String>,
        sender: GhostInfo,
        timestamp: Option<i64>,
        message: &Message,
    ) {
        let at = |id, sender, kind| RemoteEvent {
            id,
            sender,
            timestamp,
            kind,
        };
        let payload = |name: &str, namespace: &str| {
            message
                .payloads
                .iter()
                .find(|p| p.is(name, namespace))
                .cloned()
        };
        if let Some(displayed) =
            payload("displayed", ns::DISPLAYED_MARKERS).and_then(|e| Displayed::try_from(e).ok())
        {
            let target = lock(&self.stanza_ids).message_id(scope, &displayed.id.0);
            self.queue(
                portal,
                presence_event(sender, RemoteEventKind::Read { target }),
            )
            .await;
            return;
        }
        if let Some(retract) =
            payload("retract", NS_RETRACT).and_then(|e| Retract::try_from(e).ok())
        {
            let target = lock(&self.stanza_ids).message_id(scope, &retract.id);
            if self.sent_by(portal, &target, &sender.id).await == Some(true) {
                let kind = RemoteEventKind::Delete { target };
                self.queue(portal, at(id, sender, kind)).await;
            }
            return;
        }
        if let Some(reactions) =
            payload("reactions", ns::REACTIONS).and_then(|e| Reactions::try_from(e).ok())
        {
            let target = lock(&self.stanza_ids).message_id(scope, &reactions.id);
            let keys = reactions
                .reactions
                .into_iter()
                .map(|r| r.emoji)
                .take(MAX_REACTIONS)
                .collect();
            let (added, removed) = self.set_reactions(scope, &sender.id, &target, keys);
            for key in added {
                let id = Some(reaction_id(&sender.id, &target, &key));
                let kind = RemoteEventKind::Reaction {
                    target: target.clone(),
                    key,
                };
                let sender = sender.clone();
                self.queue(portal, at(id, sender, kind)).await;
            }
            for key in removed {
                let kind = RemoteEventKind::Delete {
                    target: reaction_id(&sender.id, &target, &key),
                };
                self.queue(portal, presence_event(sender.clone(), kind))
                    .await;
            }
            return;
        }
        let Some((_, body)) = message.get_best_body(vec![]) else {
            return;
        };
        let mut body = body.clone();
        let mut reply_to = None;
        if let Some(reply) = payload("reply", NS_REPLY).and_then(|e| Reply::try_from(e).ok()) {
            reply_to = Some(lock(&self.stanza_ids).message_id(scope, &reply.id));
            // The quote clients without replies show is not part of the answer.
            if let Some(fallback) = message
                .payloads
                .iter()
                .filter_map(|p| Fallback::try_from(p.clone()).ok())
                .find(|f| f.for_ == NS_REPLY)
            {
                body = strip_fallback(&body, &fallback);
            }
        }
        // Formatting: the XHTML-IM (XEP-0071) if the client sent one, else the body's
        // styling (XEP-0393). An emote's or reply's XHTML would repeat the `/me ` or the
        // quote the body has lost.
        let xhtml = payload("html", ns::XHTML_IM)
            .filter(|_| reply_to.is_none() && !body.starts_with("/me "))
            .and_then(|html| crate::xhtml::to_matrix_html(&html));
        let remote = match body.strip_prefix("/me ") {
            Some(action) => RemoteMessage {
                kind: MessageKind::Emote,
                html: styling_to_html(action),
                ..RemoteMessage::text(action)
            },
            None => RemoteMessage {
                html: xhtml.or_else(|| styling_to_html(&body)),
                ..RemoteMessage::text(body.clone())
            },
        };
        // A link given out of band (XEP-0066) as the whole body is a file (an upload,
        // XEP-0363): the framework fetches it and uploads it to Matrix.
        let file = payload("x", ns::OOB)
            .and_then(|e| Oob::try_from(e).ok())
            .filter(|oob| oob.url == body.trim() && oob.url.starts_with("http"))
            .map(|oob| RemoteFile {
                name: file_name(&oob.url),
                url: oob.url,
            });
        let remote = match file {
            Some(file) => RemoteMessage {
                kind: MessageKind::File,
                body: file.name.clone(),
                html: None,
                reply_to,
                file: Some(file),
            },
            None => RemoteMessage { reply_to, ..remote },
        };
        // A correction (XEP-0308) of a message bridged from its sender is an edit; of one
        // never seen, a message; of someone else's, nothing.
        let correction = payload("replace", ns::MESSAGE_CORRECT)
            .and_then(|e| Replace::try_from(e).ok())
            .map(|replace| replace.id.0);
        let kind = match correction {
            Some(target) => match self.sent_by(portal, &target, &sender.id).await {
                Some(true) => RemoteEventKind::Edit {
                    target,
                    message: remote,
                },
                Some(false) => return,
                None => RemoteEventKind::Message(remote),
            },
            None => RemoteEventKind::Message(remote),
        };
        self.queue(portal, at(id, sender, kind)).await;
    }

    /// Whether the message `target` in `portal` was bridged from `sender` (`None`: it
    /// was not bridged).
    async fn sent_by(&self, portal: &str, target: &str, sender: &str) -> Option<bool> {
        match self.bridge().event_of_remote(portal, target).await {
            Ok(found) => found.map(|found| found.sender == sender),
            Err(error) => {
                tracing::warn!(%error, "cannot look up a bridged message");
                None
            }
        }
    }

    /// Sets `sender`'s reactions to `target` in `room` to `keys` (XMPP sends the whole
    /// set each time); returns the keys added and removed.
    pub fn set_reactions(
        &self,
        room: &BareJid,
        sender: &str,
        target: &str,
        keys: BTreeSet<String>,
    ) -> (Vec<String>, Vec<String>) {
        let mut all = lock(&self.reactions);
        let key = (room.clone(), sender.to_owned(), target.to_owned());
        let before = all.remove(&key).unwrap_or_default();
        let added = keys.difference(&before).cloned().collect();
        let removed = before.difference(&keys).cloned().collect();
        if !keys.is_empty() {
            if all.len() >= MAX_REACTION_SETS {
                // Bounded: the oldest knowledge is not kept (a later removal of those
                // reactions is then not seen).
                if let Some(old) = all.keys().next().cloned() {
                    all.remove(&old);
                }
            }
            all.insert(key, keys);
        }
        (added, removed)
    }

    /// `sender`'s reactions to `target` in `room` now.
    pub fn reactions_of(&self, room: &BareJid, sender: &str, target: &str) -> BTreeSet<String> {
        lock(&self.reactions)
            .get(&(room.clone(), sender.to_owned(), target.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// The id a group chat knows message `message_id` by (for retractions, replies and
    /// reactions).
    pub fn room_stanza_id(&self, room: &BareJid, message_id: &str) -> String {
        lock(&self.stanza_ids).stanza_id(room, message_id)
    }

    /// The nick in `room` of whoever sent a bridged message: a ghost's or a puppet's.
    pub fn nick_of_sender(&self, room: &BareJid, sender: &str) -> Option<String> {
        let mut rooms = lock(&self.rooms);
        let state = rooms.room(room);
        if let Ok(user) = UserId::parse(sender) {
            return state.puppets.get(&user).cloned();
        }
        state
            .occupants
            .iter()
            .find_map(|(nick, o)| (o.ghost.to_string() == sender).then(|| nick.clone()))
    }

    async fn on_iq(&self, iq: Iq) {
        let (from, to, id, answer) = match iq {
            Iq::Get {
                from,
                to,
                id,
                payload,
            } => {
                let answer = self
                    .answer_get(to.as_ref(), &payload)
                    .ok_or_else(unavailable);
                (from, to, id, answer)
            }
            Iq::Set { from, to, id, .. } => (from, to, id, Err(unavailable())),
            // Answers: to the bot's questions (from whom they were asked); keepalive pings
            // and the rest have nobody waiting.
            Iq::Result {
                ref id, ref from, ..
            }
            | Iq::Error {
                ref id, ref from, ..
            } => {
                let mut pending = lock(&self.pending_iqs);
                if pending
                    .get(id)
                    .is_some_and(|(asked, _)| from.as_ref() == Some(asked))
                    && let Some((_, waiter)) = pending.remove(id)
                {
                    let _ = waiter.send(iq);
                }
                return;
            }
        };
        let reply = match answer {
            Ok(payload) => Iq::Result {
                from: to,
                to: from,
                id,
                payload,
            },
            Err(error) => Iq::Error {
                from: to,
                to: from,
                id,
                error,
                payload: None,
            },
        };
        if let Err(error) = self.component.send(reply).await {
            tracing::debug!(%error, "cannot answer an IQ");
        }
    }

    /// The answer to an IQ get sent to the component (`to` its domain) or one of its
    /// users: ping (XEP-0199), service discovery (XEP-0030) and version (XEP-0092);
    /// `None` for anything else.
    fn answer_get(&self, to: Option<&Jid>, payload: &Element) -> Option<Option<Element>> {
        if payload.is("ping", ns::PING) {
            return Some(None);
        }
        if payload.is("query", ns::DISCO_INFO) {
            let node = payload.attr("node").map(str::to_owned);
            if to.is_some_and(|to| to.as_str() == self.config.component_domain) {
                return node.is_none().then(|| Some(disco::component_info().into()));
            }
            // A user's capabilities node, or none at all.
            if node
                .as_deref()
                .is_some_and(|node| !disco::is_puppet_node(node))
            {
                return None;
            }
            return Some(Some(disco::puppet_info(node).into()));
        }
        if payload.is("query", ns::VERSION) {
            let version = VersionResult {
                name: "Trestle".to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                os: None,
            };
            return Some(Some(version.into()));
        }
        None
    }

    // ----- to Matrix ----------------------------------------------------------------

    /// Queues `event` on `portal`; a chat without a portal is skipped.
    async fn queue(&self, portal: &str, event: RemoteEvent) {
        self.bridge()
            .queue_retrying(portal, &event, &self.stop)
            .await;
    }

    /// Tells `user`, in `room`'s portal, what went wrong for them.
    async fn report(&self, room: &BareJid, user: &OwnedUserId, text: &str) {
        let bridge = self.bridge();
        match bridge.portal(room.as_str()).await {
            Ok(Some(portal)) => {
                if let Err(error) = bridge
                    .notice(&portal.room_id, &format!("{user}: {text}"))
                    .await
                {
                    tracing::warn!(%error, "cannot report to a Matrix user");
                }
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "cannot look up a portal"),
        }
    }
}

/// The remote id of `sender`'s reaction `key` to `target`: all three, reversibly.
pub fn reaction_id(sender: &str, target: &str, key: &str) -> String {
    serde_json::json!(["reaction", sender, target, key]).to_string()
}

/// The sender, target and key of a [`reaction_id`].
pub fn parse_reaction_id(id: &str) -> Option<(String, String, String)> {
    let (tag, sender, target, key): (String, String, String, String) =
        serde_json::from_str(id).ok()?;
    (tag == "reaction").then_some((sender, target, key))
}

/// An event of presence (no id, no time of its own) sent by `sender`.
fn presence_event(sender: GhostInfo, kind: RemoteEventKind) -> RemoteEvent {
    RemoteEvent {
        id: None,
        sender,
        timestamp: None,
        kind,
    }
}

/// A ghost as the framework takes it, named by its nick.
fn ghost_info(ghost: &GhostId, nick: &str) -> GhostInfo {
    GhostInfo {
        id: ghost.to_string(),
        name: Some(nick.to_owned()),
        avatar: None,
    }
}

/// The first of `payloads` named `name` in `namespace`, parsed as `T`, if it parses.
fn parse_payload<T: TryFrom<Element>>(
    payloads: &[Element],
    name: &str,
    namespace: &str,
) -> Option<T> {
    payloads
        .iter()
        .find(|p| p.is(name, namespace))
        .and_then(|p| T::try_from(p.clone()).ok())
}

/// The XEP-0421 occupant id among a stanza's payloads.
fn occupant_id(payloads: &[Element]) -> Option<String> {
    payloads
        .iter()
        .find(|p| p.is("occupant-id", ns::OID))
        .and_then(|p| OccupantId::try_from(p.clone()).ok())
        .map(|o| o.id)
}

/// The last part of a URL's path, the name of the file it links to.
fn file_name(url: &str) -> String {
    url.split(['?', '#'])
        .next()
        .and_then(|path| path.rsplit('/').find(|part| !part.is_empty()))
        .filter(|name| !name.contains(':'))
        .unwrap_or("file")
        .to_owned()
}

/// The id `room` gave a message (XEP-0359).
fn stanza_id(payloads: &[Element], room: &BareJid) -> Option<String> {
    payloads
        .iter()
        .filter(|p| p.is("stanza-id", ns::SID))
        .filter_map(|p| StanzaId::try_from(p.clone()).ok())
        .find(|s| s.by.as_str() == room.as_str())
        .map(|s| s.id)
}

/// `what`, with the reason given if any.
fn with_reason(what: &str, reason: Option<&str>) -> String {
    match reason {
        Some(reason) if !reason.is_empty() => format!("{what}: {reason}"),
        _ => what.to_owned(),
    }
}

/// An XMPP error for a person: its text, else its condition.
fn describe(error: &StanzaError) -> String {
    error
        .texts
        .values()
        .next()
        .cloned()
        .unwrap_or_else(|| format!("{:?}", error.defined_condition))
}

fn unavailable() -> StanzaError {
    StanzaError::new(
        ErrorType::Cancel,
        DefinedCondition::ServiceUnavailable,
        "en",
        "not supported by the bridge",
    )
}
