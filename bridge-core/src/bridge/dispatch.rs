//! Matrix-to-remote: the handler of the durable ingest. Events arrive one room at a time,
//! in order; each is checked (the bridge's own users are never bridged back, the sender
//! needs a permission), turned into the connector's types with its targets looked up in
//! the message map, and handed to the connector. What the connector sent is mapped.
//!
//! An event the network refuses is answered with a notice in the room, never dropped in
//! silence; a passing failure is retried with the room's later events waiting.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ruma::events::room::MediaSource;
use ruma::events::room::message::{
    FormattedBody, MessageFormat, MessageType, Relation, RoomMessageEventContent,
};
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::Deserialize;

use super::commands;
use super::error::BridgeError;
use super::handle::Shared;
use crate::config::Permission;
use crate::connector::matrix::MatrixMedia;
use crate::connector::{
    ConnectorError, MatrixEdit, MatrixMembership, MatrixMessage, MatrixReaction, MatrixRedaction,
    MatrixRoomChange, Membership, MessageKind, Portal, QuotedMessage, RemoteRef,
};
use crate::ingest::{EventHandler, HandleError};
use crate::store::{EventKind, MappedEvent, StoredEvent};

/// The ingest's handler: Matrix events to the connector.
#[derive(Debug)]
pub(crate) struct MatrixEvents {
    pub(crate) shared: Arc<Shared>,
}

/// The envelope and content of a timeline event.
#[derive(Debug, Deserialize)]
struct RawEvent {
    #[serde(rename = "type")]
    event_type: String,
    event_id: OwnedEventId,
    room_id: OwnedRoomId,
    sender: OwnedUserId,
    state_key: Option<String>,
    #[serde(default)]
    content: serde_json::Value,
    redacts: Option<OwnedEventId>,
    #[serde(default)]
    origin_server_ts: i64,
}

/// How often recording a bridged event is tried (over about a minute).
const RECORD_ATTEMPTS: u32 = 15;

/// What came of handing an event on.
type Outcome = Result<Vec<String>, ConnectorError>;

#[async_trait]
impl EventHandler for MatrixEvents {
    async fn handle(&self, stored: &StoredEvent) -> Result<(), HandleError> {
        if !self.shared.wait_started().await {
            return Err(HandleError::Retry("the bridge is stopping".to_owned()));
        }
        let result = match stored.kind {
            EventKind::Timeline => self.timeline(stored).await,
            EventKind::Ephemeral => self.ephemeral(stored).await,
            EventKind::ToDevice | EventKind::DeviceData => Ok(()),
        };
        result.map_err(|error| {
            if error.is_transient() {
                HandleError::Retry(error.to_string())
            } else {
                HandleError::GiveUp(error.to_string())
            }
        })
    }
}

