//! The connector API: what a protocol crate implements to become a bridge.
//!
//! A connector is the network-specific half of a bridge. It implements [`Connector`]:
//! it connects to its network when started, turns what happens there into
//! [`RemoteEvent`]s queued on a portal through the [`BridgeHandle`] it is given, and
//! carries Matrix events (already parsed, checked and mapped, see [`matrix`]) to its
//! network. The framework owns everything else: the appservice endpoint, durable and
//! ordered queues in both directions, ghosts, portal rooms, the message map, echo
//! suppression, permissions and the bot's commands.
//!
//! Adding a network is writing one [`Connector`]; `docs/writing-a-connector.md` walks
//! through the example in `bridge-core/examples/linechat`.
//!
//! [`BridgeHandle`]: crate::bridge::BridgeHandle

pub mod matrix;
pub mod remote;

use async_trait::async_trait;

pub use self::matrix::{
    MatrixEdit, MatrixMembership, MatrixMessage, MatrixReaction, MatrixRedaction, MatrixRoomChange,
    Membership, MessageKind, Portal, QuotedMessage, RemoteRef,
};
pub use self::remote::{
    DirectChat, GhostInfo, PortalInfo, RemoteEvent, RemoteEventKind, RemoteFile, RemoteMessage,
};
use crate::bridge::{BridgeHandle, CommandContext, Permission};

/// What a connector tells the framework about itself.
#[derive(Debug, Clone)]
pub struct ConnectorInfo {
    /// Short lowercase id of the network (`linechat`, `irc`): the key of its rows in the
    /// database and the appservice's third-party network id. Never change it.
    pub network: &'static str,
    /// The network's name for people (`Linechat`, `IRC`).
    pub display_name: &'static str,
    /// What the network can carry from Matrix.
    pub capabilities: Capabilities,
}

/// What a network can carry from Matrix. The framework does not hand the rest to the
/// connector: an edit, redaction or reaction is answered with a notice that the network
/// does not support it (never dropped in silence), typing and receipts are left alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Edits ([`Connector::handle_edit`]).
    pub edits: bool,
    /// Deletions ([`Connector::handle_redaction`]).
    pub redactions: bool,
    /// Reactions ([`Connector::handle_reaction`]).
    pub reactions: bool,
    /// Typing notifications ([`Connector::handle_typing`]).
    pub typing: bool,
    /// Read receipts ([`Connector::handle_receipt`]).
    pub receipts: bool,
}

/// Why a connector did not carry an event.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// A passing failure (the network is unreachable): the framework offers the same
    /// event again after a backoff, and the room's later events wait for it.
    #[error("temporarily unavailable: {0}")]
    Retry(String),
    /// The event cannot be carried (the user is banned there, the message is refused):
    /// the sender is told with a notice in the room, and the room moves on.
    #[error("{0}")]
    Refused(String),
    /// The network has no such feature.
    #[error("not supported by this network")]
    Unsupported,
}

/// A bot command a connector adds (`join`, `nick`...), as `help` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// The command word.
    pub name: &'static str,
    /// Its arguments, for help (`<channel>`).
    pub args: &'static str,
    /// One line saying what it does.
    pub summary: &'static str,
    /// The permission needed to run it.
    pub level: Permission,
}

