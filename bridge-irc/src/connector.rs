//! The IRC connector: what bridge-core asks of the IRC side, routed to the network a
//! portal or ghost belongs to (see [`crate::ids`] for how ids name their network).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bridge_core::bridge::{BridgeHandle, CommandContext, Permission};
use bridge_core::connector::{
    Capabilities, CommandSpec, Connector, ConnectorError, ConnectorInfo, GhostInfo, MatrixEdit,
    MatrixMembership, MatrixMessage, MatrixReaction, MatrixRoomChange, Membership, MessageKind,
    Portal, PortalInfo, RemoteRef,
};
use bridge_core::format::html_to_text;
use ruma::UserId;

use crate::config::{EditStyle, IrcConfig, is_valid_nick};
use crate::connection::Sasl;
use crate::edits::substitution;
use crate::formatting::IrcMarkup;
use crate::ident::IdentRegistry;
use crate::ids::{ghost_id, ghost_localpart, nick_of_localpart, split_id};
use crate::line::Line;
use crate::network::{MAX_USERNAME_LEN, Network, deliver_lines, is_valid_username, send_lines};
use crate::split::{payload_limit, split_message};
use tokio_util::sync::CancellationToken;

/// Room the prefix `:nick!user@host ` may take on lines the server relays: a nick, a
/// 10-byte user name and a 63-byte host (RFC 1035's longest label), with separators.
const PREFIX_ALLOWANCE: usize = 1 + 10 + 1 + 63 + 2;
/// The wrapping of a CTCP ACTION: `\x01ACTION ` and `\x01`.
const ACTION_OVERHEAD: usize = 9;

/// Where a portal's messages go.
#[derive(Debug)]
enum Target<'a> {
    /// A channel (folded), which a puppet joins before it speaks.
    Channel(&'a str),
    /// A nick: a direct chat.
    Nick(String),
}

impl Target<'_> {
    fn name(&self) -> &str {
        match self {
            Target::Channel(channel) => channel,
            Target::Nick(nick) => nick,
        }
    }
}

/// The IRC connector.
#[derive(Debug)]
pub struct IrcConnector {
    networks: BTreeMap<String, Arc<Network>>,
    /// Where the ident server answers, and whom it names.
    ident: Option<(std::net::SocketAddr, IdentRegistry)>,
    stop: CancellationToken,
}

impl IrcConnector {
    /// A connector for the networks of `config`.
    pub fn new(config: &IrcConfig) -> anyhow::Result<IrcConnector> {
        let ident = config
            .ident_bind
            .map(|bind| (bind, IdentRegistry::default()));
        let mut networks = BTreeMap::new();
        for network in &config.networks {
            networks.insert(
                network.name.clone(),
                Arc::new(Network::new(
                    network.clone(),
                    ident.as_ref().map(|(_, registry)| registry.clone()),
                )?),
            );
        }
        Ok(IrcConnector {
            networks,
            ident,
            stop: CancellationToken::new(),
        })
    }

    /// Where a portal's messages go on IRC: its channel, or for a direct chat the nick.
    fn target<'a>(
        &self,
        portal: &'a Portal,
    ) -> Result<(&Arc<Network>, Target<'a>), ConnectorError> {
        let (network, channel) = self.route(portal)?;
        let target = match &portal.direct {
            Some((_, ghost)) => Target::Nick(
                split_id(ghost)
                    .map(|(_, nick)| nick.to_owned())
                    .ok_or_else(|| ConnectorError::Refused(format!("no nick in {ghost}")))?,
            ),
            None => Target::Channel(channel),
        };
        Ok((network, target))
    }

    /// The network and folded channel of a portal.
    fn route<'a>(&self, portal: &'a Portal) -> Result<(&Arc<Network>, &'a str), ConnectorError> {
        split_id(&portal.remote_id)
            .and_then(|(network, channel)| Some((self.networks.get(network)?, channel)))
            .ok_or_else(|| {
                ConnectorError::Refused(format!(
                    "the portal {} belongs to no configured network",
                    portal.remote_id
                ))
            })
    }
}

/// The portals of `network` that `user` is joined to, each with its channel (or, for a
/// direct chat, the nick).
async fn rooms_of(
    context: &CommandContext,
    network: &Network,
    user: &UserId,
) -> Result<Vec<(Portal, String)>, ConnectorError> {
    let retry = |e: &dyn std::fmt::Display| ConnectorError::Retry(e.to_string());
    let mut rooms = Vec::new();
    for portal in context.bridge.portals().await.map_err(|e| retry(&e))? {
        let name = match (&portal.direct, split_id(&portal.remote_id)) {
            (_, Some((name, _))) if name != network.name() => continue,
            (Some((owner, ghost)), _) if owner == user => match split_id(ghost) {
                Some((_, nick)) => nick.to_owned(),
                None => continue,
            },
            (Some(_), _) | (None, None) => continue,
            (None, Some((_, channel))) => channel.to_owned(),
        };
        let members = context
            .bridge
            .matrix()
            .bot()
            .joined_members(&portal.room_id)
            .await
            .map_err(|e| retry(&e))?;
        if members.iter().any(|member| member == user) {
            rooms.push((portal, name));
        }
    }
    Ok(rooms)
}

