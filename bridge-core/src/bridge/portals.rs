//! Portals: a remote chat and its Matrix room. The room is created by the bot with the
//! bridge's state (`m.bridge` and the older `uk.half-shot.bridge`), the bot as its creator
//! (power level 100; in room version 12, creators rank above every level and must not be
//! listed), the portal's alias, and optionally a listing in the room directory under
//! the network. Creation is idempotent through the alias: a room whose creation was
//! interrupted is found again by its alias instead of being made twice.

use std::sync::Arc;

use ruma::{OwnedRoomAliasId, OwnedRoomId, RoomAliasId, RoomId, UserId};
use serde_json::json;

use super::error::BridgeError;
use super::handle::Shared;
use crate::connector::{GhostInfo, Portal, PortalInfo};
use crate::matrix::MatrixError;
use crate::store::PortalRow;

impl Shared {
    /// The portal of `remote_id`, if it has a room.
    pub(crate) async fn portal(&self, remote_id: &str) -> Result<Option<Portal>, BridgeError> {
        let row = self.store.portal(self.network, remote_id).await?;
        Ok(row.and_then(|row| portal_of(&row)))
    }

    /// The portal whose room is `room`.
    pub(crate) async fn portal_by_room(
        &self,
        room: &RoomId,
    ) -> Result<Option<Portal>, BridgeError> {
        let row = self
            .store
            .portal_by_room(self.network, room.as_str())
            .await?;
        Ok(row.and_then(|row| portal_of(&row)))
    }

    /// Every portal with a room.
    pub(crate) async fn portals(&self) -> Result<Vec<Portal>, BridgeError> {
        let rows = self.store.portals_with_rooms(self.network).await?;
        Ok(rows.iter().filter_map(portal_of).collect())
    }

    /// The full alias of a portal alias suffix.
    pub(crate) fn portal_alias(&self, suffix: &str) -> Result<OwnedRoomAliasId, BridgeError> {
        let alias = format!("#{}{}:{}", self.alias_prefix, suffix, self.domain);
        RoomAliasId::parse(&alias).map_err(|error| BridgeError::InvalidRemoteId {
            id: suffix.to_owned(),
            reason: error.to_string(),
        })
    }

    /// Records the portal of `info` and creates its room unless it has one; members are
    /// joined and the connector told once the room is new.
    pub(crate) async fn create_portal(&self, info: &PortalInfo) -> Result<Portal, BridgeError> {
        let alias = info
            .alias_suffix
            .as_deref()
            .map(|suffix| self.portal_alias(suffix))
            .transpose()?;
        let row = PortalRow {
            remote_id: info.remote_id.clone(),
            room_id: None,
            alias: alias.as_ref().map(ToString::to_string),
            name: info.name.clone(),
            topic: info.topic.clone(),
            avatar_url: None,
            avatar_source: info.avatar.clone(),
            public: info.public,
            metadata: info.metadata.to_string(),
            direct_user: info.direct.as_ref().map(|d| d.user.to_string()),
            direct_ghost: info.direct.as_ref().map(|d| d.ghost.id.clone()),
        };
        if let Some(direct) = &info.direct {
            // The ghost makes the room: register it with its profile first.
            self.ensure_ghost(&direct.ghost).await?;
        }
        self.store.insert_portal(self.network, &row).await?;
        let (portal, created) = self.ensure_room(&info.remote_id).await?;
        if created {
            for member in &info.members {
                let joined = async {
                    let user = self.ensure_ghost(member).await?;
                    self.ensure_joined(&portal.room_id, &user).await
                };
                if let Err(error) = joined.await {
                    tracing::warn!(portal = %info.remote_id, member = %member.id, %error, "cannot join a member's ghost");
                }
            }
        }
        Ok(portal)
    }

    /// The portal of `remote_id` with its room, creating the room if it has none yet
    /// (once, whoever asks first; the others wait) and then telling the connector.
    /// Returns whether it was created now.
    pub(crate) async fn ensure_room(&self, remote_id: &str) -> Result<(Portal, bool), BridgeError> {
        let lock = {
            let mut creating = self.creating.lock().await;
            Arc::clone(creating.entry(remote_id.to_owned()).or_default())
        };
        let _creating = lock.lock().await;
        let mut row = self
            .store
            .portal(self.network, remote_id)
            .await?
            .ok_or_else(|| BridgeError::UnknownPortal(remote_id.to_owned()))?;
        if let Some(portal) = portal_of(&row) {
            return Ok((portal, false));
        }
        let room_id = self.create_room(&mut row).await?;
        row.room_id = Some(room_id.to_string());
        self.store.update_portal(self.network, &row).await?;
        self.creating.lock().await.remove(remote_id);
        tracing::info!(portal = %remote_id, room = %room_id, "portal room created");
        let portal =
            portal_of(&row).ok_or_else(|| BridgeError::UnknownPortal(remote_id.to_owned()))?;
        // The room exists whatever the connector answers; a failure is logged.
        if let Err(error) = self.connector.portal_created(&portal).await {
            tracing::error!(portal = %remote_id, %error, "the connector failed to take up a new portal");
        }
        Ok((portal, true))
    }

