//! A small real Matrix client over the client-server API, for driving and checking a
//! homeserver from tests: log in, create and join rooms, send, and wait for events.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::{Error, Result};

/// A logged-in Matrix user.
#[derive(Debug)]
pub struct MatrixClient {
    http: reqwest::Client,
    base: String,
    user_id: OwnedUserId,
    access_token: String,
    sync: Mutex<SyncState>,
    next_txn: AtomicU64,
}

#[derive(Debug, Default)]
struct SyncState {
    since: Option<String>,
    /// Timeline events received by /sync and not yet taken by a wait.
    unseen: VecDeque<(OwnedRoomId, Value)>,
    /// Rooms this user has been invited to and not yet joined.
    invites: Vec<OwnedRoomId>,
}

impl MatrixClient {
    /// A client for a user whose access token is already known.
    pub fn from_token(base: &str, user_id: &str, access_token: &str) -> Result<Self> {
        let user_id = OwnedUserId::try_from(user_id)
            .map_err(|e| Error::Protocol(format!("bad user id {user_id:?}: {e}")))?;
        Ok(MatrixClient {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            user_id,
            access_token: access_token.to_owned(),
            sync: Mutex::new(SyncState::default()),
            next_txn: AtomicU64::new(0),
        })
    }

    /// Logs in with a password.
    pub async fn login(base: &str, user: &str, password: &str) -> Result<Self> {
        let answer = reqwest::Client::new()
            .post(format!("{base}/_matrix/client/v3/login"))
            .json(&json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": user},
                "password": password,
            }))
            .send()
            .await
            .map_err(Error::http("logging in"))?;
        let answer = checked_json(answer, "logging in").await?;
        MatrixClient::from_token(
            base,
            answer["user_id"].as_str().unwrap_or_default(),
            answer["access_token"].as_str().unwrap_or_default(),
        )
    }

    /// The user's id.
    pub fn user_id(&self) -> &ruma::UserId {
        &self.user_id
    }

    /// The access token.
    pub fn access_token(&self) -> &str {
        &self.access_token
    }

    /// Any client-server request; `path` starts at `/_matrix/...`. A non-2xx answer is
    /// an error carrying the homeserver's JSON error.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.access_token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let context = format!("{method} {path}");
        let response = request.send().await.map_err(Error::http(&context))?;
        checked_json(response, &context).await
    }

    /// Uploads `data` as a file named `filename` and returns its `mxc://` URI.
    pub async fn upload(
        &self,
        data: Vec<u8>,
        content_type: &str,
        filename: &str,
    ) -> Result<String> {
        let context = format!("uploading {filename}");
        let response = self
            .http
            .post(format!("{}/_matrix/media/v3/upload", self.base))
            .query(&[("filename", filename)])
            .bearer_auth(&self.access_token)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(data)
            .send()
            .await
            .map_err(Error::http(&context))?;
        let answer = checked_json(response, &context).await?;
        answer["content_uri"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::Protocol(format!("no content_uri in {answer}")))
    }

    /// Downloads the media `mxc` (`mxc://server/id`): its bytes and content type.
    pub async fn download(&self, mxc: &str) -> Result<(Vec<u8>, String)> {
        let context = format!("downloading {mxc}");
        let path = mxc
            .strip_prefix("mxc://")
            .ok_or_else(|| Error::Protocol(format!("not an mxc URI: {mxc}")))?;
        let response = self
            .http
            .get(format!(
                "{}/_matrix/client/v1/media/download/{path}",
                self.base
            ))
            .bearer_auth(&self.access_token)
            .send()
            .await
            .map_err(Error::http(&context))?;
        if !response.status().is_success() {
            return Err(Error::Protocol(format!("{context}: {}", response.status())));
        }
        let kind = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = response.bytes().await.map_err(Error::http(&context))?;
        Ok((bytes.to_vec(), kind))
    }

    /// Sends the texts `<prefix>0` … `<prefix><count - 1>` to `room`, one request after
    /// another, in a task of their own. Give it a session of its own (a second login), so
    /// that the caller's sync is not shared.
    pub fn spawn_texts(
        self,
        room: OwnedRoomId,
        prefix: &str,
        count: usize,
    ) -> tokio::task::JoinHandle<Result<()>> {
        let prefix = prefix.to_owned();
        tokio::spawn(async move {
            for i in 0..count {
                self.send_text(&room, &format!("{prefix}{i}")).await?;
            }
            Ok(())
        })
    }

    /// Says the user is typing in `room` (for ten seconds).
    pub async fn set_typing(&self, room: &RoomId) -> Result<()> {
        self.request(
            reqwest::Method::PUT,
            &format!("/_matrix/client/v3/rooms/{room}/typing/{}", self.user_id),
            Some(&serde_json::json!({"typing": true, "timeout": 10000})),
        )
        .await
        .map(|_| ())
    }

    /// Redacts `event` in `room`.
    pub async fn redact(&self, room: &RoomId, event: &ruma::EventId) -> Result<()> {
        self.request(
            reqwest::Method::PUT,
            &format!(
                "/_matrix/client/v3/rooms/{room}/redact/{event}/r{}",
                rand::random::<u32>()
            ),
            Some(&serde_json::json!({})),
        )
        .await
        .map(|_| ())
    }

    /// The room's `joined_members` answer: `{"joined": {user: {display_name, ...}}}`.
    pub async fn joined_members(&self, room: &RoomId) -> Result<Value> {
        self.request(
            reqwest::Method::GET,
            &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
            None,
        )
        .await
    }

    /// Creates a room from a `createRoom` body and returns its id.
    pub async fn create_room(&self, body: Value) -> Result<OwnedRoomId> {
        let answer = self
            .request(
                reqwest::Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(&body),
            )
            .await?;
        room_id_of(&answer)
    }

    /// Joins a room by id or alias and returns its id.
    pub async fn join(&self, room_id_or_alias: &str) -> Result<OwnedRoomId> {
        let path = format!("/_matrix/client/v3/join/{}", urlencode(room_id_or_alias));
        let answer = self
            .request(reqwest::Method::POST, &path, Some(&json!({})))
            .await?;
        room_id_of(&answer)
    }

    /// Invites a user to a room.
    pub async fn invite(&self, room: &RoomId, user: &str) -> Result<()> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/invite",
            urlencode(room.as_str())
        );
        self.request(
            reqwest::Method::POST,
            &path,
            Some(&json!({"user_id": user})),
        )
        .await
        .map(drop)
    }

    /// Sends a message event and returns its id.
    pub async fn send(
        &self,
        room: &RoomId,
        event_type: &str,
        content: &Value,
    ) -> Result<OwnedEventId> {
        let txn = self.next_txn.fetch_add(1, Ordering::Relaxed);
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/{}/t{}-{txn}",
            urlencode(room.as_str()),
            urlencode(event_type),
            std::process::id()
        );
        let answer = self
            .request(reqwest::Method::PUT, &path, Some(content))
            .await?;
        let event_id = answer["event_id"].as_str().unwrap_or_default();
        OwnedEventId::try_from(event_id)
            .map_err(|e| Error::Protocol(format!("bad event id in {answer}: {e}")))
    }

    /// Sends an `m.text` message.
    pub async fn send_text(&self, room: &RoomId, body: &str) -> Result<OwnedEventId> {
        self.send(
            room,
            "m.room.message",
            &json!({"msgtype": "m.text", "body": body}),
        )
        .await
    }

    /// Waits until a timeline or ephemeral event in `room` satisfies `matches`, and
    /// returns it. Events
    /// that arrive meanwhile stay queued for later waits, so a test can wait for several
    /// events in turn without missing one that came in the same sync.
    pub async fn wait_for_event(
        &self,
        room: &RoomId,
        timeout: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut state = self.sync.lock().await;
        loop {
            if let Some(index) = state
                .unseen
                .iter()
                .position(|(r, event)| r == room && matches(event))
                && let Some((_, event)) = state.unseen.remove(index)
            {
                return Ok(event);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout {
                    what: format!("an event in {room} seen by {}", self.user_id),
                    seconds: timeout.as_secs_f64(),
                });
            }
            self.sync_once(&mut state, left.min(Duration::from_secs(5)))
                .await?;
        }
    }

    /// Waits for a text message with exactly `body` in `room`.
    pub async fn wait_for_text(
        &self,
        room: &RoomId,
        body: &str,
        timeout: Duration,
    ) -> Result<Value> {
        self.wait_for_event(room, timeout, |event| {
            event["type"] == "m.room.message" && event["content"]["body"] == body
        })
        .await
    }

    /// Waits for a notice from `sender` in `room` whose body contains `text`.
    pub async fn wait_for_notice(
        &self,
        room: &RoomId,
        sender: &str,
        text: &str,
        timeout: Duration,
    ) -> Result<Value> {
        self.wait_for_event(room, timeout, |event| {
            event["sender"] == sender
                && event["content"]["msgtype"] == "m.notice"
                && event["content"]["body"]
                    .as_str()
                    .is_some_and(|body| body.contains(text))
        })
        .await
    }

    /// Every event of `room`'s timeline the user can see, oldest first, read with
    /// `/messages` (a sync's timeline can be cut short under a burst; this cannot).
    pub async fn room_events(&self, room: &RoomId) -> Result<Vec<Value>> {
        let mut events = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let mut path = format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=f&limit=1000",
                urlencode(room.as_str())
            );
            if let Some(from) = &from {
                path.push_str(&format!("&from={}", urlencode(from)));
            }
            let page = self.request(reqwest::Method::GET, &path, None).await?;
            let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
            if chunk.is_empty() {
                return Ok(events);
            }
            events.extend(chunk);
            match page["end"].as_str() {
                Some(end) => from = Some(end.to_owned()),
                None => return Ok(events),
            }
        }
    }

    /// The bodies of `sender`'s messages in `room` that start with `prefix`, in timeline
    /// order, read with `/messages` ([`MatrixClient::room_events`]).
    pub async fn bodies_from(
        &self,
        room: &RoomId,
        sender: &str,
        prefix: &str,
    ) -> Result<Vec<String>> {
        Ok(self
            .room_events(room)
            .await?
            .iter()
            .filter(|e| e["sender"] == sender && e["type"] == "m.room.message")
            .filter_map(|e| e["content"]["body"].as_str())
            .filter(|body| body.starts_with(prefix))
            .map(str::to_owned)
            .collect())
    }

    /// Waits for an invite and returns the room id.
    pub async fn wait_for_invite(&self, timeout: Duration) -> Result<OwnedRoomId> {
        let deadline = Instant::now() + timeout;
        let mut state = self.sync.lock().await;
        loop {
            if !state.invites.is_empty() {
                return Ok(state.invites.remove(0));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout {
                    what: format!("an invite for {}", self.user_id),
                    seconds: timeout.as_secs_f64(),
                });
            }
            self.sync_once(&mut state, left.min(Duration::from_secs(5)))
                .await?;
        }
    }

    async fn sync_once(&self, state: &mut SyncState, wait: Duration) -> Result<()> {
        let filter = json!({"room": {"timeline": {"limit": 1000}}}).to_string();
        let mut query = vec![
            ("timeout", wait.as_millis().to_string()),
            ("filter", filter),
        ];
        if let Some(since) = &state.since {
            query.push(("since", since.clone()));
        }
        let response = self
            .http
            .get(format!("{}/_matrix/client/v3/sync", self.base))
            .bearer_auth(&self.access_token)
            .query(&query)
            .timeout(wait + Duration::from_secs(30))
            .send()
            .await
            .map_err(Error::http("syncing"))?;
        let answer = checked_json(response, "syncing").await?;
        state.since = answer["next_batch"].as_str().map(str::to_owned);
        // Rooms left (or been kicked from) carry the events up to the leave.
        let joined = answer["rooms"]["join"].as_object().into_iter().flatten();
        let left = answer["rooms"]["leave"].as_object().into_iter().flatten();
        {
            for (room, data) in joined.chain(left) {
                let Ok(room) = OwnedRoomId::try_from(room.as_str()) else {
                    continue;
                };
                // Timeline events, then ephemeral ones (`m.typing`, `m.receipt`: these
                // have no `sender`, so waits for a sender's events never take them).
                let timeline = data["timeline"]["events"].as_array().into_iter().flatten();
                let ephemeral = data["ephemeral"]["events"].as_array().into_iter().flatten();
                for event in timeline.chain(ephemeral) {
                    state.unseen.push_back((room.clone(), event.clone()));
                }
            }
        }
        if let Some(invited) = answer["rooms"]["invite"].as_object() {
            for room in invited.keys() {
                if let Ok(room) = OwnedRoomId::try_from(room.as_str())
                    && !state.invites.contains(&room)
                {
                    state.invites.push(room);
                }
            }
        }
        Ok(())
    }
}

async fn checked_json(response: reqwest::Response, context: &str) -> Result<Value> {
    let status = response.status();
    let text = response.text().await.map_err(Error::http(context))?;
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status.is_success() {
        Ok(value)
    } else {
        Err(Error::Protocol(format!("{context}: {status} {value}")))
    }
}

fn room_id_of(answer: &Value) -> Result<OwnedRoomId> {
    let room_id = answer["room_id"].as_str().unwrap_or_default();
    OwnedRoomId::try_from(room_id)
        .map_err(|e| Error::Protocol(format!("bad room id in {answer}: {e}")))
}

/// Percent-encodes one path segment.
pub fn urlencode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}
