//! The bridge's configuration file: its shape, loading, checking, the generated example, and
//! the registration file derived from it.
//!
//! Every Trestle bridge reads one YAML file with the same core sections (`homeserver`,
//! `appservice`, `database`, `encryption`, `logging`) plus one section of its own, named
//! after the bridge (`irc:`, `xmpp:`) and typed by the bridge ([`NetworkConfig`]).
//!
//! - **Environment overrides.** Any key can be overridden by an environment variable named
//!   [`ENV_PREFIX`] (`TRESTLE`), then the key path, all joined by [`ENV_SEPARATOR`] (`__`):
//!   `TRESTLE__DATABASE__URL`, `TRESTLE__APPSERVICE__BIND`. The double underscore keeps
//!   variables such as `TRESTLE_CONFIG` (the CLI's config path) out of the config.
//! - **Secrets from files.** A secret key `x` (`database.url`, `encryption.key`, and the keys
//!   a bridge lists in [`NetworkConfig::SECRET_KEYS`]) may be given as `x_file: /path`
//!   instead; the file's trailing newline is trimmed. Giving both is a problem.
//! - **Every problem at once.** [`BridgeConfig::load`] collects every problem (unknown keys,
//!   wrong types, invalid values, missing keys) with its key path, e.g.
//!   `homeserver.url: not a URL: relative URL without a base`, and returns them together in
//!   [`ConfigError::Invalid`], so an operator fixes the file in one pass.
//! - **Generated example.** [`generate_config`] writes a complete file with a comment on
//!   every key, a fresh encryption key and loopback defaults.
//! - **Registration.** [`generate_registration`] derives the appservice registration from the
//!   config (keeping existing tokens) and [`load_registration_checked`] refuses a registration
//!   that no longer matches it, so the two cannot silently disagree.
//!
//! Relative paths in the file (the registration, `_file` secrets, a SQLite database) are
//! relative to the working directory, not to the config file.

mod load;
mod permissions;
mod problem;
mod registration;
mod secret;
mod template;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ruma::OwnedServerName;
use serde::de::DeserializeOwned;
use url::Url;

pub use self::permissions::{Permission, Permissions};
pub use self::problem::{ConfigError, Problem};
pub use self::registration::{
    Difference, GeneratedRegistration, RegistrationError, generate_registration,
    load_registration_checked, registration_spec,
};
pub use self::secret::{ENCRYPTION_KEY_LEN, EncryptionKey, EncryptionKeyError, SecretString};
pub use self::template::{generate_config, uncommented_keys};
pub use crate::logging::{LogFormat, LoggingConfig};

/// Prefix of the environment variables that override config keys (followed by
/// [`ENV_SEPARATOR`]): `TRESTLE__DATABASE__URL` overrides `database.url`.
pub const ENV_PREFIX: &str = "TRESTLE";

/// Separator between the prefix and the parts of the key path in an override variable.
pub const ENV_SEPARATOR: &str = "__";

/// Suffix that turns a secret key `x` into `x_file`, the path of a file holding its value.
pub const SECRET_FILE_SUFFIX: &str = "_file";

/// Default `appservice.body_limit`: 32 MiB.
///
/// Synapse sends at most 100 events and 100 ephemeral events per transaction, each event at
/// most 64 KiB, so a legitimate transaction stays well below this; the limit only stops a
/// runaway or hostile sender from exhausting memory.
pub const DEFAULT_BODY_LIMIT: usize = 32 * 1024 * 1024;

/// Default `database.max_connections`, sqlx's own default pool size.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// What the configuration needs to know about the bridge binary reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeInfo {
    /// Short lowercase name, e.g. `irc`: the key of the bridge's own config section, the
    /// third-party protocol in the registration, and the stem of default names
    /// (`irc.db`, `ircbot`, `irc_`).
    pub name: &'static str,
    /// Name of the executable (`bridge-irc`), used in messages that say what to run.
    pub binary: &'static str,
    /// Version shown by `--version`; pass `env!("CARGO_PKG_VERSION")`.
    pub version: &'static str,
    /// Port of the default `appservice.bind` and `appservice.url`.
    pub default_port: u16,
}

impl BridgeInfo {
    /// Default `appservice.id`: `trestle-<name>`.
    pub fn default_id(&self) -> String {
        format!("trestle-{}", self.name)
    }

    /// Default `appservice.bind`: `127.0.0.1:<default_port>`.
    pub fn default_bind(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.default_port))
    }

    /// Default `appservice.bot_localpart`: `<name>bot`.
    pub fn default_bot_localpart(&self) -> String {
        format!("{}bot", self.name)
    }

    /// Default `appservice.ghost_prefix` and `appservice.alias_prefix`: `<name>_`.
    pub fn default_prefix(&self) -> String {
        format!("{}_", self.name)
    }

    /// Default `appservice.registration`: `<name>-registration.yaml`.
    pub fn default_registration_path(&self) -> PathBuf {
        PathBuf::from(format!("{}-registration.yaml", self.name))
    }

    /// Default `database.url`: a SQLite file `<name>.db`, created on first run
    /// (`mode=rwc`).
    pub fn default_database_url(&self) -> String {
        format!("sqlite://{}.db?mode=rwc", self.name)
    }
}

