//! Deriving a registration from the bridge's own configuration.
//!
//! The bridge never hand-maintains its registration: it describes what it
//! needs in a [`RegistrationSpec`] built from its config, and
//! [`Registration::generate`] turns that into the file, so the two cannot
//! disagree. Regenerating keeps the secrets of the registration already
//! installed on the homeserver, which only reads the file at startup; new
//! tokens would lock the bridge out until the homeserver is restarted.

use rand::Rng;
use rand::distr::Alphanumeric;
use url::Url;

use crate::model::{Namespace, Namespaces, Registration};

/// Length of generated `as_token`s and `hs_token`s.
///
/// 64 alphanumeric characters carry about 381 bits of entropy.
pub const TOKEN_LENGTH: usize = 64;

/// What the bridge needs from the homeserver, as derived from its config.
///
/// `Default` gives an empty spec with every flag off, to be filled with
/// struct update syntax.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegistrationSpec {
    /// The application service ID; must stay the same across restarts.
    pub id: String,
    /// Where the homeserver pushes transactions; `None` writes `url: null`.
    pub url: Option<Url>,
    /// Localpart of the bridge bot.
    pub sender_localpart: String,
    /// User namespaces, typically from [`Namespace::user_prefix`].
    pub user_namespaces: Vec<Namespace>,
    /// Alias namespaces, typically from [`Namespace::alias_prefix`].
    pub alias_namespaces: Vec<Namespace>,
    /// Room ID namespaces (rarely used by bridges: room IDs are opaque).
    pub room_namespaces: Vec<Namespace>,
    /// Third-party protocols provided (e.g. `irc`); omitted when empty.
    pub protocols: Vec<String>,
    /// Whether to receive ephemeral events (`receive_ephemeral`).
    pub receive_ephemeral: bool,
    /// Whether puppets are rate-limited (`rate_limited`), written explicitly
    /// because Synapse reads an absent key as `true`.
    pub rate_limited: bool,
    /// Unstable `de.sorunome.msc2409.push_ephemeral`; written only when on.
    pub msc2409_push_ephemeral: bool,
    /// Unstable `org.matrix.msc3202`; written only when on.
    pub msc3202: bool,
    /// Unstable `io.element.msc4190`; written only when on.
    pub msc4190: bool,
}

impl Registration {
    /// Builds the registration described by `spec`.
    ///
    /// When `existing` has the same `id`, its tokens are reused (each one
    /// that is non-empty) and its unknown keys are kept, so that regenerating
    /// neither breaks the registration the homeserver has loaded nor drops
    /// keys an administrator added by hand. Everything else comes from
    /// `spec`. Otherwise fresh tokens are drawn from a CSPRNG. In every case
    /// the two tokens differ: if a reused pair was identical, a fresh
    /// `hs_token` replaces the copy.
    ///
    /// The result is not validated; call
    /// [`Registration::validate_for_bridge`] on it.
    pub fn generate(spec: RegistrationSpec, existing: Option<&Registration>) -> Self {
        let existing = existing.filter(|existing| existing.id == spec.id);
        let reuse = |token: Option<&String>| {
            token
                .filter(|token| !token.is_empty())
                .cloned()
                .unwrap_or_else(generate_token)
        };
        let as_token = reuse(existing.map(|existing| &existing.as_token));
        let mut hs_token = reuse(existing.map(|existing| &existing.hs_token));
        while hs_token == as_token {
            hs_token = generate_token();
        }

        Self {
            id: spec.id,
            url: spec.url.as_ref().map(url_for_homeserver),
            as_token,
            hs_token,
            sender_localpart: spec.sender_localpart,
            namespaces: Namespaces {
                users: spec.user_namespaces,
                aliases: spec.alias_namespaces,
                rooms: spec.room_namespaces,
                extra: existing
                    .map(|existing| existing.namespaces.extra.clone())
                    .unwrap_or_default(),
            },
            rate_limited: Some(spec.rate_limited),
            protocols: (!spec.protocols.is_empty()).then_some(spec.protocols),
            receive_ephemeral: Some(spec.receive_ephemeral),
            msc2409_push_ephemeral: spec.msc2409_push_ephemeral.then_some(true),
            msc3202: spec.msc3202.then_some(true),
            msc4190: spec.msc4190.then_some(true),
            extra: existing
                .map(|existing| existing.extra.clone())
                .unwrap_or_default(),
        }
    }
}

/// A fresh secret token of [`TOKEN_LENGTH`] ASCII letters and digits.
///
/// Drawn from `rand::rng()`, a ChaCha-based CSPRNG seeded and periodically
/// reseeded from the operating system.
pub fn generate_token() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(TOKEN_LENGTH)
        .map(char::from)
        .collect()
}

