//! Loading: merging the file and the environment, resolving `_file` secrets, deserializing
//! each section, and checking values, while collecting every problem on the way.
//!
//! Each core section is first deserialized into a "raw" struct of optional plain values, so
//! that a wrong type or a missing key in one field never hides the problems of the others;
//! the raw values are then checked and converted into the public typed sections. A value
//! that fails to deserialize is reported and dropped, and deserialization is retried without
//! it, so one section can report several type errors and unknown keys in one run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat, Map, Value, ValueKind};
use ruma::OwnedServerName;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use url::Url;

use super::problem::{ConfigError, Problems, join_path};
use super::secret::{EncryptionKey, SecretString, resolve_files};
use super::{
    AppserviceConfig, BridgeConfig, BridgeInfo, BridgeSettings, DEFAULT_BODY_LIMIT,
    DEFAULT_MAX_CONNECTIONS, DatabaseConfig, ENV_PREFIX, ENV_SEPARATOR, EncryptionConfig,
    HomeserverConfig, NetworkConfig, Permission, Permissions,
};
use crate::logging::{self, LogFormat, LoggingConfig};

/// The core sections, in the order they are checked and written.
pub(crate) const CORE_SECTIONS: [&str; 6] = [
    "homeserver",
    "appservice",
    "bridge",
    "database",
    "encryption",
    "logging",
];

/// The core secret keys; each may be given as `<key>_file`.
pub(crate) const CORE_SECRET_KEYS: [&str; 2] = ["database.url", "encryption.key"];

/// How many values one section may drop and retry before giving up; far more than a real
/// file has, and it bounds the work a hostile file can cause.
const MAX_ATTEMPTS: usize = 64;

/// Characters the Matrix spec (v1.8 and later) allows in a user localpart.
fn is_localpart_char(c: char) -> bool {
    matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/' | '+')
}

/// Longest user ID the spec allows, in bytes.
const MAX_USER_ID_LEN: usize = 255;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of homeserver keys")]
struct RawHomeserver {
    url: Option<String>,
    domain: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of appservice keys")]
struct RawAppservice {
    id: Option<String>,
    bind: Option<String>,
    url: Option<String>,
    bot_localpart: Option<String>,
    ghost_prefix: Option<String>,
    alias_prefix: Option<String>,
    registration: Option<String>,
    body_limit: Option<u64>,
    receive_ephemeral: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of bridge keys")]
struct RawBridge {
    command_prefix: Option<String>,
    permissions: Option<std::collections::BTreeMap<String, String>>,
    media_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of database keys")]
struct RawDatabase {
    url: Option<String>,
    max_connections: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of encryption keys")]
struct RawEncryption {
    key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of logging keys")]
struct RawLogging {
    level: Option<String>,
    format: Option<String>,
}

/// Loads and checks the config at `path`; `env` replaces the process environment when given.
pub(crate) fn load<N: NetworkConfig>(
    path: &Path,
    bridge: BridgeInfo,
    env: Option<Map<String, String>>,
) -> Result<BridgeConfig<N>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut environment = Environment::with_prefix(ENV_PREFIX)
        .prefix_separator(ENV_SEPARATOR)
        .separator(ENV_SEPARATOR);
    if env.is_some() {
        environment = environment.source(env);
    }
    let merged = Config::builder()
        .add_source(File::from_str(&text, FileFormat::Yaml))
        .add_source(environment)
        .build()
        .map_err(|error| ConfigError::Parse {
            path: path.to_owned(),
            message: error.to_string(),
        })?;
    let ValueKind::Table(root) = merged.cache.kind else {
        return Err(ConfigError::Parse {
            path: path.to_owned(),
            message: "the top level is not a mapping of sections".to_owned(),
        });
    };

