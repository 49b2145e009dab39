//! The XMPP connector: what bridge-core asks of the XMPP side, carried out by the
//! [`Gateway`].

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use bridge_core::bridge::{BridgeHandle, CommandContext, Permission};
use bridge_core::connector::{
    Capabilities, Connector, ConnectorError, ConnectorInfo, GhostInfo, MatrixEdit,
    MatrixMembership, MatrixMessage, MatrixReaction, MatrixRedaction, MatrixRoomChange, Membership,
    MessageKind, Portal, PortalInfo, RemoteRef,
};
use bridge_core::format::html_to_text;
use tokio_xmpp::jid::BareJid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::message::Id;
use tokio_xmpp::parsers::message_correct::Replace;
use tokio_xmpp::parsers::oob::Oob;
use tokio_xmpp::parsers::reactions::{Reaction, Reactions};

use crate::config::XmppConfig;
use crate::gateway::{AVATAR_SOURCE, Gateway, To, parse_reaction_id, reaction_id};
use crate::ids::{GhostId, parse_room_address, room_of_alias};
use crate::payloads::{Fallback, FallbackBody, NS_REPLY, NS_RETRACT, Reply, Retract};
use crate::styling::Styling;

/// The XMPP connector.
#[derive(Debug)]
pub struct XmppConnector {
    gateway: Arc<Gateway>,
    trusted_media_hosts: Vec<String>,
}

impl XmppConnector {
    /// A connector for `config`.
    pub fn new(config: XmppConfig) -> XmppConnector {
        XmppConnector {
            trusted_media_hosts: config.trusted_media_hosts.clone(),
            gateway: Gateway::new(config),
        }
    }

    /// Refuses what only a user's own XMPP identity can do, for relayed users.
    fn needs_identity(&self, user: &ruma::UserId) -> Result<(), ConnectorError> {
        if self.gateway.bridge().permission(user) < Permission::User {
            return Err(ConnectorError::Refused(
                "relayed messages cannot be edited, retracted or reacted to on XMPP".to_owned(),
            ));
        }
        Ok(())
    }

    /// Where a portal's messages go: its group chat, or the other user of a direct chat.
    fn to(portal: &Portal) -> Result<To, ConnectorError> {
        if let Some((_, ghost)) = &portal.direct {
            return match GhostId::parse(ghost) {
                Some(GhostId::Jid(jid)) => Ok(To::Chat(jid)),
                _ => Err(ConnectorError::Refused(format!(
                    "the direct chat {} is with no XMPP address",
                    portal.remote_id
                ))),
            };
        }
        Self::room(portal).map(To::Room)
    }

    /// The group chat of a portal.
    fn room(portal: &Portal) -> Result<BareJid, ConnectorError> {
        BareJid::new(&portal.remote_id).map_err(|error| {
            ConnectorError::Refused(format!(
                "the portal {} is no XMPP address: {error}",
                portal.remote_id
            ))
        })
    }
}

