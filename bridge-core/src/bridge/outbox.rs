//! Remote-to-Matrix delivery: one ordered queue per portal, persisted in the outbox.
//!
//! [`Outbox::push`] stores a remote event before returning, so from then on it survives a
//! crash. One worker per portal sends its events in order, each with a transaction id
//! derived from the event's remote id, and removes it from the outbox in the same commit
//! that records its Matrix event in the message map. After a crash an event is therefore
//! either still queued or mapped; a queued event whose remote id is already mapped is
//! skipped. The window left is a send that reached the homeserver just before the crash
//! and was not yet recorded: its repeat carries the same transaction id, which Synapse
//! answers with the first event (within its de-duplication window, see
//! [`UserHandle::send_message_event`]).
//!
//! Homeserver failures that may pass are retried with backoff, holding the portal's later
//! events back; an event the homeserver refuses for good is logged and dropped, so that it
//! cannot block its portal forever.
//!
//! [`UserHandle::send_message_event`]: crate::matrix::UserHandle::send_message_event

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ruma::{EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, TransactionId, UInt};
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::error::{BridgeError, matrix_is_transient};
use super::handle::Shared;
use super::ids::transaction_id;
use crate::connector::{GhostInfo, Portal, RemoteEvent, RemoteEventKind, RemoteMessage};
use crate::store::{MappedEvent, OutboxRow};

const FIRST_RETRY: Duration = Duration::from_millis(500);
const LONGEST_RETRY: Duration = Duration::from_secs(60);

/// The queues and their workers.
#[derive(Debug)]
pub(crate) struct Outbox {
    next_seq: AtomicI64,
    workers: Mutex<HashMap<String, Arc<Notify>>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

/// Why an event was not delivered.
enum Undelivered {
    /// Worth retrying.
    Later(String),
    /// Never deliverable.
    Never(String),
}

impl From<BridgeError> for Undelivered {
    fn from(error: BridgeError) -> Self {
        if error.is_transient() {
            Undelivered::Later(error.to_string())
        } else {
            Undelivered::Never(error.to_string())
        }
    }
}

impl From<crate::matrix::MatrixError> for Undelivered {
    fn from(error: crate::matrix::MatrixError) -> Self {
        if matrix_is_transient(&error) {
            Undelivered::Later(error.to_string())
        } else {
            Undelivered::Never(error.to_string())
        }
    }
}

impl Outbox {
    /// An outbox whose next row gets `max_seq + 1`.
    pub(crate) fn new(max_seq: i64, shutdown: CancellationToken) -> Outbox {
        Outbox {
            next_seq: AtomicI64::new(max_seq),
            workers: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            shutdown,
        }
    }

    /// Starts the workers of every portal with queued rows (after a restart).
    pub(crate) async fn resume(shared: &Arc<Shared>) -> Result<(), BridgeError> {
        for portal in shared.store.outbox_portals().await? {
            Outbox::wake(shared, &portal);
        }
        Ok(())
    }