/// The URL as written into the registration, without a trailing slash.
///
/// `Url` always serializes a bare host with a `/` path, and homeservers
/// append `/_matrix/app/...` to the configured URL. Synapse strips a
/// trailing slash first, but a homeserver that concatenates would request
/// `//_matrix/...`.
fn url_for_homeserver(url: &Url) -> String {
    let text = url.as_str();
    match text.strip_suffix('/') {
        Some(stripped) if url.query().is_none() && url.fragment().is_none() => stripped.to_owned(),
        _ => text.to_owned(),
    }
}

impl Namespace {
    /// An exclusive user namespace for every local user whose localpart
    /// starts with `localpart_prefix`: `user_prefix("irc_", "example.org")`
    /// gives `@irc_.*:example\.org`.
    ///
    /// Both parts are regex-escaped, so `.` in the server name only matches
    /// a dot. Matching is anchored at the start only (see
    /// [`crate::NamespaceMatcher`]), like every homeserver does.
    pub fn user_prefix(localpart_prefix: impl AsRef<str>, server_name: impl AsRef<str>) -> Self {
        Self::prefixed('@', localpart_prefix.as_ref(), server_name.as_ref())
    }

    /// An exclusive alias namespace for every local alias whose localpart
    /// starts with `alias_prefix`: `alias_prefix("irc_", "example.org")`
    /// gives `#irc_.*:example\.org`.
    pub fn alias_prefix(alias_prefix: impl AsRef<str>, server_name: impl AsRef<str>) -> Self {
        Self::prefixed('#', alias_prefix.as_ref(), server_name.as_ref())
    }

    fn prefixed(sigil: char, prefix: &str, server_name: &str) -> Self {
        let regex = format!(
            "{sigil}{}.*:{}",
            regex::escape(prefix),
            regex::escape(server_name)
        );
        Self::new(regex, true)
    }
}

#[cfg(test)]
mod tests {
    use yaml_serde::Value;

    use super::*;

    fn spec() -> RegistrationSpec {
        RegistrationSpec {
            id: "trestle-irc".to_owned(),
            url: Some(Url::parse("http://localhost:9000").expect("static URL")),
            sender_localpart: "ircbot".to_owned(),
            user_namespaces: vec![Namespace::user_prefix("irc_", "example.org")],
            alias_namespaces: vec![Namespace::alias_prefix("irc_", "example.org")],
            protocols: vec!["irc".to_owned()],
            receive_ephemeral: true,
            ..RegistrationSpec::default()
        }
    }

    fn assert_token_shape(token: &str) {
        assert_eq!(token.len(), TOKEN_LENGTH);
        assert!(token.chars().all(|c| c.is_ascii_alphanumeric()), "{token}");
    }

