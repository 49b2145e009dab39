//! Deciding whether a user ID, room alias or room ID falls in the
//! registration's namespaces, the way the homeserver decides it.
//!
//! # Matching semantics (same as Synapse)
//!
//! Synapse tests each namespace with Python's `re.match(regex, full_id)`,
//! which anchors the match at the **start** of the ID only, not at the end.
//! This module reproduces that exactly by compiling every regex as
//! `^(?:regex)` and accepting any match; it deliberately does not add a `$`.
//! So `@irc_.*:example\.org` matches `@irc_a:example.org.evil` (as Synapse
//! would) but not `x@irc_a:example.org`. A registration author who wants an
//! exact match must write the `$` themselves.
//!
//! Synapse also takes the **first** namespace (in file order) that matches
//! and uses that entry's `exclusive` flag, even if a later matching entry is
//! exclusive; [`NamespaceMatcher::matches_user`] and friends do the same.
//!
//! The regexes are compiled by the `regex` crate rather than Python's `re`,
//! so Python-only syntax (look-around, back-references, `\Z`) fails to
//! compile here and is reported by validation instead of misbehaving.

use regex::Regex;
use ruma::{OwnedUserId, RoomAliasId, RoomId, ServerName, UserId};

use crate::model::{Namespace, Registration};
use crate::validate::{Problem, ValidationError, ValidationErrors};

/// Compiles a namespace regex with Synapse's start-only anchoring.
///
/// The bare pattern is compiled first so that a syntax error is reported
/// against what the author wrote, not against the wrapper; the wrapped form
/// can still fail on its own for a pattern that ends in an `(?x)` comment,
/// which would swallow the closing parenthesis.
pub(crate) fn compile_namespace_regex(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(pattern)?;
    Regex::new(&format!("^(?:{pattern})"))
}

/// Whether a namespace claims its IDs for this application service alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exclusivity {
    /// The namespace is `exclusive: true`: no one else may use these IDs.
    Exclusive,
    /// The namespace is `exclusive: false`: the application service is
    /// interested in these IDs but others may use them too.
    Shared,
}

impl Exclusivity {
    /// Whether this is [`Exclusivity::Exclusive`].
    pub fn is_exclusive(self) -> bool {
        self == Self::Exclusive
    }

    fn from_flag(exclusive: bool) -> Self {
        if exclusive {
            Self::Exclusive
        } else {
            Self::Shared
        }
    }
}

#[derive(Debug, Clone)]
struct CompiledNamespace {
    regex: Regex,
    exclusivity: Exclusivity,
}

/// The registration's namespaces and sender, compiled once for fast,
/// homeserver-identical matching of IDs.
#[derive(Debug, Clone)]
pub struct NamespaceMatcher {
    users: Vec<CompiledNamespace>,
    aliases: Vec<CompiledNamespace>,
    rooms: Vec<CompiledNamespace>,
    sender: OwnedUserId,
}

impl NamespaceMatcher {
    /// Compiles the namespaces of `registration` and forms the sender's user
    /// ID on `server_name` (the homeserver's own server name).
    ///
    /// Only reports what prevents matching (regexes that do not compile, a
    /// sender that does not form a user ID); run
    /// [`Registration::validate_for_bridge`] for the full check.
    pub fn new(
        registration: &Registration,
        server_name: &ServerName,
    ) -> Result<Self, ValidationErrors> {
        let mut errors = Vec::new();
        let sender_id = format!("@{}:{}", registration.sender_localpart, server_name);
        let sender = match UserId::parse(sender_id) {
            Ok(sender) => Some(sender),
            Err(error) => {
                errors.push(ValidationError::new(
                    "sender_localpart",
                    Problem::InvalidSenderUserId(error),
                ));
                None
            }
        };
        let users = compile_list("users", &registration.namespaces.users, &mut errors);
        let aliases = compile_list("aliases", &registration.namespaces.aliases, &mut errors);
        let rooms = compile_list("rooms", &registration.namespaces.rooms, &mut errors);
        match sender {
            Some(sender) if errors.is_empty() => Ok(Self {
                users,
                aliases,
                rooms,
                sender,
            }),
            _ => Err(ValidationErrors(errors)),
        }
    }

