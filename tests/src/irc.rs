//! A raw IRC client over TCP for tests. It keeps the wire visible: every line received is
//! parsed only far enough to match on (tags, source, command, params), so tests can
//! assert exactly what an IRC user sees, hostile bytes included.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::{Error, Result};

/// One line received from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// IRCv3 message tags (values unescaped is not needed by tests; kept raw).
    pub tags: HashMap<String, String>,
    /// The source (`nick!user@host` or a server name), if any.
    pub source: Option<String>,
    /// The command or numeric, upper case as sent.
    pub command: String,
    /// The parameters, the trailing one included without its `:`.
    pub params: Vec<String>,
    /// The line as received, without CR LF.
    pub raw: String,
}

impl Line {
    /// Parses one line (without CR LF).
    pub fn parse(raw: &str) -> Line {
        let mut rest = raw;
        let mut tags = HashMap::new();
        if let Some(stripped) = rest.strip_prefix('@') {
            let (tag_text, after) = stripped.split_once(' ').unwrap_or((stripped, ""));
            for tag in tag_text.split(';') {
                let (key, value) = tag.split_once('=').unwrap_or((tag, ""));
                tags.insert(key.to_owned(), value.to_owned());
            }
            rest = after;
        }
        let mut source = None;
        if let Some(stripped) = rest.strip_prefix(':') {
            let (src, after) = stripped.split_once(' ').unwrap_or((stripped, ""));
            source = Some(src.to_owned());
            rest = after;
        }
        let (command, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
        let mut params = Vec::new();
        while !rest.is_empty() {
            if let Some(trailing) = rest.strip_prefix(':') {
                params.push(trailing.to_owned());
                break;
            }
            let (param, after) = rest.split_once(' ').unwrap_or((rest, ""));
            if !param.is_empty() {
                params.push(param.to_owned());
            }
            rest = after;
        }
        Line {
            tags,
            source,
            command: command.to_owned(),
            params,
            raw: raw.to_owned(),
        }
    }

    /// The nick part of the source.
    pub fn source_nick(&self) -> Option<&str> {
        self.source
            .as_deref()
            .map(|s| s.split('!').next().unwrap_or(s))
    }

    /// The last parameter (the message text of a PRIVMSG).
    pub fn text(&self) -> &str {
        self.params.last().map_or("", String::as_str)
    }
}

/// A registered IRC connection.
#[derive(Debug)]
pub struct IrcClient {
    reader: OwnedReadHalf,
    /// Bytes received and not yet a whole line. Kept here rather than in `read_line`, so
    /// that a wait that times out mid-line loses nothing: the next read continues it.
    partial: Vec<u8>,
    writer: OwnedWriteHalf,
    nick: String,
    /// Lines received and not yet taken by a wait.
    unseen: VecDeque<Line>,
}

impl IrcClient {
    /// Connects to 127.0.0.1:`port` and registers as `nick`, waiting for the welcome (001).
    pub async fn connect(port: u16, nick: &str) -> Result<IrcClient> {
        let mut client = IrcClient::open(port, nick).await?;
        client.send(&format!("NICK {nick}")).await?;
        client.send(&format!("USER {nick} 0 * :{nick}")).await?;
        client.wait_for_welcome().await?;
        Ok(client)
    }

    /// Connects and logs in to a services account with SASL PLAIN before registering.
    pub async fn connect_with_sasl(
        port: u16,
        nick: &str,
        account: &str,
        password: &str,
    ) -> Result<IrcClient> {
        let mut client = IrcClient::open(port, nick).await?;
        client.send("CAP LS 302").await?;
        client.send(&format!("NICK {nick}")).await?;
        client.send(&format!("USER {nick} 0 * :{nick}")).await?;
        client.send("CAP REQ :sasl").await?;
        client
            .wait_for(Duration::from_secs(10), |l| {
                l.command == "CAP" && l.params.get(1).is_some_and(|s| s == "ACK")
            })
            .await?;
        client.send("AUTHENTICATE PLAIN").await?;
        client
            .wait_for(Duration::from_secs(10), |l| l.command == "AUTHENTICATE")
            .await?;
        let credentials = format!("{account}\0{account}\0{password}");
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        client.send(&format!("AUTHENTICATE {encoded}")).await?;
        let outcome = client
            .wait_for(Duration::from_secs(10), |l| {
                matches!(l.command.as_str(), "903" | "904" | "905" | "906")
            })
            .await?;
        if outcome.command != "903" {
            return Err(Error::Sasl {
                numeric: outcome.command,
                line: outcome.raw,
            });
        }
        client.send("CAP END").await?;
        client.wait_for_welcome().await?;
        Ok(client)
    }

