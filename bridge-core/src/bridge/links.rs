//! Links: a Matrix room that already exists bridged to a remote chat, and the end of a
//! bridge. A room admin invites the bot and says `link <address>` there; `unlink` in a
//! portal room ends it. A connector's static mappings (rooms named in its config) are linked
//! through the same path when it starts, and refuse `unlink`.
//!
//! A room admin is whoever may change the room's power levels (in room version 12, also
//! its creators); a bridge admin may act on any room. What the remote side must agree to
//! (a channel operator's consent) is the connector's question, in
//! [`Connector::link_portal`].
//!
//! [`Connector::link_portal`]: crate::connector::Connector::link_portal

use std::sync::Arc;

use ruma::{RoomId, RoomOrAliasId, UserId};
use serde_json::json;

use super::commands::CommandContext;
use super::error::BridgeError;
use super::handle::Shared;
use crate::config::Permission;
use crate::connector::{ConnectorError, Portal, PortalInfo};
use crate::store::PortalRow;

impl Shared {
    /// Makes the existing room `room` the portal of `info`: the bot joins it, it is
    /// marked as bridged, and the connector starts following the chat. Linking a chat to
    /// the room it is linked to already does nothing.
    pub(crate) async fn link_portal(
        &self,
        room: &RoomOrAliasId,
        info: &PortalInfo,
    ) -> Result<Portal, BridgeError> {
        let room_id = self.matrix.bot().join(room).await?;
        let lock = {
            let mut creating = self.creating.lock().await;
            Arc::clone(creating.entry(info.remote_id.clone()).or_default())
        };
        let _linking = lock.lock().await;
        let existing = self.store.portal(self.network, &info.remote_id).await?;
        if let Some(bridged) = existing.as_ref().and_then(|row| row.room_id.as_deref()) {
            if bridged == room_id.as_str() {
                return self
                    .portal(&info.remote_id)
                    .await?
                    .ok_or_else(|| BridgeError::UnknownPortal(info.remote_id.clone()));
            }
            return Err(BridgeError::Refused(format!(
                "{} is bridged to another room ({bridged}) already",
                info.remote_id
            )));
        }
        if let Some(other) = self.portal_by_room(&room_id).await? {
            return Err(BridgeError::Refused(format!(
                "this room is bridged to {} already",
                other.remote_id
            )));
        }
        // The bridge cannot read encrypted messages, and would post in the clear.
        let encryption = self
            .matrix
            .bot()
            .room_state(&room_id, "m.room.encryption", "")
            .await?;
        if encryption.is_some_and(|content| content.get("algorithm").is_some()) {
            return Err(BridgeError::Refused(
                "the room is encrypted, and the bridge cannot read encrypted messages".to_owned(),
            ));
        }
        let row =
            PortalRow::with_room(&info.remote_id, room_id.as_str(), info.metadata.to_string());
        if existing.is_some() {
            // An earlier attempt at a room for this chat never made it.
            self.store.update_portal(self.network, &row).await?;
        } else {
            self.store.insert_portal(self.network, &row).await?;
        }
        self.creating.lock().await.remove(&info.remote_id);
        let portal = self
            .portal(&info.remote_id)
            .await?
            .ok_or_else(|| BridgeError::UnknownPortal(info.remote_id.clone()))?;
        tracing::info!(portal = %info.remote_id, room = %room_id, "room linked");
        let content = json!({
            "bridgebot": self.matrix.bot_user_id(),
            "protocol": { "id": self.network, "displayname": self.network_name },
            "channel": { "id": info.remote_id, "displayname": info.name },
        });
        self.set_bridge_state(&portal, &content).await;
        for member in &info.members {
            let joined = async {
                let user = self.ensure_ghost(member).await?;
                self.ensure_joined(&room_id, &user).await
            };
            if let Err(error) = joined.await {
                tracing::warn!(portal = %info.remote_id, member = %member.id, %error, "cannot join a member's ghost");
            }
        }
        if let Err(error) = self.connector.portal_created(&portal).await {
            tracing::error!(portal = %info.remote_id, %error, "the connector failed to take up a linked portal");
        }
        Ok(portal)
    }

