//! A raw XMPP client-to-server client for tests: plain TCP (the test Prosody allows it),
//! SASL PLAIN, resource binding, MUC join and messages.
//!
//! It does not use tokio-xmpp on purpose: tokio-xmpp's `component` feature, which the
//! bridge needs, switches xmpp-parsers' stanza namespace to `jabber:component:accept` for
//! the whole build, and a c2s client built beside it cannot bind. Stanzas are minidom
//! elements with explicit namespaces, parsed incrementally by rxml.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use base64::Engine;
use minidom::Element;
use minidom::tree_builder::TreeBuilder;
use rxml::AsyncRawReader;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::{Error, Result};

/// The client namespace.
pub const NS_CLIENT: &str = "jabber:client";
/// The MUC namespace (XEP-0045).
pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
/// The MUC user namespace (XEP-0045), carrying status codes.
pub const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";

/// A logged-in XMPP user with a bound resource.
#[derive(Debug)]
pub struct XmppClient {
    reader: StanzaReader,
    writer: OwnedWriteHalf,
    jid: String,
    unseen: VecDeque<Element>,
    next_id: u64,
}

struct StanzaReader {
    /// Always `Some` but during a stream restart, which rebuilds the parser over the same
    /// buffered socket.
    reader: Option<AsyncRawReader<BufReader<OwnedReadHalf>>>,
    tree: TreeBuilder,
}

impl std::fmt::Debug for StanzaReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StanzaReader")
    }
}

impl StanzaReader {
    fn new(read: OwnedReadHalf) -> Self {
        StanzaReader {
            reader: Some(AsyncRawReader::new(BufReader::new(read))),
            tree: TreeBuilder::new(),
        }
    }

    /// Starts parsing a new stream (after SASL success) on the same connection.
    fn restart(&mut self) {
        if let Some(reader) = self.reader.take() {
            let (socket, _old_parser) = reader.into_inner();
            self.reader = Some(AsyncRawReader::new(socket));
        }
        self.tree = TreeBuilder::new();
    }

    /// Reads until one child of the stream root is complete.
    async fn next(&mut self) -> Result<Element> {
        loop {
            let reader = self
                .reader
                .as_mut()
                .ok_or_else(|| Error::Protocol("the XMPP stream is closed".into()))?;
            let event = reader
                .read()
                .await
                .map_err(Error::io("reading the XMPP stream"))?
                .ok_or_else(|| Error::Protocol("the XMPP stream ended".into()))?;
            let closes_element = matches!(event, rxml::RawEvent::ElementFoot(_));
            self.tree
                .process_event(event)
                .map_err(|e| Error::Protocol(format!("bad XML from the server: {e}")))?;
            if self.tree.root.is_some() {
                return Err(Error::Protocol("the server closed the XMPP stream".into()));
            }
            if closes_element
                && self.tree.depth() == 1
                && let Some(stanza) = self.tree.unshift_child()
            {
                return Ok(stanza);
            }
        }
    }
}