impl MatrixEvents {
    async fn timeline(&self, stored: &StoredEvent) -> Result<(), BridgeError> {
        let shared = &self.shared;
        let event: RawEvent = match serde_json::from_str(&stored.content) {
            Ok(event) => event,
            Err(error) => {
                tracing::debug!(seq = stored.seq, %error, "not a room event the bridge reads");
                return Ok(());
            }
        };
        if event.event_type == "m.room.member"
            && let Some(user) = event
                .state_key
                .as_deref()
                .and_then(|u| UserId::parse(u).ok())
        {
            shared.forget_display_name(&event.room_id, &user);
            // A ghost kicked or banned on Matrix must join again before it speaks.
            if event.content["membership"] != "join" {
                shared.forget_joined(&event.room_id, &user);
            }
        }
        // Echo suppression: what the bridge's own users did came from the bridge.
        if shared.is_bridge_user(&event.sender) {
            return Ok(());
        }
        if event.event_type == "m.room.member"
            && event.state_key.as_deref() == Some(shared.matrix.bot_user_id().as_str())
        {
            return commands::bot_membership(shared, &event.room_id, &event.sender, &event.content)
                .await;
        }
        let permission = shared.permissions.of(&event.sender);
        let portal = shared.portal_by_room(&event.room_id).await?;
        // A ghost invited to a room that is no portal: a direct chat, maybe.
        if portal.is_none()
            && event.event_type == "m.room.member"
            && event.content["membership"] == "invite"
            && let Some(ghost) = event
                .state_key
                .as_deref()
                .and_then(|u| UserId::parse(u).ok())
            && let Some(remote) = shared.ghost_id_of(&ghost)
        {
            let is_direct = event.content["is_direct"] == true;
            return super::direct::ghost_invited(
                shared,
                &event.room_id,
                &event.sender,
                &ghost,
                &remote,
                is_direct,
            )
            .await;
        }
        let Some(portal) = portal else {
            if event.event_type != "m.room.message" {
                return Ok(());
            }
            let body = body_of(&event.content);
            // Commands without a prefix only from the user whose direct chat it is; in
            // other rooms the bot was invited to (to `link` them), with the prefix.
            let owner = shared
                .store
                .management_room_owner(event.room_id.as_str())
                .await?;
            let in_management_room = owner.as_deref() == Some(event.sender.as_str());
            if in_management_room || (owner.is_none() && commands::has_prefix(shared, body)) {
                commands::run(
                    shared,
                    &event.room_id,
                    None,
                    &event.sender,
                    permission,
                    body,
                    !in_management_room,
                )
                .await?;
            }
            return Ok(());
        };
        if event.event_type == "m.room.message" {
            let body = body_of(&event.content);
            if commands::has_prefix(shared, body) {
                return commands::run(
                    shared,
                    &event.room_id,
                    Some(&portal),
                    &event.sender,
                    permission,
                    body,
                    true,
                )
                .await;
            }
        }
        if permission < Permission::Relay {
            tracing::debug!(sender = %event.sender, "not bridged: no permission");
            return Ok(());
        }
        if stored.redelivered
            && !shared
                .store
                .remote_of_event(
                    shared.network,
                    event.room_id.as_str(),
                    event.event_id.as_str(),
                )
                .await?
                .is_empty()
        {
            return Ok(());
        }
        let outcome = self.hand_on(&portal, &event, permission).await?;
        self.record(&portal, &event, outcome).await
    }