/// The body and payloads of a Matrix message on XMPP: an emote as `/me`, a file as its
/// link in the body and as an out-of-band link (XEP-0066), which clients show inline; a
/// reply as a reply (XEP-0461) whose `nick: ` prefix is marked as the fallback for
/// clients without replies.
fn message_content(gateway: &Gateway, to: &To, message: &MatrixMessage) -> (String, Vec<Element>) {
    let room = to.scope();
    let bridge = gateway.bridge();
    // Formatting goes as message styling (XEP-0393), which XMPP clients show.
    let text = match &message.html {
        Some(html) if message.media.is_none() => html_to_text(html, &Styling),
        _ => message.body.clone(),
    };
    let mut body = match message.kind {
        MessageKind::Emote => format!("/me {text}"),
        _ => text,
    };
    let mut payloads = Vec::new();
    if let Some(media) = &message.media {
        let name = media.filename.as_deref().unwrap_or(message.body.as_str());
        let link = bridge
            .media_link(&media.url, Some(name))
            .unwrap_or_else(|| media.url.to_string());
        body = if message.body == name {
            link.clone()
        } else {
            format!("{}\n{link}", message.body)
        };
        payloads.push(
            Oob {
                url: link,
                desc: Some(name.to_owned()),
            }
            .into(),
        );
    }
    if let Some(reply) = &message.reply_to {
        let nick = match to {
            To::Room(room) => gateway.nick_of_sender(room, &reply.sender),
            To::Chat(_) => None,
        };
        payloads.push(
            Reply {
                to: nick
                    .as_ref()
                    .and_then(|nick| room.with_resource_str(nick).ok())
                    .map(|jid| jid.to_string()),
                id: gateway.room_stanza_id(room, &reply.remote_id),
            }
            .into(),
        );
        // An emote keeps `/me ` first, so it has no `nick: ` prefix.
        if let Some(nick) = nick.filter(|_| message.kind != MessageKind::Emote) {
            let prefix = format!("{nick}: ");
            payloads.push(
                Fallback {
                    for_: NS_REPLY.to_owned(),
                    bodies: vec![FallbackBody {
                        start: Some(0),
                        end: Some(prefix.chars().count()),
                    }],
                }
                .into(),
            );
            body = prefix + &body;
        }
    }
    // The same formatting as XHTML-IM (XEP-0071) for clients that render it; an emote
    // or a reply is not, as its `/me ` or `nick: ` is in the body alone.
    if let Some(html) = &message.html
        && message.media.is_none()
        && message.kind != MessageKind::Emote
        && message.reply_to.is_none()
        && let Some(xhtml) = crate::xhtml::from_matrix_html(html)
    {
        payloads.push(xhtml);
    }
    (body, payloads)
}

/// Whether `url`'s host (or host and port) is one of `trusted`; a URL with user
/// information never is.
fn is_trusted(url: &str, trusted: &[String]) -> bool {
    // Parsed as the fetch parses it, so that both see the same host.
    let Ok(url) = url::Url::parse(url) else {
        return false;
    };
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return false;
    };
    let with_port = format!("{host}:{port}");
    url.username().is_empty()
        && url.password().is_none()
        && trusted.iter().any(|trusted| {
            trusted.eq_ignore_ascii_case(host) || trusted.eq_ignore_ascii_case(&with_port)
        })
}

/// How a relayed Matrix user is named on XMPP: their display name on one line, at most
/// 32 characters, else their localpart.
fn relay_name(message: &MatrixMessage) -> String {
    let name: String = message
        .sender_name
        .as_deref()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(32)
        .collect();
    if name.trim().is_empty() {
        message.sender.localpart().to_owned()
    } else {
        name.trim().to_owned()
    }
}

/// A user's reactions `keys` to `message` (XEP-0444), naming it as the room does.
fn reactions_payload(
    gateway: &Gateway,
    room: &BareJid,
    message: &str,
    keys: BTreeSet<String>,
) -> Element {
    Reactions {
        id: gateway.room_stanza_id(room, message),
        reactions: keys.into_iter().map(|emoji| Reaction { emoji }).collect(),
    }
    .into()
}

#[async_trait]
impl Connector for XmppConnector {
    fn info(&self) -> ConnectorInfo {
        ConnectorInfo {
            network: "xmpp",
            display_name: "XMPP",
            capabilities: Capabilities {
                edits: true,
                redactions: true,
                reactions: true,
                typing: true,
                receipts: true,
            },
        }
    }

    async fn start(&self, bridge: BridgeHandle) -> Result<(), ConnectorError> {
        self.gateway.start(bridge);
        tracing::info!("XMPP connector started");
        Ok(())
    }

    async fn stop(&self) {
        self.gateway.stop().await;
    }

    async fn resolve_portal(&self, suffix: &str) -> Result<Option<PortalInfo>, ConnectorError> {
        let Some(room) = room_of_alias(suffix) else {
            return Ok(None);
        };
        self.gateway.open_room(&room).await.map(Some)
    }

