//! The appservice registration as derived from the config.
//!
//! The config is the single source of what goes into the registration (ID, URL, bot,
//! namespaces); the registration file adds only the two secret tokens. Writing it goes
//! through [`generate_registration`], which keeps the tokens of the file already installed
//! on the homeserver, and starting the bridge goes through [`load_registration_checked`],
//! which refuses a file that no longer matches the config instead of letting the bridge and
//! the homeserver disagree about which users the bridge owns.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use ::registration::{Namespace, Registration, RegistrationSpec, ValidationErrors};
use url::Url;

use super::BridgeConfig;

/// Failure to write, read or trust the registration file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrationError {
    /// The file named by `appservice.registration` does not exist.
    #[error(
        "registration file {} does not exist; write it with `{binary} generate-registration` \
         and add it to the homeserver (Synapse: app_service_config_files)",
        path.display()
    )]
    Missing {
        /// `appservice.registration`.
        path: PathBuf,
        /// The bridge's executable, for the hint.
        binary: &'static str,
    },
    /// The file could not be read, parsed or written (the error names the file).
    #[error(transparent)]
    File(#[from] ::registration::Error),
    /// The file (or the one about to be written) would be refused by the homeserver or
    /// would not serve a bridge.
    #[error("registration file {}: {errors}", path.display())]
    Invalid {
        /// `appservice.registration`.
        path: PathBuf,
        /// Every problem found.
        errors: ValidationErrors,
    },
    /// The file no longer says what the config says.
    #[error(
        "registration file {} does not match the config: {}; run `{binary} generate-registration`, \
         then restart the homeserver so that it loads the new file",
        path.display(),
        differences.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Mismatch {
        /// `appservice.registration`.
        path: PathBuf,
        /// The bridge's executable, for the hint.
        binary: &'static str,
        /// Every field that differs.
        differences: Vec<Difference>,
    },
}

/// One registration field whose value in the file differs from what the config gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The registration key, e.g. `namespaces.users` or `sender_localpart`.
    pub field: &'static str,
    /// The value in the file, rendered for people.
    pub file: String,
    /// The value the config gives, rendered for people.
    pub config: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is {} in the file but {} from the config",
            self.field, self.file, self.config
        )
    }
}

/// What [`generate_registration`] wrote.
#[derive(Debug, Clone)]
pub struct GeneratedRegistration {
    /// The registration as written.
    pub registration: Registration,
    /// Where it was written (`appservice.registration`).
    pub path: PathBuf,
    /// Whether the tokens of an existing file were kept; when `false`, the homeserver must
    /// be given the file (and restarted) before the bridge can work.
    pub kept_tokens: bool,
}

/// The registration the config describes: `id`, `url`, `sender_localpart` (the bot), an
/// exclusive user namespace for `ghost_prefix` and an exclusive alias namespace for
/// `alias_prefix` on `homeserver.domain`, the bridge's name as the protocol, and
/// `receive_ephemeral`; puppets are not rate-limited.
pub fn registration_spec<N>(config: &BridgeConfig<N>) -> RegistrationSpec {
    let domain = config.homeserver.domain.as_str();
    let appservice = &config.appservice;
    RegistrationSpec {
        id: appservice.id.clone(),
        url: Some(appservice.url.clone()),
        sender_localpart: appservice.bot_localpart.clone(),
        user_namespaces: vec![Namespace::user_prefix(&appservice.ghost_prefix, domain)],
        alias_namespaces: vec![Namespace::alias_prefix(&appservice.alias_prefix, domain)],
        protocols: vec![config.bridge.name.to_owned()],
        receive_ephemeral: appservice.receive_ephemeral,
        rate_limited: false,
        ..RegistrationSpec::default()
    }
}

/// Writes the registration file at `appservice.registration` from the config, keeping the
/// tokens (and hand-added keys) of the file already there when it has the same `id`.
///
/// An existing file that cannot be read or parsed is an error rather than overwritten: it
/// may hold the tokens the homeserver has loaded.
pub fn generate_registration<N>(
    config: &BridgeConfig<N>,
) -> Result<GeneratedRegistration, RegistrationError> {
    let path = &config.appservice.registration;
    let existing = read_existing(path)?;
    let registration = Registration::generate(registration_spec(config), existing.as_ref());
    registration
        .validate_for_bridge()
        .map_err(|errors| RegistrationError::Invalid {
            path: path.clone(),
            errors,
        })?;
    registration.save(path)?;
    let kept_tokens = existing.is_some_and(|existing| {
        existing.as_token == registration.as_token && existing.hs_token == registration.hs_token
    });
    Ok(GeneratedRegistration {
        registration,
        path: path.clone(),
        kept_tokens,
    })
}

