//! The `irc` section of the config: the networks to bridge, how to reach each, and how
//! the bridge behaves there (its bot's nick, puppets' nicks, flood control, limits).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use bridge_core::config::{NetworkConfig, Problem};

use crate::ids::{CHANNEL, NICK, NameTemplate};
use serde::Deserialize;

/// Port of IRC over TLS (RFC 7194).
const DEFAULT_PORT: u16 = 6697;

/// The `irc` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IrcConfig {
    /// The IRC networks to bridge.
    #[serde(default)]
    pub networks: Vec<IrcNetwork>,
    /// Where to answer ident queries (RFC 1413; servers ask port 113), if at all.
    #[serde(default)]
    pub ident_bind: Option<std::net::SocketAddr>,
}

/// One IRC network.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IrcNetwork {
    /// Short name, used in ids, aliases and commands (`libera`).
    pub name: String,
    /// Ghosts' localparts after the appservice's `ghost_prefix`: `{nick}` (escaped) and
    /// optionally `{network}`.
    #[serde(default = "default_ghost_template")]
    pub ghost_template: String,
    /// Portal aliases after the appservice's `alias_prefix`: `{channel}` and optionally
    /// `{network}`.
    #[serde(default = "default_alias_template")]
    pub alias_template: String,
    /// Host name of the IRC server.
    pub host: String,
    /// Port of the IRC server.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Servers of the same network tried in turn when the one in use cannot be reached.
    #[serde(default)]
    pub fallback_servers: Vec<ServerAddress>,
    /// Whether to connect with TLS.
    #[serde(default = "default_tls")]
    pub tls: bool,
    /// A PEM file of CA certificates to trust instead of the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The server password (PASS), if the server wants one.
    #[serde(default)]
    pub password: Option<String>,
    /// The nick of the bridge's own connection, which watches the channels.
    #[serde(default = "default_bot_nick")]
    pub bot_nick: String,
    /// Appended to Matrix users' nicks on IRC, so IRC users can tell them apart.
    #[serde(default = "default_nick_suffix")]
    pub nick_suffix: String,
    /// Lines each connection may send at once, before `lines_per_second` applies.
    #[serde(default = "default_burst")]
    pub flood_burst: u32,
    /// Lines per second each connection may send after its burst.
    #[serde(default = "default_lines_per_second")]
    pub lines_per_second: f64,
    /// New connections per second to this network (puppets and reconnects), so a
    /// restart with many puppets does not trip the server's connection throttle.
    #[serde(default = "default_connects_per_second")]
    pub connects_per_second: f64,
    /// A Matrix message longer than this many IRC lines is cut, with a note.
    #[serde(default = "default_max_lines")]
    pub max_lines: usize,
    /// How long users who quit in a netsplit may take to come back before Matrix is
    /// shown them leaving.
    #[serde(default = "default_split_grace_seconds")]
    pub split_grace_seconds: u64,
    /// The Matrix power level of each channel prefix mode (`o: 50`); a member gets the
    /// highest of their modes', else 0.
    #[serde(default = "default_mode_power_levels")]
    pub mode_power_levels: BTreeMap<String, i64>,
    /// Matrix rooms bridged to channels by the operator (static mappings); `unlink`
    /// leaves them alone.
    #[serde(default)]
    pub mappings: Vec<ChannelMapping>,
    /// How a Matrix edit is shown on IRC.
    #[serde(default)]
    pub edits: EditStyle,
    /// A reply to a message older than this quotes its start, since IRC users may no
    /// longer have it in view (0: every reply).
    #[serde(default = "default_quote_replies_after_seconds")]
    pub quote_replies_after_seconds: u64,
    /// Whether a Matrix reaction is said on IRC as an ACTION (`* nick reacted 👍`).
    #[serde(default)]
    pub reactions_as_action: bool,
    /// Which IRC users are shown as room members.
    #[serde(default)]
    pub members: MemberSync,
    /// Puppets quiet on Matrix this long are disconnected (0: never); their next
    /// message connects them again.
    #[serde(default)]
    pub idle_disconnect_seconds: u64,
    /// A prefix (`2001:db8:1::/64`, `127.0.0.0/8`) from which each puppet connects with
    /// an address of its own, so the network can tell Matrix users apart by address.
    #[serde(default)]
    pub bind_prefix: Option<String>,
}

