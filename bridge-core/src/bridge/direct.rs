//! Direct chats with remote users, started from Matrix: a Matrix user invites a ghost to
//! a direct chat, the connector names the portal of that pair, and the ghost joins. (From
//! the remote side, the connector creates the portal with [`PortalInfo::direct`], and the
//! ghost makes the room.)
//!
//! [`PortalInfo::direct`]: crate::connector::PortalInfo::direct

use std::sync::Arc;

use ruma::{RoomId, UserId};

use super::error::BridgeError;
use super::handle::Shared;
use crate::bridge::Permission;
use crate::store::PortalRow;

/// `sender` invited `ghost` (the ghost of remote user `remote`) to `room`, which is no
/// portal. A direct chat from a user with the `user` permission becomes the portal the
/// connector names; anything else is declined.
pub(crate) async fn ghost_invited(
    shared: &Arc<Shared>,
    room: &RoomId,
    sender: &UserId,
    ghost: &UserId,
    remote: &str,
    is_direct: bool,
) -> Result<(), BridgeError> {
    let as_ghost = shared.matrix.as_user(ghost);
    let decline = async |reason: &str| -> Result<(), BridgeError> {
        tracing::info!(%room, %sender, %ghost, reason, "invite to a ghost declined");
        as_ghost.leave_with_reason(room, reason).await?;
        Ok(())
    };
    if !is_direct {
        return decline("only direct chats are bridged").await;
    }
    if shared.permissions.of(sender) < Permission::User {
        return decline("you may not start chats on this bridge").await;
    }
    let info = match shared.connector.direct_portal(sender, remote).await {
        Ok(Some(info)) if info.direct.is_some() => info,
        Ok(_) => return decline("this user cannot be reached in a direct chat").await,
        Err(error) => {
            tracing::warn!(%error, "the connector failed to open a direct chat");
            return decline(&format!("cannot open the chat: {error}")).await;
        }
    };
    let direct = info.direct.as_ref();
    let row = PortalRow {
        direct_user: direct.map(|d| d.user.to_string()),
        direct_ghost: direct.map(|d| d.ghost.id.clone()),
        ..PortalRow::with_room(&info.remote_id, room.as_str(), info.metadata.to_string())
    };
    // A new direct chat with the same person replaces the last one.
    match shared.store.portal(shared.network, &row.remote_id).await? {
        Some(_) => shared.store.update_portal(shared.network, &row).await?,
        None => shared.store.insert_portal(shared.network, &row).await?,
    }
    if let Some(direct) = direct {
        shared.ensure_ghost(&direct.ghost).await?;
    }
    as_ghost.join(room.into()).await?;
    shared
        .joined
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert((room.to_owned(), ghost.to_owned()));
    tracing::info!(portal = %row.remote_id, %room, "direct chat opened from Matrix");
    Ok(())
}