    check_tree::<N>(root, bridge).map_err(|problems| ConfigError::Invalid {
        path: path.to_owned(),
        problems: problems.into_vec(),
    })
}

/// Checks the merged tree and builds the typed config, or returns every problem.
fn check_tree<N: NetworkConfig>(
    mut root: Map<String, Value>,
    bridge: BridgeInfo,
) -> Result<BridgeConfig<N>, Problems> {
    let mut problems = Problems::default();

    let secret_keys: Vec<String> = CORE_SECRET_KEYS
        .iter()
        .map(|key| (*key).to_owned())
        .chain(N::SECRET_KEYS.iter().map(|key| join_path(bridge.name, key)))
        .collect();
    resolve_files(&mut root, &secret_keys, &mut problems);

    let known: Vec<&str> = CORE_SECTIONS.iter().copied().chain([bridge.name]).collect();
    for key in root.keys() {
        if !known.contains(&key.as_str()) {
            problems.push(
                key.clone(),
                format!("unknown key; expected one of {}", quoted_list(&known)),
            );
        }
    }

    let raw_homeserver = section::<RawHomeserver>(&mut root, "homeserver", &mut problems);
    let raw_appservice = section::<RawAppservice>(&mut root, "appservice", &mut problems);
    let raw_bridge = section::<RawBridge>(&mut root, "bridge", &mut problems);
    let raw_database = section::<RawDatabase>(&mut root, "database", &mut problems);
    let raw_encryption = section::<RawEncryption>(&mut root, "encryption", &mut problems);
    let raw_logging = section::<RawLogging>(&mut root, "logging", &mut problems);
    let network = section::<N>(&mut root, bridge.name, &mut problems);

    let homeserver = raw_homeserver.and_then(|raw| check_homeserver(raw, &mut problems));
    let appservice = raw_appservice.and_then(|raw| check_appservice(raw, &bridge, &mut problems));
    let settings = match (raw_bridge, &homeserver) {
        (Some(raw), Some(homeserver)) => check_bridge(raw, &bridge, homeserver, &mut problems),
        _ => None,
    };
    let database = raw_database.and_then(|raw| check_database(raw, &bridge, &mut problems));
    let encryption = raw_encryption.and_then(|raw| check_encryption(raw, &mut problems));
    let logging = raw_logging.and_then(|raw| check_logging(raw, &mut problems));
    if let Some(network) = &network {
        for problem in network.validate() {
            let problem = problem.under(bridge.name);
            problems.push(problem.path, problem.message);
        }
    }
    if let (Some(homeserver), Some(appservice)) = (&homeserver, &appservice) {
        check_bot_user_id(appservice, homeserver, &mut problems);
    }

    match (
        homeserver, appservice, settings, database, encryption, logging, network,
    ) {
        (
            Some(homeserver),
            Some(appservice),
            Some(settings),
            Some(database),
            Some(encryption),
            Some(logging),
            Some(network),
        ) if problems.is_empty() => Ok(BridgeConfig {
            bridge,
            homeserver,
            appservice,
            bridge_settings: settings,
            database,
            encryption,
            logging,
            network,
        }),
        _ => {
            // Every `None` above comes with a problem; this guards against a section that
            // failed without saying why.
            if problems.is_empty() {
                problems.push("", "the configuration is incomplete");
            }
            problems.sort_by_section(&known);
            Err(problems)
        }
    }
}

fn quoted_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|item| format!("`{item}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Takes section `name` out of the tree and deserializes it, reporting every deserialization
/// problem; an absent or empty section reads as an empty mapping.
///
/// Returns `None` when the section could not be deserialized even after dropping the values
/// at fault (a missing required key, a section that is not a mapping).
fn section<T: DeserializeOwned>(
    root: &mut Map<String, Value>,
    name: &str,
    problems: &mut Problems,
) -> Option<T> {
    let mut value = match root.shift_remove(name) {
        Some(value) if !matches!(value.kind, ValueKind::Nil) => value,
        _ => Value::new(None, ValueKind::Table(Map::new())),
    };
    for _ in 0..MAX_ATTEMPTS {
        let error = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(parsed) => return Some(parsed),
            Err(error) => error,
        };
        let segments: Vec<Segment> = error.path().iter().cloned().collect();
        let at = join_path(name, &format_segments(&segments));
        let (path, message) = match describe(error.inner()) {
            Described::Missing(field) => (
                join_path(&at, &field),
                "missing; this key is required".to_owned(),
            ),
            Described::Message(message) => (at, message),
        };
        if problems.has(&path) {
            // Dropping the value re-raised the same problem: nothing more to learn here.
            return None;
        }
        problems.push(path, message);
        if !remove_at(&mut value, &segments) {
            return None;
        }
    }
    None
}

/// Renders a path relative to a section: `networks[0].host`.
fn format_segments(segments: &[Segment]) -> String {
    let mut path = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => path.push_str(&format!("[{index}]")),
            Segment::Map { key } => path = join_path(&path, key),
            Segment::Enum { variant } => path = join_path(&path, variant),
            Segment::Unknown => path = join_path(&path, "?"),
        }
    }
    path
}

/// Removes the mapping entry at `segments` so deserialization can be retried without it.
///
/// Only entries of mappings are removed: removing a list item would shift the indexes that
/// later problems are reported with.
fn remove_at(value: &mut Value, segments: &[Segment]) -> bool {
    let Some((Segment::Map { key }, parents)) = segments.split_last() else {
        return false;
    };
    let mut current = value;
    for segment in parents {
        current = match (segment, &mut current.kind) {
            (Segment::Map { key }, ValueKind::Table(table)) => match table.get_mut(key) {
                Some(child) => child,
                None => return false,
            },
            (Segment::Seq { index }, ValueKind::Array(items)) => match items.get_mut(*index) {
                Some(child) => child,
                None => return false,
            },
            _ => return false,
        };
    }
    match &mut current.kind {
        ValueKind::Table(table) => table.shift_remove(key).is_some(),
        _ => false,
    }
}

enum Described {
    /// A required key is absent; holds the key's name.
    Missing(String),
    Message(String),
}

/// The operator-facing message of a deserialization error, without the key and origin the
/// config crate appends (the path is reported separately, and more precisely).
fn describe(error: &config::ConfigError) -> Described {
    match error {
        config::ConfigError::At { error, .. } => describe(error),
        config::ConfigError::Type {
            unexpected,
            expected,
            origin,
            ..
        } => {
            let mut message = format!("invalid type: {unexpected}, expected {expected}");
            if let Some(origin) = origin {
                message.push_str(&format!(" (value from {origin})"));
            }
            Described::Message(message)
        }
        // The config crate prefixes the field with the keys it crossed, unreliably
        // (`networks[0]host`); only the field's own name is wanted.
        config::ConfigError::NotFound(key) => {
            Described::Missing(key.rsplit(['.', ']']).next().unwrap_or(key).to_owned())
        }
        config::ConfigError::Message(message) => Described::Message(reword_unknown_field(message)),
        other => Described::Message(other.to_string()),
    }
}

/// Turns serde's "unknown field `x`, expected one of ..." into "unknown key; expected one of
/// ..."; the key itself is already in the path.
fn reword_unknown_field(message: &str) -> String {
    message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once("`, "))
        .map(|(_, expected)| format!("unknown key; {expected}"))
        .unwrap_or_else(|| message.to_owned())
}

/// The value of a required key, or `None` after reporting it missing.
fn required(problems: &mut Problems, path: &str, value: Option<String>) -> Option<String> {
    if value.is_none() {
        problems.push(path, "missing; this key is required");
    }
    value
}

/// A non-empty string, or `None` after reporting it.
fn non_empty(problems: &mut Problems, path: &str, value: String) -> Option<String> {
    if value.trim().is_empty() {
        problems.push(path, "must not be empty");
        None
    } else {
        Some(value)
    }
}

fn http_url(problems: &mut Problems, path: &str, text: &str) -> Option<Url> {
    match Url::parse(text) {
        Err(error) => problems.push(path, format!("not a URL: {error}")),
        Ok(url) if !matches!(url.scheme(), "http" | "https") => problems.push(
            path,
            format!(
                "unsupported URL scheme `{}`; expected http or https",
                url.scheme()
            ),
        ),
        Ok(url) if url.host().is_none() => problems.push(path, "not a URL: it has no host"),
        Ok(url) => return Some(url),
    }
    None
}

fn check_homeserver(raw: RawHomeserver, problems: &mut Problems) -> Option<HomeserverConfig> {
    let url = required(problems, "homeserver.url", raw.url)
        .and_then(|text| http_url(problems, "homeserver.url", &text));
    let domain = required(problems, "homeserver.domain", raw.domain).and_then(|text| {
        OwnedServerName::try_from(text.as_str())
            .map_err(|error| {
                problems.push(
                    "homeserver.domain",
                    format!(
                        "not a valid server name: {error} (e.g. example.org or example.org:8448)"
                    ),
                );
            })
            .ok()
    });
    Some(HomeserverConfig {
        url: url?,
        domain: domain?,
    })
}

fn check_appservice(
    raw: RawAppservice,
    bridge: &BridgeInfo,
    problems: &mut Problems,
) -> Option<AppserviceConfig> {
    let id = non_empty(
        problems,
        "appservice.id",
        raw.id.unwrap_or_else(|| bridge.default_id()),
    )
    .and_then(|id| {
        if id.contains('|') {
            problems.push("appservice.id", "must not contain '|' (Synapse refuses it)");
            None
        } else {
            Some(id)
        }
    });

    let bind = match raw.bind {
        None => Some(bridge.default_bind()),
        Some(text) => match text.trim().parse::<SocketAddr>() {
            Ok(bind) if bind.port() == 0 => {
                problems.push(
                    "appservice.bind",
                    "port 0 would pick a random port the homeserver cannot know; give a fixed one",
                );
                None
            }
            Ok(bind) => Some(bind),
            Err(error) => {
                problems.push(
                    "appservice.bind",
                    format!(
                        "not an IP:port socket address ({error}), e.g. 127.0.0.1:{}",
                        bridge.default_port
                    ),
                );
                None
            }
        },
    };

    let url = required(problems, "appservice.url", raw.url)
        .and_then(|text| http_url(problems, "appservice.url", &text));

    let bot_localpart = check_localpart(
        problems,
        "appservice.bot_localpart",
        raw.bot_localpart
            .unwrap_or_else(|| bridge.default_bot_localpart()),
        true,
    );
    let ghost_prefix = check_localpart(
        problems,
        "appservice.ghost_prefix",
        raw.ghost_prefix.unwrap_or_else(|| bridge.default_prefix()),
        false,
    );
    if let (Some(bot), Some(prefix)) = (&bot_localpart, &ghost_prefix)
        && bot.starts_with(prefix.as_str())
    {
        problems.push(
            "appservice.bot_localpart",
            format!("starts with ghost_prefix `{prefix}`, so the bot would be taken for a ghost"),
        );
    }

    let alias_prefix = non_empty(
        problems,
        "appservice.alias_prefix",
        raw.alias_prefix.unwrap_or_else(|| bridge.default_prefix()),
    )
    .and_then(|prefix| {
        if prefix
            .chars()
            .any(|c| c == ':' || c.is_whitespace() || c.is_control())
        {
            problems.push(
                "appservice.alias_prefix",
                "must not contain ':', whitespace or control characters",
            );
            None
        } else {
            Some(prefix)
        }
    });

    let registration = match raw.registration {
        None => Some(bridge.default_registration_path()),
        Some(text) => non_empty(problems, "appservice.registration", text).map(PathBuf::from),
    };

    let body_limit = match raw.body_limit {
        None => Some(DEFAULT_BODY_LIMIT),
        Some(0) => {
            problems.push("appservice.body_limit", "must be at least 1 byte");
            None
        }
        Some(limit) => usize::try_from(limit)
            .map_err(|_| problems.push("appservice.body_limit", "too large for this machine"))
            .ok(),
    };

    Some(AppserviceConfig {
        id: id?,
        bind: bind?,
        url: url?,
        bot_localpart: bot_localpart?,
        ghost_prefix: ghost_prefix?,
        alias_prefix: alias_prefix?,
        registration: registration?,
        body_limit: body_limit?,
        receive_ephemeral: raw.receive_ephemeral.unwrap_or(false),
    })
}

/// Checks a user localpart (`whole`) or localpart prefix against the spec's grammar; a whole
/// `sender_localpart` must also avoid what Synapse refuses there.
fn check_localpart(
    problems: &mut Problems,
    path: &str,
    value: String,
    whole: bool,
) -> Option<String> {
    let value = non_empty(problems, path, value)?;
    let mut invalid: Vec<char> = value.chars().filter(|c| !is_localpart_char(*c)).collect();
    invalid.dedup();
    if !invalid.is_empty() {
        let listed: Vec<String> = invalid.iter().map(|c| format!("{c:?}")).collect();
        problems.push(
            path,
            format!(
                "{} not allowed in a Matrix user localpart (use only a-z, 0-9, '.', '_', '=', '-', '/', '+')",
                listed.join(", ")
            ),
        );
        return None;
    }
    if whole && value.contains(['=', '+']) {
        problems.push(
            path,
            "must not contain '=' or '+': Synapse refuses a sender_localpart that needs URL-encoding",
        );
        return None;
    }
    Some(value)
}

/// The bot's user ID must fit the spec's 255-byte limit, or the homeserver refuses it.
fn check_bot_user_id(
    appservice: &AppserviceConfig,
    homeserver: &HomeserverConfig,
    problems: &mut Problems,
) {
    let len = 1 + appservice.bot_localpart.len() + 1 + homeserver.domain.as_str().len();
    if len > MAX_USER_ID_LEN {
        problems.push(
            "appservice.bot_localpart",
            format!("@<bot_localpart>:<homeserver.domain> is {len} bytes long; the limit is {MAX_USER_ID_LEN}"),
        );
    }
}

/// Whether `text` has the shape of a URL scheme (RFC 3986), so that naming it in a message
/// cannot leak the rest of a malformed URL.
fn is_url_scheme(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_alphabetic())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn check_bridge(
    raw: RawBridge,
    bridge: &BridgeInfo,
    homeserver: &HomeserverConfig,
    problems: &mut Problems,
) -> Option<BridgeSettings> {
    let command_prefix = non_empty(
        problems,
        "bridge.command_prefix",
        raw.command_prefix
            .unwrap_or_else(|| format!("!{}", bridge.name)),
    )
    .and_then(|prefix| {
        if prefix.chars().any(char::is_whitespace) {
            problems.push("bridge.command_prefix", "must not contain spaces");
            None
        } else {
            Some(prefix)
        }
    });
    let mut permissions = Permissions::default();
    let mut valid = true;
    match raw.permissions {
        None => permissions.insert(homeserver.domain.as_str(), Permission::User),
        Some(entries) => {
            for (who, level) in entries {
                let path = format!("bridge.permissions.{who}");
                let Some(level) = Permission::from_name(&level) else {
                    problems.push(
                        path,
                        format!("unknown level {level:?}; expected one of `none`, `relay`, `user`, `admin`"),
                    );
                    valid = false;
                    continue;
                };
                if let Err(message) = Permissions::check_subject(&who) {
                    problems.push(path, message);
                    valid = false;
                    continue;
                }
                permissions.insert(&who, level);
            }
        }
    }
    let media_url = match raw.media_url.as_deref().map(Url::parse) {
        None => None,
        Some(Ok(url)) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            Some(url)
        }
        Some(_) => {
            problems.push("bridge.media_url", "expected an http:// or https:// URL");
            valid = false;
            None
        }
    };
    match (command_prefix, valid) {
        (Some(command_prefix), true) => Some(BridgeSettings {
            command_prefix,
            permissions,
            media_url,
        }),
        _ => None,
    }
}

