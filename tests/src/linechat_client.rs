//! A client of linechat, the example chat network, for tests. The protocol's reference is
//! the doc of its server, `bridge-core/examples/linechat-server.rs`.
//!
//! The client deals in `serde_json::Value` on purpose: it is a black box on the wire, so
//! tests assert on exactly what the server sent, not on what a typed model kept of it.
//!
//! Everything received that no call has taken yet (events, and replies nobody waited for)
//! is kept in arrival order. The waiting calls take the first value that matches and leave
//! the others queued for later calls: nothing is dropped.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::{Instant, timeout_at};

/// How long [`LineChatClient::connect`] and [`LineChatClient::send_op`] wait for a reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// One connection to a linechat server, signed in as one user.
#[derive(Debug)]
pub struct LineChatClient {
    user: String,
    /// `next_line` is cancel safe: a timeout never loses part of a line.
    lines: Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
    /// Received and not yet taken, oldest first.
    queue: VecDeque<Value>,
    next_ref: u64,
}

impl LineChatClient {
    /// Connects, sends `hello` as `user` with display name `name`, and waits for `welcome`.
    pub async fn connect(addr: SocketAddr, user: &str, name: &str) -> io::Result<Self> {
        let stream = tokio::time::timeout(REPLY_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| timed_out(format!("connecting to {addr}")))??;
        stream.set_nodelay(true)?;
        let (read_half, writer) = stream.into_split();
        let mut client = LineChatClient {
            user: user.to_owned(),
            lines: BufReader::new(read_half).lines(),
            writer,
            queue: VecDeque::new(),
            next_ref: 0,
        };
        let reply = client
            .send_op(json!({"op": "hello", "user": user, "name": name}))
            .await?;
        if reply["op"] != "welcome" {
            return Err(refused(user, "hello", &reply));
        }
        Ok(client)
    }

