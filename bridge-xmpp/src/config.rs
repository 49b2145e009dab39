//! The `xmpp` section of the config: the component connection (XEP-0114) and how the
//! bridge shows itself in group chats.

use bridge_core::config::{NetworkConfig, Problem, SecretString};
use serde::Deserialize;

/// The `xmpp` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmppConfig {
    /// Domain of the component (`matrix.example.org`); XMPP users reach Matrix users at
    /// `user@<component_domain>`.
    pub component_domain: String,
    /// Host of the XMPP server's component listener.
    #[serde(default = "default_server_host")]
    pub server_host: String,
    /// Port of the XMPP server's component listener.
    #[serde(default = "default_server_port")]
    pub server_port: u16,
    /// The secret shared with the XMPP server for this component.
    pub component_secret: SecretString,
    /// The nick of the bridge's bot in group chats (it listens there for the portal).
    #[serde(default = "default_bot_nick")]
    pub bot_nick: String,
    /// Seconds of silence after which the connection is pinged (and as many again
    /// without an answer before it is dropped and made again).
    #[serde(default = "default_keepalive_seconds")]
    pub keepalive_seconds: u64,
    /// Seconds between the bot's checks that each group chat still has it (XEP-0410
    /// self-ping); a room that does not is joined again.
    #[serde(default = "default_self_ping_seconds")]
    pub self_ping_seconds: u64,
    /// Hosts (`host` or `host:port`) whose files are fetched even on a private address:
    /// the XMPP server's own upload service (XEP-0363). Other links are fetched only
    /// from public addresses.
    #[serde(default)]
    pub trusted_media_hosts: Vec<String>,
    /// Matrix rooms bridged to group chats by the operator (static mappings); `unlink`
    /// leaves them alone.
    #[serde(default)]
    pub mappings: Vec<RoomMapping>,
}

/// A Matrix room bridged to a group chat by the operator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomMapping {
    /// The Matrix room (`!id:server` or `#alias:server`); the bot must be invited to it,
    /// or the room public.
    pub room: ruma::OwnedRoomOrAliasId,
    /// The group chat's address (`room@conference.example.org`).
    pub muc: String,
}

fn default_bot_nick() -> String {
    "Matrix".to_owned()
}

fn default_keepalive_seconds() -> u64 {
    60
}

fn default_self_ping_seconds() -> u64 {
    300
}

/// The component port XEP-0114 servers (Prosody, ejabberd) listen on by default.
const DEFAULT_SERVER_PORT: u16 = 5347;

fn default_server_host() -> String {
    "127.0.0.1".to_owned()
}

fn default_server_port() -> u16 {
    DEFAULT_SERVER_PORT
}

impl NetworkConfig for XmppConfig {
    const SECRET_KEYS: &'static [&'static str] = &["component_secret"];

    fn template() -> String {
        // A fresh secret, so that no two installations share the example's.
        let secret = registration::generate_token();
        format!(
            r##"# The XMPP side: the bridge connects to the XMPP server as an external component
# (XEP-0114).
xmpp:
  # Domain of the component; XMPP users reach Matrix users at user@<component_domain>.
  # The XMPP server must declare this component (Prosody: Component "<domain>").
  component_domain: "matrix.localhost"
  # Host and port of the XMPP server's component listener.
  server_host: "127.0.0.1"
  # 5347 is the usual component port.
  server_port: {DEFAULT_SERVER_PORT}
  # Secret shared with the XMPP server for this component (Prosody: component_secret),
  # freshly generated here. Secret: may be given as component_secret_file.
  component_secret: "{secret}"
  # The nick of the bridge's bot, which sits in every bridged group chat.
  bot_nick: "Matrix"
  # Seconds of silence after which the connection to the server is pinged.
  keepalive_seconds: 60
  # Seconds between the bot's checks that each group chat still has it (a room may lose
  # its occupants without a word, in a server restart); a room that does not is joined
  # again, with what was said meanwhile.
  self_ping_seconds: 300
  # Hosts ("host" or "host:port") whose files the bridge fetches even on a private
  # address: your XMPP server's upload service, if it is on your network. Files linked
  # elsewhere are fetched from public addresses only.
  trusted_media_hosts: []
  # Matrix rooms bridged to group chats by you, the operator (room admins can also link
  # rooms themselves with the bot's `link` command). The bot must be invited to each room,
  # or the room be public. For example:
  #   - room: "#lounge:example.org"
  #     muc: "lounge@conference.example.org"
  mappings: []
"##
        )
    }

    fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if !is_valid_domain(&self.component_domain) {
            problems.push(Problem::new(
                "component_domain",
                "not a domain name (letters, digits, '-' and '.', e.g. matrix.example.org)",
            ));
        }
        if self.server_host.trim().is_empty() {
            problems.push(Problem::new("server_host", "must not be empty"));
        }
        if self.server_port == 0 {
            problems.push(Problem::new("server_port", "must not be 0"));
        }
        if self.bot_nick.trim().is_empty() || self.bot_nick.chars().any(char::is_control) {
            problems.push(Problem::new(
                "bot_nick",
                "must not be empty or contain control characters",
            ));
        }
        if !(5..=3600).contains(&self.keepalive_seconds) {
            problems.push(Problem::new("keepalive_seconds", "must be from 5 to 3600"));
        }
        if !(2..=86_400).contains(&self.self_ping_seconds) {
            problems.push(Problem::new("self_ping_seconds", "must be from 2 to 86400"));
        }
        for (i, host) in self.trusted_media_hosts.iter().enumerate() {
            if host.is_empty() || host.contains(['/', ' ', '@']) {
                problems.push(Problem::new(
                    format!("trusted_media_hosts[{i}]"),
                    "must be a host or host:port",
                ));
            }
        }
        for (i, mapping) in self.mappings.iter().enumerate() {
            if crate::ids::parse_room_address(&mapping.muc).is_none() {
                problems.push(Problem::new(
                    format!("mappings[{i}].muc"),
                    "not a group chat address (room@conference.example.org)",
                ));
            }
            if self.mappings[..i].iter().any(|m| m.muc == mapping.muc) {
                problems.push(Problem::new(
                    format!("mappings[{i}].muc"),
                    "mapped twice; a group chat is bridged to one room",
                ));
            }
        }
        if self.component_secret.expose().is_empty() {
            problems.push(Problem::new("component_secret", "must not be empty"));
        }
        problems
    }
}

/// Whether `domain` is a plausible DNS name: dot-separated labels of ASCII letters, digits
/// and inner hyphens, at most 253 bytes.
fn is_valid_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use bridge_core::config::uncommented_keys;

    use super::*;

    #[test]
    fn template_comments_every_key_and_draws_a_fresh_secret() {
        let template = XmppConfig::template();
        assert_eq!(uncommented_keys(&template), Vec::<String>::new());
        assert_ne!(template, XmppConfig::template());
    }

    #[test]
    fn domains_are_dns_names() {
        for good in ["matrix.localhost", "a", "xn--bcher-kva.example", "a-b.c"] {
            assert!(is_valid_domain(good), "{good}");
        }
        for bad in [
            "",
            "not a domain",
            "a..b",
            "-a.b",
            "a-.b",
            "a:5347",
            &"a".repeat(64),
        ] {
            assert!(!is_valid_domain(bad), "{bad}");
        }
    }
}