    async fn open(port: u16, nick: &str) -> Result<IrcClient> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(Error::io(format!("connecting to IRC port {port}")))?;
        let (read, write) = stream.into_split();
        Ok(IrcClient {
            reader: read,
            partial: Vec::new(),
            writer: write,
            nick: nick.to_owned(),
            unseen: VecDeque::new(),
        })
    }

    async fn wait_for_welcome(&mut self) -> Result<()> {
        let line = self
            .wait_for(Duration::from_secs(30), |l| {
                matches!(l.command.as_str(), "001" | "432" | "433" | "465" | "ERROR")
            })
            .await?;
        if line.command == "001" {
            Ok(())
        } else {
            Err(Error::Protocol(format!(
                "registration refused: {}",
                line.raw
            )))
        }
    }

    /// The nick this client registered with.
    pub fn nick(&self) -> &str {
        &self.nick
    }

    /// Sends one line. Refuses a line holding CR, LF or NUL: a test client must not be
    /// able to inject by accident what the bridge is tested never to inject.
    pub async fn send(&mut self, line: &str) -> Result<()> {
        if line.contains(['\r', '\n', '\0']) {
            return Err(Error::Protocol(format!("line with CR/LF/NUL: {line:?}")));
        }
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .map_err(Error::io("writing to IRC"))
    }

    /// Joins a channel and waits for the end of its NAMES list.
    pub async fn join(&mut self, channel: &str) -> Result<()> {
        self.send(&format!("JOIN {channel}")).await?;
        let line = self
            .wait_for(Duration::from_secs(10), |l| {
                (l.command == "366"
                    && l.params
                        .get(1)
                        .is_some_and(|c| c.eq_ignore_ascii_case(channel)))
                    || matches!(
                        l.command.as_str(),
                        "403" | "405" | "471" | "473" | "474" | "475"
                    )
            })
            .await?;
        if line.command == "366" {
            Ok(())
        } else {
            Err(Error::Protocol(format!(
                "cannot join {channel}: {}",
                line.raw
            )))
        }
    }

    /// Sends a PRIVMSG.
    pub async fn privmsg(&mut self, target: &str, text: &str) -> Result<()> {
        self.send(&format!("PRIVMSG {target} :{text}")).await
    }

    /// Waits for a PRIVMSG to `target` with exactly `text`, and returns it.
    pub async fn wait_for_privmsg(
        &mut self,
        target: &str,
        text: &str,
        timeout: Duration,
    ) -> Result<Line> {
        self.wait_for(timeout, |l| {
            l.command == "PRIVMSG"
                && l.params
                    .first()
                    .is_some_and(|t| t.eq_ignore_ascii_case(target))
                && l.text() == text
        })
        .await
    }

