//! The example config written by `generate-config`: every key with a comment, loopback
//! defaults, and a fresh encryption key, so that the file passes `check-config` as written.

use super::{
    BridgeInfo, DEFAULT_BODY_LIMIT, DEFAULT_MAX_CONNECTIONS, ENV_PREFIX, ENV_SEPARATOR,
    EncryptionKey, NetworkConfig,
};

/// A complete, commented config for `bridge` with its network section `N`.
///
/// Each call draws a fresh `encryption.key` (and whatever secrets `N`'s template draws).
pub fn generate_config<N: NetworkConfig>(bridge: &BridgeInfo) -> String {
    let mut text = core_template(bridge, &EncryptionKey::generate());
    text.push('\n');
    text.push_str(N::template().trim_end());
    text.push('\n');
    text
}

fn core_template(bridge: &BridgeInfo, key: &EncryptionKey) -> String {
    let BridgeInfo { name, binary, .. } = *bridge;
    let env = format!("{ENV_PREFIX}{ENV_SEPARATOR}");
    let id = bridge.default_id();
    let bind = bridge.default_bind();
    let bot = bridge.default_bot_localpart();
    let prefix = bridge.default_prefix();
    let registration = bridge.default_registration_path();
    let registration = registration.display();
    let database = bridge.default_database_url();
    let key = key.to_base64();
    let command_prefix = format!("!{name}");
    let domain = "localhost";
    format!(
        r#"# Configuration of the Trestle {name} bridge, written by `{binary} generate-config`.
# Check it with `{binary} check-config`, then write the registration file with
# `{binary} generate-registration` and add that file to the homeserver.
#
# Environment overrides: any key can be overridden by a variable named {env}, then the
# key path in capitals with __ between the parts: {env}DATABASE__URL overrides
# database.url, {env}APPSERVICE__BIND overrides appservice.bind.
# Secrets from files: a secret key (database.url, encryption.key, and those marked
# "Secret" below) may be given as `<key>_file: /path/to/file` instead of `<key>: value`;
# a trailing newline in the file is ignored. Give one or the other, not both.
# Relative paths are relative to the working directory of the bridge.
# This file holds secrets: keep it readable by the bridge's user only.

# The Matrix homeserver the bridge belongs to.
homeserver:
  # Base URL of the homeserver's client-server API, as the bridge reaches it.
  url: "http://127.0.0.1:8008"
  # The homeserver's server name: the part after the colon in @alice:example.org.
  domain: "localhost"

# The application service: how the homeserver and the bridge reach each other.
appservice:
  # ID of the application service. Never change it once the homeserver has the
  # registration: the homeserver keys the bridge's state by it.
  id: "{id}"
  # Address (IP:port) the bridge's HTTP endpoint listens on.
  bind: "{bind}"
  # URL the homeserver uses to reach that endpoint; it goes into the registration.
  url: "http://{bind}"
  # Localpart of the bridge bot, @{bot}:<homeserver.domain>.
  bot_localpart: "{bot}"
  # Localpart prefix of the Matrix users that stand for remote users,
  # e.g. @{prefix}alice:<homeserver.domain>. The bridge owns every user with this prefix.
  ghost_prefix: "{prefix}"
  # Prefix of the room aliases the bridge provides, e.g. #{prefix}something:<homeserver.domain>.
  alias_prefix: "{prefix}"
  # Path of the registration file that `{binary} generate-registration` writes and the
  # homeserver loads (Synapse: app_service_config_files). Its secret tokens live only there.
  registration: "{registration}"
  # Largest request body the endpoint accepts, in bytes.
  body_limit: {DEFAULT_BODY_LIMIT}
  # Whether the homeserver also pushes ephemeral events (typing, read receipts, presence).
  receive_ephemeral: false

# How people use the bridge.
bridge:
  # The word that starts a bot command in a portal room ("{command_prefix} help"); in a
  # direct chat with the bot it may be left out.
  command_prefix: "{command_prefix}"
  # Who may use the bridge: a Matrix user id, a homeserver name, or "*" for everyone,
  # each with a level: "relay" (messages relayed by the bot), "user" (their own
  # identity on {name}), "admin" (bridge administration), or "none". The most specific
  # entry wins: a user id over a server over "*".
  permissions:
    "*": "none"
    "{domain}": "user"
  # Public base URL of the links to Matrix files the bridge serves to {name} users, under
  # /media/ on the appservice endpoint (put a proxy in front). Default: appservice.url.
  # media_url: "https://bridge.example.org"

# Where the bridge keeps its state.
database:
  # sqlite://FILE?mode=rwc (a SQLite file, created on first run) or
  # postgres://USER:PASSWORD@HOST:PORT/DATABASE for PostgreSQL.
  # Secret: may be given as url_file.
  url: "{database}"
  # Most connections kept open to the database.
  max_connections: {DEFAULT_MAX_CONNECTIONS}

# Encryption of secrets the bridge stores (e.g. IRC passwords).
encryption:
  # 32 random bytes in base64, freshly generated for this file. Keep it: without it the
  # stored secrets cannot be read. Secret: may be given as key_file.
  key: "{key}"

# Logging, to stderr.
logging:
  # Which events to log: "info", or per module, e.g. "info,bridge_core=debug".
  # The RUST_LOG environment variable, when set, replaces this.
  level: "info"
  # "human" (compact lines) or "json" (one JSON object per line).
  format: "human"
"#
    )
}

/// Keys (`name:` lines) in `text` with neither a comment on the line nor a comment line
/// directly above; used by tests of every bridge's template.
pub fn uncommented_keys(text: &str) -> Vec<String> {
    let mut previous = "";
    let mut missing = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let is_key = !trimmed.starts_with('#')
            && trimmed.split_once(':').is_some_and(|(key, _)| {
                !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
        if is_key && !previous.trim_start().starts_with('#') && !line.contains(" #") {
            missing.push(line.to_owned());
        }
        previous = line;
    }
    missing
}
