//! The state every part of the running bridge shares, and [`BridgeHandle`], the
//! connector's view of it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use ruma::{OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, UserId};
use tokio::sync::watch;

use super::error::BridgeError;
use super::outbox::Outbox;
use crate::config::Permissions;
use crate::connector::{Connector, GhostInfo, Portal, PortalInfo, RemoteEvent, RemoteRef};
use crate::matrix::HomeserverClient;
use crate::store::{GhostRow, Store};

/// Everything the bridge's tasks share.
pub(crate) struct Shared {
    pub(crate) network: &'static str,
    pub(crate) network_name: &'static str,
    pub(crate) store: Store,
    pub(crate) matrix: HomeserverClient,
    pub(crate) domain: OwnedServerName,
    pub(crate) ghost_prefix: String,
    pub(crate) alias_prefix: String,
    pub(crate) command_prefix: String,
    pub(crate) permissions: Permissions,
    pub(crate) connector: Arc<dyn Connector>,
    /// What the connector can carry; the rest is refused without asking it.
    pub(crate) capabilities: crate::connector::Capabilities,
    pub(crate) outbox: Outbox,
    /// Ghosts as last saved, so that an unchanged profile costs no database read.
    pub(crate) ghosts: Mutex<HashMap<String, GhostRow>>,
    /// Users known to be joined to rooms, so that a join is asked for once.
    pub(crate) joined: Mutex<HashSet<(OwnedRoomId, OwnedUserId)>>,
    /// Display names of Matrix users per room, read once.
    pub(crate) display_names: Mutex<HashMap<(OwnedRoomId, OwnedUserId), Option<String>>>,
    /// Who is typing in each portal, to report changes only.
    pub(crate) typing: Mutex<HashMap<OwnedRoomId, HashSet<OwnedUserId>>>,
    /// One lock per portal whose room is being created, so that it is made once.
    pub(crate) creating: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// `None` while starting, `Some(true)` once the connector runs, `Some(false)` once
    /// stopping or failed; Matrix events wait for the connector.
    pub(crate) started: watch::Sender<Option<bool>>,
    /// The largest upload the homeserver takes.
    pub(crate) upload_limit: std::sync::atomic::AtomicU64,
    /// Seals secrets at rest with the configured `encryption.key`.
    pub(crate) secrets: crate::store::SecretBox,
    /// Signs the links of Matrix files given to the network.
    pub(crate) media_links: super::media_link::MediaLinks,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("network", &self.network)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Whether `user` is the bot or one of this bridge's ghosts: their events came from
    /// the bridge and are never bridged back.
    pub(crate) fn is_bridge_user(&self, user: &UserId) -> bool {
        user == self.matrix.bot_user_id() || self.ghost_id_of(user).is_some()
    }

    /// Waits until the connector has started; `false` if the bridge is stopping instead.
    pub(crate) async fn wait_started(&self) -> bool {
        let mut started = self.started.subscribe();
        matches!(
            started.wait_for(Option::is_some).await.map(|state| *state),
            Ok(Some(true))
        )
    }
}

/// The connector's way into the framework: portals, ghosts, the outbox, the message map
/// and its own stored state. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BridgeHandle {
    pub(crate) shared: Arc<Shared>,
}