    /// Hands a portal event to the connector by its type.
    async fn hand_on(
        &self,
        portal: &Portal,
        event: &RawEvent,
        permission: Permission,
    ) -> Result<Option<Outcome>, BridgeError> {
        let shared = &self.shared;
        let connector = &shared.connector;
        let outcome = match event.event_type.as_str() {
            "m.room.message" => {
                let Ok(content) =
                    serde_json::from_value::<RoomMessageEventContent>(event.content.clone())
                else {
                    return Ok(None);
                };
                let mut message = self
                    .message(portal, event, &content.msgtype, permission)
                    .await?;
                match content.relates_to {
                    Some(Relation::Replacement(_)) if !shared.capabilities.edits => {
                        Err(ConnectorError::Unsupported)
                    }
                    Some(Relation::Replacement(replacement)) => {
                        let Some(target) = self.target(portal, &replacement.event_id).await? else {
                            return Ok(None);
                        };
                        // Only a message's sender may edit it (clients hide other edits).
                        if target.sender != event.sender.as_str() {
                            tracing::info!(event_id = %event.event_id, "an edit of someone else's message is not bridged");
                            return Ok(None);
                        }
                        let new_content = self
                            .message(portal, event, &replacement.new_content.msgtype, permission)
                            .await?;
                        let edit = MatrixEdit {
                            event_id: event.event_id.clone(),
                            sender: event.sender.clone(),
                            target,
                            new_content,
                        };
                        connector.handle_edit(portal, &edit).await
                    }
                    relation => {
                        let reply_to = match relation {
                            Some(Relation::Reply(reply)) => Some(reply.in_reply_to.event_id),
                            Some(Relation::Thread(thread)) => thread
                                .in_reply_to
                                .filter(|_| !thread.is_falling_back)
                                .map(|reply| reply.event_id),
                            _ => None,
                        };
                        if let Some(reply_to) = reply_to {
                            // Only a reply carries a fallback quote to remove.
                            message.body =
                                crate::format::strip_reply_fallback_text(&message.body).to_owned();
                            message.reply_to = self.target(portal, &reply_to).await?;
                            if message.reply_to.is_some() {
                                message.reply_original =
                                    self.quoted(&event.room_id, &reply_to).await;
                            }
                        }
                        connector.handle_message(portal, &message).await
                    }
                }
            }
            "m.reaction" if !shared.capabilities.reactions => Err(ConnectorError::Unsupported),
            "m.reaction" => {
                let relates = &event.content["m.relates_to"];
                let (Some(target), Some(key)) = (
                    relates["event_id"]
                        .as_str()
                        .and_then(|id| OwnedEventId::try_from(id).ok()),
                    relates["key"].as_str(),
                ) else {
                    return Ok(None);
                };
                let Some(target) = self.target(portal, &target).await? else {
                    return Ok(None);
                };
                let reaction = MatrixReaction {
                    event_id: event.event_id.clone(),
                    sender: event.sender.clone(),
                    target,
                    key: key.to_owned(),
                };
                connector.handle_reaction(portal, &reaction).await
            }
            "m.room.redaction" if !shared.capabilities.redactions => {
                Err(ConnectorError::Unsupported)
            }
            "m.room.redaction" => {
                let redacts = event.redacts.clone().or_else(|| {
                    event.content["redacts"]
                        .as_str()
                        .and_then(|id| OwnedEventId::try_from(id).ok())
                });
                let Some(redacts) = redacts else {
                    return Ok(None);
                };
                let targets = self.targets(portal, &redacts).await?;
                if targets.is_empty() {
                    return Ok(None);
                }
                // Someone else's message: only a room moderator may take it down.
                if targets.iter().any(|t| t.sender != event.sender.as_str())
                    && !self
                        .may_redact_others(&event.room_id, &event.sender)
                        .await?
                {
                    tracing::info!(event_id = %event.event_id, "a redaction without the power to redact is not bridged");
                    return Ok(None);
                }
                let redaction = MatrixRedaction {
                    event_id: event.event_id.clone(),
                    sender: event.sender.clone(),
                    targets,
                    reason: event.content["reason"].as_str().map(str::to_owned),
                };
                connector.handle_redaction(portal, &redaction).await
            }
            "m.room.member" => {
                let Some(membership) = self.membership(event) else {
                    return Ok(None);
                };
                connector
                    .handle_membership(portal, &membership)
                    .await
                    .map(|()| Vec::new())
            }
            "m.room.name" | "m.room.topic" | "m.room.avatar" => {
                let text = |key: &str| {
                    event.content[key]
                        .as_str()
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                };
                let change = match event.event_type.as_str() {
                    "m.room.name" => MatrixRoomChange::Name(text("name")),
                    "m.room.topic" => MatrixRoomChange::Topic(text("topic")),
                    _ => MatrixRoomChange::Avatar(text("url").map(Into::into)),
                };
                connector
                    .handle_room_change(portal, &event.sender, &change)
                    .await
                    .map(|()| Vec::new())
            }
            "m.room.power_levels" => {
                let users: Vec<(OwnedUserId, i64)> = event.content["users"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(user, level)| Some((UserId::parse(user).ok()?, level.as_i64()?)))
                    .collect();
                connector
                    .handle_power_levels(portal, &users)
                    .await
                    .map(|()| Vec::new())
            }
            _ => return Ok(None),
        };
        Ok(Some(outcome))
    }

