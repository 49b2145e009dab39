//! Ghosts: registering a remote user's Matrix user once, keeping its display name and
//! avatar in step with the network (an avatar is uploaded once per source and its
//! `mxc://` URI reused), and joining it to portal rooms.

use std::sync::atomic::Ordering;

use ruma::{OwnedMxcUri, OwnedUserId, RoomId, UserId};

use super::error::BridgeError;
use super::handle::Shared;
use crate::connector::GhostInfo;
use crate::matrix::MatrixError;
use crate::store::GhostRow;

impl Shared {
    /// The Matrix id of the ghost of `remote_id`.
    pub(crate) fn ghost_user_id(&self, remote_id: &str) -> Result<OwnedUserId, BridgeError> {
        let localpart = format!(
            "{}{}",
            self.ghost_prefix,
            self.connector.ghost_localpart(remote_id)
        );
        UserId::parse_with_server_name(localpart.as_str(), &self.domain)
            .ok()
            .filter(|user| user.validate_strict().is_ok())
            .ok_or_else(|| BridgeError::InvalidRemoteId {
                id: remote_id.to_owned(),
                reason: "too long for a Matrix user id".to_owned(),
            })
    }

    /// The remote id behind `user`, if it is one of this bridge's ghosts.
    pub(crate) fn ghost_id_of(&self, user: &UserId) -> Option<String> {
        if user.server_name() != self.domain {
            return None;
        }
        let escaped = user.localpart().strip_prefix(&self.ghost_prefix)?;
        self.connector.ghost_id(escaped)
    }

    /// Registers the ghost of `info.id` if needed and sets what changed of its profile.
    pub(crate) async fn ensure_ghost(&self, info: &GhostInfo) -> Result<OwnedUserId, BridgeError> {
        let cached = self.lock_ghosts().get(&info.id).cloned();
        if let Some(row) = &cached
            && row.registered
            && profile_is_current(row, info)
        {
            return self.ghost_user_id(&row.remote_id);
        }
        let user_id = self.ghost_user_id(&info.id)?;
        let mut row = match cached {
            Some(row) => row,
            None => self
                .store
                .ghost(self.network, &info.id)
                .await?
                .unwrap_or_else(|| GhostRow {
                    remote_id: info.id.clone(),
                    user_id: user_id.to_string(),
                    display_name: None,
                    avatar_source: None,
                    avatar_mxc: None,
                    registered: false,
                    metadata: "{}".to_owned(),
                }),
        };
        let before = row.clone();
        if !row.registered {
            self.matrix.register(user_id.localpart()).await?;
            row.registered = true;
        }
        let ghost = self.matrix.as_user(&user_id);
        if let Some(name) = &info.name
            && row.display_name.as_ref() != Some(name)
        {
            ghost.set_display_name(Some(name)).await?;
            row.display_name = Some(name.clone());
        }
        // An empty source removes the avatar; one that cannot be fetched now leaves the
        // last, and is tried again when the ghost is next updated with it.
        if let Some(source) = &info.avatar
            && row.avatar_source.as_ref() != Some(source)
        {
            let mxc = self.upload_avatar(source).await;
            if mxc.is_some() || source.is_empty() {
                ghost.set_avatar_url(mxc.as_deref()).await?;
                row.avatar_source = Some(source.clone());
                row.avatar_mxc = mxc.map(|mxc| mxc.to_string());
            }
        }
        if row != before {
            self.store.save_ghost(self.network, &row).await?;
        }
        self.lock_ghosts().insert(info.id.clone(), row);
        Ok(user_id)
    }

    /// Registers the ghost of `info.id` if it is new (setting its first profile from
    /// `info`); a known ghost's profile is left alone. Queued events use this: their
    /// sender's name is a snapshot from when they were queued, and an older snapshot must
    /// not undo a later [`Shared::ensure_ghost`].
    pub(crate) async fn ensure_ghost_registered(
        &self,
        info: &GhostInfo,
    ) -> Result<OwnedUserId, BridgeError> {
        let known = match self.lock_ghosts().get(&info.id) {
            Some(row) => row.registered,
            None => false,
        };
        if known {
            return self.ghost_user_id(&info.id);
        }
        if let Some(row) = self.store.ghost(self.network, &info.id).await?
            && row.registered
        {
            let user_id = self.ghost_user_id(&row.remote_id)?;
            self.lock_ghosts().insert(info.id.clone(), row);
            return Ok(user_id);
        }
        self.ensure_ghost(info).await
    }

    /// Uploads the avatar at `source` (empty: none). A failure is logged and gives no
    /// avatar: a missing picture must not hold up messages.
    pub(crate) async fn upload_avatar(&self, source: &str) -> Option<OwnedMxcUri> {
        if source.is_empty() {
            return None;
        }
        let limit = self.upload_limit.load(Ordering::Relaxed);
        let (data, content_type) = match self.connector.fetch_media(source, limit).await {
            Ok(fetched) => fetched,
            Err(error) => {
                tracing::warn!(%source, %error, "cannot fetch an avatar");
                return None;
            }
        };
        match self
            .matrix
            .bot()
            .upload_media(&data, &content_type, None)
            .await
        {
            Ok(mxc) => Some(mxc),
            Err(error) => {
                tracing::warn!(%source, %error, "cannot upload an avatar");
                None
            }
        }
    }

    /// Joins `user` to `room` unless known to be there; if the room refuses the join, the
    /// bot invites the user first.
    pub(crate) async fn ensure_joined(
        &self,
        room: &RoomId,
        user: &UserId,
    ) -> Result<(), BridgeError> {
        let key = (room.to_owned(), user.to_owned());
        if self.lock_joined().contains(&key) {
            return Ok(());
        }
        let handle = self.matrix.as_user(user);
        match handle.join(room.into()).await {
            Ok(_) => {}
            Err(MatrixError::Api { source, .. }) if source.is("M_FORBIDDEN") => {
                self.matrix.bot().invite(room, user).await?;
                handle.join(room.into()).await?;
            }
            Err(error) => return Err(error.into()),
        }
        self.lock_joined().insert(key);
        Ok(())
    }

    /// Forgets that `user` is in `room` (they left or were removed).
    pub(crate) fn forget_joined(&self, room: &RoomId, user: &UserId) {
        self.lock_joined()
            .remove(&(room.to_owned(), user.to_owned()));
    }

    fn lock_ghosts(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, GhostRow>> {
        self.ghosts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_joined(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashSet<(ruma::OwnedRoomId, OwnedUserId)>>
    {
        self.joined
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Whether the profile in `row` is what `info` asks for (fields `info` leaves out
/// count as current).
fn profile_is_current(row: &GhostRow, info: &GhostInfo) -> bool {
    info.name
        .as_ref()
        .is_none_or(|name| row.display_name.as_ref() == Some(name))
        && info
            .avatar
            .as_ref()
            .is_none_or(|avatar| row.avatar_source.as_ref() == Some(avatar))
}