/// The text of a Matrix message as IRC shows it: HTML as mIRC formatting, a reply as
/// `nick: text`, media as its name and link.
fn text_of(network: &Network, message: &MatrixMessage) -> String {
    let text = own_text_of(network, message);
    let Some(nick) = message
        .reply_to
        .as_ref()
        .and_then(|reply| network.nick_of_sender(&reply.sender))
    else {
        return text;
    };
    let after_ms = network
        .config
        .quote_replies_after_seconds
        .saturating_mul(1000);
    let old = message.reply_original.as_ref().filter(|original| {
        u64::try_from(message.timestamp - original.timestamp).is_ok_and(|age| age > after_ms)
            || after_ms == 0
    });
    match old.map(|original| quote(&original.body)) {
        Some(quote) if !quote.is_empty() => format!("{nick}: \"{quote}\" <- {text}"),
        _ => format!("{nick}: {text}"),
    }
}

/// The start of a quoted message: its first line, white space collapsed, at most
/// [`QUOTE_CHARS`] characters, cut at a word's end where it can be.
fn quote(body: &str) -> String {
    let line = body
        .lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("");
    let words: Vec<&str> = line.split_whitespace().collect();
    let line = words.join(" ");
    if line.chars().count() <= QUOTE_CHARS {
        return line;
    }
    let mut cut: String = line.chars().take(QUOTE_CHARS).collect();
    // At a word's end where one is in the second half.
    if let Some(space) = cut.rfind(' ').filter(|at| *at > cut.len() / 2) {
        cut.truncate(space);
    }
    cut.push('…');
    cut
}

/// How much of an old message a reply quotes.
const QUOTE_CHARS: usize = 40;

/// [`text_of`] without the reply's `nick: `: what the sender wrote (and edits change).
fn own_text_of(network: &Network, message: &MatrixMessage) -> String {
    let mut text = match &message.html {
        Some(html) => html_to_text(html, &IrcMarkup),
        None => message.body.clone(),
    };
    if let Some(media) = &message.media {
        let name = media.filename.as_deref().or(Some(message.body.as_str()));
        let link = network
            .media_link(&media.url, name)
            .unwrap_or_else(|| media.url.to_string());
        text = format!("{text} {link}");
    }
    text
}

/// `text` as the lines `kind` takes to `channel`, each said by a puppet, or by the bot for
/// `relay` (a Matrix user without a puppet: `<name> text`, `* name does`).
fn lines_for(
    network: &Network,
    kind: &MessageKind,
    channel: &str,
    text: &str,
    relay: Option<&str>,
) -> Vec<Line> {
    let (prefix, kind) = match relay {
        None => (String::new(), kind.clone()),
        Some(name) if *kind == MessageKind::Emote => (format!("* {name} "), MessageKind::Text),
        Some(name) => (format!("<{name}> "), kind.clone()),
    };
    payloads(network, &kind, channel, text, prefix.len())
        .iter()
        .map(|payload| line_for(&kind, channel, &format!("{prefix}{payload}")))
        .collect()
}

/// The ban mask of a nick (`nick!*@*`); a mask already is one.
fn ban_mask(target: &str) -> String {
    // Masks, and extended bans (`$a:account`, `~a:account`), go as they are.
    if target.contains(['!', '@', '*', ':', '$', '~']) {
        target.to_owned()
    } else {
        format!("{target}!*@*")
    }
}

/// Whether IRC knows `target` by a msgid: every message from IRC in the message map,
/// and Matrix messages whose echo gave one (else their event stands for them).
fn has_msgid(target: &RemoteRef) -> bool {
    target.remote_id != target.event_id.as_str()
}

/// How a relayed Matrix user is named on IRC: their display name on one line, without
/// control characters, at most 32 characters.
fn relay_name(message: &MatrixMessage) -> String {
    let name = message
        .sender_name
        .as_deref()
        .unwrap_or(message.sender.localpart());
    let clean: String = crate::split::sanitize_line(name)
        .chars()
        .filter(|c| !c.is_control())
        .take(32)
        .collect();
    if clean.trim().is_empty() {
        message.sender.localpart().to_owned()
    } else {
        clean
    }
}

