//! An ident server (RFC 1413): IRC servers ask who owns a connection, and many show the
//! answer as the user name (`alice` rather than `~alice`) or require one. Each
//! connection registers its addresses and user name while it is open; a query from the
//! connection's own server, to the connection's own address, about its ports gets the
//! name, any other query `NO-USER`. Puppets with addresses of their own (`bind_prefix`)
//! may share a port number, so the local address is part of the key.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// How long a querier has to send its one line.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest query read (RFC 1413 queries are a few dozen bytes).
const MAX_QUERY: u64 = 100;

/// A connection as the ident server knows it: our address and the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    local: IpAddr,
    local_port: u16,
    server: IpAddr,
    server_port: u16,
}

/// Queries answered at once; more are closed unanswered, so a flood of them cannot take
/// the sockets the IRC connections need.
const MAX_QUERIES_AT_ONCE: usize = 64;

/// The user names of open connections, by their ports.
#[derive(Debug, Clone, Default)]
pub struct IdentRegistry(Arc<Mutex<HashMap<Key, String>>>);

/// A connection's registration; dropping it forgets the connection.
#[derive(Debug)]
pub struct IdentEntry {
    registry: IdentRegistry,
    key: Key,
}

impl Drop for IdentEntry {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.key);
    }
}

impl IdentRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that the connection from `local` to `server` is `username`'s.
    pub fn register(&self, local: SocketAddr, server: SocketAddr, username: &str) -> IdentEntry {
        let key = Key {
            local: canonical(local.ip()),
            local_port: local.port(),
            server: canonical(server.ip()),
            server_port: server.port(),
        };
        self.lock().insert(key, username.to_owned());
        IdentEntry {
            registry: self.clone(),
            key,
        }
    }

    /// The answer to `query` from `querier`, received on our address `local` (RFC 1413
    /// section 6).
    pub fn answer(&self, query: &str, querier: IpAddr, local: IpAddr) -> String {
        let ports = query.split_once(',').and_then(|(ours, theirs)| {
            Some((
                ours.trim().parse::<u16>().ok()?,
                theirs.trim().parse::<u16>().ok()?,
            ))
        });
        let Some((local_port, server_port)) = ports else {
            return format!("{} : ERROR : INVALID-PORT\r\n", sanitize(query));
        };
        let key = Key {
            local: canonical(local),
            local_port,
            server: canonical(querier),
            server_port,
        };
        match self.lock().get(&key) {
            Some(username) => {
                format!("{local_port}, {server_port} : USERID : UNIX : {username}\r\n")
            }
            None => format!("{local_port}, {server_port} : ERROR : NO-USER\r\n"),
        }
    }
}

/// An IPv4 address reached through an IPv6 socket as itself.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// A query echoed back without anything that could break the reply line.
fn sanitize(query: &str) -> String {
    query
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == ',' || *c == ' ')
        .take(20)
        .collect()
}

/// Answers ident queries on `listener` until `stop`.
pub async fn serve(listener: TcpListener, registry: IdentRegistry, stop: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_QUERIES_AT_ONCE));
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    tracing::debug!(%peer, "too many ident queries at once; one closed");
                    continue;
                };
                let registry = registry.clone();
                tokio::spawn(async move {
                    if let Err(error) = answer_one(stream, peer.ip(), &registry).await {
                        tracing::debug!(%peer, %error, "ident query not answered");
                    }
                    drop(slot);
                });
            }
            Err(error) => {
                tracing::warn!(%error, "ident server cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer_one(
    stream: TcpStream,
    querier: IpAddr,
    registry: &IdentRegistry,
) -> std::io::Result<()> {
    let local = stream.local_addr()?.ip();
    let (read, mut write) = stream.into_split();
    let mut query = String::new();
    tokio::time::timeout(
        QUERY_TIMEOUT,
        BufReader::new(read.take(MAX_QUERY)).read_line(&mut query),
    )
    .await
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let answer = registry.answer(query.trim_end(), querier, local);
    write.write_all(answer.as_bytes()).await?;
    write.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_get_the_name_of_their_own_connection_only() {
        let registry = IdentRegistry::default();
        let server: SocketAddr = "192.0.2.1:6667".parse().unwrap();
        let alice_at: IpAddr = "10.0.0.5".parse().unwrap();
        let bob_at: IpAddr = "10.0.0.6".parse().unwrap();
        let entry = registry.register("10.0.0.5:40001".parse().unwrap(), server, "alice");
        // Another puppet, from an address of its own, with the same port number.
        let _bob = registry.register("10.0.0.6:40001".parse().unwrap(), server, "bob");
        let from_server = server.ip();
        let ask =
            |query: &str, querier: IpAddr, local: IpAddr| registry.answer(query, querier, local);
        assert_eq!(
            ask("40001 , 6667", from_server, alice_at),
            "40001, 6667 : USERID : UNIX : alice\r\n"
        );
        assert!(ask("40001, 6667", from_server, bob_at).ends_with(": bob\r\n"));
        // Another querier, or other ports, learn nothing.
        let stranger: IpAddr = "198.51.100.7".parse().unwrap();
        assert!(ask("40001, 6667", stranger, alice_at).contains("NO-USER"));
        assert!(ask("40002, 6667", from_server, alice_at).contains("NO-USER"));
        // IPv4 addresses seen through an IPv6 socket are the same addresses.
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let mapped_alice: IpAddr = "::ffff:10.0.0.5".parse().unwrap();
        assert!(ask("40001,6667", mapped, mapped_alice).contains("alice"));
        // Garbage, or an attempt at a second line, is refused in one line.
        let hostile = ask("x\r\nUSERID : root", from_server, alice_at);
        assert!(
            hostile.ends_with(": ERROR : INVALID-PORT\r\n"),
            "{hostile:?}"
        );
        assert_eq!(hostile.matches("\r\n").count(), 1);
        drop(entry);
        assert!(ask("40001, 6667", from_server, alice_at).contains("NO-USER"));
        assert!(ask("40001, 6667", from_server, bob_at).contains("bob"));
    }
}
