//! `linechat-server`: a small chat network for Trestle's example adapter and its tests.
//!
//! ```text
//! linechat-server [--listen ADDR]      (default 127.0.0.1:7667; 127.0.0.1:0 picks a free port)
//! ```
//!
//! Once bound it prints exactly one line, `listening on <actual address>`, to stdout, then
//! serves until killed. All state is in memory and lost when the process ends. This doc is
//! the reference for the protocol.
//!
//! # The linechat protocol
//!
//! TCP, UTF-8, one JSON object per line, each line ending in `\n` (a `\r` before it is
//! ignored, and so are blank lines). A line may be at most 64 KiB (65,536 bytes, the `\n`
//! not counted); a longer one is answered with an error and the connection is closed.
//!
//! ## Ops and replies
//!
//! A client sends ops: objects with an `"op"` field and optionally a `"ref"` string, which
//! the server copies into the reply. Every op gets exactly one reply, and the replies to one
//! connection come in the order of its ops; events may come between them.
//!
//! - success: `{"op":"ok","ref":..}` plus op-specific fields (`welcome` for `hello`);
//! - failure: `{"op":"error","ref":..,"message":"..."}`. A failed op changes nothing.
//!
//! `ref` is `null` in the reply when the op had none, and in the error for a line that is
//! not JSON or whose `ref` is not a string. Unknown fields in an op are ignored.
//!
//! ## Names and limits
//!
//! - user: 1-32 characters of `a-z 0-9 _ . -` (`alice`);
//! - channel: `#` and 1-50 characters of `a-z 0-9 _ . -` (`#rust`); a channel exists as
//!   soon as it is named, empty and without topic;
//! - message, edit, delete and reaction ids (`id`, `target`, `reply_to`): 1-200
//!   characters, none of them whitespace or control characters;
//! - text and topic: any string of at most 16 KiB (16,384 bytes of UTF-8);
//! - display name: 1-100 characters; avatar: 1-2,048 characters without whitespace or
//!   control characters (meant to be a URL, not checked further); emoji: 1-64 characters.
//!
//! ## Client ops
//!
//! - `{"op":"hello","user":"alice","name":"Alice A."?,"avatar":"https://.."?}` must be the
//!   first op of a connection, and comes once. Reply
//!   `{"op":"welcome","ref":..,"user":"alice","name":..,"avatar":..}` with the user's
//!   profile. Several connections may be the same user: they share its memberships and all
//!   receive its events. A new user's name is its user name and it has no avatar; `name`
//!   and `avatar` (`null` clears it) given in hello update the profile like `profile`.
//! - `{"op":"join","channel":"#x"}`: a `join` event if the user was not a member; ok either
//!   way. Membership belongs to the user and outlives its connections.
//! - `{"op":"part","channel":"#x"}`: a `part` event if the user was a member; ok either way.
//! - `{"op":"watch","channel":"#x","after":N}` (`after` defaults to 0): subscribes this
//!   connection to every event of the channel without being a member (a bridge's listener).
//!   The server first sends every stored event with seq > N, in order, then the reply
//!   `{"op":"ok","ref":..,"seq":<latest seq, 0 if none>}`, then live events. So the reply
//!   marks the end of the history, and no event is missed or sent twice between the two.
//!   Watching again replays again.
//! - `{"op":"send","channel":"#x","id":"m1","text":"hi","kind":"text"|"action"|"notice"?,
//!   "reply_to":"<message id>"?}` (`kind` defaults to `text`): a `message` event. The
//!   sender must be a member; `reply_to`, if given, must be the id of a message of the
//!   channel (a deleted one will do).
//! - `{"op":"edit","channel":"#x","id":"<op id>","target":"<message id>","text":".."}`: an
//!   `edit` event. Only the message's author may edit it, and not once it is deleted.
//! - `{"op":"delete","channel":"#x","id":"<op id>","target":"<message or reaction id>"}`:
//!   a `delete` event. Only the author of the message or reaction may delete it, once.
//!   Deleting a reaction is how a reaction is taken back.
//! - `{"op":"react","channel":"#x","id":"<reaction id>","target":"<message id>",
//!   "emoji":"👍"}`: a `react` event. Any member may react to a message that is not deleted,
//!   even twice with the same emoji.
//! - `{"op":"topic","channel":"#x","topic":".."}`: a `topic` event; the topic is stored as
//!   the channel's. Members only.
//! - `{"op":"typing","channel":"#x","typing":true|false}`: a `typing` event, which is
//!   neither stored nor numbered. Members only.
//! - `{"op":"profile","name":".."?,"avatar":".."|null?}`: updates the user's profile
//!   (a missing field is left as it is, `"avatar":null` clears the avatar). If anything
//!   changed, a `profile` event goes to every channel the user is a member of. Reply
//!   `{"op":"ok","ref":..,"name":..,"avatar":..}` with the profile now.
//! - `{"op":"names","channel":"#x"}`: reply
//!   `{"op":"ok","ref":..,"members":[{"user","name","avatar"}..],"topic":".."|null}`,
//!   members sorted by user name.
//! - `{"op":"ping"}`: reply ok.
//!
//! The ok reply of an op that stored an event carries its `"seq"`; a `join` or `part` that
//! changed nothing has no `seq`.
//!
//! ## Ids and retries
//!
//! The `id` of `send`, `edit`, `delete` and `react` is unique within the channel, across all
//! four. When the same sender repeats an id with the same op, the server answers
//! `{"op":"ok","ref":..,"seq":<seq of the first>,"duplicate":true}` and sends no event
//! (whatever the text), so a client that retries after a crash cannot post twice. An id
//! already used by another sender, or by another kind of op, is an error. The id check
//! comes before the membership check, so a retry is answered even after a part.
//!
//! ## Events
//!
//! ```text
//! {"op":"event","channel":"#x","seq":N,"ts":<ms since the epoch>,"type":"message",
//!  "sender":"alice","sender_name":"Alice A.","sender_avatar":null|"url", ...}
//! ```
//!
//! with, per `type`:
//!
//! | type      | fields                                                  |
//! |-----------|---------------------------------------------------------|
//! | `message` | `id`, `text`, `kind`, `reply_to` (or `null`)            |
//! | `edit`    | `id`, `target`, `text`                                  |
//! | `delete`  | `id`, `target`                                          |
//! | `react`   | `id`, `target`, `emoji`                                 |
//! | `join`    | none                                                    |
//! | `part`    | none                                                    |
//! | `topic`   | `topic`                                                 |
//! | `profile` | `name`, `avatar` (the new profile, as `sender_*` too)   |
//! | `typing`  | `typing` (and no `seq`)                                 |
//!
//! `sender_name` and `sender_avatar` are the sender's profile when the event happened.
//! Every event goes once to every connection of every member of the channel and to every
//! connection watching it, the sender's own connections included (an echo); a `part` event
//! still reaches the parting user. All events but `typing` are stored with the channel's
//! next seq (1, 2, 3, ...: strictly increasing, no gaps), and every connection receives a
//! channel's events in seq order. History is kept in full, for `watch`.
//!
//! ## Slow readers
//!
//! Each connection has a queue of at most 100,000 lines waiting to be written. A
//! connection whose queue is full (its peer stopped reading, or a `watch` replays more than
//! that) is closed at once.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{self, Write as _};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Mutex, Notify, mpsc};