    /// The application service's own user (`@sender_localpart:server_name`).
    pub fn sender(&self) -> &UserId {
        &self.sender
    }

    /// Whether `user_id` is the application service's own user.
    pub fn is_sender(&self, user_id: &UserId) -> bool {
        *user_id == *self.sender
    }

    /// Whether the application service is interested in `user_id`: it is the
    /// sender or falls in a user namespace (Synapse's
    /// `is_interested_in_user`).
    pub fn is_ours(&self, user_id: &UserId) -> bool {
        self.is_sender(user_id) || self.is_user_in_namespace(user_id)
    }

    /// The exclusivity of the first user namespace matching `user_id`, or
    /// `None` if none matches. Ignores the sender; see
    /// [`NamespaceMatcher::is_ours`].
    pub fn matches_user(&self, user_id: &UserId) -> Option<Exclusivity> {
        first_match(&self.users, user_id.as_str())
    }

    /// Whether `user_id` falls in any user namespace.
    pub fn is_user_in_namespace(&self, user_id: &UserId) -> bool {
        self.matches_user(user_id).is_some()
    }

    /// Whether the application service owns `user_id` exclusively: the first
    /// matching user namespace is exclusive, or it is the sender (as in
    /// Synapse, the sender is always exclusive to its application service).
    pub fn is_exclusive_user(&self, user_id: &UserId) -> bool {
        self.matches_user(user_id)
            .is_some_and(Exclusivity::is_exclusive)
            || self.is_sender(user_id)
    }

    /// The exclusivity of the first alias namespace matching `alias`.
    pub fn matches_alias(&self, alias: &RoomAliasId) -> Option<Exclusivity> {
        first_match(&self.aliases, alias.as_str())
    }

    /// Whether `alias` falls in any alias namespace.
    pub fn is_alias_in_namespace(&self, alias: &RoomAliasId) -> bool {
        self.matches_alias(alias).is_some()
    }

    /// Whether the first alias namespace matching `alias` is exclusive.
    pub fn is_exclusive_alias(&self, alias: &RoomAliasId) -> bool {
        self.matches_alias(alias)
            .is_some_and(Exclusivity::is_exclusive)
    }

    /// The exclusivity of the first room namespace matching `room_id`.
    pub fn matches_room(&self, room_id: &RoomId) -> Option<Exclusivity> {
        first_match(&self.rooms, room_id.as_str())
    }

    /// Whether `room_id` falls in any room namespace.
    pub fn is_room_in_namespace(&self, room_id: &RoomId) -> bool {
        self.matches_room(room_id).is_some()
    }

    /// Whether the first room namespace matching `room_id` is exclusive.
    pub fn is_exclusive_room(&self, room_id: &RoomId) -> bool {
        self.matches_room(room_id)
            .is_some_and(Exclusivity::is_exclusive)
    }
}

fn compile_list(
    kind: &str,
    namespaces: &[Namespace],
    errors: &mut Vec<ValidationError>,
) -> Vec<CompiledNamespace> {
    let mut compiled = Vec::with_capacity(namespaces.len());
    for (index, namespace) in namespaces.iter().enumerate() {
        match compile_namespace_regex(&namespace.regex) {
            Ok(regex) => compiled.push(CompiledNamespace {
                regex,
                exclusivity: Exclusivity::from_flag(namespace.exclusive),
            }),
            Err(error) => errors.push(ValidationError::new(
                format!("namespaces.{kind}[{index}].regex"),
                Problem::InvalidRegex(error),
            )),
        }
    }
    compiled
}

