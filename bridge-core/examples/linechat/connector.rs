//! The linechat connector: the whole network-specific half of the example bridge.
//!
//! - One *listener* connection watches every portal's channel and queues what happens
//!   there on the portal, remembering per channel the last event it queued (its cursor).
//!   After a restart or a lost connection it watches again from the cursor: the server
//!   replays what was missed, and events queued before are recognised by their ids.
//! - Each Matrix user who talks gets a *puppet*: their own connection, as the user
//!   `<puppet_prefix><localpart>`. The Matrix event id is the message id, so a message
//!   handed over twice after a crash is recognised by the server, not posted twice.
//! - The listener ignores what puppets do: that came from Matrix.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bridge_core::bridge::{BridgeError, BridgeHandle, CommandContext, Permission};
use bridge_core::connector::{
    Capabilities, CommandSpec, Connector, ConnectorError, ConnectorInfo, GhostInfo, MatrixEdit,
    MatrixMembership, MatrixMessage, MatrixReaction, MatrixRedaction, MatrixRoomChange, Membership,
    MessageKind, Portal, PortalInfo, RemoteEvent, RemoteEventKind, RemoteMessage,
};
use ruma::{OwnedUserId, UserId};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::LinechatConfig;
use crate::conn::{Connection, OpError};

/// The network id: rows in the database and the third-party network.
const NETWORK: &str = "linechat";
/// `after` that replays nothing: a new portal starts from now.
const FROM_NOW: u64 = 1 << 53;

/// The connector: a handle on its state, which its tasks share.
#[derive(Debug)]
pub struct Linechat(Arc<State>);

impl Linechat {
    /// A connector for the server in `config`.
    pub fn new(config: LinechatConfig) -> Linechat {
        Linechat(Arc::new(State {
            config,
            bridge: OnceLock::new(),
            listener: tokio::sync::Mutex::new(None),
            cursors: Mutex::new(HashMap::new()),
            puppets: tokio::sync::Mutex::new(HashMap::new()),
            stop: CancellationToken::new(),
            listener_task: Mutex::new(None),
        }))
    }
}

impl std::ops::Deref for Linechat {
    type Target = State;

    fn deref(&self) -> &State {
        &self.0
    }
}

/// What the connector's tasks share.
#[derive(Debug)]
pub struct State {
    config: LinechatConfig,
    bridge: OnceLock<BridgeHandle>,
    listener: tokio::sync::Mutex<Option<Arc<Connection>>>,
    /// Channels watched, with the seq of the last event queued from each.
    cursors: Mutex<HashMap<String, u64>>,
    puppets: tokio::sync::Mutex<HashMap<OwnedUserId, Arc<Puppet>>>,
    stop: CancellationToken,
    listener_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A Matrix user's own connection.
#[derive(Debug)]
struct Puppet {
    connection: Connection,
    channels: Mutex<HashSet<String>>,
}

impl State {
    fn bridge(&self) -> &BridgeHandle {
        self.bridge
            .get()
            .expect("the connector is started before it is used")
    }

    /// Whether a linechat user is one of this bridge's (a puppet, or the listener).
    fn is_ours(&self, user: &str) -> bool {
        user.starts_with(&self.config.puppet_prefix) || user == self.config.listener_user
    }