/// Another server of a network.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerAddress {
    /// Host name (also the TLS server name).
    pub host: String,
    /// Port (default as the network's `port`).
    #[serde(default)]
    pub port: Option<u16>,
}

/// An address prefix: the network address and how many leading bits are fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindPrefix {
    /// The network address.
    pub network: std::net::IpAddr,
    /// The length of the prefix in bits.
    pub length: u8,
}

impl BindPrefix {
    /// Parses `address/length`, with at least one bit left for hosts.
    pub fn parse(text: &str) -> Result<BindPrefix, String> {
        let (address, length) = text
            .split_once('/')
            .ok_or("write it as address/length, e.g. 2001:db8:1::/64")?;
        let network: std::net::IpAddr = address
            .parse()
            .map_err(|_| format!("{address:?} is not an IP address"))?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let length: u8 = length
            .parse()
            .ok()
            .filter(|length| *length < bits)
            .ok_or(format!("the length must be a number below {bits}"))?;
        Ok(BindPrefix { network, length })
    }

    /// The address of the prefix for `key` (a Matrix user id): the host bits are a hash
    /// of it, so a user keeps their address across restarts. Host part 0 is avoided.
    pub fn address_for(&self, key: &str) -> std::net::IpAddr {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(key.as_bytes());
        let hash = u128::from_be_bytes(digest[..16].try_into().expect("16 bytes"));
        match self.network {
            std::net::IpAddr::V4(network) => {
                let host_bits = 32 - u32::from(self.length);
                let mask = if host_bits == 32 {
                    u32::MAX
                } else {
                    (1u32 << host_bits) - 1
                };
                let host = ((hash as u32) & mask).max(1);
                std::net::IpAddr::V4((u32::from(network) & !mask | host).into())
            }
            std::net::IpAddr::V6(network) => {
                let host_bits = 128 - u32::from(self.length);
                let mask = if host_bits == 128 {
                    u128::MAX
                } else {
                    (1u128 << host_bits) - 1
                };
                let host = (hash & mask).max(1);
                std::net::IpAddr::V6((u128::from(network) & !mask | host).into())
            }
        }
    }
}

/// How a Matrix edit is shown on IRC: never as a repost of the whole message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EditStyle {
    /// `* ` and the corrected text (its first line).
    #[default]
    Correction,
    /// `s/old words/new words/` when that is shorter, else a correction.
    Substitution,
}

/// Which IRC users are shown as room members.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberSync {
    /// Everyone in the channel (NAMES, then every JOIN).
    #[default]
    Full,
    /// Only those who have spoken since the bridge joined: big channels do not fill the
    /// room with thousands of silent ghosts.
    Lazy,
}

/// A Matrix room bridged to a channel by the operator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelMapping {
    /// The Matrix room (`!id:server` or `#alias:server`); the bot must be invited to it,
    /// or the room public.
    pub room: ruma::OwnedRoomOrAliasId,
    /// The channel (`#trestle`).
    pub channel: String,
}

fn default_ghost_template() -> String {
    "{network}_{nick}".to_owned()
}

fn default_alias_template() -> String {
    "{network}_{channel}".to_owned()
}

fn default_quote_replies_after_seconds() -> u64 {
    300
}

fn default_port() -> u16 {
    DEFAULT_PORT
}

fn default_tls() -> bool {
    true
}

fn default_bot_nick() -> String {
    "trestle".to_owned()
}

fn default_nick_suffix() -> String {
    "[m]".to_owned()
}

fn default_burst() -> u32 {
    5
}

fn default_lines_per_second() -> f64 {
    2.0
}

fn default_connects_per_second() -> f64 {
    5.0
}

fn default_max_lines() -> usize {
    5
}

fn default_split_grace_seconds() -> u64 {
    60
}

fn default_mode_power_levels() -> BTreeMap<String, i64> {
    [("q", 100), ("a", 75), ("o", 50), ("h", 25), ("v", 1)]
        .into_iter()
        .map(|(mode, level)| (mode.to_owned(), level))
        .collect()
}

/// Whether `nick` is a valid IRC nick (RFC 2812 letters, digits and specials).
pub fn is_valid_nick(nick: &str) -> bool {
    let mut chars = nick.chars();
    chars.next().is_some_and(|first| {
        (first.is_ascii_alphabetic() || "[]\\`_^{|}".contains(first))
            && chars.all(|c| c.is_ascii_alphanumeric() || "[]\\`_^{|}-".contains(c))
    })
}