/// Synapse's `_matches_regex`: the first namespace in file order wins.
fn first_match(namespaces: &[CompiledNamespace], id: &str) -> Option<Exclusivity> {
    namespaces
        .iter()
        .find(|namespace| namespace.regex.is_match(id))
        .map(|namespace| namespace.exclusivity)
}

#[cfg(test)]
mod tests {
    use ruma::{room_alias_id, room_id, server_name, user_id};

    use super::*;

    const FULL: &str = include_str!("../tests/fixtures/full.yaml");

    fn registration(users: Vec<Namespace>) -> Registration {
        let mut registration = Registration::from_yaml_str(FULL).expect("fixture parses");
        registration.sender_localpart = "ircbot".to_owned();
        registration.namespaces.users = users;
        registration
    }

    fn matcher(users: Vec<Namespace>) -> NamespaceMatcher {
        NamespaceMatcher::new(&registration(users), server_name!("example.org"))
            .expect("matcher builds")
    }

    fn irc_users() -> NamespaceMatcher {
        matcher(vec![Namespace::user_prefix("irc_", "example.org")])
    }

    #[test]
    fn matches_like_python_re_match_anchored_at_the_start_only() {
        let matcher = irc_users();
        assert_eq!(
            matcher.matches_user(user_id!("@irc_alice:example.org")),
            Some(Exclusivity::Exclusive)
        );
        // Not anchored at the end: Synapse's `re.match` accepts this too.
        assert_eq!(
            matcher.matches_user(user_id!("@irc_a:example.org.evil")),
            Some(Exclusivity::Exclusive)
        );
        // Anchored at the start: the pattern occurring later does not count.
        // (`@x@irc_a:...` is a historical but parseable user ID.)
        assert_eq!(matcher.matches_user(user_id!("@x@irc_a:example.org")), None);
        assert_eq!(matcher.matches_user(user_id!("@alice:example.org")), None);
        assert_eq!(matcher.matches_user(user_id!("@irc_a:exampleXorg")), None);
    }

    #[test]
    fn anchoring_applies_to_the_raw_text_and_every_alternative() {
        let regex = compile_namespace_regex(r"@irc_.*:example\.org").expect("compiles");
        assert!(regex.is_match("@irc_a:example.org.evil"));
        assert!(!regex.is_match("x@irc_a:example.org"));

        let either = compile_namespace_regex("@irc_.*|@xmpp_.*").expect("compiles");
        assert!(either.is_match("@xmpp_a:example.org"));
        assert!(!either.is_match("x@xmpp_a:example.org"));
    }

    #[test]
    fn an_explicit_dollar_anchors_the_end() {
        let matcher = matcher(vec![Namespace::new(r"@irc_.*:example\.org$", true)]);
        assert!(matcher.is_user_in_namespace(user_id!("@irc_a:example.org")));
        assert!(!matcher.is_user_in_namespace(user_id!("@irc_a:example.org.evil")));
    }

    #[test]
    fn exclusive_and_shared_namespaces() {
        let matcher = matcher(vec![
            Namespace::new(r"@irc_.*:example\.org", true),
            Namespace::new(r"@guest_.*:example\.org", false),
        ]);
        let puppet = user_id!("@irc_bob:example.org");
        assert_eq!(matcher.matches_user(puppet), Some(Exclusivity::Exclusive));
        assert!(matcher.is_user_in_namespace(puppet));
        assert!(matcher.is_exclusive_user(puppet));

        let guest = user_id!("@guest_1:example.org");
        assert_eq!(matcher.matches_user(guest), Some(Exclusivity::Shared));
        assert!(matcher.is_user_in_namespace(guest));
        assert!(!matcher.is_exclusive_user(guest));
        assert!(matcher.is_ours(guest));

        let stranger = user_id!("@bob:example.org");
        assert!(!matcher.is_user_in_namespace(stranger));
        assert!(!matcher.is_exclusive_user(stranger));
        assert!(!matcher.is_ours(stranger));
    }