fn check_database(
    raw: RawDatabase,
    bridge: &BridgeInfo,
    problems: &mut Problems,
) -> Option<DatabaseConfig> {
    let url = non_empty(
        problems,
        "database.url",
        raw.url.unwrap_or_else(|| bridge.default_database_url()),
    )
    .and_then(|url| {
        // The URL may carry a password, so only its scheme is ever repeated.
        match url.split_once(':').map(|(scheme, _)| scheme.to_ascii_lowercase()) {
            Some(scheme) if matches!(scheme.as_str(), "sqlite" | "postgres" | "postgresql") => {
                Some(SecretString::new(url))
            }
            Some(scheme) if is_url_scheme(&scheme) => {
                problems.push(
                    "database.url",
                    format!("unsupported database `{scheme}`; use sqlite://FILE?mode=rwc or postgres://..."),
                );
                None
            }
            _ => {
                problems.push(
                    "database.url",
                    "not a database URL; use sqlite://FILE?mode=rwc or postgres://...",
                );
                None
            }
        }
    });
    let max_connections = match raw.max_connections {
        None => Some(DEFAULT_MAX_CONNECTIONS),
        Some(0) => {
            problems.push("database.max_connections", "must be at least 1");
            None
        }
        Some(n) => Some(n),
    };
    Some(DatabaseConfig {
        url: url?,
        max_connections: max_connections?,
    })
}