/// `text` as the payloads of PRIVMSG or NOTICE lines to `channel`, leaving `reserved`
/// bytes of each for a prefix.
fn payloads(
    network: &Network,
    kind: &MessageKind,
    channel: &str,
    text: &str,
    reserved: usize,
) -> Vec<String> {
    let command = if *kind == MessageKind::Notice {
        "NOTICE"
    } else {
        "PRIVMSG"
    };
    let nicklen = network.server().nicklen;
    let mut limit = payload_limit(
        PREFIX_ALLOWANCE + nicklen,
        0,
        &format!("{command} {channel}"),
    );
    if *kind == MessageKind::Emote {
        limit = limit.saturating_sub(ACTION_OVERHEAD);
    }
    split_message(text, limit.saturating_sub(reserved))
}

fn line_for(kind: &MessageKind, channel: &str, payload: &str) -> Line {
    match kind {
        MessageKind::Notice => Line::new("NOTICE", [channel, payload]),
        MessageKind::Emote => Line::new("PRIVMSG", [channel, &format!("\x01ACTION {payload}\x01")]),
        _ => Line::new("PRIVMSG", [channel, payload]),
    }
}

/// Commands run in a portal room, on its channel, as the sender's IRC user: the server
/// decides what their channel status allows (a refusal comes back as a notice).
const CHANNEL_COMMANDS: &[&str] = &[
    "kick", "ban", "unban", "invite", "op", "deop", "voice", "devoice", "topic",
];

impl IrcConnector {
    /// How `command` is used, for an answer to a malformed one.
    fn usage(&self, command: &str) -> String {
        self.commands()
            .into_iter()
            .find(|spec| spec.name == command)
            .map(|spec| format!("Usage: {} {}", spec.name, spec.args))
            .unwrap_or_else(|| format!("Unknown command {command}."))
    }

    /// One of [`CHANNEL_COMMANDS`], in the portal it was given in.
    async fn channel_command(
        &self,
        context: &CommandContext,
        command: &str,
        args: &[String],
    ) -> Result<String, ConnectorError> {
        let Some(portal) = context.portal.as_ref().filter(|p| p.direct.is_none()) else {
            return Ok(format!("`{command}` works in a channel's portal room."));
        };
        let (network, channel) = self.route(portal)?;
        let mode =
            |change: &str, nick: &String| Line::new("MODE", [channel, change, nick.as_str()]);
        let line = match (command, args) {
            ("kick", [nick, reason @ ..]) => {
                let reason = if reason.is_empty() {
                    format!("kicked from Matrix by {}", context.sender)
                } else {
                    reason.join(" ")
                };
                Line::new("KICK", [channel, nick.as_str(), reason.as_str()])
            }
            ("ban", [target]) => mode("+b", &ban_mask(target)),
            ("unban", [target]) => mode("-b", &ban_mask(target)),
            ("invite", [nick]) => Line::new("INVITE", [nick.as_str(), channel]),
            ("op", [nick]) => mode("+o", nick),
            ("deop", [nick]) => mode("-o", nick),
            ("voice", [nick]) => mode("+v", nick),
            ("devoice", [nick]) => mode("-v", nick),
            ("topic", words) if !words.is_empty() => {
                Line::new("TOPIC", [channel, &words.join(" ")])
            }
            _ => return Ok(self.usage(command)),
        };
        let puppet = network.puppet_in(&context.sender, None, channel).await?;
        send_lines(&puppet.connection, &[line]).await?;
        Ok(format!("Sent `{command}` to {channel}."))
    }

    /// Says `lines` (one message) as `sender`'s puppet to `target`; the msgids the
    /// server gave them, as [`deliver_lines`] confirms delivery.
    async fn say(
        &self,
        network: &Arc<Network>,
        sender: &UserId,
        sender_name: Option<&str>,
        target: &Target<'_>,
        lines: &[Line],
    ) -> Result<Vec<String>, ConnectorError> {
        let puppet = match target {
            Target::Channel(channel) => network.puppet_in(sender, sender_name, channel).await?,
            Target::Nick(_) => network.puppet(sender, sender_name).await?,
        };
        deliver_lines(&puppet.connection, lines).await
    }
}

#[async_trait]
impl Connector for IrcConnector {
    fn info(&self) -> ConnectorInfo {
        ConnectorInfo {
            network: "irc",
            display_name: "IRC",
            capabilities: Capabilities {
                edits: true,
                redactions: false,
                // Said as ACTIONs where a network has `reactions_as_action`.
                reactions: true,
                typing: true,
                receipts: false,
            },
        }
    }

