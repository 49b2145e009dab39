//! Logging: the `logging` config section and installing the global `tracing` subscriber.
//!
//! Events are filtered by an [`EnvFilter`] built from `logging.level` (or from `RUST_LOG`
//! when that is set, so a developer can turn up one module without editing the file) and
//! written to stderr, as compact human-readable lines or as one JSON object per line.

use std::io::IsTerminal as _;
use std::str::FromStr;
use std::{env, fmt};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::{SubscriberInitExt as _, TryInitError};

/// The environment variable that, when set and not empty, replaces `logging.level`.
pub const RUST_LOG: &str = "RUST_LOG";

/// The `logging` section of the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggingConfig {
    /// Which events to log: an [`EnvFilter`] directive such as `info` or
    /// `info,bridge_core=debug`.
    pub level: String,
    /// How events are written.
    pub format: LogFormat,
}

impl Default for LoggingConfig {
    /// `info`, human-readable.
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Human,
        }
    }
}

/// How log events are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Compact single lines for people (`human`), coloured when stderr is a terminal.
    #[default]
    Human,
    /// One JSON object per line for log collectors (`json`).
    Json,
}

impl LogFormat {
    /// The name used in the config: `human` or `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Human => "human",
            Self::Json => "json",
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `logging.format` that is neither `human` nor `json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log format {0:?}; expected \"human\" or \"json\"")]
pub struct UnknownLogFormat(pub String);

impl FromStr for LogFormat {
    type Err = UnknownLogFormat;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "human" => Ok(Self::Human),
            "json" => Ok(Self::Json),
            other => Err(UnknownLogFormat(other.to_owned())),
        }
    }
}

/// Failure to install logging.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoggingError {
    /// The filter directive (from `origin`: `logging.level` or `RUST_LOG`) does not parse.
    #[error("invalid log filter in {origin} ({directive:?}): {message}")]
    Filter {
        /// Where the directive came from.
        origin: &'static str,
        /// The directive as given.
        directive: String,
        /// Why it was refused.
        message: String,
    },
    /// A global subscriber is already installed (by an earlier call or by someone else).
    #[error("logging is already initialized: {0}")]
    AlreadyInitialized(#[source] TryInitError),
}

/// Level names an [`EnvFilter`] directive may consist of on its own.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Checks a `logging.level` value, returning what is wrong in words for the operator.
///
/// Stricter than [`EnvFilter`] in one way: a bare word that is not a level (`infp`) is a
/// valid directive meaning "everything from target `infp`", but in a config file it is
/// almost always a misspelt level, so it is refused; write `target=trace` for that meaning.
pub fn check_level(level: &str) -> Result<(), String> {
    if level.trim().is_empty() {
        return Err("must not be empty; e.g. \"info\"".to_owned());
    }
    EnvFilter::builder()
        .parse(level)
        .map_err(|error| format!("not a valid filter directive: {error}"))?;
    for directive in level.split(',').map(str::trim) {
        let bare_word = !directive.is_empty() && !directive.contains(['=', '[']);
        if bare_word && !LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "`{directive}` is neither a level ({}) nor `target=level`",
                LEVELS.join(", ")
            ));
        }
    }
    Ok(())
}

/// The filter to install: `RUST_LOG` when given and not blank, else the config's level.
fn filter(config_level: &str, rust_log: Option<&str>) -> Result<EnvFilter, LoggingError> {
    let (origin, directive) = match rust_log {
        Some(rust_log) if !rust_log.trim().is_empty() => (RUST_LOG, rust_log),
        _ => ("logging.level", config_level),
    };
    EnvFilter::builder()
        .parse(directive)
        .map_err(|error| LoggingError::Filter {
            origin,
            directive: directive.to_owned(),
            message: error.to_string(),
        })
}

/// Installs the global subscriber described by `config` (with `RUST_LOG` overriding the
/// level). Call it once per process; a second call returns
/// [`LoggingError::AlreadyInitialized`].
pub fn init(config: &LoggingConfig) -> Result<(), LoggingError> {
    let rust_log = env::var(RUST_LOG).ok();
    let filter = filter(&config.level, rust_log.as_deref())?;
    // Both layers are named in the type so that one `init` serves both formats; exactly one
    // of them is `Some`.
    let human = (config.format == LogFormat::Human).then(|| {
        tracing_subscriber::fmt::layer()
            .compact()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
    });
    let json = (config.format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(human)
        .with(json)
        .try_init()
        .map_err(LoggingError::AlreadyInitialized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_targets_are_accepted() {
        for level in [
            "info",
            "INFO",
            "info,bridge_core=debug",
            "warn,bridge_core::store=trace",
            "off",
        ] {
            assert_eq!(check_level(level), Ok(()), "{level}");
        }
    }

    #[test]
    fn misspelt_and_malformed_levels_are_refused() {
        for level in ["", "  ", "infp", "info,debgu", "bridge_core=loud"] {
            assert!(check_level(level).is_err(), "{level}");
        }
        assert!(check_level("infp").unwrap_err().contains("`infp`"));
    }

    #[test]
    fn rust_log_overrides_the_config_unless_blank() {
        assert!(filter("info", Some("debug")).is_ok());
        let error = filter("info", Some("x=notalevel")).unwrap_err();
        assert!(error.to_string().contains("RUST_LOG"), "{error}");
        let error = filter("x=notalevel", Some("  ")).unwrap_err();
        assert!(error.to_string().contains("logging.level"), "{error}");
        assert!(filter("info", None).is_ok());
    }

    #[test]
    fn formats_parse_by_name() {
        assert_eq!("human".parse(), Ok(LogFormat::Human));
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert_eq!(
            "xml".parse::<LogFormat>(),
            Err(UnknownLogFormat("xml".to_owned()))
        );
        assert_eq!(LogFormat::Json.to_string(), "json");
    }
}