    /// Waits for the workers to stop, after shutdown; each finishes the send in hand.
    pub(crate) async fn stopped(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Queues `event` for `portal`; `false` if it was queued or delivered before.
    pub(crate) async fn push(
        shared: &Arc<Shared>,
        portal: &str,
        event: &RemoteEvent,
    ) -> Result<bool, BridgeError> {
        let outbox = &shared.outbox;
        if shared.store.portal(shared.network, portal).await?.is_none() {
            return Err(BridgeError::UnknownPortal(portal.to_owned()));
        }
        let seq = outbox.next_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let key = match &event.id {
            Some(id) => {
                let delivered = shared
                    .store
                    .event_of_remote(shared.network, portal, id, 0)
                    .await?;
                if delivered.is_some() {
                    return Ok(false);
                }
                format!("id:{id}")
            }
            // Without a remote id nothing recognises a repeat, and the key must never
            // come back: seqs restart from the queue's highest after a restart, and
            // Synapse would answer a reused transaction id with the earlier event.
            None => format!("seq:{seq}:{:016x}", rand::random::<u64>()),
        };
        let content =
            serde_json::to_string(event).map_err(|error| BridgeError::InvalidRemoteId {
                id: event.id.clone().unwrap_or_default(),
                reason: error.to_string(),
            })?;
        let row = OutboxRow {
            seq,
            portal: portal.to_owned(),
            txn_id: transaction_id(shared.network, portal, &key, 0),
            sender: event.sender.id.clone(),
            kind: event.kind.name().to_owned(),
            content,
            attempts: 0,
        };
        let queued = shared.store.push_outbox(&row).await?;
        Outbox::wake(shared, portal);
        Ok(queued)
    }

    /// Wakes the worker of `portal`, starting it if there is none.
    fn wake(shared: &Arc<Shared>, portal: &str) {
        let outbox = &shared.outbox;
        let mut workers = outbox.workers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(notify) = workers.get(portal) {
            notify.notify_one();
            return;
        }
        let notify = Arc::new(Notify::new());
        workers.insert(portal.to_owned(), Arc::clone(&notify));
        outbox
            .tasks
            .spawn(run_worker(Arc::clone(shared), portal.to_owned(), notify));
    }
}

/// Sends `portal`'s queued events in order until shutdown.
async fn run_worker(shared: Arc<Shared>, portal: String, notify: Arc<Notify>) {
    let shutdown = shared.outbox.shutdown.clone();
    let mut wait = FIRST_RETRY;
    loop {
        // Registered before reading, so that a row queued meanwhile wakes us.
        let notified = notify.notified();
        let rows = match shared.store.outbox_head(&portal).await {
            Ok(rows) => rows,
            Err(error) => {
                tracing::error!(%portal, %error, "cannot read the outbox; retrying");
                if sleep_or_stop(&shutdown, wait).await {
                    return;
                }
                wait = (wait * 2).min(LONGEST_RETRY);
                continue;
            }
        };
        if rows.is_empty() {
            tokio::select! {
                () = notified => continue,
                () = shutdown.cancelled() => return,
            }
        }
        for row in rows {
            if shutdown.is_cancelled() || !deliver_with_retries(&shared, &row, &shutdown).await {
                return;
            }
        }
    }
}

/// Delivers one row, retrying while that may succeed; `false` if stopped meanwhile.
async fn deliver_with_retries(
    shared: &Shared,
    row: &OutboxRow,
    shutdown: &CancellationToken,
) -> bool {
    let mut wait = FIRST_RETRY;
    let mapped = loop {
        match deliver(shared, row).await {
            Ok(mapped) => break mapped,
            Err(Undelivered::Never(reason)) => {
                tracing::error!(portal = %row.portal, seq = row.seq, kind = %row.kind, %reason, "remote event dropped: the homeserver refused it");
                break Vec::new();
            }
            Err(Undelivered::Later(reason)) => {
                tracing::warn!(portal = %row.portal, seq = row.seq, %reason, retry_in = ?wait, "remote event not delivered yet");
                if let Err(error) = shared.store.outbox_attempt_failed(row.seq, &reason).await {
                    tracing::warn!(%error, "cannot record a failed attempt");
                }
                if sleep_or_stop(shutdown, wait).await {
                    return false;
                }
                wait = (wait * 2).min(LONGEST_RETRY);
            }
        }
    };
    let mut wait = FIRST_RETRY;
    loop {
        match shared
            .store
            .complete_outbox(shared.network, row.seq, &mapped)
            .await
        {
            Ok(()) => return true,
            Err(error) => {
                tracing::error!(%error, "cannot record a delivered event; retrying");
                if sleep_or_stop(shutdown, wait).await {
                    return false;
                }
                wait = (wait * 2).min(LONGEST_RETRY);
            }
        }
    }
}

/// Sleeps for `wait`; `true` if shutdown came first.
async fn sleep_or_stop(shutdown: &CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(wait) => false,
        () = shutdown.cancelled() => true,
    }
}

/// Sends one queued event to its portal's room; returns what to record in the map.
async fn deliver(shared: &Shared, row: &OutboxRow) -> Result<Vec<MappedEvent>, Undelivered> {
    let event: RemoteEvent = serde_json::from_str(&row.content)
        .map_err(|error| Undelivered::Never(format!("unreadable queued event: {error}")))?;
    let (portal, _) = shared.ensure_room(&row.portal).await?;
    if let Some(id) = &event.id
        && shared
            .store
            .event_of_remote(shared.network, &row.portal, id, 0)
            .await
            .map_err(|error| Undelivered::Later(error.to_string()))?
            .is_some()
    {
        return Ok(Vec::new());
    }
    let ts = event
        .timestamp
        .and_then(|ts| UInt::try_from(ts).ok())
        .map(MilliSecondsSinceUnixEpoch);
    // Access is the chat's, set by the bot: no ghost is needed (a server may set it).
    if let RemoteEventKind::Access {
        invite_only,
        listed,
    } = &event.kind
    {
        set_access(shared, &portal, *invite_only, *listed, ts).await?;
        return Ok(Vec::new());
    }
    let ghost = shared.ensure_ghost_registered(&event.sender).await?;
    let as_ghost = shared.matrix.as_user(&ghost);
    let txn = <&TransactionId>::from(row.txn_id.as_str());
    let sent: Option<OwnedEventId> = match &event.kind {
        RemoteEventKind::Leave { reason } => {
            let left = match reason {
                Some(reason) => as_ghost.leave_with_reason(&portal.room_id, reason).await,
                None => as_ghost.leave(&portal.room_id).await,
            };
            match left {
                Ok(()) => {}
                Err(crate::matrix::MatrixError::Api { source, .. }) if source.is("M_FORBIDDEN") => {
                }
                Err(error) => return Err(error.into()),
            }
            shared.forget_joined(&portal.room_id, &ghost);
            None
        }
        kind => {
            shared.ensure_joined(&portal.room_id, &ghost).await?;
            let send_message = async |content: &serde_json::Value| {
                send(
                    shared,
                    &as_ghost,
                    &portal,
                    "m.room.message",
                    content,
                    txn,
                    ts,
                )
                .await
            };
            match kind {
                RemoteEventKind::Message(message) => {
                    let content = message_content(shared, &portal, message, row.attempts).await?;
                    Some(send_message(&content).await?)
                }
                RemoteEventKind::Edit { target, message } => {
                    let target = mapped_target(shared, &portal, target).await?;
                    let new_content =
                        message_content(shared, &portal, message, row.attempts).await?;
                    Some(send_message(&edit_content(new_content, &message.body, &target)).await?)
                }
                RemoteEventKind::Reaction { target, key } => {
                    let target = mapped_target(shared, &portal, target).await?;
                    let content = json!({ "m.relates_to": {
                        "rel_type": "m.annotation", "event_id": target, "key": key,
                    }});
                    Some(send(shared, &as_ghost, &portal, "m.reaction", &content, txn, ts).await?)
                }
                RemoteEventKind::Delete { target } => {
                    redact_parts(shared, &portal, &event, target, row).await?
                }
                RemoteEventKind::Topic { topic } => {
                    let content = json!({ "topic": topic });
                    Some(set_state(shared, &as_ghost, &portal, "m.room.topic", &content, ts).await?)
                }
                RemoteEventKind::Name { name } => {
                    let content = json!({ "name": name });
                    Some(set_state(shared, &as_ghost, &portal, "m.room.name", &content, ts).await?)
                }
                RemoteEventKind::PowerLevel { target, level } => {
                    set_power_level(shared, &portal, target, *level, ts).await?
                }
                // Handled above, by the bot alone.
                RemoteEventKind::Access { .. } => None,
                RemoteEventKind::Read { target } => {
                    let Some(target) = shared
                        .store
                        .event_of_remote(shared.network, &row.portal, target, 0)
                        .await
                        .map_err(|error| Undelivered::Later(error.to_string()))?
                    else {
                        return Ok(Vec::new());
                    };
                    let target = EventId::parse(&target.event_id)
                        .map_err(|error| Undelivered::Never(error.to_string()))?;
                    as_ghost.send_read_receipt(&portal.room_id, &target).await?;
                    None
                }
                RemoteEventKind::Join | RemoteEventKind::Leave { .. } => None,
            }
        }
    };
    Ok(match (&event.id, sent) {
        (Some(id), Some(event_id)) => vec![MappedEvent {
            remote_chat: row.portal.clone(),
            remote_id: id.clone(),
            part: 0,
            room_id: portal.room_id.to_string(),
            event_id: event_id.to_string(),
            sender: event.sender.id.clone(),
        }],
        _ => Vec::new(),
    })
}

/// Sends a message event as `user`. A ghost refused because it is no longer in the room
/// (kicked, or it left on the Matrix side) joins again and sends once more.
async fn send(
    shared: &Shared,
    user: &crate::matrix::UserHandle,
    portal: &Portal,
    event_type: &str,
    content: &serde_json::Value,
    txn: &TransactionId,
    ts: Option<MilliSecondsSinceUnixEpoch>,
) -> Result<OwnedEventId, Undelivered> {
    let event_type = event_type.into();
    match user
        .send_message_event(&portal.room_id, &event_type, content, txn, ts)
        .await
    {
        Err(crate::matrix::MatrixError::Api { source, .. }) if source.is("M_FORBIDDEN") => {
            shared.forget_joined(&portal.room_id, user.user_id());
            shared
                .ensure_joined(&portal.room_id, user.user_id())
                .await?;
            Ok(user
                .send_message_event(&portal.room_id, &event_type, content, txn, ts)
                .await?)
        }
        sent => Ok(sent?),
    }
}

/// Sets room state as the ghost, or as the bot when the ghost's power level is too low.
async fn set_state(
    shared: &Shared,
    ghost: &crate::matrix::UserHandle,
    portal: &Portal,
    event_type: &str,
    content: &serde_json::Value,
    ts: Option<MilliSecondsSinceUnixEpoch>,
) -> Result<OwnedEventId, Undelivered> {
    match ghost
        .send_state_event(&portal.room_id, &event_type.into(), "", content, ts)
        .await
    {
        Ok(event) => Ok(event),
        Err(crate::matrix::MatrixError::Api { source, .. }) if source.is("M_FORBIDDEN") => {
            Ok(shared
                .matrix
                .bot()
                .send_state_event(&portal.room_id, &event_type.into(), "", content, ts)
                .await?)
        }
        Err(error) => Err(error.into()),
    }
}

/// The content of an edit of event `target`: the new content, as `m.new_content` and
/// behind a `* ` fallback for clients without edits.
fn edit_content(new_content: serde_json::Value, body: &str, target: &EventId) -> serde_json::Value {
    let mut content = new_content.clone();
    // Those mentioned were notified by the message already: the edit itself mentions
    // nobody (the full list stays in `m.new_content`).
    if content.get("m.mentions").is_some() {
        content["m.mentions"] = json!({});
    }
    content["body"] = json!(format!("* {body}"));
    if let Some(html) = content.get("formatted_body").and_then(|h| h.as_str()) {
        content["formatted_body"] = json!(format!("* {html}"));
    }
    content["m.new_content"] = new_content;
    content["m.relates_to"] = json!({ "rel_type": "m.replace", "event_id": target });
    content
}

/// Sets the room's join rule (`invite` or `public`) unless it has it, and its listing in
/// the room directory under the network; `None` when the join rule was right. Only rooms
/// the bridge made follow the remote side: a linked room keeps the access its admins gave
/// it, and is never published by the bridge.
async fn set_access(
    shared: &Shared,
    portal: &Portal,
    invite_only: bool,
    listed: bool,
    ts: Option<MilliSecondsSinceUnixEpoch>,
) -> Result<Option<OwnedEventId>, Undelivered> {
    let bot = shared.matrix.bot();
    let create = bot
        .room_state_event(&portal.room_id, "m.room.create", "")
        .await?;
    let creator = create.as_ref().and_then(|event| event["sender"].as_str());
    if creator != Some(shared.matrix.bot_user_id().as_str()) {
        tracing::debug!(room = %portal.room_id, "a room the bridge did not make keeps its own access");
        return Ok(None);
    }
    let wanted = if invite_only { "invite" } else { "public" };
    let current = bot
        .room_state(&portal.room_id, "m.room.join_rules", "")
        .await?;
    let event = match current.as_ref().and_then(|c| c["join_rule"].as_str()) {
        Some(rule) if rule == wanted => None,
        _ => Some(
            bot.send_state_event(
                &portal.room_id,
                &"m.room.join_rules".into(),
                "",
                &json!({ "join_rule": wanted }),
                ts,
            )
            .await?,
        ),
    };
    // The listing is the appservice's own (no state event); a refusal loses nothing that
    // crosses, so it is logged rather than retried.
    if let Err(error) = bot
        .set_appservice_directory_visibility(shared.network, &portal.room_id, listed)
        .await
    {
        tracing::warn!(room = %portal.room_id, %error, "cannot change the portal's directory listing");
    }
    Ok(event)
}

/// Gives `target`'s ghost power level `level` in the portal's room, as the bot; `None`
/// when it has that level already.
async fn set_power_level(
    shared: &Shared,
    portal: &Portal,
    target: &GhostInfo,
    level: i64,
    ts: Option<MilliSecondsSinceUnixEpoch>,
) -> Result<Option<OwnedEventId>, Undelivered> {
    let user = shared.ensure_ghost_registered(target).await?;
    let bot = shared.matrix.bot();
    let mut content = bot
        .room_state(&portal.room_id, "m.room.power_levels", "")
        .await?
        .unwrap_or_else(|| json!({}));
    let users_default = content["users_default"].as_i64().unwrap_or(0);
    let current = content["users"][user.as_str()]
        .as_i64()
        .unwrap_or(users_default);
    if current == level {
        return Ok(None);
    }
    if !content["users"].is_object() {
        content["users"] = json!({});
    }
    if let Some(users) = content["users"].as_object_mut() {
        if level == users_default {
            users.remove(user.as_str());
        } else {
            users.insert(user.to_string(), json!(level));
        }
    }
    let event = bot
        .send_state_event(
            &portal.room_id,
            &"m.room.power_levels".into(),
            "",
            &content,
            ts,
        )
        .await?;
    Ok(Some(event))
}

/// The Matrix event of a bridged remote message, or why there is none.
async fn mapped_target(
    shared: &Shared,
    portal: &Portal,
    target: &str,
) -> Result<OwnedEventId, Undelivered> {
    let mapped = shared
        .store
        .event_of_remote(shared.network, &portal.remote_id, target, 0)
        .await
        .map_err(|error| Undelivered::Later(error.to_string()))?
        .ok_or_else(|| Undelivered::Never(format!("{target:?} was never bridged")))?;
    EventId::parse(&mapped.event_id).map_err(|error| Undelivered::Never(error.to_string()))
}

/// Redacts every part of the remote message `target`: as the ghost if it sent them, else
/// as the bot (a moderator's deletion).
async fn redact_parts(
    shared: &Shared,
    portal: &Portal,
    event: &RemoteEvent,
    target: &str,
    row: &OutboxRow,
) -> Result<Option<OwnedEventId>, Undelivered> {
    let mut last = None;
    for part in 0..MAX_PARTS {
        let Some(mapped) = shared
            .store
            .event_of_remote(shared.network, &portal.remote_id, target, part)
            .await
            .map_err(|error| Undelivered::Later(error.to_string()))?
        else {
            break;
        };
        let redactor = if mapped.sender == event.sender.id {
            shared
                .matrix
                .as_user(&shared.ghost_user_id(&event.sender.id)?)
        } else {
            shared.matrix.bot()
        };
        let event_id = EventId::parse(&mapped.event_id)
            .map_err(|error| Undelivered::Never(error.to_string()))?;
        let txn = transaction_id(
            shared.network,
            &row.portal,
            &row.txn_id,
            usize::try_from(part).unwrap_or_default(),
        );
        let redaction = redactor
            .redact(
                &portal.room_id,
                &event_id,
                <&TransactionId>::from(txn.as_str()),
                None,
            )
            .await?;
        last = Some(redaction);
    }
    if last.is_none() {
        return Err(Undelivered::Never(format!("{target:?} was never bridged")));
    }
    Ok(last)
}

/// How often fetching a message's file is tried before its link is sent instead.
const MEDIA_ATTEMPTS: i64 = 5;

/// The most parts one remote message is looked up in.
const MAX_PARTS: i64 = 64;

/// The `m.room.message` content of a remote message: HTML sanitized, a reply pointing at
/// the mapped event, a file uploaded.
async fn message_content(
    shared: &Shared,
    portal: &Portal,
    message: &RemoteMessage,
    attempts: i64,
) -> Result<serde_json::Value, Undelivered> {
    let mut content = json!({ "msgtype": message.kind.msgtype(), "body": message.body });
    if let Some(html) = &message.html {
        let html = crate::format::sanitize_html(html);
        // Pills are intentional mentions (`m.mentions`): those users are notified.
        let mentioned = crate::format::mentioned_users(&html);
        if !mentioned.is_empty() {
            content["m.mentions"] = json!({ "user_ids": mentioned });
        }
        content["format"] = json!("org.matrix.custom.html");
        content["formatted_body"] = json!(html);
    }
    if let Some(file) = &message.file {
        attach_file(shared, &mut content, message, file, attempts).await?;
    } else if content.to_string().len() > LONGEST_TEXT {
        content = long_text(shared, message).await?;
    }
    if let Some(reply_to) = &message.reply_to {
        match mapped_target(shared, portal, reply_to).await {
            Ok(target) => {
                content["m.relates_to"] = json!({ "m.in_reply_to": { "event_id": target } });
            }
            // A reply to something never bridged is still a message.
            Err(Undelivered::Never(_)) => {}
            Err(later) => return Err(later),
        }
    }
    Ok(content)
}

/// The largest text content sent as an event: Matrix events are limited to 64 KiB in
/// all, envelope and signatures included.
const LONGEST_TEXT: usize = 48 * 1024;

/// A message too long for one event: its start, and the whole text as a file (words are
/// never dropped because the homeserver would refuse the event).
async fn long_text(
    shared: &Shared,
    message: &RemoteMessage,
) -> Result<serde_json::Value, Undelivered> {
    let mut cut = LONGEST_TEXT / 4;
    while !message.body.is_char_boundary(cut) {
        cut -= 1;
    }
    let start = &message.body[..cut];
    match shared
        .matrix
        .bot()
        .upload_media(
            message.body.as_bytes(),
            "text/plain; charset=utf-8",
            Some("message.txt"),
        )
        .await
    {
        // With `filename` given, the body is the file's caption (Matrix 1.10).
        Ok(mxc) => Ok(json!({
            "msgtype": "m.file",
            "body": format!("{start}… (the whole message is in message.txt)"),
            "filename": "message.txt",
            "url": mxc,
            "info": { "mimetype": "text/plain", "size": message.body.len() },
        })),
        Err(error) if matrix_is_transient(&error) => Err(error.into()),
        Err(error) => {
            tracing::warn!(%error, "cannot upload a long message; sending its start");
            Ok(json!({
                "msgtype": message.kind.msgtype(),
                "body": format!("{start}… (cut: the message was too long for Matrix)"),
            }))
        }
    }
}

/// Uploads `file` and makes `content` a media message of it. A file that cannot be had
/// (refused, too big, or refused by the media repository) leaves a text message with its
/// link instead: the words are not lost with the file.
async fn attach_file(
    shared: &Shared,
    content: &mut serde_json::Value,
    message: &RemoteMessage,
    file: &crate::connector::RemoteFile,
    attempts: i64,
) -> Result<(), Undelivered> {
    let limit = shared.upload_limit.load(Ordering::Relaxed);
    let uploaded = match shared.connector.fetch_media(&file.url, limit).await {
        Ok((data, content_type)) => match shared
            .matrix
            .bot()
            .upload_media(&data, &content_type, Some(&file.name))
            .await
        {
            Ok(mxc) => Ok((mxc, content_type, data.len())),
            Err(error) if matrix_is_transient(&error) => return Err(error.into()),
            Err(error) => Err(error.to_string()),
        },
        // A file that stays out of reach must not hold its portal up for ever.
        Err(crate::connector::ConnectorError::Retry(reason)) if attempts < MEDIA_ATTEMPTS => {
            return Err(Undelivered::Later(reason));
        }
        Err(error) => Err(error.to_string()),
    };
    match uploaded {
        Ok((mxc, content_type, size)) => {
            let msgtype = match content_type.split('/').next() {
                Some("image") => "m.image",
                Some("video") => "m.video",
                Some("audio") => "m.audio",
                _ => "m.file",
            };
            content["msgtype"] = json!(msgtype);
            content["url"] = json!(mxc);
            content["filename"] = json!(file.name);
            content["info"] = json!({ "mimetype": content_type, "size": size });
        }
        Err(reason) => {
            tracing::info!(url = %file.url, %reason, "file not uploaded; sending its link");
            let body = if message.body.is_empty() {
                file.url.clone()
            } else {
                format!("{} ({})", message.body, file.url)
            };
            content["body"] = json!(body);
        }
    }
    Ok(())
}