    async fn start(&self, bridge: BridgeHandle) -> Result<(), ConnectorError> {
        if let Some((bind, registry)) = &self.ident {
            // Before any connection: servers ask as connections open.
            let listener = tokio::net::TcpListener::bind(bind).await.map_err(|error| {
                ConnectorError::Refused(format!(
                    "the ident server cannot listen on {bind}: {error}"
                ))
            })?;
            tracing::info!(%bind, "ident server listening");
            tokio::spawn(crate::ident::serve(
                listener,
                registry.clone(),
                self.stop.clone(),
            ));
        }
        for network in self.networks.values() {
            network.start(bridge.clone());
        }
        tracing::info!(networks = self.networks.len(), "IRC connector started");
        Ok(())
    }

    async fn stop(&self) {
        self.stop.cancel();
        for network in self.networks.values() {
            network.stop().await;
        }
    }

    fn ghost_localpart(&self, id: &str) -> String {
        match split_id(id).and_then(|(name, nick)| Some((self.networks.get(name)?, nick))) {
            Some((network, nick)) => ghost_localpart(&network.ghost_template, nick),
            // Not one of ours: escaped whole, so it reads back as no ghost of ours.
            None => bridge_core::bridge::ids::escape_localpart(id),
        }
    }

    fn ghost_id(&self, localpart: &str) -> Option<String> {
        // Config checks keep templates apart: at most one network reads it.
        self.networks.values().find_map(|network| {
            let nick = nick_of_localpart(&network.ghost_template, localpart)?;
            Some(ghost_id(network.name(), &nick))
        })
    }