    async fn link_portal(
        &self,
        context: &CommandContext,
        address: &str,
    ) -> Result<PortalInfo, ConnectorError> {
        let room = parse_room_address(address).ok_or_else(|| {
            ConnectorError::Refused(format!(
                "{address:?} is not a group chat address (room@conference.example.org)"
            ))
        })?;
        // The group chat's owners agree by making the user's XMPP address an admin or
        // owner of it; a bridge admin's word is enough.
        if context.permission < Permission::Admin
            && !self.gateway.administers(&room, &context.sender).await?
        {
            let address = self
                .gateway
                .puppet_jid(&context.sender)
                .map(|jid| jid.to_bare().to_string())
                .unwrap_or_default();
            return Err(ConnectorError::Refused(format!(
                "an owner of {room} must first make your XMPP address ({address}) an admin \
                 or owner of it, or a bridge admin link it"
            )));
        }
        self.gateway.open_room(&room).await
    }

    async fn unlink_portal(&self, portal: &Portal) -> Result<(), ConnectorError> {
        let room = Self::room(portal)?;
        if let Some(mapped) = self.gateway.mapped_room(&room)
            && self.gateway.bridge().is_room(mapped, &portal.room_id).await
        {
            return Err(ConnectorError::Refused(
                "the bridge's configuration maps this room; an operator must remove it there"
                    .to_owned(),
            ));
        }
        self.gateway.leave_room(&room).await
    }

    async fn portal_created(&self, portal: &Portal) -> Result<(), ConnectorError> {
        // The occupants came before the portal existed: mirror their ranks now.
        if portal.direct.is_none() {
            self.gateway.sync_levels(&Self::room(portal)?).await;
        }
        Ok(())
    }

    async fn direct_portal(
        &self,
        user: &ruma::UserId,
        ghost: &str,
    ) -> Result<Option<PortalInfo>, ConnectorError> {
        // Only a user known by their address can be reached directly.
        Ok(match GhostId::parse(ghost) {
            Some(GhostId::Jid(jid)) => Some(self.gateway.direct_chat(user, &jid)),
            _ => None,
        })
    }

    async fn handle_room_change(
        &self,
        portal: &Portal,
        sender: &ruma::UserId,
        change: &MatrixRoomChange,
    ) -> Result<(), ConnectorError> {
        // A group chat's name and avatar are its configuration, which only its owners
        // change through a form; the subject is what the topic is.
        let MatrixRoomChange::Topic(topic) = change else {
            return Ok(());
        };
        if portal.direct.is_some() {
            return Ok(());
        }
        if self.gateway.bridge().permission(sender) < Permission::User {
            return Err(ConnectorError::Refused(
                "relayed users cannot change the subject on XMPP".to_owned(),
            ));
        }
        let subject = topic.as_deref().unwrap_or_default();
        self.gateway
            .set_subject(&Self::room(portal)?, sender, subject)
            .await
    }

    async fn handle_presence(
        &self,
        user: &ruma::UserId,
        presence: &ruma::presence::PresenceState,
        status: Option<&str>,
    ) -> Result<(), ConnectorError> {
        self.gateway
            .set_puppet_presence(user, presence, status)
            .await
    }

    async fn handle_receipt(
        &self,
        portal: &Portal,
        user: &ruma::UserId,
        target: &RemoteRef,
    ) -> Result<(), ConnectorError> {
        // Relayed users have no XMPP identity to have read anything.
        if self.gateway.bridge().permission(user) < Permission::User {
            return Ok(());
        }
        self.gateway
            .displayed(&Self::to(portal)?, user, &target.remote_id)
            .await
    }

    async fn handle_typing(
        &self,
        portal: &Portal,
        user: &ruma::UserId,
        typing: bool,
    ) -> Result<(), ConnectorError> {
        self.gateway.typing(&Self::to(portal)?, user, typing).await
    }

