//! Room membership and creation: `createRoom`, joining by id or alias, inviting, leaving,
//! kicking and banning; resolving aliases; listing a room in the appservice's room
//! directory; reading room state.

use http::{Method, StatusCode};
use ruma::{OwnedRoomId, OwnedServerName, OwnedUserId, RoomAliasId, RoomId, RoomOrAliasId, UserId};
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

    /// Leaves `room`, saying why (the reason shows in the membership event).
    pub async fn leave_with_reason(&self, room: &RoomId, reason: &str) -> Result<(), MatrixError> {
        self.room_post(room, "leave", &json!({ "reason": reason }))
            .await
    }

    /// Kicks `user` from `room`, with an optional reason.
    pub async fn kick(
        &self,
        room: &RoomId,
        user: &UserId,
        reason: Option<&str>,
    ) -> Result<(), MatrixError> {
        let body = json!({ "user_id": user, "reason": reason });
        self.room_post(room, "kick", &body).await
    }

    /// Bans `user` from `room`, with an optional reason.
    pub async fn ban(
        &self,
        room: &RoomId,
        user: &UserId,
        reason: Option<&str>,
    ) -> Result<(), MatrixError> {
        let body = json!({ "user_id": user, "reason": reason });
        self.room_post(room, "ban", &body).await
    }

    /// The room an alias points to, or `None` if the alias is unknown.
    pub async fn resolve_alias(
        &self,
        alias: &RoomAliasId,
    ) -> Result<Option<OwnedRoomId>, MatrixError> {
        let request = alias_request(Method::GET, alias);
        let answer: Option<RoomAnswer> = self.send_if_found(request).await?;
        Ok(answer.map(|answer| answer.room_id))
    }

    /// Points `alias` at `room`; an alias that exists already is left as it is.
    pub async fn create_alias(
        &self,
        alias: &RoomAliasId,
        room: &RoomId,
    ) -> Result<(), MatrixError> {
        let body = json!({ "room_id": room });
        let request = alias_request(Method::PUT, alias).json(&body);
        match self.send::<serde_json::Value>(request).await {
            Ok(_) => Ok(()),
            Err(MatrixError::Api { source, .. }) if source.status == StatusCode::CONFLICT => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Removes `alias`; one that does not exist is no error.
    pub async fn delete_alias(&self, alias: &RoomAliasId) -> Result<(), MatrixError> {
        let request = alias_request(Method::DELETE, alias);
        match self.send::<serde_json::Value>(request).await {
            Ok(_) => Ok(()),
            Err(MatrixError::Api { source, .. }) if source.is("M_NOT_FOUND") => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Lists `room` in (or removes it from) the room directory under the appservice's
    /// third-party network `network_id`
    /// (`PUT /directory/list/appservice/{networkId}/{roomId}`).
    pub async fn set_appservice_directory_visibility(
        &self,
        network_id: &str,
        room: &RoomId,
        public: bool,
    ) -> Result<(), MatrixError> {
        let body = json!({ "visibility": if public { "public" } else { "private" } });
        let request = ApiRequest::new(
            Method::PUT,
            vec![
                "_matrix",
                "client",
                "v3",
                "directory",
                "list",
                "appservice",
                network_id,
                room.as_str(),
            ],
        )
        .json(&body);
        self.send::<serde_json::Value>(request).await.map(drop)
    }

    /// The content of the state event `event_type`/`state_key` in `room`, or `None` if
    /// there is none.
    pub async fn room_state(
        &self,
        room: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<serde_json::Value>, MatrixError> {
        self.state(room, event_type, state_key, None).await
    }

    /// The whole state event `event_type`/`state_key` in `room` (with its sender), or
    /// `None` if there is none.
    pub async fn room_state_event(
        &self,
        room: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<serde_json::Value>, MatrixError> {
        self.state(room, event_type, state_key, Some("event")).await
    }

    async fn state(
        &self,
        room: &RoomId,
        event_type: &str,
        state_key: &str,
        // `None`: the content, the default every homeserver knows.
        format: Option<&'static str>,
    ) -> Result<Option<serde_json::Value>, MatrixError> {
        let request = ApiRequest::new(
            Method::GET,
            vec![
                "_matrix",
                "client",
                "v3",
                "rooms",
                room.as_str(),
                "state",
                event_type,
                state_key,
            ],
        );
        let request = match format {
            Some(format) => request.query("format", format),
            None => request,
        };
        self.send_if_found(request).await
    }

    /// Event `event_id` of `room` (`GET /rooms/{room}/event/{event}`), or `None` if it
    /// is not there or not visible.
    pub async fn room_event(
        &self,
        room: &RoomId,
        event_id: &ruma::EventId,
    ) -> Result<Option<serde_json::Value>, MatrixError> {
        let request = ApiRequest::new(
            Method::GET,
            vec![
                "_matrix",
                "client",
                "v3",
                "rooms",
                room.as_str(),
                "event",
                event_id.as_str(),
            ],
        );
        self.send_if_found(request).await
    }

    /// The users joined to `room`.
    pub async fn joined_members(&self, room: &RoomId) -> Result<Vec<OwnedUserId>, MatrixError> {
        #[derive(Debug, Deserialize)]
        struct Joined {
            joined: std::collections::BTreeMap<OwnedUserId, serde_json::Value>,
        }
        let request = ApiRequest::new(
            Method::GET,
            vec![
                "_matrix",
                "client",
                "v3",
                "rooms",
                room.as_str(),
                "joined_members",
            ],
        );
        let answer: Joined = self.send(request).await?;
        Ok(answer.joined.into_keys().collect())
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

/// `user`'s power level in a room whose `m.room.power_levels` content is `levels` (the
/// room's default when they are not listed; 0 without power levels).
pub fn power_level_of(levels: &serde_json::Value, user: &UserId) -> i64 {
    levels["users"][user.as_str()]
        .as_i64()
        .or_else(|| levels["users_default"].as_i64())
        .unwrap_or(0)
}

/// A request on `alias` in the room directory (`/directory/room/{roomAlias}`).
fn alias_request(method: Method, alias: &RoomAliasId) -> ApiRequest<'_> {
    ApiRequest::new(
        method,
        vec![
            "_matrix",
            "client",
            "v3",
            "directory",
            "room",
            alias.as_str(),
        ],
    )
}
