//! The XMPP connector: what bridge-core asks of the XMPP side, carried out by the
//! [`Gateway`].

use std::sync::Arc;

use async_trait::async_trait;
use bridge_core::bridge::BridgeHandle;
use bridge_core::connector::{
    Capabilities, Connector, ConnectorError, ConnectorInfo, GhostInfo, MatrixMembership,
    MatrixMessage, Membership, MessageKind, Portal, PortalInfo,
};
use tokio_xmpp::jid::BareJid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::oob::Oob;

use crate::config::XmppConfig;
use crate::gateway::Gateway;
use crate::ids::{GhostId, room_of_alias};

/// The XMPP connector.
#[derive(Debug)]
pub struct XmppConnector {
    gateway: Arc<Gateway>,
}

impl XmppConnector {
    /// A connector for `config`.
    pub fn new(config: XmppConfig) -> XmppConnector {
        XmppConnector {
            gateway: Gateway::new(config),
        }
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
/// link in the body and as an out-of-band link (XEP-0066), which clients show inline.
fn message_content(bridge: &BridgeHandle, message: &MatrixMessage) -> (String, Vec<Element>) {
    let mut body = match message.kind {
        MessageKind::Emote => format!("/me {}", message.body),
        _ => message.body.clone(),
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
    (body, payloads)
}

#[async_trait]
impl Connector for XmppConnector {
    fn info(&self) -> ConnectorInfo {
        ConnectorInfo {
            network: "xmpp",
            display_name: "XMPP",
            capabilities: Capabilities::default(),
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

    async fn portal_created(&self, portal: &Portal) -> Result<(), ConnectorError> {
        // The occupants came before the portal existed: mirror their ranks now.
        if portal.direct.is_none() {
            self.gateway.sync_levels(&Self::room(portal)?).await;
        }
        Ok(())
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
        let room = Self::room(portal)?;
        let (body, payloads) = message_content(self.gateway.bridge(), message);
        // The event id is the message's id: a repeat after a crash carries the same one.
        let id = message.event_id.to_string();
        self.gateway
            .say(
                &room,
                &message.sender,
                message.sender_name.as_deref(),
                &id,
                &body,
                payloads,
            )
            .await?;
        Ok(vec![id])
    }

    async fn handle_membership(
        &self,
        portal: &Portal,
        membership: &MatrixMembership,
    ) -> Result<(), ConnectorError> {
        if membership.target_ghost.is_some() || portal.direct.is_some() {
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
