//! Sending events: message events with a caller-chosen transaction id (the homeserver
//! answers a repeated id with the event it already made, so a deterministic id makes a
//! retried or replayed send land once), state events, and redactions. The `ts` query
//! parameter, allowed for appservices, sets `origin_server_ts` to a remote timestamp.

use http::Method;
use ruma::events::{MessageLikeEventType, StateEventType};
use ruma::{EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, RoomId, TransactionId};
use serde::Deserialize;
use serde_json::json;

use super::client::{ApiRequest, UserHandle};
use super::error::MatrixError;

#[derive(Debug, Deserialize)]
struct EventAnswer {
    event_id: OwnedEventId,
}

impl UserHandle {
    /// Sends a message event (`PUT /rooms/{room}/send/{type}/{txn_id}`) and returns its id.
    ///
    /// Sending again with the same `txn_id` to the same room and event type returns the
    /// same event id without a second event. `ts` sets the event's `origin_server_ts`.
    ///
    /// Synapse (1.163) keys this on the request path and the appservice, *not* on the
    /// masqueraded user, and keeps it in memory for 30 to 60 minutes: transaction ids
    /// must be unique across all the appservice's users in a room (derive them from the
    /// remote message's id, not from a per-ghost counter), and a repeat after a
    /// homeserver restart or that window makes a second event.
    pub async fn send_message_event(
        &self,
        room: &RoomId,
        event_type: &MessageLikeEventType,
        content: &serde_json::Value,
        txn_id: &TransactionId,
        ts: Option<MilliSecondsSinceUnixEpoch>,
    ) -> Result<OwnedEventId, MatrixError> {
        let event_type = event_type.to_string();
        self.put_room_event(room, &["send", &event_type, txn_id.as_str()], content, ts)
            .await
    }

    /// Sends a state event (`PUT /rooms/{room}/state/{type}/{state_key}`) and returns its
    /// id. `ts` sets the event's `origin_server_ts`.
    pub async fn send_state_event(
        &self,
        room: &RoomId,
        event_type: &StateEventType,
        state_key: &str,
        content: &serde_json::Value,
        ts: Option<MilliSecondsSinceUnixEpoch>,
    ) -> Result<OwnedEventId, MatrixError> {
        let event_type = event_type.to_string();
        self.put_room_event(room, &["state", &event_type, state_key], content, ts)
            .await
    }

    /// `PUT /_matrix/client/v3/rooms/{room}/{rest...}` with `content` as the body and
    /// `ts` as the remote timestamp: message and state events are sent the same way.
    async fn put_room_event(
        &self,
        room: &RoomId,
        rest: &[&str],
        content: &serde_json::Value,
        ts: Option<MilliSecondsSinceUnixEpoch>,
    ) -> Result<OwnedEventId, MatrixError> {
        let mut segments = vec!["_matrix", "client", "v3", "rooms", room.as_str()];
        segments.extend_from_slice(rest);
        let mut request = ApiRequest::new(Method::PUT, segments).json(content);
        if let Some(ts) = ts {
            request = request.query("ts", ts.get().to_string());
        }
        Ok(self.send::<EventAnswer>(request).await?.event_id)
    }

    /// Redacts `event` in `room` (`PUT /rooms/{room}/redact/{event}/{txn_id}`) and returns
    /// the redaction's id; the transaction id makes a repeat land once, as for messages.
    pub async fn redact(
        &self,
        room: &RoomId,
        event: &EventId,
        txn_id: &TransactionId,
        reason: Option<&str>,
    ) -> Result<OwnedEventId, MatrixError> {
        let body = match reason {
            Some(reason) => json!({ "reason": reason }),
            None => json!({}),
        };
        let request = ApiRequest::new(
            Method::PUT,
            vec![
                "_matrix",
                "client",
                "v3",
                "rooms",
                room.as_str(),
                "redact",
                event.as_str(),
                txn_id.as_str(),
            ],
        )
        .json(&body);
        Ok(self.send::<EventAnswer>(request).await?.event_id)
    }
}
