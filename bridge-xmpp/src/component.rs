//! The component connection (XEP-0114): one stream to the XMPP server, kept up.
//!
//! tokio-xmpp's `Component` ends its stream on a soft read timeout and on any stanza the
//! parsers reject, and never reconnects; this module drives tokio-xmpp's XML stream
//! itself instead. A quiet stream is pinged, a stanza that does not parse is answered
//! with a `bad-request` error (and the stream goes on), and a lost connection is made
//! again with exponential backoff and jitter. Each new connection bumps a generation
//! number that [`Component::connected`] watches, so the connector knows when to join
//! its rooms again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt as _};
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_xmpp::Stanza;
use tokio_xmpp::jid::Jid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::component::Handshake;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::ping::Ping;
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};
use tokio_xmpp::xmlstream::{
    FallibleStreamElement, RawStanzaHeader, ReadError, StreamElementError, StreamHeader, Timeouts,
    XmppStream, XmppStreamElement, initiate_stream,
};

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ComponentOptions {
    /// The component's domain.
    pub domain: String,
    /// The server's component listener.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The shared secret.
    pub secret: String,
    /// Silence after which the stream is pinged; as long again without an answer and it
    /// is dropped.
    pub keepalive: Duration,
}

/// Why a stanza was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// There is no connection now.
    #[error("not connected to the XMPP server")]
    NotConnected,
    /// The connection was lost while sending.
    #[error("the XMPP connection was lost: {0}")]
    Lost(String),
}

type Stream = XmppStream<BufStream<TcpStream>>;

struct Outgoing {
    stanza: Stanza,
    done: oneshot::Sender<Result<(), SendError>>,
}

/// The component connection, shared by everything that sends.
#[derive(Debug)]
pub struct Component {
    options: ComponentOptions,
    outgoing: mpsc::Sender<Outgoing>,
    outgoing_rx: tokio::sync::Mutex<mpsc::Receiver<Outgoing>>,
    /// The generation of the connection up now, `None` while there is none.
    connected: watch::Sender<Option<u64>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing").finish_non_exhaustive()
    }
}

/// Exponential backoff with jitter: 1 s doubling to 2 min.
#[derive(Debug)]
struct Backoff(Duration);

impl Backoff {
    fn next(&mut self) -> Duration {
        let ceiling = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(120));
        ceiling.mul_f64(rand::random_range(0.5..=1.0))
    }
}

impl Component {
    /// A component that connects once [`Component::run`] runs.
    pub fn new(options: ComponentOptions) -> Arc<Component> {
        let (outgoing, outgoing_rx) = mpsc::channel(256);
        Arc::new(Component {
            options,
            outgoing,
            outgoing_rx: tokio::sync::Mutex::new(outgoing_rx),
            connected: watch::Sender::new(None),
            next_id: AtomicU64::new(0),
        })
    }

    /// The component's domain.
    pub fn domain(&self) -> &str {
        &self.options.domain
    }

    /// Watches the connection: `Some(generation)` while one is up.
    pub fn connected(&self) -> watch::Receiver<Option<u64>> {
        self.connected.subscribe()
    }