    async fn resolve_portal(&self, suffix: &str) -> Result<Option<PortalInfo>, ConnectorError> {
        let Some((network, channel)) = self
            .networks
            .values()
            .find_map(|network| Some((network, network.channel_of_alias(suffix)?)))
        else {
            return Ok(None);
        };
        match network.open_channel(channel).await {
            Ok(info) => Ok(Some(info)),
            // Not a channel name: no such room, rather than an error.
            Err(ConnectorError::Refused(reason)) if reason.contains("is not a channel name") => {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    async fn direct_portal(
        &self,
        user: &UserId,
        ghost: &str,
    ) -> Result<Option<PortalInfo>, ConnectorError> {
        let Some((name, nick)) = split_id(ghost) else {
            return Ok(None);
        };
        let Some(network) = self.networks.get(name) else {
            return Ok(None);
        };
        Ok(is_valid_nick(nick).then(|| network.direct_chat(user, nick)))
    }

    async fn resolve_ghost(&self, id: &str) -> Result<Option<GhostInfo>, ConnectorError> {
        let Some((name, nick)) = split_id(id) else {
            return Ok(None);
        };
        let Some(network) = self.networks.get(name) else {
            return Ok(None);
        };
        Ok(is_valid_nick(nick).then(|| GhostInfo {
            id: ghost_id(network.name(), &network.fold(nick)),
            name: Some(nick.to_owned()),
            avatar: None,
        }))
    }

    async fn handle_message(
        &self,
        portal: &Portal,
        message: &MatrixMessage,
    ) -> Result<Vec<String>, ConnectorError> {
        let (network, target) = self.target(portal)?;
        let text = text_of(network, message);
        let relay = network
            .is_relayed(&message.sender)
            .then(|| relay_name(message));
        let mut lines = lines_for(
            network,
            &message.kind,
            target.name(),
            &text,
            relay.as_deref(),
        );
        // A reply to a message IRC gave a msgid names it by that too, for clients that
        // show replies (the `nick: ` prefix stays for those that do not).
        if let Some(reply) = &message.reply_to
            && has_msgid(reply)
            && let Some(first) = lines.first_mut()
        {
            *first = first
                .clone()
                .with_tag("+draft/reply", Some(&reply.remote_id));
        }
        let max = network.config.max_lines;
        if lines.len() > max {
            // A long message is not pasted into the channel: its start, then a link to
            // the whole text, served by the bridge.
            let cut = lines.len() - (max - 1);
            let note = match network.text_link(&text).await {
                Some(link) => format!("(… {cut} more lines: {link})"),
                None => format!("(… {cut} more lines not shown)"),
            };
            lines.truncate(max - 1);
            lines.extend(lines_for(
                network,
                &message.kind,
                target.name(),
                &note,
                relay.as_deref(),
            ));
        }
        let msgids = match relay {
            Some(_) => network.relay(&lines).await?,
            None => {
                self.say(
                    network,
                    &message.sender,
                    message.sender_name.as_deref(),
                    &target,
                    &lines,
                )
                .await?
            }
        };
        network.remember_text(message.event_id.as_str(), &own_text_of(network, message));
        // The msgids the server gave the lines, so that IRC replies to them find the
        // event; where it gave none, the event stands for itself.
        Ok(if msgids.is_empty() {
            vec![message.event_id.to_string()]
        } else {
            msgids
        })
    }

    async fn handle_edit(
        &self,
        portal: &Portal,
        edit: &MatrixEdit,
    ) -> Result<Vec<String>, ConnectorError> {
        let (network, target) = self.target(portal)?;
        // One line, never a repost of a long message: `s/old/new/` where configured and
        // shorter, else `* ` and the new text's first line.
        let text = own_text_of(network, &edit.new_content);
        let edited = edit.target.event_id.as_str();
        let substitution = match network.config.edits {
            EditStyle::Substitution => network
                .recent_text(edited)
                .and_then(|old| substitution(&old, &text)),
            EditStyle::Correction => None,
        };
        let (kind, said) = match substitution {
            // A substitution is plain words, whatever the kind of the message.
            Some(substitution) => (&MessageKind::Text, substitution),
            None => (&edit.new_content.kind, format!("* {text}")),
        };
        let relay = network
            .is_relayed(&edit.sender)
            .then(|| relay_name(&edit.new_content));
        let mut lines = lines_for(network, kind, target.name(), &said, relay.as_deref());
        if lines.len() > 1 {
            lines.truncate(1);
            if let Some(text) = lines[0].params.last_mut() {
                text.push('…');
            }
        }
        match relay {
            Some(_) => network.relay(&lines).await?,
            None => {
                self.say(network, &edit.sender, None, &target, &lines)
                    .await?
            }
        };
        network.remember_text(edited, &text);
        Ok(vec![edit.event_id.to_string()])
    }

    async fn handle_reaction(
        &self,
        portal: &Portal,
        reaction: &MatrixReaction,
    ) -> Result<Vec<String>, ConnectorError> {
        let (network, target) = self.target(portal)?;
        if !network.config.reactions_as_action || network.is_relayed(&reaction.sender) {
            return Err(ConnectorError::Unsupported);
        }
        // A key is usually one emoji; anything else is cut short and kept to one line.
        let key: String = crate::split::sanitize_line(&reaction.key)
            .chars()
            .filter(|c| !c.is_control())
            .take(16)
            .collect();
        let whom = network
            .nick_of_sender(&reaction.target.sender)
            .map(|nick| format!(" to {nick}"))
            .unwrap_or_default();
        let mut lines = lines_for(
            network,
            &MessageKind::Emote,
            target.name(),
            &format!("reacted {key}{whom}"),
            None,
        );
        lines.truncate(1);
        // Clients that know replies see which message it was.
        if has_msgid(&reaction.target)
            && let Some(first) = lines.first_mut()
        {
            *first = first
                .clone()
                .with_tag("+draft/reply", Some(&reaction.target.remote_id));
        }
        self.say(network, &reaction.sender, None, &target, &lines)
            .await?;
        Ok(vec![reaction.event_id.to_string()])
    }

    async fn link_portal(
        &self,
        context: &CommandContext,
        address: &str,
    ) -> Result<PortalInfo, ConnectorError> {
        let usage = "say `link <network> <#channel> [operator nick]`";
        let words: Vec<&str> = address.split_whitespace().collect();
        let (network, rest) = match words.as_slice() {
            [name, rest @ ..] if self.networks.contains_key(*name) => (&self.networks[*name], rest),
            rest if self.networks.len() == 1 => {
                let only = self.networks.values().next().expect("one network");
                (only, rest)
            }
            _ => {
                let names: Vec<&str> = self.networks.keys().map(String::as_str).collect();
                return Err(ConnectorError::Refused(format!(
                    "{usage}, with one of the networks {}",
                    names.join(", ")
                )));
            }
        };
        let (channel, operator) = match rest {
            [channel] => (*channel, None),
            [channel, operator] => (*channel, Some(*operator)),
            _ => return Err(ConnectorError::Refused(usage.to_owned())),
        };
        let info = network.open_channel(channel).await?;
        // A bridge admin's word is enough; else a channel operator's: the user's own
        // puppet, or the operator they name, who answers the bot on IRC.
        let own_puppet_is_operator = match network.puppet_nick(&context.sender).await {
            Some(nick) => network.is_operator(channel, &nick),
            None => false,
        };
        let consent = if context.permission >= Permission::Admin || own_puppet_is_operator {
            Ok(())
        } else if let Some(operator) = operator {
            network
                .ask_consent(channel, operator, &context.sender, &context.room_id)
                .await
        } else {
            Err(ConnectorError::Refused(format!(
                "an operator of {channel} must agree: name them (`link {} {channel} <nick>`) \
                 and they answer the bot on IRC",
                network.name()
            )))
        };
        if let Err(refusal) = consent {
            // The bot joined to look; it does not stay in a channel that is no portal.
            if matches!(context.bridge.portal(&info.remote_id).await, Ok(None))
                && let Err(error) = network.leave_channel(channel).await
            {
                tracing::warn!(%channel, %error, "the bot cannot leave a channel it joined to look");
            }
            return Err(refusal);
        }
        Ok(info)
    }

    async fn unlink_portal(&self, portal: &Portal) -> Result<(), ConnectorError> {
        let (network, channel) = self.route(portal)?;
        if network.is_mapped(channel, &portal.room_id).await {
            return Err(ConnectorError::Refused(
                "the bridge's configuration maps this room; an operator must remove it there"
                    .to_owned(),
            ));
        }
        network.leave_channel(channel).await
    }

    async fn portal_created(&self, portal: &Portal) -> Result<(), ConnectorError> {
        // The member list came before the portal existed: mirror its ranks now.
        let (network, channel) = self.route(portal)?;
        if portal.direct.is_some() {
            return Ok(());
        }
        network.sync_levels(channel).await;
        network.queue_access(channel, None).await;
        Ok(())
    }

    async fn handle_presence(
        &self,
        user: &UserId,
        presence: &ruma::presence::PresenceState,
        status: Option<&str>,
    ) -> Result<(), ConnectorError> {
        use ruma::presence::PresenceState;
        // One line, like every text that reaches IRC from Matrix.
        let status = status
            .map(|s| s.replace(['\r', '\n', '\0'], " "))
            .filter(|s| !s.trim().is_empty());
        let away = match presence {
            PresenceState::Online => None,
            PresenceState::Unavailable => Some(status.unwrap_or_else(|| "away".to_owned())),
            _ => Some(status.unwrap_or_else(|| "offline".to_owned())),
        };
        for network in self.networks.values() {
            network.set_away(user, away.as_deref()).await;
        }
        Ok(())
    }

    async fn handle_room_change(
        &self,
        portal: &Portal,
        sender: &UserId,
        change: &MatrixRoomChange,
    ) -> Result<(), ConnectorError> {
        // A channel has a topic, and no name or avatar.
        let MatrixRoomChange::Topic(topic) = change else {
            return Ok(());
        };
        if portal.direct.is_some() {
            return Ok(());
        }
        let (network, channel) = self.route(portal)?;
        if network.is_relayed(sender) {
            return Err(ConnectorError::Refused(
                "relayed users cannot change the topic on IRC".to_owned(),
            ));
        }
        // A topic is one line on IRC.
        let topic = topic
            .as_deref()
            .unwrap_or_default()
            .split(['\r', '\n', '\0'])
            .filter(|part| !part.trim().is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let puppet = network.puppet_in(sender, None, channel).await?;
        send_lines(&puppet.connection, &[Line::new("TOPIC", [channel, &topic])]).await
    }

    async fn handle_typing(
        &self,
        portal: &Portal,
        user: &UserId,
        typing: bool,
    ) -> Result<(), ConnectorError> {
        let (network, channel) = self.route(portal)?;
        network.typing(user, channel, typing).await;
        Ok(())
    }

    async fn handle_membership(
        &self,
        portal: &Portal,
        membership: &MatrixMembership,
    ) -> Result<(), ConnectorError> {
        let (network, channel) = self.route(portal)?;
        // Ghosts invited or kicked by Matrix users, relayed users (no puppet), and direct
        // chats (no channel).
        if membership.target_ghost.is_some()
            || network.is_relayed(&membership.target)
            || portal.direct.is_some()
        {
            return Ok(());
        }
        match membership.membership {
            Membership::Join => {
                network
                    .puppet_in(
                        &membership.target,
                        membership.display_name.as_deref(),
                        channel,
                    )
                    .await?;
            }
            Membership::Leave | Membership::Kick | Membership::Ban => {
                network.part(&membership.target, channel).await?;
            }
            Membership::Invite => {}
        }
        Ok(())
    }

    fn commands(&self) -> Vec<CommandSpec> {
        let command = |name, args, summary| CommandSpec {
            name,
            args,
            summary,
            level: Permission::User,
        };
        vec![
            CommandSpec {
                level: Permission::Relay,
                ..command(
                    "networks",
                    "",
                    "list the IRC networks and your nick on each",
                )
            },
            command(
                "join",
                "[network] <#channel>",
                "open the portal of a channel and invite you to it",
            ),
            command("part", "[network] <#channel>", "leave a channel on IRC"),
            command("nick", "[network] <nick>", "choose your nick"),
            command(
                "storepass",
                "[network] <account> <password>",
                "log in to your services account (SASL, or NickServ) from now on",
            ),
            command("removepass", "[network]", "forget your services password"),
            command(
                "certfp",
                "[network]",
                "get a client certificate to log in with (SASL EXTERNAL), and its fingerprint",
            ),
            command(
                "username",
                "[network] <name>",
                "choose your IRC user name (ident); you reconnect with it",
            ),
            command(
                "reconnect",
                "[network]",
                "drop your IRC connection; the next message connects again",
            ),
            command(
                "quit",
                "[network]",
                "leave every portal room of the network and disconnect from it",
            ),
            command(
                "list",
                "[network]",
                "list the network's portal rooms you are in, with their channels",
            ),
            command("whois", "[network] <nick>", "who an IRC user is"),
            CommandSpec {
                level: Permission::Admin,
                ..command(
                    "raw",
                    "[network] <IRC command>",
                    "send one IRC command as yourself",
                )
            },
            command(
                "kick",
                "<nick> [reason]",
                "in a portal: kick a user from the channel (as your IRC user)",
            ),
            command(
                "ban",
                "<nick or mask>",
                "in a portal: ban from the channel (a nick bans nick!*@*)",
            ),
            command("unban", "<nick or mask>", "in a portal: lift a ban"),
            command(
                "invite",
                "<nick>",
                "in a portal: invite an IRC user into the channel",
            ),
            command("op", "<nick>", "in a portal: give channel operator status"),
            command(
                "deop",
                "<nick>",
                "in a portal: take channel operator status",
            ),
            command("voice", "<nick>", "in a portal: give voice"),
            command("devoice", "<nick>", "in a portal: take voice"),
            command("topic", "<text>", "in a portal: set the channel topic"),
        ]
    }

    async fn run_command(
        &self,
        context: &CommandContext,
        command: &str,
        args: &[String],
    ) -> Result<String, ConnectorError> {
        if command == "networks" {
            let mut lines = Vec::new();
            for network in self.networks.values() {
                let nick = network.puppet_nick(&context.sender).await;
                let (host, port) = network.server_address();
                lines.push(format!(
                    "{} ({host}:{port}){}{}",
                    network.name(),
                    if network.is_connected() {
                        ""
                    } else {
                        ", not connected"
                    },
                    nick.map(|n| format!(", you are {n}")).unwrap_or_default()
                ));
            }
            return Ok(if lines.is_empty() {
                "No IRC networks are configured.".to_owned()
            } else {
                lines.join("\n")
            });
        }
        if CHANNEL_COMMANDS.contains(&command) {
            return self.channel_command(context, command, args).await;
        }
        // The network may be left out when there is only one.
        let (network, args) = match args.first().and_then(|a| self.networks.get(a)) {
            Some(network) => (network, &args[1..]),
            None if self.networks.len() == 1 => {
                (self.networks.values().next().expect("one network"), args)
            }
            None => {
                let names: Vec<&str> = self.networks.keys().map(String::as_str).collect();
                return Ok(format!(
                    "Name the network first: one of {}.",
                    names.join(", ")
                ));
            }
        };
        let user = &context.sender;
        match (command, args) {
            ("join", [channel]) => {
                let info = network.open_channel(channel).await?;
                let portal = context
                    .bridge
                    .create_portal(&info)
                    .await
                    .map_err(|e| ConnectorError::Retry(e.to_string()))?;
                context
                    .bridge
                    .invite(&portal, user)
                    .await
                    .map_err(|e| ConnectorError::Retry(e.to_string()))?;
                Ok(format!("Invited you to {channel} on {}.", network.name()))
            }
            ("part", [channel]) => {
                network.part(user, &network.fold(channel)).await?;
                Ok(format!("Left {channel} on {}.", network.name()))
            }
            ("nick", [nick]) => {
                let server = network.server();
                if !is_valid_nick(nick) || nick.chars().count() > server.nicklen {
                    return Ok(format!(
                        "{nick:?} is not a valid nick on {} (at most {} of letters, digits and []\\`_^{{|}}-, not starting with a digit or -).",
                        network.name(),
                        server.nicklen
                    ));
                }
                let mut login = network.login(user).await?;
                login.nick = Some(nick.clone());
                network.save_login(user, &login).await?;
                Ok(if network.change_nick(user, nick).await? {
                    format!("Asked {} for the nick {nick}.", network.name())
                } else {
                    format!(
                        "You will be {nick} on {} when you next connect.",
                        network.name()
                    )
                })
            }
            ("storepass", [account, password]) => {
                if [account, password]
                    .iter()
                    .any(|v| v.chars().any(char::is_control))
                {
                    return Ok(
                        "The account and password must not hold control characters.".to_owned()
                    );
                }
                let mut login = network.login(user).await?;
                login.sasl = Some(Sasl::Plain {
                    account: account.clone(),
                    password: password.clone(),
                });
                network.save_login(user, &login).await?;
                network.disconnect(user, "Logging in").await;
                Ok(format!(
                    "Stored (encrypted) the password of {account} on {}; you will log in when you next connect.",
                    network.name()
                ))
            }
            ("removepass", []) => {
                let mut login = network.login(user).await?;
                login.sasl = None;
                network.save_login(user, &login).await?;
                Ok(format!("Forgot your password on {}.", network.name()))
            }
            ("certfp", []) => {
                if !network.uses_tls() {
                    return Ok(format!(
                        "{} is not reached over TLS, and a client certificate needs it.",
                        network.name()
                    ));
                }
                let cert = network.client_cert(user).await?;
                let fingerprint = cert
                    .fingerprint()
                    .map_err(|error| ConnectorError::Refused(error.to_string()))?;
                let mut answer = format!(
                    "Your client certificate on {} has the fingerprint {fingerprint}. ",
                    network.name()
                );
                if network.add_cert_to_account(user).await? {
                    answer.push_str("Your puppet, logged in, added it to your services account (NickServ CERT ADD): from now on it logs in with it, and `removepass` may forget your password.");
                } else {
                    answer.push_str(&format!("Add it to your services account where you are logged in (`/msg NickServ CERT ADD {fingerprint}`), then `reconnect`: from then on your puppet logs in with it."));
                }
                Ok(answer)
            }
            ("whois", [nick]) => network.whois(nick).await,
            ("raw", words) if !words.is_empty() => {
                // Words never hold CR or LF (they are split at white space), and the line
                // is parsed and built again, so it stays one command.
                let line = Line::parse(&words.join(" "))
                    .map_err(|error| ConnectorError::Refused(error.to_string()))?;
                let puppet = network.puppet(user, None).await?;
                send_lines(&puppet.connection, &[line]).await?;
                Ok(format!("Sent to {}.", network.name()))
            }
            ("username", [name]) => {
                if !is_valid_username(name) {
                    return Ok(format!(
                        "{name:?} is not a valid user name (1 to {MAX_USERNAME_LEN} of letters, digits, _ . and -, not starting with - or .)."
                    ));
                }
                let mut login = network.login(user).await?;
                login.username = Some(name.clone());
                network.save_login(user, &login).await?;
                network.disconnect(user, "Changing user name").await;
                Ok(format!(
                    "You will be {name} on {} from your next message.",
                    network.name()
                ))
            }
            ("quit", []) => {
                // Direct chats stay: they are the user's own rooms.
                let rooms = rooms_of(context, network, user).await?;
                let reason = format!("You quit {}", network.name());
                let mut kept = Vec::new();
                for (portal, channel) in rooms.iter().filter(|(p, _)| p.direct.is_none()) {
                    let kicked = context
                        .bridge
                        .matrix()
                        .bot()
                        .kick(&portal.room_id, user, Some(&reason))
                        .await;
                    if let Err(error) = kicked {
                        tracing::warn!(room = %portal.room_id, %error, "cannot remove a user who quit");
                        kept.push(channel.as_str());
                    }
                }
                network.disconnect(user, "Quit").await;
                let mut answer = format!("Disconnected you from {}", network.name());
                if !kept.is_empty() {
                    answer.push_str(&format!(
                        "; the bot may not remove you from the rooms of {}, leave them yourself",
                        kept.join(", ")
                    ));
                }
                answer.push('.');
                Ok(answer)
            }
            ("list", []) => {
                let rooms = rooms_of(context, network, user).await?;
                if rooms.is_empty() {
                    return Ok(format!("You are in no portal room of {}.", network.name()));
                }
                let lines: Vec<String> = rooms
                    .iter()
                    .map(|(portal, name)| format!("{name}: {}", portal.room_id))
                    .collect();
                Ok(lines.join("\n"))
            }
            ("reconnect", []) => {
                network.disconnect(user, "Reconnecting").await;
                Ok(format!(
                    "Disconnected you from {}; your next message connects you again.",
                    network.name()
                ))
            }
            _ => Ok(self.usage(command)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_one_short_line() {
        assert_eq!(quote("hello\nworld"), "hello");
        assert_eq!(quote("\n  spaced   out  \n"), "spaced out");
        assert_eq!(
            quote("the first words of a message that goes on and on"),
            "the first words of a message that goes…"
        );
        let long = "word ".repeat(20);
        assert!(quote(&long).chars().count() <= QUOTE_CHARS + 1);
        assert!(quote(&long).ends_with("word…"));
        assert_eq!(
            quote("é".repeat(50).as_str()).chars().count(),
            QUOTE_CHARS + 1
        );
        assert_eq!(quote(""), "");
    }

    #[test]
    fn nicks_become_ban_masks_and_masks_stay() {
        assert_eq!(ban_mask("spammer"), "spammer!*@*");
        for mask in ["*!*@host", "nick!user@host", "$a:account", "~a:account"] {
            assert_eq!(ban_mask(mask), mask);
        }
    }
}