impl NetworkConfig for IrcConfig {
    fn template() -> String {
        format!(
            r#"# The IRC side.
irc:
  # The IRC networks to bridge. Each has:
  # - `name`: lowercase letters, digits and '-'; in ids, aliases and commands;
  # - `ghost_template` (default "{ghost}"): ghosts' ids after the appservice's
  #   `ghost_prefix`, so `@irc_libera_alice`; `{{nick}}` is the nick (escaped), `{{network}}`
  #   the name, and the rest may hold a-z, 0-9 and . _ = -;
  # - `alias_template` (default "{alias}"): portal aliases after `alias_prefix`, so
  #   `#irc_libera_#rust`, with `{{channel}}` and `{{network}}` alike. Networks' templates
  #   must not overlap; changing one later gives the network new ghosts and aliases;
  # - `host`, `port` (default {port}) and `tls` (default true); `ca_file`, a PEM file of
  #   CA certificates to trust instead of the system's; `password`, the server password;
  # - `fallback_servers` (default none): more servers of the network, each a `host` and
  #   optionally a `port`, tried in turn when the one in use cannot be reached;
  # - `bot_nick` (default "{bot}"): the bridge's own connection, which watches channels;
  # - `nick_suffix` (default "{suffix}"): appended to Matrix users' nicks;
  # - `flood_burst` (default {burst}) lines at once, then `lines_per_second` (default {rate});
  # - `connects_per_second` (default {connects}): new connections to the network;
  # - `max_lines` (default {lines}): longer Matrix messages are cut, with a note;
  # - `split_grace_seconds` (default {grace}): users who quit in a netsplit and come back
  #   within this time are never shown leaving;
  # - `mode_power_levels` (default q: 100, a: 75, o: 50, h: 25, v: 1): the Matrix power
  #   level of each channel prefix mode;
  # - `mappings` (default none): Matrix rooms you bridge to channels, each a `room`
  #   (`!id:server` or `#alias:server`, with the bot invited or the room public) and a
  #   `channel`; room admins can also link rooms themselves with the bot's `link`;
  # - `edits` (default "correction"): a Matrix edit is said as `* corrected text`, or with
  #   "substitution" as `s/old/new/` where that is shorter;
  # - `quote_replies_after_seconds` (default {quote}): a reply to an older message says
  #   `nick: "its start…" <- reply`, since IRC users may no longer have it in view;
  # - `reactions_as_action` (default false): say Matrix reactions as `* nick reacted 👍`;
  # - `members` (default "full"): "full" shows everyone in a channel as a room member,
  #   "lazy" only those who have spoken since the bridge joined (for big channels);
  # - `idle_disconnect_seconds` (default 0, never): disconnect puppets quiet on Matrix this
  #   long; their next message connects them again;
  # - `bind_prefix` (default none): an address prefix such as "2001:db8:1::/64" from which
  #   each puppet connects with an address of its own (route it to this host, e.g.
  #   `ip -6 route add local 2001:db8:1::/64 dev lo`);
  #   networks:
  #     - name: "libera"
  #       host: "irc.libera.chat"
  networks: []
  # An ident server (RFC 1413) naming each connection's user to the IRC servers, which
  # ask on port 113 of the address the connection came from: "[::]:113" for IPv6 and
  # IPv4 (binding a port below 1024 needs root or CAP_NET_BIND_SERVICE). Default: none.
  # ident_bind: "[::]:113"
"#,
            port = DEFAULT_PORT,
            ghost = default_ghost_template(),
            alias = default_alias_template(),
            bot = default_bot_nick(),
            suffix = default_nick_suffix(),
            burst = default_burst(),
            rate = default_lines_per_second(),
            connects = default_connects_per_second(),
            lines = default_max_lines(),
            grace = default_split_grace_seconds(),
            quote = default_quote_replies_after_seconds(),
        )
    }

    fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut names = HashSet::new();
        // Each network's parsed templates, to check no two overlap.
        let mut templates: Vec<(&str, [Option<NameTemplate>; 2])> = Vec::new();
        for (index, network) in self.networks.iter().enumerate() {
            let at = |key: &str| format!("networks[{index}].{key}");
            let problems_before = problems.len();
            if network.name.is_empty() {
                problems.push(Problem::new(at("name"), "must not be empty"));
            } else if !network
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                problems.push(Problem::new(
                    at("name"),
                    "use only lowercase letters, digits and '-' (it appears in room aliases)",
                ));
            } else if !names.insert(network.name.as_str()) {
                problems.push(Problem::new(
                    at("name"),
                    format!("`{}` names another network already", network.name),
                ));
            }
            // Templates are read with the name filled in: only once it is a valid one.
            let name_valid = problems.len() == problems_before;
            let mut parsed = [None, None];
            for (slot, (key, template, placeholder)) in [
                ("ghost_template", &network.ghost_template, NICK),
                ("alias_template", &network.alias_template, CHANNEL),
            ]
            .into_iter()
            .enumerate()
            .filter(|_| name_valid)
            {
                match NameTemplate::parse(template, placeholder, &network.name) {
                    Ok(ours) => {
                        if let Some((other, _)) = templates.iter().find(|(_, theirs)| {
                            theirs[slot].as_ref().is_some_and(|t| t.overlaps(&ours))
                        }) {
                            problems.push(Problem::new(
                                at(key),
                                format!("a name could be network `{other}`'s too: make the text before {placeholder}, or after it, differ from that network's"),
                            ));
                        }
                        parsed[slot] = Some(ours);
                    }
                    Err(reason) => problems.push(Problem::new(at(key), reason)),
                }
            }
            templates.push((&network.name, parsed));
            if network.host.trim().is_empty() {
                problems.push(Problem::new(at("host"), "must not be empty"));
            }
            if network.port == 0 {
                problems.push(Problem::new(at("port"), "must not be 0"));
            }
            for (i, server) in network.fallback_servers.iter().enumerate() {
                if server.host.trim().is_empty() {
                    problems.push(Problem::new(
                        at(&format!("fallback_servers[{i}].host")),
                        "must not be empty",
                    ));
                }
                if server.port == Some(0) {
                    problems.push(Problem::new(
                        at(&format!("fallback_servers[{i}].port")),
                        "must not be 0",
                    ));
                }
            }
            if let Some(prefix) = &network.bind_prefix
                && let Err(reason) = BindPrefix::parse(prefix)
            {
                problems.push(Problem::new(at("bind_prefix"), reason));
            }
            if !is_valid_nick(&network.bot_nick) {
                problems.push(Problem::new(
                    at("bot_nick"),
                    "must be a valid IRC nick (a letter or one of []\\`_^{|} first, then also digits and '-')",
                ));
            }
            if network
                .nick_suffix
                .chars()
                .any(|c| !(c.is_ascii_alphanumeric() || "[]\\`_^{|}-".contains(c)))
            {
                problems.push(Problem::new(
                    at("nick_suffix"),
                    "may hold only letters, digits and []\\`_^{|}-",
                ));
            }
            if network.flood_burst == 0 {
                problems.push(Problem::new(at("flood_burst"), "must be at least 1"));
            }
            if !(network.lines_per_second > 0.0 && network.lines_per_second.is_finite()) {
                problems.push(Problem::new(at("lines_per_second"), "must be above 0"));
            }
            if !(network.connects_per_second > 0.0 && network.connects_per_second.is_finite()) {
                problems.push(Problem::new(at("connects_per_second"), "must be above 0"));
            }
            for (mode, level) in &network.mode_power_levels {
                if mode.chars().count() != 1 {
                    problems.push(Problem::new(
                        at(&format!("mode_power_levels.{mode}")),
                        "must be one mode letter",
                    ));
                } else if !(0..=100).contains(level) {
                    problems.push(Problem::new(
                        at(&format!("mode_power_levels.{mode}")),
                        "must be a power level from 0 to 100",
                    ));
                }
            }
            for (i, mapping) in network.mappings.iter().enumerate() {
                let channel = &mapping.channel;
                if !channel.starts_with(['#', '&', '+', '!'])
                    || channel.len() < 2
                    || channel.contains([' ', ',', '\x07', '\r', '\n', '\0'])
                {
                    problems.push(Problem::new(
                        at(&format!("mappings[{i}].channel")),
                        "not a channel name (`#` first, then no spaces, commas or control characters)",
                    ));
                }
            }
            if network.max_lines == 0 {
                problems.push(Problem::new(at("max_lines"), "must be at least 1"));
            }
            for (key, value) in [("password", &network.password)] {
                if value
                    .as_deref()
                    .is_some_and(|v| v.contains(['\r', '\n', '\0']))
                {
                    problems.push(Problem::new(at(key), "must not contain CR, LF or NUL"));
                }
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use bridge_core::config::uncommented_keys;

    use super::*;

    fn network(name: &str, host: &str, port: u16) -> IrcNetwork {
        IrcNetwork {
            name: name.to_owned(),
            ghost_template: default_ghost_template(),
            alias_template: default_alias_template(),
            host: host.to_owned(),
            port,
            tls: true,
            ca_file: None,
            password: None,
            bot_nick: default_bot_nick(),
            nick_suffix: default_nick_suffix(),
            flood_burst: default_burst(),
            lines_per_second: default_lines_per_second(),
            connects_per_second: default_connects_per_second(),
            max_lines: default_max_lines(),
            split_grace_seconds: default_split_grace_seconds(),
            mode_power_levels: default_mode_power_levels(),
            mappings: Vec::new(),
            fallback_servers: Vec::new(),
            idle_disconnect_seconds: 0,
            bind_prefix: None,
            edits: EditStyle::Correction,
            quote_replies_after_seconds: default_quote_replies_after_seconds(),
            reactions_as_action: false,
            members: MemberSync::Full,
        }
    }

    #[test]
    fn template_comments_every_key() {
        assert_eq!(
            uncommented_keys(&IrcConfig::template()),
            Vec::<String>::new()
        );
    }

    #[test]
    fn networks_are_checked_with_their_index() {
        let mut bad = network("OFTC", " ", 6697);
        bad.bot_nick = "9bot".to_owned();
        bad.password = Some("a\r\nQUIT".to_owned());
        bad.lines_per_second = 0.0;
        bad.bind_prefix = Some("10.0.0.0/32".to_owned());
        let mut overlapping = network("oftc", "irc.oftc.net", 6697);
        overlapping.ghost_template = "{network}".to_owned();
        overlapping.alias_template = "libera_{channel}".to_owned();
        let config = IrcConfig {
            networks: vec![
                network("libera", "irc.libera.chat", 6697),
                network("libera", "irc.example.org", 0),
                bad,
                overlapping,
            ],
            ident_bind: None,
        };
        let problems: Vec<String> = config.validate().iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "networks[1].name: `libera` names another network already",
                "networks[1].port: must not be 0",
                "networks[2].name: use only lowercase letters, digits and '-' (it appears in room aliases)",
                "networks[2].host: must not be empty",
                "networks[2].bind_prefix: the length must be a number below 32",
                "networks[2].bot_nick: must be a valid IRC nick (a letter or one of []\\`_^{|} first, then also digits and '-')",
                "networks[2].lines_per_second: must be above 0",
                "networks[2].password: must not contain CR, LF or NUL",
                "networks[3].ghost_template: must contain {nick}",
                "networks[3].alias_template: a name could be network `libera`'s too: make the text before {channel}, or after it, differ from that network's",
            ]
        );
        assert!(IrcConfig::default().validate().is_empty());
    }

    #[test]
    fn bind_prefixes_give_each_user_a_stable_address_inside() {
        let v6 = BindPrefix::parse("2001:db8:1::/64").unwrap();
        let alice = v6.address_for("@alice:example.org");
        assert_eq!(alice, v6.address_for("@alice:example.org"));
        assert_ne!(alice, v6.address_for("@bob:example.org"));
        let std::net::IpAddr::V6(alice) = alice else {
            panic!("{alice}")
        };
        assert_eq!(alice.segments()[..4], [0x2001, 0xdb8, 1, 0]);
        let v4 = BindPrefix::parse("127.0.0.0/8").unwrap();
        let std::net::IpAddr::V4(bob) = v4.address_for("@bob:example.org") else {
            panic!()
        };
        assert_eq!(bob.octets()[0], 127);
        assert_ne!(u32::from(bob) & 0xff_ffff, 0);
        for bad in ["::1", "x/64", "::/128", "10.0.0.0/33", "10.0.0.0/-1"] {
            assert!(BindPrefix::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nicks_follow_rfc_2812() {
        for good in ["alice", "a-b", "[m]x", "_x9"] {
            assert!(is_valid_nick(good), "{good}");
        }
        for bad in ["", "9a", "-a", "a b", "a.b", "a:b", "é"] {
            assert!(!is_valid_nick(bad), "{bad}");
        }
    }
}
