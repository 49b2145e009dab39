//! The `linechat:` section of the example bridge's config.

use bridge_core::config::{NetworkConfig, Problem};
use serde::Deserialize;

/// Where the linechat server is and how the bridge appears there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinechatConfig {
    /// `host:port` of the linechat server.
    #[serde(default = "default_server")]
    pub server: String,
    /// Prefix of the linechat user names of Matrix users' puppets.
    #[serde(default = "default_puppet_prefix")]
    pub puppet_prefix: String,
    /// The linechat user the bridge watches channels as.
    #[serde(default = "default_listener_user")]
    pub listener_user: String,
}

fn default_server() -> String {
    "127.0.0.1:7667".to_owned()
}

fn default_puppet_prefix() -> String {
    "mx_".to_owned()
}

fn default_listener_user() -> String {
    "matrix-bridge".to_owned()
}

impl NetworkConfig for LinechatConfig {
    fn template() -> String {
        format!(
            r#"# The linechat network (the example in bridge-core/examples).
linechat:
  # host:port of the linechat server (run it with `cargo run --example linechat-server`).
  server: "{}"
  # Prefix of the linechat names of Matrix users (a Matrix user @alice:... is mx_alice).
  puppet_prefix: "{}"
  # The linechat user the bridge watches channels as.
  listener_user: "{}"
"#,
            default_server(),
            default_puppet_prefix(),
            default_listener_user()
        )
    }

    fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let name_ok = |name: &str, longest: usize| {
            (1..=longest).contains(&name.len())
                && name
                    .chars()
                    .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '.' | '-'))
        };
        if !name_ok(&self.puppet_prefix, 16) {
            problems.push(Problem::new("puppet_prefix", "1-16 of a-z 0-9 _ . -"));
        }
        if !name_ok(&self.listener_user, 32) {
            problems.push(Problem::new("listener_user", "1-32 of a-z 0-9 _ . -"));
        }
        if self.listener_user.starts_with(&self.puppet_prefix) {
            problems.push(Problem::new(
                "listener_user",
                "must not start with puppet_prefix",
            ));
        }
        if self.server.parse::<std::net::SocketAddr>().is_err() && !self.server.contains(':') {
            problems.push(Problem::new("server", "expected host:port"));
        }
        problems
    }
}