    /// Records what the connector sent, or tells the sender why nothing was.
    async fn record(
        &self,
        portal: &Portal,
        event: &RawEvent,
        outcome: Option<Outcome>,
    ) -> Result<(), BridgeError> {
        let shared = &self.shared;
        match outcome {
            None => Ok(()),
            Some(Ok(remote_ids)) => {
                let mapped: Vec<MappedEvent> = remote_ids
                    .into_iter()
                    .enumerate()
                    .map(|(part, remote_id)| MappedEvent {
                        remote_chat: portal.remote_id.clone(),
                        remote_id,
                        part: i64::try_from(part).unwrap_or(i64::MAX),
                        room_id: event.room_id.to_string(),
                        event_id: event.event_id.to_string(),
                        sender: event.sender.to_string(),
                    })
                    .collect();
                // The network has the event now: only the record is retried here, since
                // handing the event over again would send it twice.
                let mut wait = Duration::from_millis(100);
                let mut attempts = 0;
                loop {
                    match shared.store.map_events(shared.network, &mapped).await {
                        Ok(()) => return Ok(()),
                        Err(error) if attempts < RECORD_ATTEMPTS => {
                            attempts += 1;
                            tracing::warn!(%error, "cannot record a bridged event; retrying");
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(Duration::from_secs(5));
                        }
                        Err(error) => {
                            tracing::error!(event_id = %event.event_id, %error, "a bridged event was not recorded: later edits and replies to it will not be bridged");
                            return Ok(());
                        }
                    }
                }
            }
            Some(Err(ConnectorError::Retry(reason))) => {
                Err(BridgeError::Connector(ConnectorError::Retry(reason)))
            }
            Some(Err(error)) => {
                let what = describe(&event.event_type);
                let reason = match error {
                    ConnectorError::Unsupported => {
                        format!("{} does not support {what}", shared.network_name)
                    }
                    other => other.to_string(),
                };
                tracing::info!(event_id = %event.event_id, %reason, "not bridged");
                let notice = format!("⚠ {}: your {what} was not bridged: {reason}", event.sender);
                if let Err(error) = shared.bot_notice(&event.room_id, &notice).await {
                    tracing::warn!(%error, "cannot tell the sender their event was not bridged");
                }
                Ok(())
            }
        }
    }

    /// The connector's view of a message, with fallbacks stripped and HTML sanitized.
    async fn message(
        &self,
        portal: &Portal,
        event: &RawEvent,
        msgtype: &MessageType,
        permission: Permission,
    ) -> Result<MatrixMessage, BridgeError> {
        // The four media contents have the same fields but no common type.
        macro_rules! media {
            ($content:expr) => {{
                let info = $content.info.as_deref();
                media(
                    &$content.source,
                    info.and_then(|i| i.mimetype.clone()),
                    info.and_then(|i| i.size),
                    $content.filename.clone(),
                )
            }};
        }
        let (kind, formatted, media) = match msgtype {
            MessageType::Text(c) => (MessageKind::Text, c.formatted.as_ref(), None),
            MessageType::Notice(c) => (MessageKind::Notice, c.formatted.as_ref(), None),
            MessageType::Emote(c) => (MessageKind::Emote, c.formatted.as_ref(), None),
            MessageType::Image(c) => (MessageKind::Image, c.formatted.as_ref(), media!(c)),
            MessageType::File(c) => (MessageKind::File, c.formatted.as_ref(), media!(c)),
            MessageType::Video(c) => (MessageKind::Video, c.formatted.as_ref(), media!(c)),
            MessageType::Audio(c) => (MessageKind::Audio, c.formatted.as_ref(), media!(c)),
            other => (MessageKind::from_msgtype(other.msgtype()), None, None),
        };
        let html = formatted
            .filter(|f: &&FormattedBody| f.format == MessageFormat::Html)
            .map(|f| {
                crate::format::sanitize_html(&crate::format::strip_reply_fallback_html(&f.body))
            });
        let mentions = html
            .as_deref()
            .map(crate::format::mentioned_users)
            .unwrap_or_default();
        Ok(MatrixMessage {
            event_id: event.event_id.clone(),
            sender: event.sender.clone(),
            sender_name: self
                .shared
                .display_name(&portal.room_id, &event.sender)
                .await,
            permission,
            kind,
            body: msgtype.body().to_owned(),
            html,
            reply_to: None,
            reply_original: None,
            media,
            mentions,
            timestamp: event.origin_server_ts,
        })
    }

    /// What `event_id` of `room` said and when, as the bot sees it; `None` if it cannot
    /// be read (a reply is bridged all the same, without it).
    async fn quoted(&self, room: &RoomId, event_id: &OwnedEventId) -> Option<QuotedMessage> {
        let event = match self.shared.matrix.bot().room_event(room, event_id).await {
            Ok(event) => event?,
            Err(error) => {
                tracing::debug!(%event_id, %error, "cannot read the event a reply answers");
                return None;
            }
        };
        Some(QuotedMessage {
            body: crate::format::strip_reply_fallback_text(event["content"]["body"].as_str()?)
                .to_owned(),
            timestamp: event["origin_server_ts"].as_i64()?,
        })
    }