    /// Creates the room of `row` (finding it by alias if an earlier attempt made it).
    async fn create_room(&self, row: &mut PortalRow) -> Result<OwnedRoomId, BridgeError> {
        if let (Some(user), Some(ghost)) = (&row.direct_user, &row.direct_ghost) {
            return self.create_direct_room(&row.remote_id, user, ghost).await;
        }
        let bot = self.matrix.bot();
        let alias = row
            .alias
            .as_deref()
            .map(RoomAliasId::parse)
            .transpose()
            .map_err(|error| BridgeError::InvalidRemoteId {
                id: row.remote_id.clone(),
                reason: error.to_string(),
            })?;
        // No lookup of the alias first: for an alias that does not exist, the homeserver
        // would ask the bridge (the alias is in its namespace), and this may run inside that
        // very question. `M_ROOM_IN_USE` below tells that the room exists.
        let public = row.public;
        let bridge_state = json!({
            "bridgebot": self.matrix.bot_user_id(),
            "protocol": { "id": self.network, "displayname": self.network_name },
            "channel": { "id": row.remote_id, "displayname": row.name },
        });
        let state_key = format!("trestle://{}/{}", self.network, row.remote_id);
        let mut initial_state = vec![
            json!({ "type": "m.bridge", "state_key": state_key, "content": bridge_state }),
            json!({ "type": "uk.half-shot.bridge", "state_key": state_key, "content": bridge_state }),
        ];
        if let Some(source) = row.avatar_source.clone()
            && let Some(mxc) = self.upload_avatar(&source).await
        {
            initial_state.push(
                json!({ "type": "m.room.avatar", "state_key": "", "content": { "url": mxc } }),
            );
            row.avatar_url = Some(mxc.to_string());
        }
        let mut body = json!({
            "visibility": "private",
            "preset": if public { "public_chat" } else { "private_chat" },
            "initial_state": initial_state,
        });
        if let Some(name) = &row.name {
            body["name"] = json!(name);
        }
        if let Some(topic) = &row.topic {
            body["topic"] = json!(topic);
        }
        if let Some(alias) = &alias {
            body["room_alias_name"] = json!(alias.alias());
        }
        let room = match bot.create_room(&body).await {
            Ok(room) => room,
            // The alias is taken: an interrupted earlier attempt made the room.
            Err(MatrixError::Api { source, .. }) if source.is("M_ROOM_IN_USE") => {
                let found = match &alias {
                    Some(alias) => bot.resolve_alias(alias).await?,
                    None => None,
                };
                found.ok_or_else(|| BridgeError::InvalidRemoteId {
                    id: row.remote_id.clone(),
                    reason: "its alias is in use by a room the bridge cannot find".to_owned(),
                })?
            }
            Err(error) => return Err(error.into()),
        };
        if public
            && let Err(error) = bot
                .set_appservice_directory_visibility(self.network, &room, true)
                .await
        {
            tracing::warn!(%room, %error, "cannot list the portal in the room directory");
        }
        Ok(room)
    }

    /// Creates a direct chat: the remote user's ghost makes a private room, marked as
    /// bridged, and invites the Matrix user to it as a direct chat.
    async fn create_direct_room(
        &self,
        remote_id: &str,
        user: &str,
        ghost: &str,
    ) -> Result<OwnedRoomId, BridgeError> {
        let ghost = self.ensure_ghost_registered(&GhostInfo::id(ghost)).await?;
        let bridge_state = json!({
            "bridgebot": self.matrix.bot_user_id(),
            "protocol": { "id": self.network, "displayname": self.network_name },
            "channel": { "id": remote_id },
        });
        let state_key = format!("trestle://{}/{}", self.network, remote_id);
        let body = json!({
            "visibility": "private",
            "preset": "trusted_private_chat",
            "is_direct": true,
            "invite": [user],
            "initial_state": [
                { "type": "m.bridge", "state_key": state_key, "content": bridge_state },
                { "type": "uk.half-shot.bridge", "state_key": state_key, "content": bridge_state },
            ],
        });
        let room = self.matrix.as_user(&ghost).create_room(&body).await?;
        self.joined
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((room.clone(), ghost));
        Ok(room)
    }

    /// Sends a notice from the bot.
    pub(crate) async fn bot_notice(&self, room: &RoomId, text: &str) -> Result<(), BridgeError> {
        let content = json!({ "msgtype": "m.notice", "body": text });
        let txn = ruma::OwnedTransactionId::from(format!("notice.{:016x}", rand::random::<u64>()));
        self.matrix
            .bot()
            .send_message_event(room, &"m.room.message".into(), &content, &txn, None)
            .await?;
        Ok(())
    }
}

/// The portal of a row that has a room.
fn portal_of(row: &PortalRow) -> Option<Portal> {
    let room_id = RoomId::parse(row.room_id.as_deref()?).ok()?;
    let direct = match (&row.direct_user, &row.direct_ghost) {
        (Some(user), Some(ghost)) => Some((UserId::parse(user).ok()?, ghost.clone())),
        _ => None,
    };
    Some(Portal {
        remote_id: row.remote_id.clone(),
        room_id,
        metadata: serde_json::from_str(&row.metadata).unwrap_or_default(),
        direct,
    })
}