    /// A fresh stanza id.
    pub fn next_id(&self) -> String {
        format!("t{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Sends `stanza`; returns once it is written to the connection.
    pub async fn send(&self, stanza: impl Into<Stanza>) -> Result<(), SendError> {
        if self.connected.borrow().is_none() {
            return Err(SendError::NotConnected);
        }
        let (done, result) = oneshot::channel();
        let outgoing = Outgoing {
            stanza: stanza.into(),
            done,
        };
        self.outgoing
            .send(outgoing)
            .await
            .map_err(|_| SendError::NotConnected)?;
        result.await.unwrap_or(Err(SendError::NotConnected))
    }

    /// Keeps the connection up until `stop`, handing every stanza received to `inbound`
    /// in order.
    pub async fn run(self: Arc<Self>, inbound: mpsc::Sender<Stanza>, stop: CancellationToken) {
        let mut outgoing = self.outgoing_rx.lock().await;
        let mut backoff = Backoff(Duration::from_secs(1));
        let mut generation = 0;
        while !stop.is_cancelled() {
            match self.connect().await {
                Ok(stream) => {
                    generation += 1;
                    backoff = Backoff(Duration::from_secs(1));
                    tracing::info!(
                        domain = %self.options.domain,
                        generation,
                        "connected to the XMPP server as a component"
                    );
                    self.connected.send_replace(Some(generation));
                    let why = self.serve(stream, &inbound, &mut outgoing, &stop).await;
                    self.connected.send_replace(None);
                    tracing::warn!(reason = %why, "the XMPP component connection ended");
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot connect to the XMPP server");
                }
            }
            // Nothing waits for a connection that is gone.
            while let Ok(pending) = outgoing.try_recv() {
                let _ = pending.done.send(Err(SendError::NotConnected));
            }
            tokio::select! {
                () = tokio::time::sleep(backoff.next()) => {}
                () = stop.cancelled() => {}
            }
        }
    }

    /// Opens the stream and does the handshake.
    async fn connect(&self) -> Result<Stream, String> {
        let options = &self.options;
        let attempt = async {
            let tcp = TcpStream::connect((options.host.as_str(), options.port))
                .await
                .map_err(|e| format!("{}:{}: {e}", options.host, options.port))?;
            let header = StreamHeader {
                to: Some(options.domain.as_str().into()),
                from: None,
                id: None,
            };
            let timeouts = Timeouts {
                read_timeout: options.keepalive,
                response_timeout: options.keepalive,
            };
            let mut pending = initiate_stream(BufStream::new(tcp), ns::COMPONENT, header, timeouts)
                .await
                .map_err(|e| format!("opening the stream: {e}"))?;
            let stream_id = pending
                .take_header()
                .id
                .map(|id| id.into_owned())
                .ok_or("the server's stream header has no id")?;
            let mut stream: Stream = pending.skip_features();
            let handshake = Handshake::from_stream_id_and_password(stream_id, &options.secret);
            stream
                .send(&XmppStreamElement::ComponentHandshake(handshake))
                .await
                .map_err(|e| format!("sending the handshake: {e}"))?;
            loop {
                match stream.next().await {
                    Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::ComponentHandshake(
                        _,
                    )))) => return Ok(stream),
                    Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::StreamError(error)))) => {
                        return Err(format!("the server refused the component: {error:?}"));
                    }
                    Some(Err(ReadError::SoftTimeout)) => {}
                    Some(Ok(other)) => {
                        return Err(format!("unexpected answer to the handshake: {other:?}"));
                    }
                    Some(Err(error)) => return Err(format!("during the handshake: {error}")),
                    None => return Err("the server closed the stream".to_owned()),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), attempt)
            .await
            .map_err(|_| "no answer within 30 s".to_owned())?
    }

    /// Carries stanzas both ways until the stream ends; returns why it ended.
    async fn serve(
        &self,
        mut stream: Stream,
        inbound: &mpsc::Sender<Stanza>,
        outgoing: &mut mpsc::Receiver<Outgoing>,
        stop: &CancellationToken,
    ) -> String {
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => {
                    let _ = SinkExt::<&Stanza>::close(&mut stream).await;
                    return "stopping".to_owned();
                }
                item = stream.next() => match item {
                    Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::Stanza(stanza)))) => {
                        if let Err(why) = Self::deliver(&mut stream, stanza, inbound, outgoing).await {
                            return why;
                        }
                    }
                    Some(Ok(FallibleStreamElement::Ok(XmppStreamElement::StreamError(error)))) => {
                        return format!("stream error from the server: {error:?}");
                    }
                    Some(Ok(FallibleStreamElement::Ok(other))) => {
                        tracing::debug!(?other, "ignoring a stream element");
                    }
                    Some(Ok(FallibleStreamElement::Err(StreamElementError::InvalidStanza {
                        name, header, error, ..
                    }))) => {
                        tracing::warn!(%name, from = ?header.from, %error, "a stanza does not parse; answering with an error");
                        if let Some(answer) = error_answer(&name.to_string(), header, &error.to_string())
                            && let Err(error) = stream.send(&answer).await
                        {
                            return format!("writing: {error}");
                        }
                    }
                    Some(Ok(FallibleStreamElement::Err(error))) => {
                        tracing::warn!(%error, "ignoring a stream element that does not parse");
                    }
                    Some(Err(ReadError::SoftTimeout)) => {
                        if let Err(error) = stream.send(&self.keepalive()).await {
                            return format!("writing: {error}");
                        }
                    }
                    Some(Err(ReadError::ParseError(error))) => {
                        tracing::warn!(%error, "ignoring an element that does not parse");
                    }
                    Some(Err(ReadError::HardError(error))) => return error.to_string(),
                    Some(Err(ReadError::StreamFooterReceived)) | None => {
                        return "the server closed the stream".to_owned();
                    }
                },
                Some(pending) = outgoing.recv() => {
                    if let Err(why) = Self::write(&mut stream, pending).await {
                        return why;
                    }
                }
            }
        }
    }

    /// Hands `stanza` to the handler, writing what is sent meanwhile: the handler may be
    /// waiting for one of its own sends to be written before it takes the next stanza.
    async fn deliver(
        stream: &mut Stream,
        stanza: Stanza,
        inbound: &mpsc::Sender<Stanza>,
        outgoing: &mut mpsc::Receiver<Outgoing>,
    ) -> Result<(), String> {
        loop {
            tokio::select! {
                permit = inbound.reserve() => {
                    let permit = permit.map_err(|_| "nothing handles stanzas any more".to_owned())?;
                    permit.send(stanza);
                    return Ok(());
                }
                Some(pending) = outgoing.recv() => Self::write(stream, pending).await?,
            }
        }
    }

    /// Writes one stanza and tells its sender.
    async fn write(stream: &mut Stream, pending: Outgoing) -> Result<(), String> {
        match stream.send(&pending.stanza).await {
            Ok(()) => {
                let _ = pending.done.send(Ok(()));
                Ok(())
            }
            Err(error) => {
                let _ = pending.done.send(Err(SendError::Lost(error.to_string())));
                Err(format!("writing: {error}"))
            }
        }
    }

    /// A ping from the component to itself: the server routes it back, and the answer
    /// proves the whole path alive.
    fn keepalive(&self) -> Stanza {
        let own = Jid::new(&self.options.domain).ok();
        Stanza::Iq(Iq::Get {
            from: own.clone(),
            to: own,
            id: format!("keepalive-{}", self.next_id()),
            payload: Ping.into(),
        })
    }
}