    /// The linechat user name of a Matrix user's puppet: `<prefix><localpart>` when that
    /// is a valid linechat name, else the localpart cut to what fits and a hash of the
    /// whole user id, so that no two Matrix users share a puppet.
    fn puppet_name(&self, user: &UserId) -> String {
        let plain = format!("{}{}", self.config.puppet_prefix, user.localpart());
        let fits = plain.len() <= 32
            && user
                .localpart()
                .chars()
                .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '.'));
        if fits && user.server_name() == self.bridge().matrix().server_name() {
            return plain;
        }
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(user.as_str().as_bytes());
        let hash: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        let mut cut: String = user
            .localpart()
            .chars()
            .filter(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '.'))
            .collect();
        cut.truncate(32 - self.config.puppet_prefix.len() - hash.len() - 1);
        // The `-` marks a hashed name: plain names never contain one.
        format!("{}{cut}-{hash}", self.config.puppet_prefix)
    }

    /// The puppet of `user`, connected (again, if its connection was lost).
    async fn puppet(
        &self,
        user: &UserId,
        display_name: Option<&str>,
    ) -> Result<Arc<Puppet>, ConnectorError> {
        let mut puppets = self.puppets.lock().await;
        if let Some(puppet) = puppets.get(user)
            && puppet.connection.is_open()
        {
            return Ok(Arc::clone(puppet));
        }
        let name = self.puppet_name(user);
        let (connection, mut events) = Connection::open(&self.config.server, &name, display_name)
            .await
            .map_err(op_error)?;
        // A puppet's own view of its channels is the listener's business.
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        let puppet = Arc::new(Puppet {
            connection,
            channels: Mutex::new(HashSet::new()),
        });
        puppets.insert(user.to_owned(), Arc::clone(&puppet));
        Ok(puppet)
    }

    /// The puppet of `user`, a member of `channel`.
    async fn puppet_in(
        &self,
        user: &UserId,
        name: Option<&str>,
        channel: &str,
    ) -> Result<Arc<Puppet>, ConnectorError> {
        let puppet = self.puppet(user, name).await?;
        let joined = puppet
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(channel);
        if !joined {
            puppet
                .connection
                .request(json!({ "op": "join", "channel": channel }))
                .await
                .map_err(op_error)?;
            puppet
                .channels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(channel.to_owned());
        }
        Ok(puppet)
    }

    /// Has the puppet of `user`, a member of `channel`, send `op` there.
    async fn act(
        &self,
        user: &UserId,
        name: Option<&str>,
        channel: &str,
        op: Value,
    ) -> Result<(), ConnectorError> {
        let puppet = self.puppet_in(user, name, channel).await?;
        puppet.connection.request(op).await.map_err(op_error)?;
        Ok(())
    }

    /// Starts watching `channel` on the listener, from its cursor (or from now).
    async fn watch(&self, channel: &str) -> Result<(), ConnectorError> {
        let after = {
            let mut cursors = self.cursors.lock().unwrap_or_else(|p| p.into_inner());
            *cursors.entry(channel.to_owned()).or_insert(FROM_NOW)
        };
        let listener = self.listener.lock().await.clone();
        // Without a listener the channel is watched when it reconnects.
        if let Some(listener) = listener {
            let reply = listener
                .request(json!({ "op": "watch", "channel": channel, "after": after }))
                .await
                .map_err(op_error)?;
            if after == FROM_NOW {
                let seq = reply["seq"].as_u64().unwrap_or_default();
                self.advance(channel, seq);
                self.save_cursor(channel, seq).await;
            }
        }
        Ok(())
    }

    fn advance(&self, channel: &str, seq: u64) {
        let mut cursors = self.cursors.lock().unwrap_or_else(|p| p.into_inner());
        let cursor = cursors.entry(channel.to_owned()).or_insert(0);
        if *cursor == FROM_NOW || seq > *cursor {
            *cursor = seq;
        }
    }

    async fn save_cursor(&self, channel: &str, seq: u64) {
        if let Err(error) = self
            .bridge()
            .set_state(&cursor_key(channel), &seq.to_string())
            .await
        {
            tracing::warn!(%channel, %error, "cannot save a cursor; the channel will replay more");
        }
    }

    /// The listener: connects, watches every channel from its cursor, and queues what
    /// happens, reconnecting with backoff until stopped.
    async fn run_listener(self: Arc<Self>) {
        let mut wait = Duration::from_millis(200);
        while !self.stop.is_cancelled() {
            let opened = Connection::open(
                &self.config.server,
                &self.config.listener_user,
                Some("bridge"),
            )
            .await;
            let (connection, events) = match opened {
                Ok(opened) => opened,
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?wait, "cannot reach the linechat server");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.stop.cancelled() => return,
                    }
                    wait = (wait * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            wait = Duration::from_millis(200);
            let connection = Arc::new(connection);
            *self.listener.lock().await = Some(Arc::clone(&connection));
            let channels: Vec<String> = self
                .cursors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .keys()
                .cloned()
                .collect();
            // Watch from another task: the history comes in as events before each reply.
            let watcher = Arc::clone(&self);
            tokio::spawn(async move {
                for channel in channels {
                    if let Err(error) = watcher.watch(&channel).await {
                        tracing::warn!(%channel, %error, "cannot watch a channel");
                    }
                }
            });
            self.pump(events).await;
            *self.listener.lock().await = None;
            tracing::warn!("lost the linechat listener connection; reconnecting");
        }
    }

    /// Queues the listener's events in order until its connection ends.
    async fn pump(&self, mut events: mpsc::UnboundedReceiver<Value>) {
        let mut unsaved: HashMap<String, u64> = HashMap::new();
        loop {
            let event = tokio::select! {
                biased;
                () = self.stop.cancelled() => None,
                event = events.recv() => event,
            };
            let Some(event) = event else { break };
            match self.on_event(&event).await {
                Some((channel, seq)) => {
                    self.advance(&channel, seq);
                    unsaved.insert(channel, seq);
                }
                // Stopped before the event was queued: later events must not move the
                // cursor past it.
                None if self.stop.is_cancelled() => break,
                None => {}
            }
            // Cursors are saved when the burst is over: replaying a little is harmless.
            if events.is_empty() {
                for (channel, seq) in unsaved.drain() {
                    self.save_cursor(&channel, seq).await;
                }
            }
        }
        for (channel, seq) in unsaved {
            self.save_cursor(&channel, seq).await;
        }
    }

    /// Handles one listener event; returns its channel and seq once it is queued.
    async fn on_event(&self, event: &Value) -> Option<(String, u64)> {
        let bridge = self.bridge();
        let channel = event["channel"].as_str()?.to_owned();
        let sender = event["sender"].as_str()?;
        let seq = event["seq"].as_u64();
        let text = |key: &str| event[key].as_str().unwrap_or_default().to_owned();
        let ghost = GhostInfo {
            id: sender.to_owned(),
            name: event["sender_name"].as_str().map(str::to_owned),
            avatar: event["sender_avatar"].as_str().map(str::to_owned),
        };
        if self.is_ours(sender) {
            return seq.map(|seq| (channel, seq));
        }
        let message = || RemoteMessage {
            kind: match event["kind"].as_str() {
                Some("action") => MessageKind::Emote,
                Some("notice") => MessageKind::Notice,
                _ => MessageKind::Text,
            },
            body: text("text"),
            html: None,
            reply_to: event["reply_to"].as_str().map(str::to_owned),
            file: None,
        };
        let kind = match event["type"].as_str()? {
            "message" => RemoteEventKind::Message(message()),
            "edit" => RemoteEventKind::Edit {
                target: text("target"),
                message: message(),
            },
            "delete" => RemoteEventKind::Delete {
                target: text("target"),
            },
            "react" => RemoteEventKind::Reaction {
                target: text("target"),
                key: text("emoji"),
            },
            "join" => RemoteEventKind::Join,
            "part" => RemoteEventKind::Leave { reason: None },
            "topic" => RemoteEventKind::Topic {
                topic: text("topic"),
            },
            "typing" => {
                let typing = event["typing"].as_bool().unwrap_or_default();
                if let Err(error) = bridge.set_typing(&channel, &ghost, typing).await {
                    tracing::debug!(%error, "typing not shown");
                }
                return None;
            }
            "profile" => {
                let profile = GhostInfo {
                    avatar: Some(event["avatar"].as_str().unwrap_or_default().to_owned()),
                    name: event["name"].as_str().map(str::to_owned),
                    ..ghost
                };
                if let Err(error) = bridge.update_ghost(&profile).await {
                    tracing::warn!(%error, "profile not updated");
                }
                return seq.map(|seq| (channel, seq));
            }
            _ => return seq.map(|seq| (channel, seq)),
        };
        // Messages carry their own ids; the rest are known by their place in the channel.
        let id = event["id"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| seq.map(|seq| format!("seq:{seq}")));
        let remote = RemoteEvent {
            id,
            sender: ghost,
            timestamp: event["ts"].as_i64(),
            kind,
        };
        let mut wait = Duration::from_millis(100);
        loop {
            match bridge.queue(&channel, &remote).await {
                Ok(_) => return seq.map(|seq| (channel, seq)),
                Err(BridgeError::UnknownPortal(_)) => return None,
                // Queuing is what makes the event safe: keep trying, never skip it.
                Err(error) => {
                    tracing::warn!(%error, "cannot queue a linechat event; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.stop.cancelled() => return None,
                    }
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// The portal of `channel` as the server describes it now.
    async fn describe(&self, channel: &str) -> Result<PortalInfo, ConnectorError> {
        let listener = self.listener.lock().await.clone();
        let listener = listener.ok_or_else(|| ConnectorError::Retry("not connected".into()))?;
        let names = listener
            .request(json!({ "op": "names", "channel": channel }))
            .await
            .map_err(op_error)?;
        let members = names["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|member| {
                let user = member["user"].as_str()?;
                (!self.is_ours(user)).then(|| GhostInfo {
                    id: user.to_owned(),
                    name: member["name"].as_str().map(str::to_owned),
                    avatar: member["avatar"].as_str().map(str::to_owned),
                })
            })
            .collect();
        Ok(PortalInfo {
            remote_id: channel.to_owned(),
            name: Some(channel.to_owned()),
            topic: names["topic"].as_str().map(str::to_owned),
            alias_suffix: Some(channel.trim_start_matches('#').to_owned()),
            public: true,
            members,
            ..PortalInfo::default()
        })
    }
}

fn cursor_key(channel: &str) -> String {
    format!("cursor:{channel}")
}

fn op_error(error: OpError) -> ConnectorError {
    match error {
        OpError::Disconnected => ConnectorError::Retry("the linechat server is unreachable".into()),
        OpError::Refused(reason) => ConnectorError::Refused(reason),
    }
}

/// Whether `name` is a linechat channel name.
fn is_channel(name: &str) -> bool {
    name.strip_prefix('#').is_some_and(|rest| {
        (1..=50).contains(&rest.len())
            && rest
                .chars()
                .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '.' | '-'))
    })
}