    /// The first remote part of a bridged Matrix event.
    async fn target(
        &self,
        portal: &Portal,
        event_id: &OwnedEventId,
    ) -> Result<Option<RemoteRef>, BridgeError> {
        Ok(self.targets(portal, event_id).await?.into_iter().next())
    }

    /// Every remote part of a bridged Matrix event.
    async fn targets(
        &self,
        portal: &Portal,
        event_id: &OwnedEventId,
    ) -> Result<Vec<RemoteRef>, BridgeError> {
        let mapped = self
            .shared
            .store
            .remote_of_event(
                self.shared.network,
                portal.room_id.as_str(),
                event_id.as_str(),
            )
            .await?;
        mapped.into_iter().map(remote_ref).collect()
    }

    /// Whether `user`'s power level in `room` reaches the level needed to redact others'
    /// events.
    async fn may_redact_others(&self, room: &RoomId, user: &UserId) -> Result<bool, BridgeError> {
        Ok(self.shared.power(room, user).await?.may_redact_others())
    }

    fn membership(&self, event: &RawEvent) -> Option<MatrixMembership> {
        let target = UserId::parse(event.state_key.as_deref()?).ok()?;
        let membership = match event.content["membership"].as_str()? {
            "join" => Membership::Join,
            "invite" => Membership::Invite,
            "ban" => Membership::Ban,
            "leave" if target == event.sender => Membership::Leave,
            "leave" => Membership::Kick,
            _ => return None,
        };
        Some(MatrixMembership {
            event_id: event.event_id.clone(),
            sender: event.sender.clone(),
            target_ghost: self.shared.ghost_id_of(&target),
            target,
            membership,
            display_name: event.content["displayname"].as_str().map(str::to_owned),
            reason: event.content["reason"].as_str().map(str::to_owned),
        })
    }

