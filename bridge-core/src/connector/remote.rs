//! What a connector tells the framework about its network: remote events queued on a
//! portal, and the portals and ghosts it describes.
//!
//! Remote events are stored in the outbox as JSON (serde) until the homeserver has them,
//! so they survive a restart.

use serde::{Deserialize, Serialize};

use super::matrix::MessageKind;

/// A remote chat, as a connector describes it to make or update its portal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortalInfo {
    /// The connector's id of the chat; unique on the network, stable.
    pub remote_id: String,
    /// The room name.
    pub name: Option<String>,
    /// The room topic.
    pub topic: Option<String>,
    /// Where the chat's avatar comes from (for [`Connector::fetch_media`]).
    ///
    /// [`Connector::fetch_media`]: super::Connector::fetch_media
    pub avatar: Option<String>,
    /// The alias suffix (after `alias_prefix`), if the portal has an alias.
    pub alias_suffix: Option<String>,
    /// Whether anyone may join the room, and it is listed in the room directory under
    /// the network.
    pub public: bool,
    /// The chat's members now, joined as ghosts when the room is made.
    pub members: Vec<GhostInfo>,
    /// Connector-owned data to keep with the portal.
    pub metadata: serde_json::Value,
    /// For a direct chat: who is in it. The remote user's ghost makes the room and invites
    /// the Matrix user; `members`, `alias_suffix` and `public` are not used.
    pub direct: Option<DirectChat>,
}

/// The two sides of a direct chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectChat {
    /// The Matrix user.
    pub user: ruma::OwnedUserId,
    /// The remote user.
    pub ghost: GhostInfo,
}

/// A remote user, as a connector describes them; `name` and `avatar` left `None` keep
/// what the ghost has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GhostInfo {
    /// The connector's id of the user; unique on the network, stable. The ghost's Matrix
    /// id is derived from it.
    pub id: String,
    /// The display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where the avatar comes from (a URL for [`Connector::fetch_media`]); an empty
    /// string removes it.
    ///
    /// [`Connector::fetch_media`]: super::Connector::fetch_media
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
}

impl GhostInfo {
    /// A user known by id only.
    pub fn id(id: impl Into<String>) -> GhostInfo {
        GhostInfo {
            id: id.into(),
            ..GhostInfo::default()
        }
    }
}

/// Something that happened in a remote chat, for its portal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteEvent {
    /// The remote id of the event (a message id), if the network gives one: queuing the
    /// same id twice, or an id already delivered, has no effect, and the message map
    /// records it for later edits, replies and reactions.
    pub id: Option<String>,
    /// Who did it.
    pub sender: GhostInfo,
    /// When, on the network (ms since the epoch); the Matrix event gets this timestamp.
    pub timestamp: Option<i64>,
    /// What happened.
    pub kind: RemoteEventKind,
}

/// What a remote event is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RemoteEventKind {
    /// A message.
    Message(RemoteMessage),
    /// An edit of the message with remote id `target`.
    Edit {
        /// The message edited.
        target: String,
        /// Its new content.
        message: RemoteMessage,
    },
    /// A deletion of the message or reaction with remote id `target`.
    Delete {
        /// What was deleted.
        target: String,
    },
    /// A reaction to the message with remote id `target`.
    Reaction {
        /// The message reacted to.
        target: String,
        /// The reaction (an emoji, usually).
        key: String,
    },
    /// The sender joined the chat.
    Join,
    /// The sender left the chat.
    Leave {
        /// Why, if said.
        reason: Option<String>,
    },
    /// The sender set the chat's topic.
    Topic {
        /// The new topic (empty: none).
        topic: String,
    },
    /// The sender renamed the chat.
    Name {
        /// The new name.
        name: String,
    },
    /// The sender has read the chat up to the message with remote id `target`: their
    /// ghost's read receipt moves there. A message that was never bridged is ignored.
    Read {
        /// The last message read.
        target: String,
    },
    /// `target`'s rank in the chat changed (an IRC channel mode, an XMPP affiliation):
    /// their ghost gets power level `level` in the room. The bot sets it; setting a
    /// level a ghost has already changes nothing.
    PowerLevel {
        /// Whose rank changed.
        target: GhostInfo,
        /// Their new power level (0: none).
        level: i64,
    },
    /// Who may join the chat, and whether it is listed, as the remote side has it now
    /// (an IRC channel's +i, +k and +s). The bot sets the room's join rule (`invite` or
    /// `public`; a no-op when it has it) and its listing in the room directory; the
    /// event's sender is not used, and no ghost is made for it.
    Access {
        /// Only those invited may join.
        invite_only: bool,
        /// The room is listed in the directory under the network.
        listed: bool,
    },
}

impl RemoteEventKind {
    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            RemoteEventKind::Message(_) => "message",
            RemoteEventKind::Edit { .. } => "edit",
            RemoteEventKind::Delete { .. } => "delete",
            RemoteEventKind::Reaction { .. } => "reaction",
            RemoteEventKind::Join => "join",
            RemoteEventKind::Leave { .. } => "leave",
            RemoteEventKind::Topic { .. } => "topic",
            RemoteEventKind::Name { .. } => "name",
            RemoteEventKind::PowerLevel { .. } => "power_level",
            RemoteEventKind::Read { .. } => "read",
            RemoteEventKind::Access { .. } => "access",
        }
    }
}

/// A message's content on the remote side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteMessage {
    /// Text, notice or emote (media kinds come from `file`).
    pub kind: MessageKind,
    /// The plain text.
    pub body: String,
    /// Matrix HTML, if the network's markup was converted (sanitized before sending).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// The remote id of the message this one replies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// A file to upload and send as the message (the body becomes its caption or name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<RemoteFile>,
}

impl RemoteMessage {
    /// A plain text message.
    pub fn text(body: impl Into<String>) -> RemoteMessage {
        RemoteMessage {
            kind: MessageKind::Text,
            body: body.into(),
            html: None,
            reply_to: None,
            file: None,
        }
    }
}

/// A file on the remote side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteFile {
    /// Where to fetch it (for [`Connector::fetch_media`]).
    ///
    /// [`Connector::fetch_media`]: super::Connector::fetch_media
    pub url: String,
    /// Its name.
    pub name: String,
}