    async fn resolve_ghost(&self, id: &str) -> Result<Option<GhostInfo>, ConnectorError> {
        Ok(GhostId::parse(id).map(|ghost| {
            let name = match &ghost {
                GhostId::Nick { nick, .. } => Some(nick.clone()),
                GhostId::Jid(jid) => Some(jid.to_string()),
                GhostId::Occupant { .. } => None,
            };
            GhostInfo {
                id: ghost.to_string(),
                name,
                avatar: None,
            }
        }))
    }

    async fn handle_message(
        &self,
        portal: &Portal,
        message: &MatrixMessage,
    ) -> Result<Vec<String>, ConnectorError> {
        let to = Self::to(portal)?;
        let (body, payloads) = message_content(&self.gateway, &to, message);
        // The event id is the message's id: a repeat after a crash carries the same one.
        let id = message.event_id.to_string();
        if message.permission < Permission::User {
            // A relayed user has no XMPP identity: the bot says it, naming them.
            let To::Room(room) = &to else {
                return Err(ConnectorError::Refused(
                    "direct chats need your own XMPP identity (permission `user`)".to_owned(),
                ));
            };
            let name = relay_name(message);
            let body = match body.strip_prefix("/me ") {
                Some(action) => format!("* {name} {action}"),
                None => format!("<{name}> {body}"),
            };
            // The relay prefix moves the reply's `nick: `, so it is not marked as fallback.
            let payloads = payloads
                .into_iter()
                .filter(|p| !p.is("fallback", crate::payloads::NS_FALLBACK))
                .collect();
            self.gateway.relay(room, &id, &body, payloads).await?;
            return Ok(vec![id]);
        }
        self.gateway
            .say(
                &to,
                &message.sender,
                message.sender_name.as_deref(),
                &id,
                Some(&body),
                payloads,
            )
            .await?;
        Ok(vec![id])
    }

    async fn handle_edit(
        &self,
        portal: &Portal,
        edit: &MatrixEdit,
    ) -> Result<Vec<String>, ConnectorError> {
        // A correction (XEP-0308) names the message by the id it was sent with.
        self.needs_identity(&edit.sender)?;
        let to = Self::to(portal)?;
        let new_content = MatrixMessage {
            reply_to: None,
            ..edit.new_content.clone()
        };
        let (body, mut payloads) = message_content(&self.gateway, &to, &new_content);
        payloads.push(
            Replace {
                id: Id(edit.target.remote_id.clone()),
            }
            .into(),
        );
        let id = edit.event_id.to_string();
        self.gateway
            .say(
                &to,
                &edit.sender,
                new_content.sender_name.as_deref(),
                &id,
                Some(&body),
                payloads,
            )
            .await?;
        Ok(vec![id])
    }

    async fn handle_redaction(
        &self,
        portal: &Portal,
        redaction: &MatrixRedaction,
    ) -> Result<Vec<String>, ConnectorError> {
        self.needs_identity(&redaction.sender)?;
        let to = Self::to(portal)?;
        let room = to.scope().clone();
        let sender = redaction.sender.as_str();
        for (n, target) in redaction.targets.iter().enumerate() {
            let id = format!("{}.{n}", redaction.event_id);
            if let Some((reactor, message, key)) = parse_reaction_id(&target.remote_id) {
                // A reaction taken back: the user's remaining reactions go as the set.
                if reactor != sender {
                    continue;
                }
                let mut keys = self.gateway.reactions_of(&room, sender, &message);
                keys.remove(&key);
                self.gateway
                    .set_reactions(&room, sender, &message, keys.clone());
                let payload = reactions_payload(&self.gateway, &room, &message, keys);
                self.gateway
                    .say(&to, &redaction.sender, None, &id, None, vec![payload])
                    .await?;
                continue;
            }
            // Someone else's message: a moderator's retraction (XEP-0425), in a group chat.
            if target.sender != sender {
                let To::Room(room) = &to else {
                    return Err(ConnectorError::Refused(
                        "on XMPP only the author can take back a message".to_owned(),
                    ));
                };
                self.gateway
                    .moderate(
                        room,
                        &redaction.sender,
                        &target.remote_id,
                        redaction.reason.as_deref(),
                    )
                    .await?;
                continue;
            }
            // A retraction (XEP-0424), with a fallback body for clients without it.
            let retract = Retract {
                id: self.gateway.room_stanza_id(&room, &target.remote_id),
            };
            let fallback = Fallback {
                for_: NS_RETRACT.to_owned(),
                bodies: Vec::new(),
            };
            let body = "/me retracted a previous message, but your client does not support it";
            self.gateway
                .say(
                    &to,
                    &redaction.sender,
                    None,
                    &id,
                    Some(body),
                    vec![retract.into(), fallback.into()],
                )
                .await?;
        }
        Ok(Vec::new())
    }