    #[test]
    fn tokens_are_64_alphanumerics_and_unique() {
        let tokens: Vec<String> = (0..64).map(|_| generate_token()).collect();
        for token in &tokens {
            assert_token_shape(token);
        }
        let mut unique = tokens.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), tokens.len());
        // With 64 draws over 62 symbols, a token lacking letters, digits or
        // mixed case would mean a broken distribution.
        let all = tokens.concat();
        assert!(all.chars().any(|c| c.is_ascii_digit()));
        assert!(all.chars().any(|c| c.is_ascii_lowercase()));
        assert!(all.chars().any(|c| c.is_ascii_uppercase()));
    }

    #[test]
    fn fresh_generation_creates_distinct_tokens() {
        let first = Registration::generate(spec(), None);
        assert_token_shape(&first.as_token);
        assert_token_shape(&first.hs_token);
        assert_ne!(first.as_token, first.hs_token);

        let second = Registration::generate(spec(), None);
        assert_ne!(first.as_token, second.as_token);
        assert_ne!(first.hs_token, second.hs_token);
    }

    #[test]
    fn generation_follows_the_spec() {
        let registration = Registration::generate(spec(), None);
        assert_eq!(registration.id, "trestle-irc");
        assert_eq!(registration.url.as_deref(), Some("http://localhost:9000"));
        assert_eq!(registration.sender_localpart, "ircbot");
        assert_eq!(
            registration.namespaces.users,
            [Namespace::new(r"@irc_.*:example\.org", true)]
        );
        assert_eq!(
            registration.namespaces.aliases,
            [Namespace::new(r"#irc_.*:example\.org", true)]
        );
        assert!(registration.namespaces.rooms.is_empty());
        assert_eq!(registration.rate_limited, Some(false));
        assert_eq!(registration.receive_ephemeral, Some(true));
        assert_eq!(registration.protocols, Some(vec!["irc".to_owned()]));
        assert_eq!(registration.msc2409_push_ephemeral, None);
        assert_eq!(registration.msc3202, None);
        assert_eq!(registration.msc4190, None);
        assert!(registration.extra.is_empty());
        assert_eq!(registration.validate_for_bridge(), Ok(()));
    }

    #[test]
    fn unstable_flags_are_written_only_when_on() {
        let registration = Registration::generate(
            RegistrationSpec {
                msc2409_push_ephemeral: true,
                msc3202: true,
                msc4190: true,
                protocols: Vec::new(),
                ..spec()
            },
            None,
        );
        let yaml = registration.to_yaml_string().expect("serializes");
        let value: Value = yaml_serde::from_str(&yaml).expect("parses");
        for key in [
            "de.sorunome.msc2409.push_ephemeral",
            "org.matrix.msc3202",
            "io.element.msc4190",
        ] {
            assert_eq!(value.get(key), Some(&Value::Bool(true)), "{key}");
        }
        assert_eq!(value.get("protocols"), None, "empty protocols omitted");
        assert_eq!(value.get("rate_limited"), Some(&Value::Bool(false)));
    }

    #[test]
    fn regeneration_keeps_tokens_and_extra_keys_of_the_same_id() {
        let mut existing = Registration::generate(spec(), None);
        existing
            .extra
            .insert("ip_range_whitelist".into(), Value::Sequence(Vec::new()));
        existing
            .namespaces
            .extra
            .insert("org.example.note".into(), "kept".into());

        let changed = RegistrationSpec {
            url: Some(Url::parse("https://bridge.example.org/irc/").expect("static URL")),
            user_namespaces: vec![Namespace::user_prefix("i_", "example.org")],
            ..spec()
        };
        let regenerated = Registration::generate(changed, Some(&existing));

        assert_eq!(regenerated.as_token, existing.as_token);
        assert_eq!(regenerated.hs_token, existing.hs_token);
        assert_eq!(regenerated.extra, existing.extra);
        assert_eq!(regenerated.namespaces.extra, existing.namespaces.extra);
        // Everything derived from config follows the new spec.
        assert_eq!(
            regenerated.url.as_deref(),
            Some("https://bridge.example.org/irc")
        );
        assert_eq!(regenerated.namespaces.users[0].regex, r"@i_.*:example\.org");
    }

    #[test]
    fn regeneration_for_another_id_starts_fresh() {
        let mut existing = Registration::generate(spec(), None);
        existing.id = "someone-else".to_owned();
        existing.extra.insert("custom".into(), "value".into());

        let regenerated = Registration::generate(spec(), Some(&existing));
        assert_ne!(regenerated.as_token, existing.as_token);
        assert_ne!(regenerated.hs_token, existing.hs_token);
        assert!(regenerated.extra.is_empty());
    }

    #[test]
    fn unusable_existing_tokens_are_replaced() {
        let mut existing = Registration::generate(spec(), None);
        existing.as_token = String::new();
        let regenerated = Registration::generate(spec(), Some(&existing));
        assert_token_shape(&regenerated.as_token);
        assert_eq!(
            regenerated.hs_token, existing.hs_token,
            "the good one stays"
        );

        existing.as_token = "same".to_owned();
        existing.hs_token = "same".to_owned();
        let regenerated = Registration::generate(spec(), Some(&existing));
        assert_eq!(regenerated.as_token, "same");
        assert_token_shape(&regenerated.hs_token);
    }

    #[test]
    fn null_url_is_generated_as_explicit_null() {
        let registration = Registration::generate(
            RegistrationSpec {
                url: None,
                ..spec()
            },
            None,
        );
        let yaml = registration.to_yaml_string().expect("serializes");
        assert!(yaml.contains("url: null"), "{yaml}");
    }

    #[test]
    fn url_keeps_its_path_but_not_a_trailing_slash() {
        let cases = [
            ("http://localhost:9000", "http://localhost:9000"),
            ("http://localhost:9000/", "http://localhost:9000"),
            ("https://example.org/bridge/", "https://example.org/bridge"),
            ("https://example.org/a/b", "https://example.org/a/b"),
        ];
        for (input, expected) in cases {
            let url = Url::parse(input).expect("static URL");
            assert_eq!(url_for_homeserver(&url), expected, "{input}");
        }
    }

    #[test]
    fn prefix_namespaces_escape_both_parts() {
        let users = Namespace::user_prefix("irc_", "example.org");
        assert_eq!(users.regex, r"@irc_.*:example\.org");
        assert!(users.exclusive);
        assert!(users.extra.is_empty());

        let aliases = Namespace::alias_prefix("irc_", "example.org");
        assert_eq!(aliases.regex, r"#irc_.*:example\.org");
        assert!(aliases.exclusive);

        let odd = Namespace::user_prefix("a.b+", "[::1]:8448");
        assert_eq!(odd.regex, r"@a\.b\+.*:\[::1\]:8448");
    }
}