impl XmppClient {
    /// Connects to 127.0.0.1:`port`, logs in as `user@domain` with SASL PLAIN and binds a
    /// resource.
    pub async fn connect(
        port: u16,
        domain: &str,
        user: &str,
        password: &str,
    ) -> Result<XmppClient> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(Error::io(format!("connecting to XMPP port {port}")))?;
        let (read, write) = stream.into_split();
        let mut client = XmppClient {
            reader: StanzaReader::new(read),
            writer: write,
            jid: format!("{user}@{domain}"),
            unseen: VecDeque::new(),
            next_id: 0,
        };
        client.open_stream(domain).await?;
        client.expect_features().await?;
        let credentials = format!("\0{user}\0{password}");
        let auth = Element::builder("auth", NS_SASL)
            .attr(name("mechanism"), "PLAIN")
            .append(base64::engine::general_purpose::STANDARD.encode(credentials))
            .build();
        client.send(&auth).await?;
        let answer = client.reader.next().await?;
        if answer.name() != "success" {
            return Err(Error::Protocol(format!(
                "SASL failed: {}",
                to_string(&answer)
            )));
        }
        // A successful SASL exchange restarts the stream on the same connection.
        client.reader.restart();
        client.open_stream(domain).await?;
        client.expect_features().await?;
        let bind = Element::builder("bind", NS_BIND)
            .append(Element::builder("resource", NS_BIND).append("test").build())
            .build();
        let result = client.iq("set", domain, bind).await?;
        let jid = result
            .get_child("bind", NS_BIND)
            .and_then(|b| b.get_child("jid", NS_BIND))
            .map(Element::text)
            .ok_or_else(|| Error::Protocol(format!("no bound JID in {}", to_string(&result))))?;
        client.jid = jid;
        client
            .send(&Element::builder("presence", NS_CLIENT).build())
            .await?;
        Ok(client)
    }

    /// The full JID this client is bound to.
    pub fn jid(&self) -> &str {
        &self.jid
    }

    async fn open_stream(&mut self, domain: &str) -> Result<()> {
        // The stream header is the one element that is never closed, so no serializer can
        // write it; the only variable part is escaped.
        let header = format!(
            "<?xml version='1.0'?><stream:stream to='{}' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
            escape_attribute(domain)
        );
        self.writer
            .write_all(header.as_bytes())
            .await
            .map_err(Error::io("writing the XMPP stream header"))
    }

    async fn expect_features(&mut self) -> Result<Element> {
        let features = tokio::time::timeout(Duration::from_secs(10), self.reader.next())
            .await
            .map_err(|_| Error::Timeout {
                what: "XMPP stream features".into(),
                seconds: 10.0,
            })??;
        if features.name() != "features" {
            return Err(Error::Protocol(format!(
                "expected stream features, got {}",
                to_string(&features)
            )));
        }
        Ok(features)
    }

    /// Sends one stanza.
    pub async fn send(&mut self, stanza: &Element) -> Result<()> {
        let mut bytes = Vec::new();
        stanza
            .write_to(&mut bytes)
            .map_err(|e| Error::Protocol(format!("serializing a stanza: {e}")))?;
        self.writer
            .write_all(&bytes)
            .await
            .map_err(Error::io("writing to XMPP"))
    }

    /// Sends an IQ and waits for its result.
    pub async fn iq(&mut self, kind: &str, to: &str, payload: Element) -> Result<Element> {
        self.next_id += 1;
        let id = format!("q{}", self.next_id);
        let iq = Element::builder("iq", NS_CLIENT)
            .attr(name("type"), kind)
            .attr(name("to"), to)
            .attr(name("id"), id.as_str())
            .append(payload)
            .build();
        self.send(&iq).await?;
        let answer = self
            .wait_for(Duration::from_secs(10), |s| {
                s.name() == "iq" && s.attr("id") == Some(id.as_str())
            })
            .await?;
        if answer.attr("type") == Some("result") {
            Ok(answer)
        } else {
            Err(Error::Protocol(format!(
                "IQ failed: {}",
                to_string(&answer)
            )))
        }
    }

    /// Joins a MUC as `room@service/nick` without history and waits for the
    /// self-presence (status 110).
    pub async fn join_muc(&mut self, room: &str, nick: &str) -> Result<()> {
        self.join_muc_with_history(room, nick, 0).await
    }

    /// Joins a MUC as `room@service/nick`, asking for its last `history` messages, and
    /// waits for the self-presence (status 110).
    pub async fn join_muc_with_history(
        &mut self,
        room: &str,
        nick: &str,
        history: u32,
    ) -> Result<()> {
        let occupant = format!("{room}/{nick}");
        let presence = Element::builder("presence", NS_CLIENT)
            .attr(name("to"), occupant.as_str())
            .append(
                Element::builder("x", NS_MUC)
                    .append(
                        Element::builder("history", NS_MUC)
                            .attr(name("maxstanzas"), history.to_string())
                            .build(),
                    )
                    .build(),
            )
            .build();
        self.send(&presence).await?;
        let answer = self
            .wait_for(Duration::from_secs(10), |s| {
                s.name() == "presence" && s.attr("from") == Some(occupant.as_str())
            })
            .await?;
        if answer.attr("type") == Some("error") {
            return Err(Error::Protocol(format!(
                "cannot join {occupant}: {}",
                to_string(&answer)
            )));
        }
        Ok(())
    }

    /// Sends a groupchat message to a MUC.
    pub async fn send_groupchat(&mut self, room: &str, body: &str) -> Result<()> {
        let message = Element::builder("message", NS_CLIENT)
            .attr(name("to"), room)
            .attr(name("type"), "groupchat")
            .append(Element::builder("body", NS_CLIENT).append(body).build())
            .build();
        self.send(&message).await
    }

    /// Sends a chat message to a JID.
    pub async fn send_chat(&mut self, to: &str, body: &str) -> Result<()> {
        let message = Element::builder("message", NS_CLIENT)
            .attr(name("to"), to)
            .attr(name("type"), "chat")
            .append(Element::builder("body", NS_CLIENT).append(body).build())
            .build();
        self.send(&message).await
    }

    /// Waits for a message whose body is exactly `body`.
    pub async fn wait_for_body(&mut self, body: &str, timeout: Duration) -> Result<Element> {
        self.wait_for(timeout, |s| {
            s.name() == "message"
                && s.get_child("body", NS_CLIENT)
                    .is_some_and(|b| b.text() == body)
        })
        .await
    }

    /// Waits for a stanza satisfying `matches`; others stay queued for later waits.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        matches: impl Fn(&Element) -> bool,
    ) -> Result<Element> {
        if let Some(index) = self.unseen.iter().position(&matches)
            && let Some(stanza) = self.unseen.remove(index)
        {
            return Ok(stanza);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let stanza = match tokio::time::timeout(left, self.reader.next()).await {
                Ok(stanza) => stanza?,
                Err(_) => {
                    return Err(Error::Timeout {
                        what: format!("a stanza for {}", self.jid),
                        seconds: timeout.as_secs_f64(),
                    });
                }
            };
            if matches(&stanza) {
                return Ok(stanza);
            }
            self.unseen.push_back(stanza);
        }
    }

    /// Closes the stream.
    pub async fn close(mut self) -> Result<()> {
        self.writer
            .write_all(b"</stream:stream>")
            .await
            .map_err(Error::io("closing the XMPP stream"))
    }
}

/// Serializes an element for messages.
pub fn to_string(element: &Element) -> String {
    let mut bytes = Vec::new();
    let _ = element.write_to(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

fn name(name: &str) -> rxml::NcName {
    rxml::NcName::try_from(name).expect("attribute names in this file are valid XML names")
}

fn escape_attribute(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}