/// Loads the registration file at `appservice.registration` for running the bridge, and
/// fails if it is missing, invalid for a bridge, or differs from what the config gives in
/// any field derived from it (`id`, `url`, `sender_localpart`, namespaces, `protocols`,
/// `receive_ephemeral`, `rate_limited`); the error names every differing field and says to
/// rerun `generate-registration`.
pub fn load_registration_checked<N>(
    config: &BridgeConfig<N>,
) -> Result<Registration, RegistrationError> {
    let path = &config.appservice.registration;
    let Some(registration) = read_existing(path)? else {
        return Err(RegistrationError::Missing {
            path: path.clone(),
            binary: config.bridge.binary,
        });
    };
    let expected = Registration::generate(registration_spec(config), Some(&registration));
    let differences = differences(&registration, &expected);
    if !differences.is_empty() {
        return Err(RegistrationError::Mismatch {
            path: path.clone(),
            binary: config.bridge.binary,
            differences,
        });
    }
    registration
        .validate_for_bridge()
        .map_err(|errors| RegistrationError::Invalid {
            path: path.clone(),
            errors,
        })?;
    Ok(registration)
}

/// The registration at `path`, or `None` if there is no file.
fn read_existing(path: &Path) -> Result<Option<Registration>, RegistrationError> {
    match Registration::load(path) {
        Ok(registration) => Ok(Some(registration)),
        Err(::registration::Error::Read { source, .. })
            if source.kind() == io::ErrorKind::NotFound =>
        {
            Ok(None)
        }
        Err(error) => Err(error.into()),
    }
}

fn differences(file: &Registration, config: &Registration) -> Vec<Difference> {
    let mut differences = Vec::new();
    let mut compare = |field: &'static str, file: String, config: String| {
        if file != config {
            differences.push(Difference {
                field,
                file,
                config,
            });
        }
    };
    compare("id", format!("{:?}", file.id), format!("{:?}", config.id));
    compare(
        "url",
        render_url(file.url.as_deref()),
        render_url(config.url.as_deref()),
    );
    compare(
        "sender_localpart",
        format!("{:?}", file.sender_localpart),
        format!("{:?}", config.sender_localpart),
    );
    compare(
        "namespaces.users",
        render_namespaces(&file.namespaces.users),
        render_namespaces(&config.namespaces.users),
    );
    compare(
        "namespaces.aliases",
        render_namespaces(&file.namespaces.aliases),
        render_namespaces(&config.namespaces.aliases),
    );
    compare(
        "namespaces.rooms",
        render_namespaces(&file.namespaces.rooms),
        render_namespaces(&config.namespaces.rooms),
    );
    compare(
        "protocols",
        format!("{:?}", file.protocols()),
        format!("{:?}", config.protocols()),
    );
    compare(
        "receive_ephemeral",
        file.receives_ephemeral().to_string(),
        config.receives_ephemeral().to_string(),
    );
    compare(
        "rate_limited",
        file.is_rate_limited().to_string(),
        config.is_rate_limited().to_string(),
    );
    differences
}

/// A URL in a form where spellings the homeserver treats alike (`http://h:1` and
/// `http://h:1/`) compare equal.
fn render_url(url: Option<&str>) -> String {
    match url {
        None => "null".to_owned(),
        Some(text) => Url::parse(text)
            .map_or_else(|_| format!("{text:?}"), |url| format!("{:?}", url.as_str())),
    }
}

fn render_namespaces(namespaces: &[Namespace]) -> String {
    let items: Vec<String> = namespaces
        .iter()
        .map(|namespace| {
            let exclusive = if namespace.exclusive {
                "exclusive"
            } else {
                "not exclusive"
            };
            format!("{:?} ({exclusive})", namespace.regex)
        })
        .collect();
    format!("[{}]", items.join(", "))
}
