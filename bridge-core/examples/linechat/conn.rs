//! One connection to a linechat server: ops sent with a fresh `ref` and their replies
//! matched to them, events handed to whoever reads [`Connection::events`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// Why an op failed.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The connection is gone, or the server did not answer in time (worth retrying on
    /// a new connection).
    #[error("connection lost")]
    Disconnected,
    /// The server refused the op.
    #[error("{0}")]
    Refused(String),
}

/// How long an op waits for its reply. A server that accepts an op and never answers is
/// broken: the op fails as [`OpError::Disconnected`] and is tried again later.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>;

/// A connection, logged in as one user.
#[derive(Debug)]
pub struct Connection {
    writer: mpsc::UnboundedSender<String>,
    waiting: Waiting,
    next_ref: AtomicU64,
    closed: Arc<AtomicBool>,
}

impl Connection {
    /// Connects to `server` and says hello as `user`; events arrive on the returned
    /// receiver, which ends when the connection does.
    pub async fn open(
        server: &str,
        user: &str,
        name: Option<&str>,
    ) -> Result<(Connection, mpsc::UnboundedReceiver<Value>), OpError> {
        let stream = TcpStream::connect(server)
            .await
            .map_err(|_| OpError::Disconnected)?;
        let (read, mut write) = stream.into_split();
        let (writer, mut lines) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(line) = lines.recv().await {
                if write.write_all(line.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
        let waiting: Waiting = Arc::default();
        let (events_tx, events) = mpsc::unbounded_channel();
        let replies = Arc::clone(&waiting);
        let closed = Arc::new(AtomicBool::new(false));
        let reader_closed = Arc::clone(&closed);
        tokio::spawn(async move {
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(message) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if message["op"] == "event" {
                    if events_tx.send(message).is_err() {
                        return;
                    }
                } else if let Some(reference) = message["ref"].as_str() {
                    let waiter = replies
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(reference);
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(message);
                    }
                }
            }
            // Dropping the waiters tells everyone waiting that the connection is gone.
            reader_closed.store(true, Ordering::SeqCst);
            replies.lock().unwrap_or_else(|p| p.into_inner()).clear();
        });
        let connection = Connection {
            writer,
            waiting,
            next_ref: AtomicU64::new(1),
            closed,
        };
        connection
            .request(json!({ "op": "hello", "user": user, "name": name }))
            .await?;
        Ok((connection, events))
    }

    /// Sends `op` and waits for its reply; a refusal is [`OpError::Refused`].
    pub async fn request(&self, mut op: Value) -> Result<Value, OpError> {
        let reference = self.next_ref.fetch_add(1, Ordering::Relaxed).to_string();
        op["ref"] = json!(reference);
        let (reply_tx, reply) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(reference.clone(), reply_tx);
        if self.closed.load(Ordering::SeqCst) {
            self.waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&reference);
            return Err(OpError::Disconnected);
        }
        // serde_json escapes control characters: a line is always exactly one op.
        let line = format!("{op}\n");
        self.writer.send(line).map_err(|_| OpError::Disconnected)?;
        let reply = match tokio::time::timeout(REPLY_TIMEOUT, reply).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => return Err(OpError::Disconnected),
            Err(_) => {
                self.waiting
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&reference);
                return Err(OpError::Disconnected);
            }
        };
        if reply["op"] == "error" {
            return Err(OpError::Refused(
                reply["message"].as_str().unwrap_or("refused").to_owned(),
            ));
        }
        Ok(reply)
    }

    /// Whether the connection still works.
    pub fn is_open(&self) -> bool {
        !self.closed.load(Ordering::SeqCst) && !self.writer.is_closed()
    }
}