fn check_encryption(raw: RawEncryption, problems: &mut Problems) -> Option<EncryptionConfig> {
    let text = required(problems, "encryption.key", raw.key)?;
    match EncryptionKey::from_base64(&text) {
        Ok(key) => Some(EncryptionConfig { key }),
        Err(error) => {
            problems.push(
                "encryption.key",
                format!("{error}; generate one with `head -c 32 /dev/urandom | base64`"),
            );
            None
        }
    }
}

fn check_logging(raw: RawLogging, problems: &mut Problems) -> Option<LoggingConfig> {
    let defaults = LoggingConfig::default();
    let level = match raw.level {
        None => Some(defaults.level),
        Some(level) => match logging::check_level(&level) {
            Ok(()) => Some(level),
            Err(message) => {
                problems.push("logging.level", message);
                None
            }
        },
    };
    let format = match raw.format {
        None => Some(defaults.format),
        Some(text) => text
            .parse::<LogFormat>()
            .map_err(|error| problems.push("logging.format", error.to_string()))
            .ok(),
    };
    Some(LoggingConfig {
        level: level?,
        format: format?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(key: &str) -> Segment {
        Segment::Map {
            key: key.to_owned(),
        }
    }

    #[test]
    fn segments_render_like_yaml_paths() {
        let segments = [seg("networks"), Segment::Seq { index: 2 }, seg("host")];
        assert_eq!(format_segments(&segments), "networks[2].host");
        assert_eq!(format_segments(&[]), "");
    }

    #[test]
    fn unknown_field_messages_are_reworded() {
        assert_eq!(
            reword_unknown_field("unknown field `urll`, expected `url` or `domain`"),
            "unknown key; expected `url` or `domain`"
        );
        assert_eq!(reword_unknown_field("something else"), "something else");
    }

    #[test]
    fn only_mapping_entries_are_removed() {
        let mut table = Map::new();
        table.insert("a".to_owned(), Value::from(1));
        table.insert(
            "list".to_owned(),
            Value::new(None, ValueKind::Array(vec![Value::from(1)])),
        );
        let mut value = Value::new(None, ValueKind::Table(table));
        assert!(!remove_at(
            &mut value,
            &[seg("list"), Segment::Seq { index: 0 }]
        ));
        assert!(!remove_at(&mut value, &[seg("missing")]));
        assert!(!remove_at(&mut value, &[]));
        assert!(remove_at(&mut value, &[seg("a")]));
        let ValueKind::Table(table) = value.kind else {
            panic!("still a table");
        };
        assert_eq!(table.keys().collect::<Vec<_>>(), ["list"]);
    }

    #[test]
    fn localparts_follow_the_spec_and_synapse() {
        let mut problems = Problems::default();
        assert_eq!(
            check_localpart(&mut problems, "a", "irc_".into(), false),
            Some("irc_".into())
        );
        assert_eq!(
            check_localpart(&mut problems, "b", "Irc Bot".into(), true),
            None
        );
        assert_eq!(
            check_localpart(&mut problems, "c", "a=b".into(), false),
            Some("a=b".into())
        );
        assert_eq!(
            check_localpart(&mut problems, "d", "a=b".into(), true),
            None
        );
        assert_eq!(
            check_localpart(&mut problems, "e", String::new(), true),
            None
        );
        let problems = problems.into_vec();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["b", "d", "e"]);
        assert!(
            problems[0].message.contains("'I'"),
            "{}",
            problems[0].message
        );
    }
}
