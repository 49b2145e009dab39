//! What is not kept in room history: typing notifications, read receipts and presence.

use http::Method;
use ruma::{EventId, RoomId};
use serde_json::json;

use super::client::{ApiRequest, UserHandle};
use super::error::MatrixError;

/// How long a typing notification lasts unless renewed or stopped.
const TYPING_TIMEOUT_MS: u64 = 30_000;

impl UserHandle {
    /// Starts or stops this user's typing notification in `room`.
    pub async fn set_typing(&self, room: &RoomId, typing: bool) -> Result<(), MatrixError> {
        let body = if typing {
            json!({ "typing": true, "timeout": TYPING_TIMEOUT_MS })
        } else {
            json!({ "typing": false })
        };
        let user = self.user_id().to_string();
        let request = ApiRequest::new(
            Method::PUT,
            vec![
                "_matrix",
                "client",
                "v3",
                "rooms",
                room.as_str(),
                "typing",
                &user,
            ],
        )
        .json(&body);
        self.send::<serde_json::Value>(request).await.map(drop)
    }

    /// Sends this user's public read receipt for `event` in `room`.
    pub async fn send_read_receipt(
        &self,
        room: &RoomId,
        event: &EventId,
    ) -> Result<(), MatrixError> {
        let body = json!({});
        let request = ApiRequest::new(
            Method::POST,
            vec![
                "_matrix",
                "client",
                "v3",
                "rooms",
                room.as_str(),
                "receipt",
                "m.read",
                event.as_str(),
            ],
        )
        .json(&body);
        self.send::<serde_json::Value>(request).await.map(drop)
    }

    /// Sets this user's presence (`online`, `offline` or `unavailable`) with an optional
    /// status message.
    pub async fn set_presence(
        &self,
        presence: &str,
        status_msg: Option<&str>,
    ) -> Result<(), MatrixError> {
        let mut body = json!({ "presence": presence });
        if let Some(status) = status_msg {
            body["status_msg"] = json!(status);
        }
        let user = self.user_id().to_string();
        let request = ApiRequest::new(
            Method::PUT,
            vec!["_matrix", "client", "v3", "presence", &user, "status"],
        )
        .json(&body);
        self.send::<serde_json::Value>(request).await.map(drop)
    }
}