const DEFAULT_LISTEN: &str = "127.0.0.1:7667";
const USAGE: &str = "usage: linechat-server [--listen ADDR]   (default 127.0.0.1:7667)";

/// The longest line read, in bytes, without its `\n`.
const MAX_LINE: usize = 64 * 1024;
/// The most lines queued for one connection before it is closed as too slow.
const MAX_QUEUE: usize = 100_000;
/// The longest text or topic, in bytes.
const MAX_TEXT: usize = 16 * 1024;
/// How long a closing connection may take to write what is still queued for it.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long input is read and thrown away after a too-long line, before closing.
const LINGER: Duration = Duration::from_secs(1);

#[tokio::main]
async fn main() -> ExitCode {
    let listen = match parse_args(std::env::args().skip(1)) {
        Ok(Some(listen)) => listen,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("linechat-server: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(&listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("linechat-server: cannot listen on {listen}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(error) => {
            eprintln!("linechat-server: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The one line a parent process waits for: after it, connecting works.
    let mut stdout = io::stdout();
    if writeln!(stdout, "listening on {addr}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    serve(listener).await;
    ExitCode::SUCCESS
}

/// `Ok(Some(listen address))`, or `Ok(None)` for `--help`.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<String>, String> {
    let mut listen = DEFAULT_LISTEN.to_owned();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs an address")?,
            "-h" | "--help" => return Ok(None),
            other => match other.strip_prefix("--listen=") {
                Some(value) => listen = value.to_owned(),
                None => return Err(format!("unknown argument {other:?}")),
            },
        }
    }
    Ok(Some(listen))
}

/// Accepts connections forever, one task each.
async fn serve(listener: TcpListener) {
    let state = Arc::new(Mutex::new(State::default()));
    loop {
        match listener.accept().await {
            Ok((socket, _)) => {
                tokio::spawn(handle_connection(socket, Arc::clone(&state)));
            }
            Err(error) => {
                // Usually out of file descriptors: wait for some to be freed instead of
                // spinning on the same error.
                eprintln!("linechat-server: accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

// ----------------------------------------------------------------------------------------
// Connections: a reader (this task) and a writer task fed by a queue.
// ----------------------------------------------------------------------------------------

/// Runs one connection: reads lines and applies them to the state, which queues replies
/// and events for the writer task. The reader never waits for the writer, so a slow peer
/// cannot hold up anyone else (see [`State::deliver`]).
async fn handle_connection(socket: TcpStream, state: Arc<Mutex<State>>) {
    // Events are small and often answer something: do not let Nagle delay them.
    let _ = socket.set_nodelay(true);
    let (read_half, write_half) = socket.into_split();
    let (tx, rx) = mpsc::channel(MAX_QUEUE);
    let kill = Arc::new(Notify::new());
    let id = state.lock().await.add_conn(tx.clone(), Arc::clone(&kill));
    let mut writer = tokio::spawn(write_loop(write_half, rx, kill));

    let mut reader = BufReader::new(read_half);
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let read = tokio::select! {
            // The writer stopped (the queue overflowed, or the peer stopped taking data):
            // the connection is over.
            () = tx.closed() => break,
            read = read_line(&mut reader, &mut line) => read,
        };
        match read {
            Ok(ReadLine::Line) => {
                if !line.trim_ascii().is_empty() {
                    state.lock().await.handle_line(id, &line);
                }
                line.clear();
            }
            Ok(ReadLine::TooLong) => {
                let message = format!("line longer than {MAX_LINE} bytes; closing");
                state.lock().await.reply(id, Value::Null, Err(message));
                too_long = true;
                break;
            }
            Ok(ReadLine::Eof) | Err(_) => break,
        }
    }

    state.lock().await.remove_conn(id);
    // With the last sender gone the writer writes what is queued, then closes its side.
    drop(tx);
    if tokio::time::timeout(FLUSH_TIMEOUT, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    if too_long {
        linger(reader).await;
    }
}

enum ReadLine {
    /// `line` holds a whole line, without its `\n`.
    Line,
    /// The line is longer than [`MAX_LINE`]; `line` holds its start.
    TooLong,
    /// The peer closed the connection (a last line without `\n` is dropped).
    Eof,
}

/// Reads one line into `line`, holding at most [`MAX_LINE`] + 1 bytes of it, so a peer
/// that never sends `\n` cannot make the server buffer without end.
///
/// Cancel safe: bytes read before a cancellation stay in `line`, and the next call goes on
/// from there (with the limit counting them).
async fn read_line(
    reader: &mut BufReader<OwnedReadHalf>,
    line: &mut Vec<u8>,
) -> io::Result<ReadLine> {
    let room = (MAX_LINE + 1).saturating_sub(line.len());
    let limit = u64::try_from(room).unwrap_or(u64::MAX);
    (&mut *reader).take(limit).read_until(b'\n', line).await?;
    if line.last() == Some(&b'\n') {
        line.pop();
        return Ok(if line.len() > MAX_LINE {
            ReadLine::TooLong
        } else {
            ReadLine::Line
        });
    }
    if line.len() > MAX_LINE {
        return Ok(ReadLine::TooLong);
    }
    // No newline and below the limit: `take` did not stop us, so the stream ended.
    Ok(ReadLine::Eof)
}

/// Writes queued lines until every sender is gone (then closes the write side), the peer
/// stops taking data, or `kill` is notified (then stops at once, dropping what is queued).
async fn write_loop(
    write_half: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Arc<str>>,
    kill: Arc<Notify>,
) {
    let mut out = BufWriter::new(write_half);
    loop {
        let next = tokio::select! {
            biased;
            () = kill.notified() => return,
            next = rx.recv() => next,
        };
        let Some(line) = next else { break };
        let write = async {
            out.write_all(line.as_bytes()).await?;
            // Flush only once the queue is empty, so a burst goes out in few large writes.
            if rx.is_empty() {
                out.flush().await?;
            }
            Ok::<(), io::Error>(())
        };
        tokio::select! {
            biased;
            () = kill.notified() => return,
            written = write => if written.is_err() { return },
        }
    }
    // Flushes what is buffered, then sends FIN.
    let _ = out.shutdown().await;
}

/// After a too-long line: closing a socket with unread input makes the kernel send a reset,
/// which may destroy the error reply before the peer reads it. So read and throw away what
/// the peer still sends, for a short while, before dropping the socket.
async fn linger(mut reader: BufReader<OwnedReadHalf>) {
    let mut scratch = [0u8; 8192];
    let drain = async { while let Ok(1..) = reader.read(&mut scratch).await {} };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

// ----------------------------------------------------------------------------------------
// Ops as they arrive on the wire.
// ----------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Op {
    Hello {
        user: String,
        name: Option<String>,
        #[serde(default, deserialize_with = "present")]
        avatar: Option<Option<String>>,
    },
    Join {
        channel: String,
    },
    Part {
        channel: String,
    },
    Watch {
        channel: String,
        #[serde(default)]
        after: u64,
    },
    Send {
        channel: String,
        id: String,
        text: String,
        #[serde(default)]
        kind: Kind,
        reply_to: Option<String>,
    },
    Edit {
        channel: String,
        id: String,
        target: String,
        text: String,
    },
    Delete {
        channel: String,
        id: String,
        target: String,
    },
    React {
        channel: String,
        id: String,
        target: String,
        emoji: String,
    },
    Topic {
        channel: String,
        topic: String,
    },
    Typing {
        channel: String,
        typing: bool,
    },
    Profile {
        name: Option<String>,
        #[serde(default, deserialize_with = "present")]
        avatar: Option<Option<String>>,
    },
    Names {
        channel: String,
    },
    Ping,
}

/// For fields where missing and `null` differ: missing is `None` (through
/// `#[serde(default)]`), `null` is `Some(None)`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    #[default]
    Text,
    Action,
    Notice,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Action => "action",
            Kind::Notice => "notice",
        }
    }
}

// ----------------------------------------------------------------------------------------
// The shared state. Every op runs under the one lock, start to end, with no await inside:
// that is what makes seqs gapless and every connection see a channel's events in order.
// ----------------------------------------------------------------------------------------

type ConnId = u64;

#[derive(Default)]
struct State {
    next_conn: ConnId,
    conns: HashMap<ConnId, Conn>,
    users: HashMap<String, User>,
    channels: HashMap<String, Channel>,
}

struct Conn {
    /// Lines for this connection's writer task.
    tx: mpsc::Sender<Arc<str>>,
    /// Stops the writer task at once, without writing what is queued.
    kill: Arc<Notify>,
    /// Set by hello.
    user: Option<String>,
    /// Channels this connection watches.
    watching: HashSet<String>,
}

struct User {
    name: String,
    avatar: Option<String>,
    conns: HashSet<ConnId>,
    channels: BTreeSet<String>,
}

#[derive(Default)]
struct Channel {
    topic: Option<String>,
    members: BTreeSet<String>,
    watchers: HashSet<ConnId>,
    /// Every stored event, as sent: `events[seq - 1]` has that seq.
    events: Vec<Arc<str>>,
    /// Every id used by send, edit, delete and react in this channel.
    ids: HashMap<String, IdRecord>,
}

struct IdRecord {
    sender: String,
    kind: IdKind,
    seq: u64,
    deleted: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum IdKind {
    Message,
    Edit,
    Delete,
    Reaction,
}

impl Channel {
    fn latest_seq(&self) -> u64 {
        self.events.len() as u64
    }

    /// The checks before a numbered op by `user` with op id `id`: `Ok(Some(reply))` if it
    /// repeats an earlier op of the same sender (answer that, do nothing), `Ok(None)` to go
    /// on, or why it is refused.
    fn admit(&self, user: &str, id: &str, kind: IdKind) -> Result<Option<Value>, String> {
        match self.ids.get(id) {
            Some(record) if record.sender == user && record.kind == kind => {
                return Ok(Some(
                    json!({"op": "ok", "seq": record.seq, "duplicate": true}),
                ));
            }
            Some(_) => return Err(format!("id {id:?} is already used in this channel")),
            None => {}
        }
        if !self.members.contains(user) {
            return Err("not a member of this channel".to_owned());
        }
        Ok(None)
    }

    /// The message (or, with `reactions`, the message or reaction) `target`, if it exists
    /// and is not deleted.
    fn live_target(&self, target: &str, reactions: bool) -> Result<&IdRecord, String> {
        let record = match self.ids.get(target) {
            Some(record) if record.kind == IdKind::Message => record,
            Some(record) if reactions && record.kind == IdKind::Reaction => record,
            _ if reactions => return Err(format!("no message or reaction {target:?}")),
            _ => return Err(format!("no message {target:?}")),
        };
        if record.deleted {
            return Err(format!("{target:?} is deleted"));
        }
        Ok(record)
    }

    fn record_id(&mut self, id: String, sender: &str, kind: IdKind, seq: u64) {
        let record = IdRecord {
            sender: sender.to_owned(),
            kind,
            seq,
            deleted: false,
        };
        self.ids.insert(id, record);
    }
}

fn not_member() -> String {
    "not a member of this channel".to_owned()
}

impl State {
    fn add_conn(&mut self, tx: mpsc::Sender<Arc<str>>, kill: Arc<Notify>) -> ConnId {
        self.next_conn += 1;
        let conn = Conn {
            tx,
            kill,
            user: None,
            watching: HashSet::new(),
        };
        self.conns.insert(self.next_conn, conn);
        self.next_conn
    }

    /// Forgets a connection (its user stays, with its memberships). Harmless if gone.
    fn remove_conn(&mut self, id: ConnId) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        if let Some(user) = conn.user.and_then(|user| self.users.get_mut(&user)) {
            user.conns.remove(&id);
        }
        for channel in conn.watching {
            if let Some(channel) = self.channels.get_mut(&channel) {
                channel.watchers.remove(&id);
            }
        }
    }

    /// Queues a line for one connection. Never waits: a connection whose queue is full is
    /// closed, so one peer that stops reading neither stalls the others nor makes the
    /// server buffer without end.
    fn deliver(&mut self, id: ConnId, line: &Arc<str>) {
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        match conn.tx.try_send(Arc::clone(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                eprintln!("linechat-server: connection {id} is not reading; closing it");
                conn.kill.notify_one();
                self.remove_conn(id);
            }
            // The writer already stopped; the reader will notice and clean up too.
            Err(TrySendError::Closed(_)) => self.remove_conn(id),
        }
    }

    /// Every connection that gets the channel's events: the members' and the watchers'.
    /// A set, so a member's connection that also watches gets each event once.
    fn recipients(&self, channel: &Channel) -> BTreeSet<ConnId> {
        let mut recipients: BTreeSet<ConnId> = channel.watchers.iter().copied().collect();
        for member in &channel.members {
            if let Some(user) = self.users.get(member) {
                recipients.extend(user.conns.iter().copied());
            }
        }
        recipients
    }

    fn broadcast(&mut self, channel: &str, line: &Arc<str>) {
        let Some(chan) = self.channels.get(channel) else {
            return;
        };
        for id in self.recipients(chan) {
            self.deliver(id, line);
        }
    }

    /// Builds an event from `user` in `channel` with the type-specific `fields`.
    fn event(
        &self,
        channel: &str,
        seq: Option<u64>,
        kind: &str,
        user: &str,
        fields: Value,
    ) -> Value {
        let (name, avatar) = match self.users.get(user) {
            Some(user) => (
                Value::from(user.name.as_str()),
                Value::from(user.avatar.clone()),
            ),
            None => (Value::from(user), Value::Null),
        };
        let mut event = json!({
            "op": "event",
            "channel": channel,
            "ts": now_ms(),
            "type": kind,
            "sender": user,
            "sender_name": name,
            "sender_avatar": avatar,
        });
        if let Some(object) = event.as_object_mut() {
            if let Some(seq) = seq {
                object.insert("seq".to_owned(), seq.into());
            }
            if let Value::Object(fields) = fields {
                object.extend(fields);
            }
        }
        event
    }

    /// Stores an event under the channel's next seq and sends it to the channel; returns
    /// the seq.
    fn post(&mut self, channel: &str, kind: &str, user: &str, fields: Value) -> u64 {
        let seq = self.channels.get(channel).map_or(0, Channel::latest_seq) + 1;
        let line = to_line(&self.event(channel, Some(seq), kind, user, fields));
        self.channels
            .entry(channel.to_owned())
            .or_default()
            .events
            .push(Arc::clone(&line));
        self.broadcast(channel, &line);
        seq
    }

    /// Parses and applies one line, and queues its reply.
    fn handle_line(&mut self, conn: ConnId, line: &[u8]) {
        let value: Value = match serde_json::from_slice(line) {
            Ok(value) => value,
            Err(error) => {
                return self.reply(conn, Value::Null, Err(format!("invalid JSON: {error}")));
            }
        };
        let reference = match value.get("ref") {
            None | Some(Value::Null) => Value::Null,
            Some(Value::String(reference)) => Value::from(reference.as_str()),
            Some(_) => {
                return self.reply(conn, Value::Null, Err("ref must be a string".to_owned()));
            }
        };
        let result = match Op::deserialize(value) {
            Ok(op) => self.apply(conn, op),
            Err(error) => Err(format!("invalid op: {error}")),
        };
        self.reply(conn, reference, result);
    }

    /// Queues the reply to an op: `result` is the reply object, or the error message.
    fn reply(&mut self, conn: ConnId, reference: Value, result: Result<Value, String>) {
        let mut reply = match result {
            Ok(reply) => reply,
            Err(message) => json!({"op": "error", "message": message}),
        };
        if let Some(object) = reply.as_object_mut() {
            object.insert("ref".to_owned(), reference);
        }
        self.deliver(conn, &to_line(&reply));
    }

    /// Applies one op from `conn`; the reply object, or why the op is refused.
    fn apply(&mut self, conn: ConnId, op: Op) -> Result<Value, String> {
        let Some(current) = self.conns.get(&conn) else {
            return Err("connection closed".to_owned());
        };
        match (op, current.user.clone()) {
            (Op::Hello { user, name, avatar }, None) => self.hello(conn, user, name, avatar),
            (Op::Hello { .. }, Some(_)) => Err("hello was already sent".to_owned()),
            (_, None) => Err("the first op must be hello".to_owned()),
            (Op::Join { channel }, Some(user)) => self.join(&user, &channel),
            (Op::Part { channel }, Some(user)) => self.part(&user, &channel),
            (Op::Watch { channel, after }, Some(_)) => self.watch(conn, &channel, after),
            (
                Op::Send {
                    channel,
                    id,
                    text,
                    kind,
                    reply_to,
                },
                Some(user),
            ) => self.send(&user, &channel, id, &text, kind, reply_to),
            (
                Op::Edit {
                    channel,
                    id,
                    target,
                    text,
                },
                Some(user),
            ) => self.edit(&user, &channel, id, &target, &text),
            (
                Op::Delete {
                    channel,
                    id,
                    target,
                },
                Some(user),
            ) => self.delete(&user, &channel, id, &target),
            (
                Op::React {
                    channel,
                    id,
                    target,
                    emoji,
                },
                Some(user),
            ) => self.react(&user, &channel, id, &target, &emoji),
            (Op::Topic { channel, topic }, Some(user)) => self.topic(&user, &channel, topic),
            (Op::Typing { channel, typing }, Some(user)) => self.typing(&user, &channel, typing),
            (Op::Profile { name, avatar }, Some(user)) => self.profile(&user, name, avatar),
            (Op::Names { channel }, Some(_)) => self.names(&channel),
            (Op::Ping, Some(_)) => Ok(json!({"op": "ok"})),
        }
    }

    fn hello(
        &mut self,
        conn: ConnId,
        user: String,
        name: Option<String>,
        avatar: Option<Option<String>>,
    ) -> Result<Value, String> {
        check_user(&user)?;
        check_profile(name.as_deref(), avatar.as_ref())?;
        let entry = self.users.entry(user.clone()).or_insert_with(|| User {
            name: user.clone(),
            avatar: None,
            conns: HashSet::new(),
            channels: BTreeSet::new(),
        });
        entry.conns.insert(conn);
        if let Some(current) = self.conns.get_mut(&conn) {
            current.user = Some(user.clone());
        }
        self.update_profile(&user, name, avatar);
        let (name, avatar) = self.profile_of(&user);
        Ok(json!({"op": "welcome", "user": user, "name": name, "avatar": avatar}))
    }

    fn join(&mut self, user: &str, channel: &str) -> Result<Value, String> {
        check_channel(channel)?;
        let chan = self.channels.entry(channel.to_owned()).or_default();
        if !chan.members.insert(user.to_owned()) {
            return Ok(json!({"op": "ok"}));
        }
        if let Some(entry) = self.users.get_mut(user) {
            entry.channels.insert(channel.to_owned());
        }
        let seq = self.post(channel, "join", user, json!({}));
        Ok(json!({"op": "ok", "seq": seq}))
    }

    fn part(&mut self, user: &str, channel: &str) -> Result<Value, String> {
        check_channel(channel)?;
        let is_member = self
            .channels
            .get(channel)
            .is_some_and(|chan| chan.members.contains(user));
        if !is_member {
            return Ok(json!({"op": "ok"}));
        }
        // Posted while still a member, so the parting user's connections see it too.
        let seq = self.post(channel, "part", user, json!({}));
        if let Some(chan) = self.channels.get_mut(channel) {
            chan.members.remove(user);
        }
        if let Some(entry) = self.users.get_mut(user) {
            entry.channels.remove(channel);
        }
        Ok(json!({"op": "ok", "seq": seq}))
    }

    fn watch(&mut self, conn: ConnId, channel: &str, after: u64) -> Result<Value, String> {
        check_channel(channel)?;
        let chan = self.channels.entry(channel.to_owned()).or_default();
        chan.watchers.insert(conn);
        let skip = usize::try_from(after).unwrap_or(usize::MAX);
        let replay: Vec<Arc<str>> = chan.events.iter().skip(skip).cloned().collect();
        let latest = chan.latest_seq();
        if let Some(current) = self.conns.get_mut(&conn) {
            current.watching.insert(channel.to_owned());
        }
        // Queued under the same lock as the reply: no live event can come between.
        for line in &replay {
            self.deliver(conn, line);
        }
        Ok(json!({"op": "ok", "seq": latest}))
    }

    fn send(
        &mut self,
        user: &str,
        channel: &str,
        id: String,
        text: &str,
        kind: Kind,
        reply_to: Option<String>,
    ) -> Result<Value, String> {
        check_channel(channel)?;
        check_id("id", &id)?;
        check_text("text", text)?;
        if let Some(reply_to) = &reply_to {
            check_id("reply_to", reply_to)?;
        }
        let chan = self.channels.get(channel).ok_or_else(not_member)?;
        if let Some(duplicate) = chan.admit(user, &id, IdKind::Message)? {
            return Ok(duplicate);
        }
        if let Some(reply_to) = &reply_to {
            match chan.ids.get(reply_to) {
                Some(record) if record.kind == IdKind::Message => {}
                _ => return Err(format!("reply_to: no message {reply_to:?}")),
            }
        }
        let fields = json!({"id": id, "text": text, "kind": kind.as_str(), "reply_to": reply_to});
        let seq = self.post(channel, "message", user, fields);
        self.record_id(channel, id, user, IdKind::Message, seq);
        Ok(json!({"op": "ok", "seq": seq}))
    }

    fn edit(
        &mut self,
        user: &str,
        channel: &str,
        id: String,
        target: &str,
        text: &str,
    ) -> Result<Value, String> {
        check_channel(channel)?;
        check_id("id", &id)?;
        check_id("target", target)?;
        check_text("text", text)?;
        let chan = self.channels.get(channel).ok_or_else(not_member)?;
        if let Some(duplicate) = chan.admit(user, &id, IdKind::Edit)? {
            return Ok(duplicate);
        }
        if chan.live_target(target, false)?.sender != user {
            return Err("only the author may edit a message".to_owned());
        }
        let fields = json!({"id": id, "target": target, "text": text});
        let seq = self.post(channel, "edit", user, fields);
        self.record_id(channel, id, user, IdKind::Edit, seq);
        Ok(json!({"op": "ok", "seq": seq}))
    }

    fn delete(
        &mut self,
        user: &str,
        channel: &str,
        id: String,
        target: &str,
    ) -> Result<Value, String> {
        check_channel(channel)?;
        check_id("id", &id)?;
        check_id("target", target)?;
        let chan = self.channels.get(channel).ok_or_else(not_member)?;
        if let Some(duplicate) = chan.admit(user, &id, IdKind::Delete)? {
            return Ok(duplicate);
        }
        if chan.live_target(target, true)?.sender != user {
            return Err("only the author may delete a message or reaction".to_owned());
        }
        let fields = json!({"id": id, "target": target});
        let seq = self.post(channel, "delete", user, fields);
        if let Some(chan) = self.channels.get_mut(channel)
            && let Some(record) = chan.ids.get_mut(target)
        {
            record.deleted = true;
        }
        self.record_id(channel, id, user, IdKind::Delete, seq);
        Ok(json!({"op": "ok", "seq": seq}))
    }

    fn react(
        &mut self,
        user: &str,
        channel: &str,
        id: String,
        target: &str,
        emoji: &str,
    ) -> Result<Value, String> {
        check_channel(channel)?;
        check_id("id", &id)?;
        check_id("target", target)?;
        if !(1..=64).contains(&emoji.chars().count()) {
            return Err("emoji must be 1-64 characters".to_owned());
        }
        let chan = self.channels.get(channel).ok_or_else(not_member)?;
        if let Some(duplicate) = chan.admit(user, &id, IdKind::Reaction)? {
            return Ok(duplicate);
        }
        chan.live_target(target, false)?;
        let fields = json!({"id": id, "target": target, "emoji": emoji});
        let seq = self.post(channel, "react", user, fields);
        self.record_id(channel, id, user, IdKind::Reaction, seq);
        Ok(json!({"op": "ok", "seq": seq}))
    }

    fn record_id(&mut self, channel: &str, id: String, user: &str, kind: IdKind, seq: u64) {
        if let Some(chan) = self.channels.get_mut(channel) {
            chan.record_id(id, user, kind, seq);
        }
    }

    fn topic(&mut self, user: &str, channel: &str, topic: String) -> Result<Value, String> {
        check_channel(channel)?;
        check_text("topic", &topic)?;
        let chan = self.channels.get_mut(channel).ok_or_else(not_member)?;
        if !chan.members.contains(user) {
            return Err(not_member());
        }
        chan.topic = Some(topic.clone());
        let seq = self.post(channel, "topic", user, json!({"topic": topic}));
        Ok(json!({"op": "ok", "seq": seq}))
    }

    fn typing(&mut self, user: &str, channel: &str, typing: bool) -> Result<Value, String> {
        check_channel(channel)?;
        let is_member = self
            .channels
            .get(channel)
            .is_some_and(|chan| chan.members.contains(user));
        if !is_member {
            return Err(not_member());
        }
        // Typing is a passing state: sent, never stored, no seq.
        let event = self.event(channel, None, "typing", user, json!({"typing": typing}));
        self.broadcast(channel, &to_line(&event));
        Ok(json!({"op": "ok"}))
    }

    fn profile(
        &mut self,
        user: &str,
        name: Option<String>,
        avatar: Option<Option<String>>,
    ) -> Result<Value, String> {
        check_profile(name.as_deref(), avatar.as_ref())?;
        self.update_profile(user, name, avatar);
        let (name, avatar) = self.profile_of(user);
        Ok(json!({"op": "ok", "name": name, "avatar": avatar}))
    }

    /// Sets what is given of the profile and, if that changed it, sends a profile event to
    /// every channel the user is a member of. The values are already checked.
    fn update_profile(&mut self, user: &str, name: Option<String>, avatar: Option<Option<String>>) {
        let Some(entry) = self.users.get_mut(user) else {
            return;
        };
        let mut changed = false;
        if let Some(name) = name.filter(|name| *name != entry.name) {
            entry.name = name;
            changed = true;
        }
        if let Some(avatar) = avatar.filter(|avatar| *avatar != entry.avatar) {
            entry.avatar = avatar;
            changed = true;
        }
        if !changed {
            return;
        }
        let fields = json!({"name": entry.name, "avatar": entry.avatar});
        let channels: Vec<String> = entry.channels.iter().cloned().collect();
        for channel in channels {
            self.post(&channel, "profile", user, fields.clone());
        }
    }

    fn profile_of(&self, user: &str) -> (Value, Value) {
        match self.users.get(user) {
            Some(entry) => (
                Value::from(entry.name.as_str()),
                Value::from(entry.avatar.clone()),
            ),
            None => (Value::from(user), Value::Null),
        }
    }

    fn names(&self, channel: &str) -> Result<Value, String> {
        check_channel(channel)?;
        let Some(chan) = self.channels.get(channel) else {
            return Ok(json!({"op": "ok", "members": [], "topic": null}));
        };
        let members: Vec<Value> = chan
            .members
            .iter()
            .map(|member| {
                let (name, avatar) = self.profile_of(member);
                json!({"user": member, "name": name, "avatar": avatar})
            })
            .collect();
        Ok(json!({"op": "ok", "members": members, "topic": chan.topic}))
    }
}

// ----------------------------------------------------------------------------------------
// Checks and small helpers.
// ----------------------------------------------------------------------------------------

fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_lowercase() || byte.is_ascii_digit() || matches!(byte, b'_' | b'.' | b'-')
}

fn check_user(user: &str) -> Result<(), String> {
    if (1..=32).contains(&user.len()) && user.bytes().all(is_name_byte) {
        Ok(())
    } else {
        Err("invalid user: 1-32 characters of a-z 0-9 _ . -".to_owned())
    }
}

fn check_channel(channel: &str) -> Result<(), String> {
    match channel.strip_prefix('#') {
        Some(name) if (1..=50).contains(&name.len()) && name.bytes().all(is_name_byte) => Ok(()),
        _ => Err("invalid channel: # and 1-50 characters of a-z 0-9 _ . -".to_owned()),
    }
}

/// No whitespace and no control characters: what "printable, no spaces" means here.
fn is_visible(text: &str) -> bool {
    text.chars().all(|c| !c.is_whitespace() && !c.is_control())
}

fn check_id(field: &str, id: &str) -> Result<(), String> {
    if (1..=200).contains(&id.chars().count()) && is_visible(id) {
        Ok(())
    } else {
        Err(format!(
            "invalid {field}: 1-200 characters, no spaces or control characters"
        ))
    }
}

fn check_text(field: &str, text: &str) -> Result<(), String> {
    if text.len() <= MAX_TEXT {
        Ok(())
    } else {
        Err(format!("{field} is longer than {MAX_TEXT} bytes"))
    }
}

fn check_profile(name: Option<&str>, avatar: Option<&Option<String>>) -> Result<(), String> {
    if let Some(name) = name
        && !(1..=100).contains(&name.chars().count())
    {
        return Err("invalid name: 1-100 characters".to_owned());
    }
    if let Some(Some(avatar)) = avatar
        && (!(1..=2048).contains(&avatar.chars().count()) || !is_visible(avatar))
    {
        return Err(
            "invalid avatar: 1-2048 characters, no spaces or control characters".to_owned(),
        );
    }
    Ok(())
}

/// One line for the wire. JSON escapes newlines inside strings, so the only `\n` is the
/// one added here.
fn to_line(value: &Value) -> Arc<str> {
    let mut line = value.to_string();
    line.push('\n');
    Arc::from(line)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}