    /// Typing and read receipts in portals, and users' presence.
    async fn ephemeral(&self, stored: &StoredEvent) -> Result<(), BridgeError> {
        let shared = &self.shared;
        if stored.event_type == "m.presence" {
            let value: serde_json::Value =
                serde_json::from_str(&stored.content).unwrap_or_default();
            return self.presence(&value).await;
        }
        let Some(room) = stored
            .room_id
            .as_deref()
            .and_then(|r| RoomId::parse(r).ok())
        else {
            return Ok(());
        };
        let value: serde_json::Value = serde_json::from_str(&stored.content).unwrap_or_default();
        let Some(portal) = shared.portal_by_room(&room).await? else {
            return Ok(());
        };
        let allowed = |user: &UserId| {
            !shared.is_bridge_user(user) && shared.permissions.of(user) >= Permission::Relay
        };
        match stored.event_type.as_str() {
            "m.typing" if shared.capabilities.typing => {
                let now: HashSet<OwnedUserId> = value["content"]["user_ids"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|u| UserId::parse(u.as_str()?).ok())
                    .filter(|u| allowed(u))
                    .collect();
                let before = shared
                    .typing
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&room)
                    .cloned()
                    .unwrap_or_default();
                for user in now.difference(&before) {
                    log_refusal(shared.connector.handle_typing(&portal, user, true).await)?;
                }
                for user in before.difference(&now) {
                    log_refusal(shared.connector.handle_typing(&portal, user, false).await)?;
                }
                // Recorded once handed on: a retry must see the same changes again.
                shared
                    .typing
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(room.clone(), now);
            }
            "m.receipt" if shared.capabilities.receipts => {
                for (event_id, receipts) in value["content"].as_object().into_iter().flatten() {
                    let Ok(event_id) = OwnedEventId::try_from(event_id.as_str()) else {
                        continue;
                    };
                    let readers: Vec<OwnedUserId> = receipts["m.read"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter_map(|(user, _)| UserId::parse(user).ok())
                        .filter(|u| allowed(u))
                        .collect();
                    if readers.is_empty() {
                        continue;
                    }
                    let Some(target) = self.target(&portal, &event_id).await? else {
                        continue;
                    };
                    for user in readers {
                        log_refusal(
                            shared
                                .connector
                                .handle_receipt(&portal, &user, &target)
                                .await,
                        )?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A user's presence (an `m.presence` event), for a user of the bridge.
    async fn presence(&self, value: &serde_json::Value) -> Result<(), BridgeError> {
        let shared = &self.shared;
        let Some(user) = value["sender"].as_str().and_then(|u| UserId::parse(u).ok()) else {
            return Ok(());
        };
        if shared.is_bridge_user(&user) || shared.permissions.of(&user) < Permission::User {
            return Ok(());
        }
        let Ok(presence) = serde_json::from_value::<ruma::presence::PresenceState>(
            value["content"]["presence"].clone(),
        ) else {
            return Ok(());
        };
        let status = value["content"]["status_msg"].as_str();
        log_refusal(
            shared
                .connector
                .handle_presence(&user, &presence, status)
                .await,
        )
    }
}

/// Ephemeral events are not worth a notice: a refusal is logged, a passing failure retried.
fn log_refusal(result: Result<(), ConnectorError>) -> Result<(), BridgeError> {
    match result {
        Ok(()) | Err(ConnectorError::Unsupported) => Ok(()),
        Err(ConnectorError::Retry(reason)) => Err(ConnectorError::Retry(reason).into()),
        Err(error) => {
            tracing::debug!(%error, "ephemeral event not bridged");
            Ok(())
        }
    }
}

fn media(
    source: &MediaSource,
    mimetype: Option<String>,
    size: Option<ruma::UInt>,
    filename: Option<String>,
) -> Option<MatrixMedia> {
    match source {
        MediaSource::Plain(url) => Some(MatrixMedia {
            url: url.clone(),
            mimetype,
            size: size.map(u64::from),
            filename,
        }),
        // Encrypted media needs keys the bridge does not hold (no encryption support).
        MediaSource::Encrypted(_) => None,
    }
}

/// The `body` of a message content, or "".
fn body_of(content: &serde_json::Value) -> &str {
    content["body"].as_str().unwrap_or_default()
}

/// What an event type is, for a notice.
fn describe(event_type: &str) -> &'static str {
    match event_type {
        "m.room.message" => "message",
        "m.reaction" => "reaction",
        "m.room.redaction" => "deletion",
        "m.room.member" => "membership change",
        "m.room.name" | "m.room.topic" | "m.room.avatar" => "room change",
        _ => "event",
    }
}

/// A message map row as the connector sees it.
pub(crate) fn remote_ref(mapped: MappedEvent) -> Result<RemoteRef, BridgeError> {
    let event_id = OwnedEventId::try_from(mapped.event_id.as_str()).map_err(|error| {
        BridgeError::Store(crate::store::StoreError::Corrupt(format!(
            "mapped event id: {error}"
        )))
    })?;
    Ok(RemoteRef {
        remote_id: mapped.remote_id,
        part: mapped.part,
        sender: mapped.sender,
        event_id,
    })
}

impl Shared {
    /// Forgets `user`'s display name in `room` (their member event changed).
    pub(crate) fn forget_display_name(&self, room: &RoomId, user: &UserId) {
        self.display_names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(room.to_owned(), user.to_owned()));
    }

    /// `user`'s display name in `room`, if set (read once, then kept).
    pub(crate) async fn display_name(&self, room: &RoomId, user: &UserId) -> Option<String> {
        let key = (room.to_owned(), user.to_owned());
        if let Some(name) = self
            .display_names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return name.clone();
        }
        let name = match self
            .matrix
            .bot()
            .room_state(room, "m.room.member", user.as_str())
            .await
        {
            Ok(content) => content.and_then(|c| c["displayname"].as_str().map(str::to_owned)),
            Err(error) => {
                tracing::debug!(%error, "cannot read a display name");
                return None;
            }
        };
        self.display_names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, name.clone());
        name
    }
}