/// The text of a Matrix message as linechat shows it.
fn text_of(message: &MatrixMessage) -> String {
    let mut text = match &message.html {
        Some(html) => bridge_core::format::html_to_text(html, &bridge_core::format::PlainText),
        None => message.body.clone(),
    };
    if let Some(media) = &message.media {
        text = format!("{text} ({})", media.url);
    }
    text
}

#[async_trait]
impl Connector for Linechat {
    fn info(&self) -> ConnectorInfo {
        ConnectorInfo {
            network: NETWORK,
            display_name: "Linechat",
            capabilities: Capabilities {
                edits: true,
                redactions: true,
                reactions: true,
                typing: true,
                receipts: false,
            },
        }
    }

    async fn start(&self, bridge: BridgeHandle) -> Result<(), ConnectorError> {
        let portals = bridge
            .portals()
            .await
            .map_err(|e| ConnectorError::Retry(e.to_string()))?;
        {
            for portal in &portals {
                let cursor = bridge
                    .state(&cursor_key(&portal.remote_id))
                    .await
                    .map_err(|e| ConnectorError::Retry(e.to_string()))?
                    .and_then(|text| text.parse().ok())
                    .unwrap_or(FROM_NOW);
                self.cursors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(portal.remote_id.clone(), cursor);
            }
        }
        let _ = self.bridge.set(bridge);
        let task = tokio::spawn(Arc::clone(&self.0).run_listener());
        *self.listener_task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        tracing::info!(server = %self.config.server, portals = portals.len(), "linechat connector started");
        Ok(())
    }

