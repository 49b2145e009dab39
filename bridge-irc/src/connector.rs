//! The IRC connector: what bridge-core asks of the IRC side, routed to the network a
//! portal or ghost belongs to (see [`crate::ids`] for how ids name their network).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bridge_core::bridge::BridgeHandle;
use bridge_core::connector::{
    Capabilities, Connector, ConnectorError, ConnectorInfo, GhostInfo, MatrixEdit,
    MatrixMembership, MatrixMessage, Membership, MessageKind, Portal, PortalInfo,
};
use bridge_core::format::html_to_text;
use ruma::UserId;

use crate::config::{IrcConfig, is_valid_nick};
use crate::formatting::IrcMarkup;
use crate::ids::{ghost_id, ghost_id_of_localpart, ghost_localpart, split_id};
use crate::line::Line;
use crate::network::{Network, send_error};
use crate::split::{payload_limit, split_message};

/// Room the prefix `:nick!user@host ` may take on lines the server relays: a nick, a
/// 10-byte user name and a 63-byte host (RFC 1035's longest label), with separators.
const PREFIX_ALLOWANCE: usize = 1 + 10 + 1 + 63 + 2;
/// The wrapping of a CTCP ACTION: `\x01ACTION ` and `\x01`.
const ACTION_OVERHEAD: usize = 9;

/// The IRC connector.
#[derive(Debug)]
pub struct IrcConnector {
    networks: BTreeMap<String, Arc<Network>>,
}

impl IrcConnector {
    /// A connector for the networks of `config`.
    pub fn new(config: &IrcConfig) -> anyhow::Result<IrcConnector> {
        let mut networks = BTreeMap::new();
        for network in &config.networks {
            networks.insert(
                network.name.clone(),
                Arc::new(Network::new(network.clone())?),
            );
        }
        Ok(IrcConnector { networks })
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

/// The text of a Matrix message as IRC shows it: HTML as mIRC formatting, a reply as
/// `nick: text`, media as its name and link.
fn text_of(network: &Network, message: &MatrixMessage) -> String {
    let mut text = match &message.html {
        Some(html) => html_to_text(html, &IrcMarkup),
        None => message.body.clone(),
    };
    if let Some(media) = &message.media {
        text = format!("{text} ({})", media.url);
    }
    if let Some(reply) = &message.reply_to
        && let Some(nick) = network.nick_of_sender(&reply.sender)
    {
        text = format!("{nick}: {text}");
    }
    text
}

/// `text` as the payloads of PRIVMSG or NOTICE lines to `channel`, at most `max_lines`
/// (a longer message is cut, and the last line says so).
fn payloads(network: &Network, kind: &MessageKind, channel: &str, text: &str) -> Vec<String> {
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
    let mut lines = split_message(text, limit);
    let max = network.config.max_lines;
    if lines.len() > max {
        let cut = lines.len() - (max - 1);
        lines.truncate(max - 1);
        lines.push(format!("(… {cut} more lines not shown)"));
    }
    lines
}

fn line_for(kind: &MessageKind, channel: &str, payload: &str) -> Line {
    match kind {
        MessageKind::Notice => Line::new("NOTICE", [channel, payload]),
        MessageKind::Emote => Line::new("PRIVMSG", [channel, &format!("\x01ACTION {payload}\x01")]),
        _ => Line::new("PRIVMSG", [channel, payload]),
    }
}

impl IrcConnector {
    /// Sends `lines` as `sender`'s puppet in `channel`. A failure before the first line
    /// is worth a retry; after it, a retry would repeat what went, so the rest is
    /// refused and the sender told.
    async fn say(
        &self,
        network: &Arc<Network>,
        sender: &UserId,
        sender_name: Option<&str>,
        channel: &str,
        lines: &[Line],
    ) -> Result<(), ConnectorError> {
        let puppet = network.puppet_in(sender, sender_name, channel).await?;
        for (index, line) in lines.iter().enumerate() {
            if let Err(error) = puppet.connection.send(line).await {
                return Err(if index == 0 {
                    send_error(error)
                } else {
                    ConnectorError::Refused(format!(
                        "the IRC connection was lost after {index} of {} lines",
                        lines.len()
                    ))
                });
            }
        }
        Ok(())
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
                reactions: false,
                typing: false,
                receipts: false,
            },
        }
    }

    async fn start(&self, bridge: BridgeHandle) -> Result<(), ConnectorError> {
        for network in self.networks.values() {
            network.start(bridge.clone());
        }
        tracing::info!(networks = self.networks.len(), "IRC connector started");
        Ok(())
    }

    async fn stop(&self) {
        for network in self.networks.values() {
            network.stop().await;
        }
    }

    fn ghost_localpart(&self, id: &str) -> String {
        ghost_localpart(id)
    }

    fn ghost_id(&self, localpart: &str) -> Option<String> {
        ghost_id_of_localpart(localpart)
    }

    async fn resolve_portal(&self, suffix: &str) -> Result<Option<PortalInfo>, ConnectorError> {
        let Some((name, channel)) = suffix.split_once('_') else {
            return Ok(None);
        };
        let Some(network) = self.networks.get(name) else {
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
        let (network, channel) = self.route(portal)?;
        let text = text_of(network, message);
        let lines: Vec<Line> = payloads(network, &message.kind, channel, &text)
            .iter()
            .map(|payload| line_for(&message.kind, channel, payload))
            .collect();
        self.say(
            network,
            &message.sender,
            message.sender_name.as_deref(),
            channel,
            &lines,
        )
        .await?;
        Ok(vec![message.event_id.to_string()])
    }

    async fn handle_edit(
        &self,
        portal: &Portal,
        edit: &MatrixEdit,
    ) -> Result<Vec<String>, ConnectorError> {
        let (network, channel) = self.route(portal)?;
        // One line, never a repost of a long message: `* ` and the new text's first line.
        let text = text_of(network, &edit.new_content);
        let kind = &edit.new_content.kind;
        let mut payloads = payloads(network, kind, channel, &format!("* {text}"));
        if payloads.len() > 1 {
            payloads.truncate(1);
            payloads[0].push('…');
        }
        let lines: Vec<Line> = payloads
            .iter()
            .map(|payload| line_for(kind, channel, payload))
            .collect();
        self.say(network, &edit.sender, None, channel, &lines)
            .await?;
        Ok(vec![edit.event_id.to_string()])
    }

    async fn handle_membership(
        &self,
        portal: &Portal,
        membership: &MatrixMembership,
    ) -> Result<(), ConnectorError> {
        let (network, channel) = self.route(portal)?;
        if membership.target_ghost.is_some() {
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
}