/// The error answer to a stanza that did not parse, if it deserves one (an IQ request or
/// a message outside group chats; answering errors or results would start a loop).
fn error_answer(name: &str, header: RawStanzaHeader, reason: &str) -> Option<Stanza> {
    // Never an error, a result, a presence or a group chat message: a room may take an
    // error from an occupant as a reason to kick it.
    if matches!(
        header.type_.as_deref(),
        Some("error" | "result" | "groupchat")
    ) || name == "presence"
    {
        return None;
    }
    let to = Jid::new(header.from.as_deref()?).ok()?;
    let from = header.to.as_deref().and_then(|j| Jid::new(j).ok());
    let error = StanzaError::new(
        ErrorType::Modify,
        DefinedCondition::BadRequest,
        "en",
        format!("the bridge cannot read this stanza: {reason}"),
    );
    Some(match name {
        "iq" => Stanza::Iq(Iq::Error {
            from,
            to: Some(to),
            id: header.id.unwrap_or_default(),
            error,
            payload: None,
        }),
        "message" => {
            let mut message = Message::new(Some(to));
            message.type_ = MessageType::Error;
            message.from = from;
            message.id = header.id.map(tokio_xmpp::parsers::message::Id);
            message.payloads.push(Element::from(error));
            Stanza::Message(message)
        }
        _ => return None,
    })
}