/// The section of the config that belongs to one bridge (`irc:`, `xmpp:`), under the key
/// [`BridgeInfo::name`].
///
/// Implementations should use `#[serde(deny_unknown_fields)]` on every struct, so that a
/// misspelt key is reported instead of silently ignored, and [`SecretString`] for secrets.
/// An absent section is deserialized from an empty mapping.
pub trait NetworkConfig: DeserializeOwned + fmt::Debug + Send + Sync + 'static {
    /// Secret keys of the section, as paths relative to it (`component_secret`,
    /// `networks.*.password`; `*` matches every list item or mapping key). Each may be given
    /// as `<key>_file` instead.
    const SECRET_KEYS: &'static [&'static str] = &[];

    /// The section as it appears in the generated config: YAML starting with the section
    /// key at column 0 (`irc:`), with a `#` comment above every key, and values that pass
    /// [`NetworkConfig::validate`]. It may contain freshly generated secrets.
    fn template() -> String;

    /// Problems beyond what deserialization catches (empty names, bad hosts, ...), with
    /// paths relative to the section (`networks[1].host`); empty when all is well.
    fn validate(&self) -> Vec<Problem> {
        Vec::new()
    }
}

/// `homeserver`: the Matrix homeserver the bridge belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeserverConfig {
    /// Base URL of the client-server API as the bridge reaches it (`http://127.0.0.1:8008`).
    pub url: Url,
    /// The server name, the part after the colon in user IDs.
    pub domain: OwnedServerName,
}

/// `appservice`: how the homeserver and the bridge reach each other, and which users and
/// aliases the bridge owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppserviceConfig {
    /// The application service ID in the registration; must never change once registered.
    pub id: String,
    /// Address the bridge's HTTP endpoint listens on.
    pub bind: SocketAddr,
    /// URL the homeserver pushes transactions to; goes into the registration.
    pub url: Url,
    /// Localpart of the bridge bot (the registration's `sender_localpart`).
    pub bot_localpart: String,
    /// Localpart prefix of the ghost users standing for remote users (`irc_`).
    pub ghost_prefix: String,
    /// Localpart prefix of the room aliases the bridge provides (`irc_`).
    pub alias_prefix: String,
    /// Path of the registration file; the tokens live only there.
    pub registration: PathBuf,
    /// Largest request body the endpoint accepts, in bytes.
    pub body_limit: usize,
    /// Whether the homeserver should push ephemeral events (typing, receipts, presence).
    pub receive_ephemeral: bool,
}

/// `bridge`: how people use the bridge: the bot's command prefix and who may do what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSettings {
    /// The word that starts a bot command in a portal room (`!irc`); in a management room
    /// it may be left out.
    pub command_prefix: String,
    /// Who may use the bridge, and how much.
    pub permissions: Permissions,
    /// The public base URL of the media links the bridge serves (`None`: the
    /// `appservice.url`).
    pub media_url: Option<Url>,
}

/// `database`: where the bridge keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// `sqlite://FILE?mode=rwc` or `postgres://...`; secret because it may hold a password.
    pub url: SecretString,
    /// Most connections the pool keeps open.
    pub max_connections: u32,
}

/// `encryption`: the key protecting secrets at rest (e.g. IRC passwords).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionConfig {
    /// The 32-byte key, given as base64.
    pub key: EncryptionKey,
}

/// A complete, checked bridge configuration: the core sections and the bridge's own.
#[derive(Debug, Clone)]
pub struct BridgeConfig<N> {
    /// The bridge this config was loaded for (not read from the file).
    pub bridge: BridgeInfo,
    /// `homeserver`.
    pub homeserver: HomeserverConfig,
    /// `appservice`.
    pub appservice: AppserviceConfig,
    /// `bridge`.
    pub bridge_settings: BridgeSettings,
    /// `database`.
    pub database: DatabaseConfig,
    /// `encryption`.
    pub encryption: EncryptionConfig,
    /// `logging`.
    pub logging: LoggingConfig,
    /// The bridge's own section, under the key [`BridgeInfo::name`].
    pub network: N,
}

impl<N: NetworkConfig> BridgeConfig<N> {
    /// Reads the YAML file at `path`, applies the `TRESTLE__...` environment overrides and
    /// the `_file` secrets, and checks everything.
    ///
    /// On failure to read or parse the file, returns [`ConfigError::Read`] or
    /// [`ConfigError::Parse`]; otherwise every problem found is returned at once in
    /// [`ConfigError::Invalid`].
    pub fn load(path: &Path, bridge: BridgeInfo) -> Result<Self, ConfigError> {
        load::load(path, bridge, None)
    }

    /// Like [`BridgeConfig::load`], but takes the override variables from `vars` instead of
    /// the process environment (for tests and embedding). Names are matched like real
    /// variables: `TRESTLE__DATABASE__URL`.
    pub fn load_with_env<I, K, V>(
        path: &Path,
        bridge: BridgeInfo,
        vars: I,
    ) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let vars = vars
            .into_iter()
            .map(|(key, value)| (key.into(), value.into()))
            .collect();
        load::load(path, bridge, Some(vars))
    }
}