    async fn handle_reaction(
        &self,
        portal: &Portal,
        reaction: &MatrixReaction,
    ) -> Result<Vec<String>, ConnectorError> {
        // XMPP sends a user's whole set of reactions to a message (XEP-0444).
        self.needs_identity(&reaction.sender)?;
        let to = Self::to(portal)?;
        let room = to.scope().clone();
        let sender = reaction.sender.as_str();
        let message = &reaction.target.remote_id;
        let mut keys = self.gateway.reactions_of(&room, sender, message);
        keys.insert(reaction.key.clone());
        self.gateway
            .set_reactions(&room, sender, message, keys.clone());
        let payload = reactions_payload(&self.gateway, &room, message, keys);
        self.gateway
            .say(
                &to,
                &reaction.sender,
                None,
                reaction.event_id.as_str(),
                None,
                vec![payload],
            )
            .await?;
        Ok(vec![reaction_id(sender, message, &reaction.key)])
    }

    async fn fetch_media(
        &self,
        url: &str,
        limit: u64,
    ) -> Result<(Vec<u8>, String), ConnectorError> {
        // A ghost's avatar: the photo of an occupant's vCard.
        if let Some(hash) = url.strip_prefix(AVATAR_SOURCE) {
            return self.gateway.avatar(hash, limit).await;
        }
        if is_trusted(url, &self.trusted_media_hosts) {
            bridge_core::bridge::media::fetch_trusted(url, limit).await
        } else {
            bridge_core::bridge::media::fetch(url, limit).await
        }
    }

    async fn handle_membership(
        &self,
        portal: &Portal,
        membership: &MatrixMembership,
    ) -> Result<(), ConnectorError> {
        let relayed = self.gateway.bridge().permission(&membership.target) < Permission::User;
        if membership.target_ghost.is_some() || portal.direct.is_some() || relayed {
            return Ok(());
        }
        let room = Self::room(portal)?;
        match membership.membership {
            Membership::Join => {
                self.gateway
                    .puppet_in(
                        &room,
                        &membership.target,
                        membership.display_name.as_deref(),
                    )
                    .await?;
            }
            Membership::Leave | Membership::Kick | Membership::Ban => {
                self.gateway.puppet_leave(&room, &membership.target).await?;
            }
            Membership::Invite => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_hosts_named_are_trusted() {
        let trusted = ["upload.example".to_owned(), "10.0.0.5:5281".to_owned()];
        for url in [
            "https://upload.example/file.png",
            "https://upload.example:5281/a?b",
            "http://10.0.0.5:5281/x",
        ] {
            assert!(is_trusted(url, &trusted), "{url}");
        }
        for url in [
            "https://upload.example.evil.com/f",
            "http://10.0.0.5/x",
            "http://user@upload.example/f",
            "upload.example/f",
            "https://evil.com/upload.example",
            "http:/169.254.169.254/x?y=://upload.example",
            "http:\\\\169.254.169.254/?://upload.example/",
        ] {
            assert!(!is_trusted(url, &trusted), "{url}");
        }
    }
}