/// The network half of a bridge. Every Matrix handler has a default that refuses with
/// [`ConnectorError::Unsupported`] (or does nothing, for what has no effect to report),
/// so a connector implements what its network supports.
///
/// Calls for one room come one at a time, in the room's order; rooms run in parallel.
/// A handler that returns remote ids lets the framework map them to the Matrix event, for
/// later edits, redactions, replies and reactions, and to recognise the event if it is
/// handed over again after a crash. Before a crash is recorded an event may be handed
/// over twice: a network that accepts a client-chosen id should be given the Matrix
/// event id, so that the repeat is recognised there.
#[async_trait]
pub trait Connector: Send + Sync + 'static {
    /// Name and capabilities.
    fn info(&self) -> ConnectorInfo;

    /// Connects to the network. Called once the homeserver answers; `bridge` is the
    /// connector's way into the framework, to keep for as long as it runs.
    async fn start(&self, bridge: BridgeHandle) -> Result<(), ConnectorError>;

    /// Disconnects, at shutdown. Queued events stay queued for the next start.
    async fn stop(&self) {}

    /// A portal room was created (from an alias query or [`BridgeHandle::create_portal`]):
    /// the time to start following the remote chat.
    ///
    /// [`BridgeHandle::create_portal`]: crate::bridge::BridgeHandle::create_portal
    async fn portal_created(&self, portal: &Portal) -> Result<(), ConnectorError> {
        let _ = portal;
        Ok(())
    }

    /// A room admin asked to bridge their room to the remote chat `address` (the `link`
    /// command, given in that room): the portal it names, with its members (its
    /// `alias_suffix`, `name`, `topic`, `avatar` and `public` are not used: the room keeps
    /// its own), or
    /// [`ConnectorError::Refused`] with a reason for people, e.g. when the network's owners
    /// of the chat have not agreed. `context.permission` is [`Permission::Admin`] for a
    /// bridge admin, whose word overrides such consent. The default cannot link.
    async fn link_portal(
        &self,
        context: &CommandContext,
        address: &str,
    ) -> Result<PortalInfo, ConnectorError> {
        let _ = (context, address);
        Err(ConnectorError::Unsupported)
    }

    /// The portal is about to be unlinked (the `unlink` command): stop following its chat.
    /// [`ConnectorError::Refused`] keeps it bridged (a static mapping of the config). The
    /// default cannot unlink.
    async fn unlink_portal(&self, portal: &Portal) -> Result<(), ConnectorError> {
        let _ = portal;
        Err(ConnectorError::Unsupported)
    }

    /// What portal the alias `#<alias_prefix><suffix>:<domain>` stands for, if any: a
    /// Matrix user joining such an alias creates the portal (a dynamic portal).
    async fn resolve_portal(&self, suffix: &str) -> Result<Option<PortalInfo>, ConnectorError> {
        let _ = suffix;
        Ok(None)
    }

    /// A Matrix user invited the ghost of remote user `ghost` to a direct chat: the portal
    /// of the direct chat between them (with [`PortalInfo::direct`] set), or `None` to
    /// decline. The invited room becomes that portal's room.
    async fn direct_portal(
        &self,
        user: &ruma::UserId,
        ghost: &str,
    ) -> Result<Option<PortalInfo>, ConnectorError> {
        let _ = (user, ghost);
        Ok(None)
    }

    /// The localpart of the ghost of remote user `id`, after the registration's ghost
    /// prefix. It must be one-to-one and reversed by [`Connector::ghost_id`]. The default
    /// is the spec's reversible escaping ([`escape_localpart`]); a network whose ids have
    /// parts (a network name and a nick) can spell them more readably.
    ///
    /// [`escape_localpart`]: crate::bridge::ids::escape_localpart
    fn ghost_localpart(&self, id: &str) -> String {
        crate::bridge::ids::escape_localpart(id)
    }

    /// The remote user id behind a ghost localpart (after the ghost prefix), if it is one
    /// [`Connector::ghost_localpart`] gives.
    fn ghost_id(&self, localpart: &str) -> Option<String> {
        crate::bridge::ids::unescape_localpart(localpart)
    }

    /// What remote user the ghost id `id` (from `@<ghost_prefix><id>:<domain>`, unescaped)
    /// stands for, if any.
    async fn resolve_ghost(&self, id: &str) -> Result<Option<GhostInfo>, ConnectorError> {
        let _ = id;
        Ok(None)
    }

    /// A message (text, notice, emote, media) from Matrix; returns the remote ids of what
    /// it became, in order (several for a message split in parts).
    async fn handle_message(
        &self,
        portal: &Portal,
        message: &MatrixMessage,
    ) -> Result<Vec<String>, ConnectorError>;

    /// An edit of a bridged message; returns remote ids to map to the edit, if any.
    async fn handle_edit(
        &self,
        portal: &Portal,
        edit: &MatrixEdit,
    ) -> Result<Vec<String>, ConnectorError> {
        let _ = (portal, edit);
        Err(ConnectorError::Unsupported)
    }

    /// A redaction of a bridged message or reaction.
    async fn handle_redaction(
        &self,
        portal: &Portal,
        redaction: &MatrixRedaction,
    ) -> Result<Vec<String>, ConnectorError> {
        let _ = (portal, redaction);
        Err(ConnectorError::Unsupported)
    }

    /// A reaction to a bridged message; returns the remote id of the reaction, so that
    /// redacting it can remove it.
    async fn handle_reaction(
        &self,
        portal: &Portal,
        reaction: &MatrixReaction,
    ) -> Result<Vec<String>, ConnectorError> {
        let _ = (portal, reaction);
        Err(ConnectorError::Unsupported)
    }

    /// A Matrix user (not a ghost) joined, left, was invited, kicked or banned.
    async fn handle_membership(
        &self,
        portal: &Portal,
        membership: &MatrixMembership,
    ) -> Result<(), ConnectorError> {
        let _ = (portal, membership);
        Ok(())
    }

    /// `sender` changed the room's name, topic or avatar.
    async fn handle_room_change(
        &self,
        portal: &Portal,
        sender: &ruma::UserId,
        change: &MatrixRoomChange,
    ) -> Result<(), ConnectorError> {
        let _ = (portal, sender, change);
        Ok(())
    }

    /// The room's power levels changed: each Matrix user's level now.
    async fn handle_power_levels(
        &self,
        portal: &Portal,
        users: &[(ruma::OwnedUserId, i64)],
    ) -> Result<(), ConnectorError> {
        let _ = (portal, users);
        Ok(())
    }

    /// A Matrix user started or stopped typing.
    async fn handle_typing(
        &self,
        portal: &Portal,
        user: &ruma::UserId,
        typing: bool,
    ) -> Result<(), ConnectorError> {
        let _ = (portal, user, typing);
        Ok(())
    }

    /// A Matrix user read up to a bridged message.
    async fn handle_receipt(
        &self,
        portal: &Portal,
        user: &ruma::UserId,
        target: &RemoteRef,
    ) -> Result<(), ConnectorError> {
        let _ = (portal, user, target);
        Ok(())
    }

    /// A Matrix user's presence changed: `online`, `unavailable` (away) or `offline`,
    /// with their status message. Presence is the user's, not a room's: a network shows
    /// it wherever their own remote identity is. Only users with the `user` permission
    /// are handed over; the same presence may come again.
    async fn handle_presence(
        &self,
        user: &ruma::UserId,
        presence: &ruma::presence::PresenceState,
        status: Option<&str>,
    ) -> Result<(), ConnectorError> {
        let _ = (user, presence, status);
        Ok(())
    }

    /// The connector's own bot commands, listed by `help`.
    fn commands(&self) -> Vec<CommandSpec> {
        Vec::new()
    }

    /// Runs one of [`Connector::commands`] (the framework checked the permission) and
    /// returns the bot's answer.
    async fn run_command(
        &self,
        context: &CommandContext,
        command: &str,
        args: &[String],
    ) -> Result<String, ConnectorError> {
        let _ = (context, command, args);
        Err(ConnectorError::Unsupported)
    }

    /// Fetches media the network refers to by `url` (an avatar, a file), within `limit`
    /// bytes: its bytes and content type. The default fetches `http(s)` URLs and decodes
    /// `data:` URLs.
    async fn fetch_media(
        &self,
        url: &str,
        limit: u64,
    ) -> Result<(Vec<u8>, String), ConnectorError> {
        crate::bridge::media::fetch(url, limit).await
    }
}
