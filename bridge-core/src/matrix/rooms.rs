//! Room membership and creation: `createRoom`, joining by id or alias, inviting and
//! leaving.

use http::Method;
use ruma::{OwnedRoomId, OwnedServerName, RoomId, RoomOrAliasId, UserId};
use serde::Deserialize;
use serde_json::json;

use super::client::{ApiRequest, UserHandle, empty_object};
use super::error::MatrixError;

#[derive(Debug, Deserialize)]
struct RoomAnswer {
    room_id: OwnedRoomId,
}

impl UserHandle {
    /// Creates a room from a `createRoom` request body (as the spec's `createRoom`
    /// describes it) and returns its id.
    ///
    /// Like every request it is retried after network errors and 5xx answers; `createRoom`
    /// has no transaction id, so a retry after a failure that happened once the homeserver
    /// had acted (a lost answer, a proxy's 504) can make a second room.
    pub async fn create_room(&self, body: &serde_json::Value) -> Result<OwnedRoomId, MatrixError> {
        let request =
            ApiRequest::new(Method::POST, vec!["_matrix", "client", "v3", "createRoom"]).json(body);
        Ok(self.send::<RoomAnswer>(request).await?.room_id)
    }

    /// Joins a room by id or alias and returns its id.
    pub async fn join(&self, room: &RoomOrAliasId) -> Result<OwnedRoomId, MatrixError> {
        self.join_via(room, &[]).await
    }

    /// Joins a room by id or alias, through the given servers (the `via` parameter, for
    /// a room id the homeserver is not in yet), and returns its id.
    pub async fn join_via(
        &self,
        room: &RoomOrAliasId,
        via: &[OwnedServerName],
    ) -> Result<OwnedRoomId, MatrixError> {
        let body = empty_object();
        let mut request = ApiRequest::new(
            Method::POST,
            vec!["_matrix", "client", "v3", "join", room.as_str()],
        )
        .json(&body);
        for server in via {
            request = request.query("via", server.as_str());
        }
        Ok(self.send::<RoomAnswer>(request).await?.room_id)
    }

    /// Invites `user` to `room`.
    pub async fn invite(&self, room: &RoomId, user: &UserId) -> Result<(), MatrixError> {
        let body = json!({ "user_id": user });
        self.room_post(room, "invite", &body).await
    }

    /// Leaves `room` (or declines an invite to it).
    pub async fn leave(&self, room: &RoomId) -> Result<(), MatrixError> {
        self.room_post(room, "leave", &empty_object()).await
    }

    async fn room_post(
        &self,
        room: &RoomId,
        action: &str,
        body: &serde_json::Value,
    ) -> Result<(), MatrixError> {
        let request = ApiRequest::new(
            Method::POST,
            vec!["_matrix", "client", "v3", "rooms", room.as_str(), action],
        )
        .json(body);
        self.send::<serde_json::Value>(request).await.map(drop)
    }
}