    #[test]
    fn first_matching_namespace_decides_exclusivity() {
        // Synapse's `_is_exclusive` looks only at the first match.
        let matcher = matcher(vec![
            Namespace::new("@irc_.*", false),
            Namespace::new("@irc_x.*", true),
        ]);
        assert_eq!(
            matcher.matches_user(user_id!("@irc_xy:example.org")),
            Some(Exclusivity::Shared)
        );
        assert!(!matcher.is_exclusive_user(user_id!("@irc_xy:example.org")));
    }

    #[test]
    fn the_sender_is_ours_and_exclusive_without_a_namespace() {
        let matcher = irc_users();
        let bot = user_id!("@ircbot:example.org");
        assert_eq!(matcher.sender(), bot);
        assert!(matcher.is_sender(bot));
        assert_eq!(matcher.matches_user(bot), None);
        assert!(!matcher.is_user_in_namespace(bot));
        assert!(matcher.is_ours(bot));
        assert!(matcher.is_exclusive_user(bot));

        let elsewhere = user_id!("@ircbot:other.example");
        assert!(!matcher.is_sender(elsewhere));
        assert!(!matcher.is_ours(elsewhere));
        assert!(!matcher.is_sender(user_id!("@irc_ircbot:example.org")));
    }

    #[test]
    fn aliases() {
        let matcher = irc_users();
        // From the fixture: `#_irc_.*:example\.org`, exclusive.
        let alias = room_alias_id!("#_irc_libera_rust:example.org");
        assert_eq!(matcher.matches_alias(alias), Some(Exclusivity::Exclusive));
        assert!(matcher.is_alias_in_namespace(alias));
        assert!(matcher.is_exclusive_alias(alias));

        let other = room_alias_id!("#rust:example.org");
        assert_eq!(matcher.matches_alias(other), None);
        assert!(!matcher.is_alias_in_namespace(other));
        assert!(!matcher.is_exclusive_alias(other));
    }

    #[test]
    fn rooms() {
        let matcher = irc_users();
        // From the fixture: `!dummy:example\.org`, not exclusive.
        let room = room_id!("!dummy:example.org");
        assert_eq!(matcher.matches_room(room), Some(Exclusivity::Shared));
        assert!(matcher.is_room_in_namespace(room));
        assert!(!matcher.is_exclusive_room(room));

        let other = room_id!("!other:example.org");
        assert_eq!(matcher.matches_room(other), None);
        assert!(!matcher.is_room_in_namespace(other));
    }

    #[test]
    fn namespaces_of_one_kind_do_not_leak_into_another() {
        let matcher = matcher(vec![Namespace::new(".*", true)]);
        assert!(matcher.is_exclusive_user(user_id!("@anyone:example.org")));
        assert!(!matcher.is_alias_in_namespace(room_alias_id!("#anything:example.org")));
        assert!(!matcher.is_room_in_namespace(room_id!("!anything:example.org")));
    }

    #[test]
    fn building_reports_bad_regexes_and_sender_with_paths() {
        let mut registration = registration(vec![
            Namespace::new("@ok_.*", true),
            Namespace::new("@bad_(", true),
        ]);
        registration.namespaces.rooms[0].regex = "[".to_owned();
        registration.sender_localpart = "x".repeat(300);

        let errors = NamespaceMatcher::new(&registration, server_name!("example.org"))
            .expect_err("cannot build");
        let paths: Vec<_> = errors.problems().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "sender_localpart",
                "namespaces.users[1].regex",
                "namespaces.rooms[0].regex",
            ]
        );
        assert!(matches!(
            errors.problems()[0].problem,
            Problem::InvalidSenderUserId(_)
        ));
    }

    #[test]
    fn exclusivity_helper() {
        assert!(Exclusivity::Exclusive.is_exclusive());
        assert!(!Exclusivity::Shared.is_exclusive());
    }
}
