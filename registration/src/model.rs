//! The typed shape of an application service registration file.
//!
//! This module owns the data model only: which keys exist, how they map to
//! YAML, and which defaults the homeserver applies when a key is absent. It
//! follows the Matrix spec's `registration.yaml` / `namespace_list.yaml`
//! schema plus the unstable keys that Synapse and the bridges in the wild use.
//!
//! Fidelity matters more than convenience here: the file is shared with the
//! homeserver's administrator, so keys this crate does not know (for example
//! Synapse's `ip_range_whitelist`) are kept in `extra` maps and written back
//! unchanged, and optional keys stay `Option` so that "absent" is not silently
//! turned into "false" on save (Synapse reads an absent `rate_limited` as
//! `true`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use yaml_serde::Mapping;

/// An application service registration, as read from and written to the
/// YAML file the homeserver loads.
///
/// `Debug` redacts both tokens so that the struct can be logged safely.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// Unique, never-changing ID of the application service.
    pub id: String,
    /// Base URL the homeserver pushes transactions to; `None` is written as
    /// an explicit `url: null`.
    ///
    /// Kept as a string rather than a parsed URL so that a malformed value
    /// still loads and is reported by validation with its key path instead of
    /// failing the whole parse. The key is required (Synapse refuses a file
    /// without it, to avoid silently disabling pushes), so a missing `url` is
    /// a parse error while `url: null` is accepted.
    #[serde(deserialize_with = "deserialize_required_nullable")]
    pub url: Option<String>,
    /// Token the application service uses to authenticate to the homeserver.
    pub as_token: String,
    /// Token the homeserver uses to authenticate to the application service.
    pub hs_token: String,
    /// Localpart of the application service's own user (the bridge bot).
    pub sender_localpart: String,
    /// The user, alias and room namespaces the application service claims.
    pub namespaces: Namespaces,
    /// Whether masqueraded users are rate-limited; absent means `true` for
    /// Synapse (see [`Registration::is_rate_limited`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limited: Option<bool>,
    /// Third-party protocols the application service provides (e.g. `irc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<String>>,
    /// Whether the application service wants ephemeral events (spec v1.13);
    /// absent means `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_ephemeral: Option<bool>,
    /// Unstable MSC2409 flag (`de.sorunome.msc2409.push_ephemeral`).
    ///
    /// Homeservers that honour it deliver ephemeral events under the unstable
    /// transaction key `de.sorunome.msc2409.ephemeral` rather than `ephemeral`.
    #[serde(
        rename = "de.sorunome.msc2409.push_ephemeral",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub msc2409_push_ephemeral: Option<bool>,
    /// Unstable MSC3202 opt-in (`org.matrix.msc3202`).
    #[serde(
        rename = "org.matrix.msc3202",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub msc3202: Option<bool>,
    /// Unstable MSC4190 opt-in (`io.element.msc4190`).
    #[serde(
        rename = "io.element.msc4190",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub msc4190: Option<bool>,
    /// Every top-level key this crate does not model, preserved verbatim.
    ///
    /// Must not contain the keys of the typed fields above, or the saved file
    /// would hold duplicate keys.
    #[serde(flatten)]
    pub extra: Mapping,
}

impl Registration {
    /// Whether requests from masqueraded users are rate-limited, applying
    /// Synapse's default of `true` when the key is absent.
    pub fn is_rate_limited(&self) -> bool {
        self.rate_limited.unwrap_or(true)
    }

    /// Whether the stable `receive_ephemeral` flag is on, applying the spec's
    /// default of `false` when the key is absent.
    ///
    /// Deliberately ignores the unstable MSC2409 flag: homeservers deliver the
    /// two under different transaction keys, so callers must look at
    /// [`Registration::msc2409_push_ephemeral`] separately.
    pub fn receives_ephemeral(&self) -> bool {
        self.receive_ephemeral.unwrap_or(false)
    }

    /// The protocols as a slice, treating an absent key as empty.
    pub fn protocols(&self) -> &[String] {
        self.protocols.as_deref().unwrap_or_default()
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("as_token", &"<redacted>")
            .field("hs_token", &"<redacted>")
            .field("sender_localpart", &self.sender_localpart)
            .field("namespaces", &self.namespaces)
            .field("rate_limited", &self.rate_limited)
            .field("protocols", &self.protocols)
            .field("receive_ephemeral", &self.receive_ephemeral)
            .field("msc2409_push_ephemeral", &self.msc2409_push_ephemeral)
            .field("msc3202", &self.msc3202)
            .field("msc4190", &self.msc4190)
            .field("extra", &self.extra)
            .finish()
    }
}

/// The three namespace lists of a registration.
///
/// An absent list is read as empty and written back as `[]`, which every
/// homeserver treats the same way.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Namespaces {
    /// Namespaces of user IDs (`@localpart:server`).
    #[serde(default)]
    pub users: Vec<Namespace>,
    /// Namespaces of room aliases (`#alias:server`).
    #[serde(default)]
    pub aliases: Vec<Namespace>,
    /// Namespaces of room IDs (`!opaque:server`).
    #[serde(default)]
    pub rooms: Vec<Namespace>,
    /// Keys inside `namespaces` this crate does not model, preserved verbatim.
    #[serde(flatten)]
    pub extra: Mapping,
}

/// One namespace entry: a regular expression over full IDs and whether the
/// application service claims the matching IDs exclusively.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Namespace {
    /// Regular expression matched against the full ID, anchored at the start
    /// only (see [`crate::NamespaceMatcher`]).
    pub regex: String,
    /// Whether no other application service or ordinary user may use
    /// matching IDs.
    pub exclusive: bool,
    /// Keys inside this entry this crate does not model, preserved verbatim.
    #[serde(flatten)]
    pub extra: Mapping,
}

impl Namespace {
    /// A namespace entry with the given regex and exclusivity and no extra keys.
    pub fn new(regex: impl Into<String>, exclusive: bool) -> Self {
        Self {
            regex: regex.into(),
            exclusive,
            extra: Mapping::new(),
        }
    }
}

/// Deserializes an `Option` whose key must be present even though its value
/// may be `null`.
///
/// Using `deserialize_with` is what makes serde treat the key as required:
/// the derive only defaults a missing `Option` to `None` when it controls the
/// deserializer itself.
fn deserialize_required_nullable<'de, D>(deserializer: D) -> Result<Option<String>, D::Error>
where
    D: Deserializer<'de>,
{
    Option::<String>::deserialize(deserializer)
}
