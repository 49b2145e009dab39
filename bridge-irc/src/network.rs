//! The `irc` section of the config.
//!
//! A placeholder until the IRC connector lands with its own settings: it already lists the
//! networks to bridge, with the few settings any IRC connection needs, so that the section
//! exists in generated configs and is checked like the rest.

use std::collections::HashSet;

use bridge_core::config::{NetworkConfig, Problem};
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
}

/// One IRC network.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IrcNetwork {
    /// Short name, used in aliases and commands (`libera`).
    pub name: String,
    /// Host name of the IRC server.
    pub host: String,
    /// Port of the IRC server.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Whether to connect with TLS.
    #[serde(default = "default_tls")]
    pub tls: bool,
}

fn default_port() -> u16 {
    DEFAULT_PORT
}

fn default_tls() -> bool {
    true
}

impl NetworkConfig for IrcConfig {
    fn template() -> String {
        r#"# The IRC side. More settings arrive with the IRC connector.
irc:
  # The IRC networks to bridge. Each has a `name` (lowercase letters, digits and '-',
  # used in room aliases), a `host`, a `port` (default 6697) and `tls` (default true):
  #   networks:
  #     - name: "libera"
  #       host: "irc.libera.chat"
  networks: []
"#
        .to_owned()
    }

    fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut names = HashSet::new();
        for (index, network) in self.networks.iter().enumerate() {
            let at = |key: &str| format!("networks[{index}].{key}");
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
            if network.host.trim().is_empty() {
                problems.push(Problem::new(at("host"), "must not be empty"));
            }
            if network.port == 0 {
                problems.push(Problem::new(at("port"), "must not be 0"));
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
            host: host.to_owned(),
            port,
            tls: true,
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
        let config = IrcConfig {
            networks: vec![
                network("libera", "irc.libera.chat", 6697),
                network("libera", "irc.example.org", 0),
                network("OFTC", " ", 6697),
            ],
        };
        let problems: Vec<String> = config.validate().iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "networks[1].name: `libera` names another network already",
                "networks[1].port: must not be 0",
                "networks[2].name: use only lowercase letters, digits and '-' (it appears in room aliases)",
                "networks[2].host: must not be empty",
            ]
        );
        assert!(IrcConfig::default().validate().is_empty());
    }
}