    /// Waits for a line satisfying `matches`; lines that do not match stay queued for later
    /// waits. Answers server PINGs meanwhile.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        matches: impl Fn(&Line) -> bool,
    ) -> Result<Line> {
        if let Some(index) = self.unseen.iter().position(&matches) {
            return Ok(self.unseen.remove(index).unwrap_or_else(|| Line::parse("")));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match tokio::time::timeout(left, self.read_line()).await {
                Ok(line) => line?,
                Err(_) => {
                    return Err(Error::Timeout {
                        what: format!("an IRC line for {}", self.nick),
                        seconds: timeout.as_secs_f64(),
                    });
                }
            };
            if line.command == "PING" {
                let token = line.text().to_owned();
                self.send(&format!("PONG :{token}")).await?;
                continue;
            }
            if matches(&line) {
                return Ok(line);
            }
            self.unseen.push_back(line);
        }
    }

    /// Forgets every line received so far, unread ones included (a PING's answer marks
    /// where "so far" ends), so that what is waited for next is newer.
    pub async fn forget_received(&mut self) -> Result<()> {
        let token = format!("forget-{}", self.unseen.len());
        self.send(&format!("PING :{token}")).await?;
        self.wait_for(Duration::from_secs(30), |l| {
            l.command == "PONG" && l.text() == token
        })
        .await?;
        self.unseen.clear();
        Ok(())
    }

    /// Reads one line. Cancel-safe: `wait_for` drops it on a timeout, and a line arriving
    /// in pieces must then neither be lost nor come back split.
    async fn read_line(&mut self) -> Result<Line> {
        loop {
            if let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
                let bytes: Vec<u8> = self.partial.drain(..=end).collect();
                let text = String::from_utf8_lossy(&bytes);
                return Ok(Line::parse(text.trim_end_matches(['\r', '\n'])));
            }
            let mut chunk = [0_u8; 4096];
            // `read` is cancel-safe: dropped before it completes, it has consumed nothing.
            let read = self
                .reader
                .read(&mut chunk)
                .await
                .map_err(Error::io("reading from IRC"))?;
            if read == 0 {
                return Err(Error::Protocol(format!(
                    "IRC connection of {} closed",
                    self.nick
                )));
            }
            self.partial.extend_from_slice(&chunk[..read]);
        }
    }

    /// Sends QUIT and closes the connection.
    pub async fn quit(self) -> Result<()> {
        self.quit_with("bye").await
    }

    /// Sends QUIT with `reason` and closes the connection.
    pub async fn quit_with(mut self, reason: &str) -> Result<()> {
        self.send(&format!("QUIT :{reason}")).await?;
        // The server answers with ERROR once it has taken the QUIT; closing earlier can
        // make it see a lost connection first, and quit us with its own reason.
        let _ = self
            .wait_for(Duration::from_secs(5), |l| l.command == "ERROR")
            .await;
        self.writer
            .shutdown()
            .await
            .map_err(Error::io("closing IRC"))
    }
}

/// Whether an IRC server on 127.0.0.1:`port` accepts a client registration: the readiness
/// probe of the IRC servers.
pub async fn irc_ready(port: u16) -> bool {
    match tokio::time::timeout(
        Duration::from_secs(5),
        IrcClient::connect(port, &probe_nick()),
    )
    .await
    {
        Ok(Ok(client)) => {
            let _ = client.quit().await;
            true
        }
        _ => false,
    }
}

/// A random nick for probes, unlikely to clash with a test's own.
pub(crate) fn probe_nick() -> String {
    format!("probe{}", rand::random::<u32>() % 1_000_000)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;

    use super::{IrcClient, Line};
    use crate::Error;

    #[tokio::test]
    async fn a_wait_that_times_out_mid_line_neither_loses_nor_splits_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (resume, resumed) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            socket
                .write_all(b":irc.test NOTICE me :first\r\n:irc.test NOTICE me :sec")
                .await
                .unwrap();
            resumed.await.unwrap();
            socket.write_all(b"ond half\r\n").await.unwrap();
            socket
        });
        let mut client = IrcClient::open(port, "me").await.unwrap();
        let text_is = |text: &'static str| move |l: &Line| l.text() == text;

        let first = client
            .wait_for(Duration::from_secs(5), text_is("first"))
            .await
            .unwrap();
        assert_eq!(first.raw, ":irc.test NOTICE me :first");
        // Half of the second line is in; the wait gives up while reading the rest.
        let early = client.wait_for(Duration::from_millis(200), |_| true).await;
        assert!(matches!(early, Err(Error::Timeout { .. })), "{early:?}");

        resume.send(()).unwrap();
        let second = client
            .wait_for(Duration::from_secs(5), |_| true)
            .await
            .unwrap();
        assert_eq!(second.raw, ":irc.test NOTICE me :second half");
        assert_eq!(second.text(), "second half");
        drop(server.await.unwrap());
    }

    #[test]
    fn parses_tags_source_and_trailing() {
        let line =
            Line::parse("@time=2026-01-01T00:00:00Z;msgid=x :a!b@c PRIVMSG #chan :hello there");
        assert_eq!(line.tags["msgid"], "x");
        assert_eq!(line.source_nick(), Some("a"));
        assert_eq!(line.command, "PRIVMSG");
        assert_eq!(line.params, vec!["#chan", "hello there"]);
    }

    #[test]
    fn parses_numeric_without_trailing() {
        let line = Line::parse(":irc.test 366 me #chan :End of /NAMES list.");
        assert_eq!(line.command, "366");
        assert_eq!(line.params[1], "#chan");
    }
}