impl BridgeHandle {
    /// The network id (the connector's [`ConnectorInfo::network`]).
    ///
    /// [`ConnectorInfo::network`]: crate::connector::ConnectorInfo::network
    pub fn network(&self) -> &'static str {
        self.shared.network
    }

    /// The homeserver client, for what the framework does not wrap.
    pub fn matrix(&self) -> &HomeserverClient {
        &self.shared.matrix
    }

    /// The database; connectors keep their own rows through [`BridgeHandle::state`] and
    /// [`BridgeHandle::set_state`], logins through [`Store::save_login`].
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Has the bot invite `user` to `portal`'s room; a user already in it (or invited)
    /// is fine.
    pub async fn invite(&self, portal: &Portal, user: &UserId) -> Result<(), BridgeError> {
        match self.shared.matrix.bot().invite(&portal.room_id, user).await {
            Ok(()) => Ok(()),
            Err(error) if error.api_error().is_some_and(|api| api.is("M_FORBIDDEN")) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// A public link to the Matrix file `mxc`, served by the bridge (signed, so it serves
    /// only files it gave out), ending in `file_name`; for networks that take files as
    /// links. `None` for an `mxc` URI that is not valid.
    pub fn media_link(&self, mxc: &ruma::MxcUri, file_name: Option<&str>) -> Option<String> {
        self.shared.media_links.link(mxc, file_name)
    }

    /// `user`'s permission on this bridge (`bridge.permissions`): a connector gives a
    /// puppet only to [`Permission::User`] and up, and relays for [`Permission::Relay`].
    ///
    /// [`Permission::User`]: crate::bridge::Permission::User
    /// [`Permission::Relay`]: crate::bridge::Permission::Relay
    pub fn permission(&self, user: &UserId) -> crate::bridge::Permission {
        self.shared.permissions.of(user)
    }

    /// What seals logins' secrets ([`Store::save_login`], [`Store::load_login`]) with
    /// the configured `encryption.key`.
    pub fn secrets(&self) -> &crate::store::SecretBox {
        &self.shared.secrets
    }

    /// The value the connector stored under `key`.
    pub async fn state(&self, key: &str) -> Result<Option<String>, BridgeError> {
        Ok(self
            .shared
            .store
            .connector_value(self.shared.network, key)
            .await?)
    }

    /// Stores `value` under `key` for the connector.
    pub async fn set_state(&self, key: &str, value: &str) -> Result<(), BridgeError> {
        Ok(self
            .shared
            .store
            .set_connector_value(self.shared.network, key, value)
            .await?)
    }

    /// Queues `event` for the portal of the remote chat `portal`, to be sent to its room
    /// in the order queued. Returns once the event is stored: from then on it survives a
    /// crash. Returns `false` (and queues nothing) if the event's id is already queued or
    /// delivered, so a connector can replay history after a restart without duplicates.
    ///
    /// The portal must be known ([`BridgeHandle::create_portal`]); if its room is still
    /// being created, the event waits for it.
    pub async fn queue(&self, portal: &str, event: &RemoteEvent) -> Result<bool, BridgeError> {
        Outbox::push(&self.shared, portal, event).await
    }

    /// [`BridgeHandle::queue`] for a connector's reader, which must not lose what it
    /// read: a passing failure (the database is away) is retried with backoff until
    /// `stop`; a chat without a portal, or an event that cannot be bridged, is logged
    /// and skipped.
    pub async fn queue_retrying(
        &self,
        portal: &str,
        event: &RemoteEvent,
        stop: &tokio_util::sync::CancellationToken,
    ) {
        tracing::debug!(%portal, kind = event.kind.name(), id = ?event.id, "queuing a remote event");
        let mut wait = std::time::Duration::from_millis(100);
        loop {
            match self.queue(portal, event).await {
                Ok(_) | Err(BridgeError::UnknownPortal(_)) => return,
                Err(error) if error.is_transient() => {
                    tracing::warn!(%error, "cannot queue a remote event; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = stop.cancelled() => return,
                    }
                    wait = (wait * 2).min(std::time::Duration::from_secs(10));
                }
                Err(error) => {
                    tracing::warn!(%error, %portal, "a remote event cannot be bridged");
                    return;
                }
            }
        }
    }

    /// Makes the portal of a remote chat: records it and creates its room, unless it
    /// exists; then calls [`Connector::portal_created`]. Returns the portal.
    pub async fn create_portal(&self, info: &PortalInfo) -> Result<Portal, BridgeError> {
        self.shared.create_portal(info).await
    }

    /// Links the existing room `room` to the chat `open` joins and describes: a static
    /// mapping of the connector's config. The bot joins the room (it must be invited, or
    /// the room public), marks it as bridged and calls [`Connector::portal_created`].
    /// While the network or the homeserver is away (`open` answers
    /// [`ConnectorError::Retry`], or a request fails for now) it tries again with backoff
    /// until `stop`; a refusal (the chat is bridged to another room, the room to another
    /// chat, the bot cannot join) is logged as an error. A mapping linked already is left
    /// as it is.
    ///
    /// [`ConnectorError::Retry`]: crate::connector::ConnectorError::Retry
    pub async fn link_mapping<F, Fut>(
        &self,
        room: &ruma::RoomOrAliasId,
        open: F,
        stop: &tokio_util::sync::CancellationToken,
    ) where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<PortalInfo, crate::connector::ConnectorError>>,
    {
        let mut wait = std::time::Duration::from_secs(1);
        loop {
            let linked = async {
                let info = open().await?;
                self.shared.link_portal(room, &info).await
            };
            let outcome = tokio::select! {
                outcome = linked => outcome,
                () = stop.cancelled() => return,
            };
            match outcome {
                Ok(_) => return,
                // A `Retry` from `open` is transient too.
                Err(error) if error.is_transient() => {
                    tracing::info!(%room, %error, "cannot link a mapped room yet; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = stop.cancelled() => return,
                    }
                    wait = (wait * 2).min(std::time::Duration::from_secs(60));
                }
                Err(error) => {
                    tracing::error!(%room, %error, "cannot link a mapped room");
                    return;
                }
            }
        }
    }

    /// Whether `room` (an id, or an alias, resolved) is the room `id`. An alias that
    /// cannot be resolved now counts as it, so that a mapping is not undone by mistake.
    pub async fn is_room(&self, room: &ruma::RoomOrAliasId, id: &RoomId) -> bool {
        match <&ruma::RoomAliasId>::try_from(room) {
            Ok(alias) => match self.shared.matrix.bot().resolve_alias(alias).await {
                Ok(Some(resolved)) => resolved == id,
                Ok(None) => false,
                Err(_) => true,
            },
            Err(_) => room.as_str() == id.as_str(),
        }
    }

    /// Ends the bridge of `portal` (its chat is gone): after [`Connector::unlink_portal`]
    /// agrees, the portal is forgotten and its ghosts and the bot leave the room.
    pub async fn unlink_portal(&self, portal: &Portal) -> Result<(), BridgeError> {
        self.shared.unlink_portal(portal).await
    }

    /// The portal of the remote chat `remote_id`, if it has a room.
    pub async fn portal(&self, remote_id: &str) -> Result<Option<Portal>, BridgeError> {
        self.shared.portal(remote_id).await
    }

    /// The portal whose room is `room`, if any.
    pub async fn portal_by_room(&self, room: &RoomId) -> Result<Option<Portal>, BridgeError> {
        self.shared.portal_by_room(room).await
    }

    /// Every portal with a room (for a connector to follow their chats again at start).
    pub async fn portals(&self) -> Result<Vec<Portal>, BridgeError> {
        self.shared.portals().await
    }

    /// Registers the ghost of a remote user if needed and brings its profile up to date;
    /// returns its Matrix id.
    pub async fn update_ghost(&self, ghost: &GhostInfo) -> Result<OwnedUserId, BridgeError> {
        self.shared.ensure_ghost(ghost).await
    }

    /// The Matrix id of the ghost of remote user `remote_id` (registered or not).
    pub fn ghost_user_id(&self, remote_id: &str) -> Result<OwnedUserId, BridgeError> {
        self.shared.ghost_user_id(remote_id)
    }

    /// The remote id behind a Matrix user, if it is one of this bridge's ghosts.
    pub fn ghost_id_of(&self, user: &UserId) -> Option<String> {
        self.shared.ghost_id_of(user)
    }

    /// Shows a remote user typing (or not) in a portal, at once (typing is not queued).
    pub async fn set_typing(
        &self,
        portal: &str,
        ghost: &GhostInfo,
        typing: bool,
    ) -> Result<(), BridgeError> {
        let Some(portal) = self.shared.portal(portal).await? else {
            return Ok(());
        };
        let user = self.shared.ensure_ghost(ghost).await?;
        self.shared.ensure_joined(&portal.room_id, &user).await?;
        self.shared
            .matrix
            .as_user(&user)
            .set_typing(&portal.room_id, typing)
            .await?;
        Ok(())
    }

    /// Sets a remote user's presence on Matrix, at once (presence is not queued):
    /// `online`, `unavailable` (away) or `offline`, with a status message if given.
    pub async fn set_presence(
        &self,
        ghost: &GhostInfo,
        presence: &str,
        status: Option<&str>,
    ) -> Result<(), BridgeError> {
        let user = self.shared.ensure_ghost(ghost).await?;
        self.shared
            .matrix
            .as_user(&user)
            .set_presence(presence, status)
            .await?;
        Ok(())
    }

    /// The Matrix event a remote message (part 0) became, if it was bridged.
    pub async fn event_of_remote(
        &self,
        portal: &str,
        remote_id: &str,
    ) -> Result<Option<RemoteRef>, BridgeError> {
        let mapped = self
            .shared
            .store
            .event_of_remote(self.shared.network, portal, remote_id, 0)
            .await?;
        mapped.map(super::dispatch::remote_ref).transpose()
    }

    /// Sends a notice from the bot to `room` (a portal or a management room).
    pub async fn notice(&self, room: &RoomId, text: &str) -> Result<(), BridgeError> {
        self.shared.bot_notice(room, text).await
    }
}
