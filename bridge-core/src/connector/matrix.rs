//! Matrix events as a connector receives them: parsed, with reply fallbacks stripped and
//! HTML sanitized, and their targets already looked up in the message map.

use ruma::{OwnedEventId, OwnedMxcUri, OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};

use crate::bridge::Permission;

/// A portal: a remote chat and its Matrix room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Portal {
    /// The connector's id of the remote chat.
    pub remote_id: String,
    /// The Matrix room.
    pub room_id: OwnedRoomId,
    /// Connector-owned data kept with the portal (JSON).
    pub metadata: serde_json::Value,
    /// For a direct chat: the Matrix user and the remote user's id.
    pub direct: Option<(OwnedUserId, String)>,
}

/// The kind of a message, on either side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// `m.text`.
    Text,
    /// `m.notice`: said by a bot; networks that have notices keep them apart.
    Notice,
    /// `m.emote`: `/me does something`.
    Emote,
    /// `m.image`.
    Image,
    /// `m.file`.
    File,
    /// `m.video`.
    Video,
    /// `m.audio`.
    Audio,
    /// Any other msgtype, by name.
    Other(String),
}

impl MessageKind {
    /// The kind of a Matrix `msgtype`.
    pub fn from_msgtype(msgtype: &str) -> MessageKind {
        match msgtype {
            "m.text" => MessageKind::Text,
            "m.notice" => MessageKind::Notice,
            "m.emote" => MessageKind::Emote,
            "m.image" => MessageKind::Image,
            "m.file" => MessageKind::File,
            "m.video" => MessageKind::Video,
            "m.audio" => MessageKind::Audio,
            other => MessageKind::Other(other.to_owned()),
        }
    }

    /// The Matrix `msgtype`.
    pub fn msgtype(&self) -> &str {
        match self {
            MessageKind::Text => "m.text",
            MessageKind::Notice => "m.notice",
            MessageKind::Emote => "m.emote",
            MessageKind::Image => "m.image",
            MessageKind::File => "m.file",
            MessageKind::Video => "m.video",
            MessageKind::Audio => "m.audio",
            MessageKind::Other(other) => other,
        }
    }

    /// Whether the message carries media.
    pub fn is_media(&self) -> bool {
        matches!(
            self,
            MessageKind::Image | MessageKind::File | MessageKind::Video | MessageKind::Audio
        )
    }
}

/// A bridged message on the remote side, found through the message map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRef {
    /// The remote message id.
    pub remote_id: String,
    /// The part (0 unless a message was split).
    pub part: i64,
    /// Who sent it: a Matrix user id if it came from Matrix, else the remote user's id.
    pub sender: String,
    /// The Matrix event it is.
    pub event_id: OwnedEventId,
}

/// The message a reply answers, as Matrix has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotedMessage {
    /// Its plain body, its own reply fallback removed.
    pub body: String,
    /// When it was sent (ms since the epoch).
    pub timestamp: i64,
}

/// A Matrix message for the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixMessage {
    /// The event; give it to the network as the message id where it takes one.
    pub event_id: OwnedEventId,
    /// Who sent it.
    pub sender: OwnedUserId,
    /// The sender's display name in the room, if known.
    pub sender_name: Option<String>,
    /// The sender's permission on this bridge.
    pub permission: Permission,
    /// Text, notice, emote or media.
    pub kind: MessageKind,
    /// The plain body, reply fallback removed (for media: the file name or caption).
    pub body: String,
    /// The HTML body, sanitized, reply fallback removed, if the message had one.
    pub html: Option<String>,
    /// The bridged message this one replies to.
    pub reply_to: Option<RemoteRef>,
    /// What that message said and when, for networks that quote an old one.
    pub reply_original: Option<QuotedMessage>,
    /// The media, for media messages.
    pub media: Option<MatrixMedia>,
    /// Users the message mentions.
    pub mentions: Vec<OwnedUserId>,
    /// When it was sent (ms since the epoch).
    pub timestamp: i64,
}

/// Media attached to a Matrix message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixMedia {
    /// Where it is.
    pub url: OwnedMxcUri,
    /// Its content type, if given.
    pub mimetype: Option<String>,
    /// Its size in bytes, if given.
    pub size: Option<u64>,
    /// Its file name, if given.
    pub filename: Option<String>,
}

/// An edit of a bridged message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixEdit {
    /// The edit event.
    pub event_id: OwnedEventId,
    /// Who edited.
    pub sender: OwnedUserId,
    /// The message edited (its first part).
    pub target: RemoteRef,
    /// The new content (its `m.new_content`), with `event_id` that of the edit.
    pub new_content: MatrixMessage,
}

/// A redaction of a bridged message or reaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixRedaction {
    /// The redaction event.
    pub event_id: OwnedEventId,
    /// Who redacted.
    pub sender: OwnedUserId,
    /// What was redacted: every remote part it maps to.
    pub targets: Vec<RemoteRef>,
    /// The reason given.
    pub reason: Option<String>,
}

/// A reaction to a bridged message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixReaction {
    /// The reaction event.
    pub event_id: OwnedEventId,
    /// Who reacted.
    pub sender: OwnedUserId,
    /// The message reacted to.
    pub target: RemoteRef,
    /// The reaction (an emoji, usually).
    pub key: String,
}

/// A membership change on Matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// Joined the room.
    Join,
    /// Left on their own.
    Leave,
    /// Was invited.
    Invite,
    /// Was removed by someone else.
    Kick,
    /// Was banned.
    Ban,
}

/// A Matrix user's membership change in a portal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixMembership {
    /// The member event.
    pub event_id: OwnedEventId,
    /// Who made the change (the kicker, for a kick).
    pub sender: OwnedUserId,
    /// Whose membership changed (a Matrix user or one of the bridge's ghosts, when a
    /// Matrix user invites, kicks or bans a ghost).
    pub target: OwnedUserId,
    /// The remote id of `target` when it is a ghost.
    pub target_ghost: Option<String>,
    /// The new membership.
    pub membership: Membership,
    /// The target's display name in the room.
    pub display_name: Option<String>,
    /// The reason given.
    pub reason: Option<String>,
}

/// A change of a portal room's name, topic or avatar on Matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatrixRoomChange {
    /// The name (`None`: removed).
    Name(Option<String>),
    /// The topic (`None`: removed).
    Topic(Option<String>),
    /// The avatar (`None`: removed).
    Avatar(Option<OwnedMxcUri>),
}