    /// Ends the bridge of `portal`, if the connector agrees: it stops following the
    /// chat, the portal is forgotten, its ghosts and the bot leave the room, and the room
    /// is no longer marked as bridged (its portal alias, if it had one, is removed).
    pub(crate) async fn unlink_portal(&self, portal: &Portal) -> Result<(), BridgeError> {
        self.connector.unlink_portal(portal).await?;
        let row = self.store.portal(self.network, &portal.remote_id).await?;
        self.store
            .delete_portal(self.network, &portal.remote_id)
            .await?;
        tracing::info!(portal = %portal.remote_id, room = %portal.room_id, "portal unlinked");
        self.set_bridge_state(portal, &json!({})).await;
        let notice = format!("This room is no longer bridged to {}.", portal.remote_id);
        if let Err(error) = self.bot_notice(&portal.room_id, &notice).await {
            tracing::warn!(room = %portal.room_id, %error, "cannot say that the room is unlinked");
        }
        let bot = self.matrix.bot();
        if let Some(alias) = row
            .and_then(|row| row.alias)
            .and_then(|alias| ruma::OwnedRoomAliasId::try_from(alias).ok())
            && let Err(error) = bot.delete_alias(&alias).await
        {
            tracing::warn!(%alias, %error, "cannot remove an unlinked portal's alias");
        }
        let members = bot
            .joined_members(&portal.room_id)
            .await
            .unwrap_or_default();
        for member in members.iter().filter(|m| self.ghost_id_of(m).is_some()) {
            if let Err(error) = self.matrix.as_user(member).leave(&portal.room_id).await {
                tracing::warn!(ghost = %member, %error, "a ghost cannot leave an unlinked room");
            }
            self.forget_joined(&portal.room_id, member);
        }
        bot.leave(&portal.room_id).await?;
        Ok(())
    }

    /// Sets the room's `m.bridge` state (and the older `uk.half-shot.bridge`); the bot may
    /// lack the power in a linked room, which is logged and no reason to stop.
    async fn set_bridge_state(&self, portal: &Portal, content: &serde_json::Value) {
        let state_key = format!("trestle://{}/{}", self.network, portal.remote_id);
        for event_type in ["m.bridge", "uk.half-shot.bridge"] {
            if let Err(error) = self
                .matrix
                .bot()
                .send_state_event(
                    &portal.room_id,
                    &event_type.into(),
                    &state_key,
                    content,
                    None,
                )
                .await
            {
                tracing::warn!(room = %portal.room_id, %error, "cannot set the bridge state");
            }
        }
    }

    /// Whether `user` administers `room`: they may change its power levels, or created it
    /// (room version 12, where creators outrank every level).
    pub(crate) async fn is_room_admin(
        &self,
        room: &RoomId,
        user: &UserId,
    ) -> Result<bool, BridgeError> {
        Ok(self.power(room, user).await?.may_set("m.room.power_levels"))
    }
}

/// The `link <address>` command, given in the room to bridge.
pub(crate) async fn link_command(
    shared: &Shared,
    context: &CommandContext,
    args: &[String],
) -> Result<String, BridgeError> {
    if let Some(portal) = &context.portal {
        return Ok(format!(
            "This room is bridged to {} already; `unlink` it first.",
            portal.remote_id
        ));
    }
    if shared
        .store
        .management_room_owner(context.room_id.as_str())
        .await?
        .is_some()
    {
        return Ok("Invite me to the room to bridge and say `link` there.".to_owned());
    }
    let address = args.join(" ");
    if address.is_empty() {
        return Ok("Usage: `link <address>`: the remote chat to bridge this room to.".to_owned());
    }
    if let Some(refusal) = admin_refusal(shared, context).await? {
        return Ok(refusal);
    }
    let info = match shared.connector.link_portal(context, &address).await {
        Ok(info) => info,
        Err(error) => return Ok(connector_answer("linked", error)),
    };
    let remote = info.remote_id.clone();
    match shared
        .link_portal(<&RoomOrAliasId>::from(&*context.room_id), &info)
        .await
    {
        Ok(_) => Ok(format!("This room is now bridged to {remote}.")),
        Err(BridgeError::Refused(reason)) => Ok(format!("Not linked: {reason}.")),
        Err(error) => Err(error),
    }
}

/// The `unlink` command, given in a portal room.
pub(crate) async fn unlink_command(
    shared: &Shared,
    context: &CommandContext,
) -> Result<String, BridgeError> {
    let Some(portal) = &context.portal else {
        return Ok("This room is not bridged.".to_owned());
    };
    if portal.direct.is_some() {
        return Ok("A direct chat cannot be unlinked; leave it instead.".to_owned());
    }
    if let Some(refusal) = admin_refusal(shared, context).await? {
        return Ok(refusal);
    }
    match shared.unlink_portal(portal).await {
        // The bot has left; the room was told.
        Ok(()) => Ok(String::new()),
        Err(BridgeError::Connector(error)) => Ok(connector_answer("unlinked", error)),
        Err(error) => Err(error),
    }
}

/// What to answer when the connector did not link or unlink.
fn connector_answer(what: &str, error: ConnectorError) -> String {
    match error {
        ConnectorError::Unsupported => format!("This bridge cannot have rooms {what}."),
        ConnectorError::Refused(reason) => format!("Not {what}: {reason}."),
        ConnectorError::Retry(reason) => format!("Not {what} for now: {reason}. Try again later."),
    }
}

/// Why the sender may not link or unlink this room, if they may not.
async fn admin_refusal(
    shared: &Shared,
    context: &CommandContext,
) -> Result<Option<String>, BridgeError> {
    if context.permission >= Permission::Admin
        || shared
            .is_room_admin(&context.room_id, &context.sender)
            .await?
    {
        return Ok(None);
    }
    Ok(Some(
        "Only a room admin (who may change its power levels) can do that.".to_owned(),
    ))
}