    async fn stop(&self) {
        self.stop.cancel();
        // The listener saves its cursors on the way out: wait for it.
        let task = self
            .listener_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    async fn portal_created(&self, portal: &Portal) -> Result<(), ConnectorError> {
        self.watch(&portal.remote_id).await
    }

    async fn resolve_portal(&self, suffix: &str) -> Result<Option<PortalInfo>, ConnectorError> {
        let channel = format!("#{suffix}");
        if !is_channel(&channel) {
            return Ok(None);
        }
        self.describe(&channel).await.map(Some)
    }

    async fn resolve_ghost(&self, id: &str) -> Result<Option<GhostInfo>, ConnectorError> {
        let valid = (1..=32).contains(&id.len())
            && id
                .chars()
                .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '.' | '-'));
        Ok((valid && !self.is_ours(id)).then(|| GhostInfo::id(id)))
    }

    async fn handle_message(
        &self,
        portal: &Portal,
        message: &MatrixMessage,
    ) -> Result<Vec<String>, ConnectorError> {
        let kind = match message.kind {
            MessageKind::Emote => "action",
            MessageKind::Notice => "notice",
            _ => "text",
        };
        let id = message.event_id.to_string();
        let mut op = json!({
            "op": "send", "channel": portal.remote_id, "id": id, "text": text_of(message), "kind": kind,
        });
        if let Some(reply_to) = &message.reply_to {
            op["reply_to"] = json!(reply_to.remote_id);
        }
        self.act(
            &message.sender,
            message.sender_name.as_deref(),
            &portal.remote_id,
            op,
        )
        .await?;
        Ok(vec![id])
    }

    async fn handle_edit(
        &self,
        portal: &Portal,
        edit: &MatrixEdit,
    ) -> Result<Vec<String>, ConnectorError> {
        let id = edit.event_id.to_string();
        let op = json!({
            "op": "edit", "channel": portal.remote_id, "id": id,
            "target": edit.target.remote_id, "text": text_of(&edit.new_content),
        });
        self.act(&edit.sender, None, &portal.remote_id, op).await?;
        Ok(vec![id])
    }

    async fn handle_redaction(
        &self,
        portal: &Portal,
        redaction: &MatrixRedaction,
    ) -> Result<Vec<String>, ConnectorError> {
        let mut ids = Vec::new();
        for (part, target) in redaction.targets.iter().enumerate() {
            let id = format!("{}/{part}", redaction.event_id);
            let op = json!({
                "op": "delete", "channel": portal.remote_id, "id": id, "target": target.remote_id,
            });
            self.act(&redaction.sender, None, &portal.remote_id, op)
                .await?;
            ids.push(id);
        }
        Ok(ids)
    }

    async fn handle_reaction(
        &self,
        portal: &Portal,
        reaction: &MatrixReaction,
    ) -> Result<Vec<String>, ConnectorError> {
        let id = reaction.event_id.to_string();
        let op = json!({
            "op": "react", "channel": portal.remote_id, "id": id,
            "target": reaction.target.remote_id, "emoji": reaction.key,
        });
        self.act(&reaction.sender, None, &portal.remote_id, op)
            .await?;
        Ok(vec![id])
    }

    async fn handle_membership(
        &self,
        portal: &Portal,
        membership: &MatrixMembership,
    ) -> Result<(), ConnectorError> {
        // Ghosts invited, kicked or banned by Matrix users: linechat has no such thing.
        if membership.target_ghost.is_some() {
            return Ok(());
        }
        match membership.membership {
            Membership::Join => {
                self.puppet_in(
                    &membership.target,
                    membership.display_name.as_deref(),
                    &portal.remote_id,
                )
                .await?;
            }
            Membership::Leave | Membership::Kick | Membership::Ban => {
                let puppet = self.puppet(&membership.target, None).await?;
                puppet
                    .connection
                    .request(json!({ "op": "part", "channel": portal.remote_id }))
                    .await
                    .map_err(op_error)?;
                puppet
                    .channels
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&portal.remote_id);
            }
            Membership::Invite => {}
        }
        Ok(())
    }

    async fn handle_room_change(
        &self,
        portal: &Portal,
        sender: &UserId,
        change: &MatrixRoomChange,
    ) -> Result<(), ConnectorError> {
        let _ = (portal, sender, change);
        // linechat channels have no topic to set; the example leaves changes out.
        Ok(())
    }

    async fn handle_typing(
        &self,
        portal: &Portal,
        user: &UserId,
        typing: bool,
    ) -> Result<(), ConnectorError> {
        let op = json!({ "op": "typing", "channel": portal.remote_id, "typing": typing });
        self.act(user, None, &portal.remote_id, op).await
    }

    fn commands(&self) -> Vec<CommandSpec> {
        vec![
            CommandSpec {
                name: "join",
                args: "<#channel>",
                summary: "open the portal of a linechat channel and invite you to it",
                level: Permission::User,
            },
            CommandSpec {
                name: "list",
                args: "",
                summary: "list the portals",
                level: Permission::Relay,
            },
        ]
    }

    async fn run_command(
        &self,
        context: &CommandContext,
        command: &str,
        args: &[String],
    ) -> Result<String, ConnectorError> {
        match command {
            "join" => {
                let Some(channel) = args.first().filter(|c| is_channel(c)) else {
                    return Ok(
                        "Usage: join <#channel> (a # and up to 50 of a-z 0-9 _ . -)".to_owned()
                    );
                };
                let info = self.describe(channel).await?;
                let portal = context
                    .bridge
                    .create_portal(&info)
                    .await
                    .map_err(|e| ConnectorError::Retry(e.to_string()))?;
                context
                    .bridge
                    .invite(&portal, &context.sender)
                    .await
                    .map_err(|e| ConnectorError::Retry(e.to_string()))?;
                Ok(format!("Invited you to {channel}."))
            }
            _ => {
                let portals = context
                    .bridge
                    .portals()
                    .await
                    .map_err(|e| ConnectorError::Retry(e.to_string()))?;
                let names: Vec<&str> = portals.iter().map(|p| p.remote_id.as_str()).collect();
                Ok(if names.is_empty() {
                    "No portals yet.".to_owned()
                } else {
                    format!("Portals: {}", names.join(", "))
                })
            }
        }
    }
}