    /// The user this connection said hello as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Sends one line as it is (a `\n` is added): for tests of malformed input.
    pub async fn send_raw(&mut self, line: &str) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.writer.write_all(&bytes).await
    }

    /// Sends an op (a JSON object) with a fresh `ref` and returns the server's reply to it,
    /// `ok`, `welcome` or `error` alike. Events and other lines that arrive meanwhile are
    /// queued.
    pub async fn send_op(&mut self, op: Value) -> io::Result<Value> {
        let Value::Object(mut op) = op else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an op must be a JSON object",
            ));
        };
        self.next_ref += 1;
        let reference = format!("{}-{}", self.user, self.next_ref);
        op.insert("ref".to_owned(), Value::from(reference.as_str()));
        self.send_raw(&Value::Object(op).to_string()).await?;
        self.wait_for(REPLY_TIMEOUT, |value| {
            is_reply(value) && value["ref"] == reference.as_str()
        })
        .await
    }

    /// Sends an op and returns its `ok` reply; an `error` reply becomes an `Err` naming
    /// the op and the server's message. Use [`send_op`](Self::send_op) to look at refusals.
    pub async fn send_ok(&mut self, op: Value) -> io::Result<Value> {
        let name = op["op"].as_str().unwrap_or("op").to_owned();
        let reply = self.send_op(op).await?;
        if reply["op"] == "ok" {
            Ok(reply)
        } else {
            Err(refused(&self.user, &name, &reply))
        }
    }

    pub async fn join(&mut self, channel: &str) -> io::Result<Value> {
        self.send_ok(json!({"op": "join", "channel": channel}))
            .await
    }

    pub async fn part(&mut self, channel: &str) -> io::Result<Value> {
        self.send_ok(json!({"op": "part", "channel": channel}))
            .await
    }

    /// Watches `channel`. The stored events with seq > `after` arrive before the reply and
    /// are queued like any event (read them with [`next_event`](Self::next_event) or
    /// [`wait_events`](Self::wait_events)); the reply's `seq` is the latest seq.
    pub async fn watch(&mut self, channel: &str, after: u64) -> io::Result<Value> {
        self.send_ok(json!({"op": "watch", "channel": channel, "after": after}))
            .await
    }

    /// Sends a text message; the reply has its `seq` (and `"duplicate": true` for a repeat).
    pub async fn send(&mut self, channel: &str, id: &str, text: &str) -> io::Result<Value> {
        self.send_ok(json!({"op": "send", "channel": channel, "id": id, "text": text}))
            .await
    }

    pub async fn send_reply(
        &mut self,
        channel: &str,
        id: &str,
        text: &str,
        reply_to: &str,
    ) -> io::Result<Value> {
        let op =
            json!({"op": "send", "channel": channel, "id": id, "text": text, "reply_to": reply_to});
        self.send_ok(op).await
    }

    pub async fn edit(
        &mut self,
        channel: &str,
        id: &str,
        target: &str,
        text: &str,
    ) -> io::Result<Value> {
        let op =
            json!({"op": "edit", "channel": channel, "id": id, "target": target, "text": text});
        self.send_ok(op).await
    }

    pub async fn delete(&mut self, channel: &str, id: &str, target: &str) -> io::Result<Value> {
        let op = json!({"op": "delete", "channel": channel, "id": id, "target": target});
        self.send_ok(op).await
    }

    pub async fn react(
        &mut self,
        channel: &str,
        id: &str,
        target: &str,
        emoji: &str,
    ) -> io::Result<Value> {
        let op =
            json!({"op": "react", "channel": channel, "id": id, "target": target, "emoji": emoji});
        self.send_ok(op).await
    }

    pub async fn topic(&mut self, channel: &str, topic: &str) -> io::Result<Value> {
        self.send_ok(json!({"op": "topic", "channel": channel, "topic": topic}))
            .await
    }

    /// Sets the display name and the avatar (`None` clears it).
    pub async fn profile(&mut self, name: &str, avatar: Option<&str>) -> io::Result<Value> {
        self.send_ok(json!({"op": "profile", "name": name, "avatar": avatar}))
            .await
    }

    pub async fn typing(&mut self, channel: &str, typing: bool) -> io::Result<Value> {
        self.send_ok(json!({"op": "typing", "channel": channel, "typing": typing}))
            .await
    }

    /// The reply has `members` (`[{"user","name","avatar"}..]`) and `topic`.
    pub async fn names(&mut self, channel: &str) -> io::Result<Value> {
        self.send_ok(json!({"op": "names", "channel": channel}))
            .await
    }

    pub async fn ping(&mut self) -> io::Result<Value> {
        self.send_ok(json!({"op": "ping"})).await
    }

    /// The next value received, whatever it is, or `None` if none comes within `timeout`.
    pub async fn next_value(&mut self, timeout: Duration) -> io::Result<Option<Value>> {
        if let Some(value) = self.queue.pop_front() {
            return Ok(Some(value));
        }
        self.read_value(Instant::now() + timeout).await
    }

    /// The next event, or `None` if none comes within `timeout`. Replies received meanwhile
    /// stay queued.
    pub async fn next_event(&mut self, timeout: Duration) -> io::Result<Option<Value>> {
        match self.wait_for(timeout, is_event).await {
            Ok(event) => Ok(Some(event)),
            Err(error) if error.kind() == io::ErrorKind::TimedOut => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The first event for which `matches` is true, waiting up to `timeout`; the events
    /// passed over stay queued.
    pub async fn wait_event(
        &mut self,
        timeout: Duration,
        mut matches: impl FnMut(&Value) -> bool,
    ) -> io::Result<Value> {
        self.wait_for(timeout, |value| is_event(value) && matches(value))
            .await
    }

    /// The first `count` events for which `matches` is true, in arrival order, waiting up
    /// to `timeout` in all; the others stay queued. On a timeout the events found so far
    /// are put back at the front of the queue.
    pub async fn wait_events(
        &mut self,
        count: usize,
        timeout: Duration,
        mut matches: impl FnMut(&Value) -> bool,
    ) -> io::Result<Vec<Value>> {
        let deadline = Instant::now() + timeout;
        let mut found = Vec::new();
        let mut rest = VecDeque::new();
        for value in self.queue.drain(..) {
            if found.len() < count && is_event(&value) && matches(&value) {
                found.push(value);
            } else {
                rest.push_back(value);
            }
        }
        self.queue = rest;
        while found.len() < count {
            match self.read_value(deadline).await {
                Ok(Some(value)) if is_event(&value) && matches(&value) => found.push(value),
                Ok(Some(value)) => self.queue.push_back(value),
                Ok(None) => {
                    let message = format!("{} of {count} events within {timeout:?}", found.len());
                    self.put_back(found);
                    return Err(self.timed_out_with_queue(&message));
                }
                Err(error) => {
                    self.put_back(found);
                    return Err(error);
                }
            }
        }
        Ok(found)
    }

    /// The first `count` message events of `channel`, in order.
    pub async fn wait_messages(
        &mut self,
        channel: &str,
        count: usize,
        timeout: Duration,
    ) -> io::Result<Vec<Value>> {
        self.wait_events(count, timeout, |event| {
            event["type"] == "message" && event["channel"] == channel
        })
        .await
    }

    /// The first value received (event or reply) for which `matches` is true; the others
    /// stay queued.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        mut matches: impl FnMut(&Value) -> bool,
    ) -> io::Result<Value> {
        if let Some(position) = self.queue.iter().position(&mut matches)
            && let Some(value) = self.queue.remove(position)
        {
            return Ok(value);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.read_value(deadline).await? {
                Some(value) if matches(&value) => return Ok(value),
                Some(value) => self.queue.push_back(value),
                None => {
                    let message = format!("nothing matching within {timeout:?}");
                    return Err(self.timed_out_with_queue(&message));
                }
            }
        }
    }

    /// Waits until the server closes the connection, queueing what arrives before; an
    /// error if it is still open after `timeout`.
    pub async fn wait_closed(&mut self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.read_value(deadline).await {
                Ok(Some(value)) => self.queue.push_back(value),
                Ok(None) => {
                    return Err(self.timed_out_with_queue("the connection is still open"));
                }
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    return Ok(());
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Everything received and not taken yet, oldest first.
    pub fn queued(&self) -> &VecDeque<Value> {
        &self.queue
    }

    /// Reads one value; `None` at the deadline.
    async fn read_value(&mut self, deadline: Instant) -> io::Result<Option<Value>> {
        let line = match timeout_at(deadline, self.lines.next_line()).await {
            Err(_) => return Ok(None),
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{}: the server closed the connection", self.user),
                ));
            }
            Ok(Err(error)) => return Err(error),
        };
        serde_json::from_str(&line).map(Some).map_err(|error| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: the server sent a line that is not JSON ({error}): {line}",
                    self.user
                ),
            )
        })
    }

    fn put_back(&mut self, values: Vec<Value>) {
        for value in values.into_iter().rev() {
            self.queue.push_front(value);
        }
    }

    /// A timeout error that shows the end of the queue, which is usually what the test
    /// got instead of what it waited for.
    fn timed_out_with_queue(&self, what: &str) -> io::Error {
        let last: Vec<String> = self
            .queue
            .iter()
            .rev()
            .take(5)
            .rev()
            .map(Value::to_string)
            .collect();
        timed_out(format!(
            "{}: {what}; {} queued, the last: {}",
            self.user,
            self.queue.len(),
            last.join(" ")
        ))
    }
}

/// Whether a value is an event (not a reply).
pub fn is_event(value: &Value) -> bool {
    value["op"] == "event"
}

/// Whether a value is a reply to an op.
pub fn is_reply(value: &Value) -> bool {
    matches!(value["op"].as_str(), Some("ok" | "error" | "welcome"))
}

fn timed_out(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, message)
}

fn refused(user: &str, op: &str, reply: &Value) -> io::Error {
    io::Error::other(format!("{user}: the server refused {op}: {reply}"))
}
