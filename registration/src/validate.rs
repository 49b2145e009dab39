//! Checking a registration for everything a homeserver or a bridge would
//! trip over, reporting every problem at once.
//!
//! Problems are collected rather than returned on the first failure so that
//! an administrator fixing a hand-edited file sees the whole list in one run.
//! Each problem names the key path it is about (`namespaces.users[1].regex`)
//! in the same dotted form the YAML file uses.

use std::fmt;

use crate::matcher::compile_namespace_regex;
use crate::model::{Namespace, Registration};

/// Characters the Matrix spec (v1.8 and later) allows in a user localpart.
fn is_localpart_char(c: char) -> bool {
    matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/' | '+')
}

/// Characters of the spec grammar that Synapse nevertheless refuses in a
/// `sender_localpart`, because it requires the localpart to survive Python's
/// `urllib.parse.quote` unchanged.
fn needs_url_encoding(c: char) -> bool {
    matches!(c, '=' | '+')
}

/// What is wrong with one value of the registration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// A value that must not be empty is empty.
    #[error("must not be empty")]
    Empty,
    /// A namespace regex does not compile with this crate's regex engine.
    #[error("invalid regex: {0}")]
    InvalidRegex(regex::Error),
    /// The URL does not parse.
    #[error("invalid URL: {0}")]
    InvalidUrl(url::ParseError),
    /// The URL parses but its scheme is not one a homeserver can push to.
    #[error("unsupported URL scheme {0:?}: expected http or https")]
    UnsupportedUrlScheme(String),
    /// `url` is null, so the homeserver would push nothing to the bridge.
    #[error("is null, but a bridge needs the homeserver to push transactions to it")]
    MissingUrl,
    /// The localpart contains characters outside the spec's user ID grammar.
    #[error(
        "{value:?} is not a valid Matrix user localpart: {} not allowed \
         (use only a-z, 0-9, '.', '_', '=', '-', '/', '+')",
        quote_chars(.invalid)
    )]
    InvalidLocalpart {
        /// The localpart as written.
        value: String,
        /// The offending characters, each listed once, in order of appearance.
        invalid: Vec<char>,
    },
    /// The localpart is valid for the spec but Synapse refuses it.
    #[error(
        "{value:?} contains {} which Synapse refuses in a sender_localpart \
         (it must not need URL-encoding)",
        quote_chars(.chars)
    )]
    LocalpartNeedsUrlEncoding {
        /// The localpart as written.
        value: String,
        /// The offending characters, each listed once, in order of appearance.
        chars: Vec<char>,
    },
    /// `sender_localpart` and the server name do not form a valid user ID
    /// (for example it would exceed 255 bytes).
    #[error("does not form a valid user ID with the server name: {0}")]
    InvalidSenderUserId(ruma::IdParseError),
    /// A token contains whitespace, control or non-ASCII characters, which
    /// cannot travel in an `Authorization: Bearer` header.
    #[error("contains characters that cannot be sent in an HTTP header (use printable ASCII)")]
    InvalidTokenCharacters,
    /// `hs_token` equals `as_token`, so either side could impersonate the other.
    #[error("must differ from as_token")]
    SameTokens,
    /// The ID contains `|`, which Synapse reserves as a separator.
    #[error("must not contain '|' (Synapse refuses it)")]
    IdContainsPipe,
    /// No exclusive user namespace: nothing stops real users from taking the
    /// bridge's puppet user IDs.
    #[error("has no exclusive namespace, but a bridge needs one for its puppet users")]
    NoExclusiveUserNamespace,
}

/// Formats characters as `'a', 'B'` for messages.
fn quote_chars(chars: &[char]) -> String {
    chars
        .iter()
        .map(|c| format!("{c:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One problem together with the key path it is about.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct ValidationError {
    /// Dotted key path into the file, e.g. `namespaces.users[1].regex`.
    pub path: String,
    /// What is wrong there.
    pub problem: Problem,
}

impl ValidationError {
    /// A problem at the given key path.
    pub fn new(path: impl Into<String>, problem: Problem) -> Self {
        Self {
            path: path.into(),
            problem,
        }
    }
}

/// Every problem found in a registration; never empty when returned as an
/// error.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl ValidationErrors {
    /// The problems, in the order the keys appear in the file.
    pub fn problems(&self) -> &[ValidationError] {
        &self.0
    }

    /// Takes the problems out.
    pub fn into_vec(self) -> Vec<ValidationError> {
        self.0
    }

    /// `Ok` when nothing was found, so that callers can use `?`.
    fn into_result(self) -> Result<(), Self> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [only] => write!(f, "invalid registration: {only}"),
            all => {
                write!(f, "invalid registration ({} problems):", all.len())?;
                for problem in all {
                    // Regex errors span several lines (pattern and caret);
                    // indent them under their bullet so the list stays legible.
                    let text = problem.to_string().replace('\n', "\n    ");
                    write!(f, "\n  - {text}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ValidationErrors {}

impl IntoIterator for ValidationErrors {
    type Item = ValidationError;
    type IntoIter = std::vec::IntoIter<ValidationError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a ValidationErrors {
    type Item = &'a ValidationError;
    type IntoIter = std::slice::Iter<'a, ValidationError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl Registration {
    /// Checks the registration against the spec and what Synapse accepts,
    /// returning every problem found.
    ///
    /// It does not require the sender's user ID to match a user namespace:
    /// homeservers treat the sender as the application service's own user
    /// regardless.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = Vec::new();
        self.collect_problems(&mut errors);
        ValidationErrors(errors).into_result()
    }

    /// [`Registration::validate`] plus what a bridge in particular needs: a
    /// non-null `url` (or it would receive no events) and at least one
    /// exclusive user namespace (or real users could squat its puppets).
    pub fn validate_for_bridge(&self) -> Result<(), ValidationErrors> {
        let mut errors = Vec::new();
        self.collect_problems(&mut errors);
        if self.url.is_none() {
            errors.push(ValidationError::new("url", Problem::MissingUrl));
        }
        if !self.namespaces.users.iter().any(|ns| ns.exclusive) {
            errors.push(ValidationError::new(
                "namespaces.users",
                Problem::NoExclusiveUserNamespace,
            ));
        }
        // Keep the report in file order even though the bridge checks ran last.
        errors.sort_by_key(|error| key_order(&error.path));
        ValidationErrors(errors).into_result()
    }

    fn collect_problems(&self, errors: &mut Vec<ValidationError>) {
        if self.id.is_empty() {
            errors.push(ValidationError::new("id", Problem::Empty));
        } else if self.id.contains('|') {
            errors.push(ValidationError::new("id", Problem::IdContainsPipe));
        }

        if let Some(url) = &self.url
            && let Err(problem) = check_url(url)
        {
            errors.push(ValidationError::new("url", problem));
        }

        if let Err(problem) = check_token(&self.as_token) {
            errors.push(ValidationError::new("as_token", problem));
        }
        match check_token(&self.hs_token) {
            Err(problem) => errors.push(ValidationError::new("hs_token", problem)),
            Ok(()) if self.hs_token == self.as_token => {
                errors.push(ValidationError::new("hs_token", Problem::SameTokens));
            }
            Ok(()) => {}
        }

        if let Err(problem) = check_sender_localpart(&self.sender_localpart) {
            errors.push(ValidationError::new("sender_localpart", problem));
        }

        let lists = [
            ("users", &self.namespaces.users),
            ("aliases", &self.namespaces.aliases),
            ("rooms", &self.namespaces.rooms),
        ];
        for (kind, namespaces) in lists {
            check_namespaces(kind, namespaces, errors);
        }
    }
}

/// Position of a top-level key in the file as this crate writes it, for
/// sorting problems; unknown paths go last.
fn key_order(path: &str) -> usize {
    const ORDER: [&str; 6] = [
        "id",
        "url",
        "as_token",
        "hs_token",
        "sender_localpart",
        "namespaces",
    ];
    let top = path.split(['.', '[']).next().unwrap_or(path);
    ORDER
        .iter()
        .position(|key| *key == top)
        .unwrap_or(ORDER.len())
}

fn check_url(url: &str) -> Result<(), Problem> {
    let parsed = url::Url::parse(url).map_err(Problem::InvalidUrl)?;
    match parsed.scheme() {
        "http" | "https" => Ok(()),
        other => Err(Problem::UnsupportedUrlScheme(other.to_owned())),
    }
}

fn check_token(token: &str) -> Result<(), Problem> {
    if token.is_empty() {
        Err(Problem::Empty)
    } else if !token.chars().all(|c| c.is_ascii_graphic()) {
        Err(Problem::InvalidTokenCharacters)
    } else {
        Ok(())
    }
}

/// Checks a user localpart against the spec grammar.
///
/// Written out rather than delegated to ruma, which only validates complete
/// user IDs (and accepts historical localparts in its parser).
fn check_localpart(localpart: &str) -> Result<(), Problem> {
    if localpart.is_empty() {
        return Err(Problem::Empty);
    }
    let invalid = distinct_chars(localpart, |c| !is_localpart_char(c));
    if invalid.is_empty() {
        Ok(())
    } else {
        Err(Problem::InvalidLocalpart {
            value: localpart.to_owned(),
            invalid,
        })
    }
}

fn check_sender_localpart(localpart: &str) -> Result<(), Problem> {
    check_localpart(localpart)?;
    let chars = distinct_chars(localpart, needs_url_encoding);
    if chars.is_empty() {
        Ok(())
    } else {
        Err(Problem::LocalpartNeedsUrlEncoding {
            value: localpart.to_owned(),
            chars,
        })
    }
}

/// The characters of `s` selected by `pick`, each once, in order.
fn distinct_chars(s: &str, pick: impl Fn(char) -> bool) -> Vec<char> {
    let mut found = Vec::new();
    for c in s.chars().filter(|c| pick(*c)) {
        if !found.contains(&c) {
            found.push(c);
        }
    }
    found
}

fn check_namespaces(kind: &str, namespaces: &[Namespace], errors: &mut Vec<ValidationError>) {
    for (index, namespace) in namespaces.iter().enumerate() {
        let path = format!("namespaces.{kind}[{index}].regex");
        // An empty regex compiles and matches every ID, which for an
        // exclusive namespace would claim the whole server.
        if namespace.regex.is_empty() {
            errors.push(ValidationError::new(path, Problem::Empty));
        } else if let Err(error) = compile_namespace_regex(&namespace.regex) {
            errors.push(ValidationError::new(path, Problem::InvalidRegex(error)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = include_str!("../tests/fixtures/full.yaml");

    fn valid() -> Registration {
        Registration::from_yaml_str(FULL).expect("fixture parses")
    }

    /// The key paths of the problems, in report order.
    fn paths(result: Result<(), ValidationErrors>) -> Vec<String> {
        result
            .expect_err("expected problems")
            .into_iter()
            .map(|error| error.path)
            .collect()
    }

    /// The single problem a registration has.
    fn only_problem(registration: &Registration) -> ValidationError {
        let errors = registration.validate().expect_err("expected a problem");
        assert_eq!(errors.problems().len(), 1, "{errors}");
        errors.into_vec().remove(0)
    }

    #[test]
    fn fixture_is_valid_for_a_bridge() {
        assert_eq!(valid().validate(), Ok(()));
        assert_eq!(valid().validate_for_bridge(), Ok(()));
    }

    #[test]
    fn empty_id() {
        let mut registration = valid();
        registration.id.clear();
        assert_eq!(
            only_problem(&registration),
            ValidationError::new("id", Problem::Empty)
        );
    }

    #[test]
    fn id_with_pipe() {
        let mut registration = valid();
        registration.id = "irc|xmpp".to_owned();
        let error = only_problem(&registration);
        assert_eq!(error, ValidationError::new("id", Problem::IdContainsPipe));
        assert_eq!(
            error.to_string(),
            "id: must not contain '|' (Synapse refuses it)"
        );
    }

    #[test]
    fn unparsable_url() {
        let mut registration = valid();
        registration.url = Some("not a url".to_owned());
        let error = only_problem(&registration);
        assert_eq!(error.path, "url");
        assert!(matches!(error.problem, Problem::InvalidUrl(_)));
        assert!(
            error.to_string().starts_with("url: invalid URL: "),
            "{error}"
        );
    }

    #[test]
    fn url_with_other_scheme() {
        let mut registration = valid();
        registration.url = Some("ftp://example.org".to_owned());
        let error = only_problem(&registration);
        assert_eq!(
            error,
            ValidationError::new("url", Problem::UnsupportedUrlScheme("ftp".to_owned()))
        );
        assert_eq!(
            error.to_string(),
            "url: unsupported URL scheme \"ftp\": expected http or https"
        );
    }

    #[test]
    fn null_url_is_valid_but_not_for_a_bridge() {
        let mut registration = valid();
        registration.url = None;
        assert_eq!(registration.validate(), Ok(()));
        let errors = registration
            .validate_for_bridge()
            .expect_err("a bridge needs pushes");
        assert_eq!(
            errors.into_vec(),
            [ValidationError::new("url", Problem::MissingUrl)]
        );
    }

    #[test]
    fn empty_tokens() {
        let mut registration = valid();
        registration.as_token.clear();
        registration.hs_token.clear();
        // Two empty tokens are equal too, but "empty" is the useful message.
        assert_eq!(
            registration.validate().map_err(ValidationErrors::into_vec),
            Err(vec![
                ValidationError::new("as_token", Problem::Empty),
                ValidationError::new("hs_token", Problem::Empty),
            ])
        );
    }

    #[test]
    fn tokens_with_unsendable_characters() {
        let mut registration = valid();
        registration.as_token = "has space".to_owned();
        registration.hs_token = "tab\there".to_owned();
        assert_eq!(
            registration.validate().map_err(ValidationErrors::into_vec),
            Err(vec![
                ValidationError::new("as_token", Problem::InvalidTokenCharacters),
                ValidationError::new("hs_token", Problem::InvalidTokenCharacters),
            ])
        );
    }

    #[test]
    fn equal_tokens() {
        let mut registration = valid();
        registration.hs_token = registration.as_token.clone();
        let error = only_problem(&registration);
        assert_eq!(error, ValidationError::new("hs_token", Problem::SameTokens));
        assert_eq!(error.to_string(), "hs_token: must differ from as_token");
    }

    #[test]
    fn empty_sender_localpart() {
        let mut registration = valid();
        registration.sender_localpart.clear();
        assert_eq!(
            only_problem(&registration),
            ValidationError::new("sender_localpart", Problem::Empty)
        );
    }

    #[test]
    fn sender_localpart_outside_the_grammar() {
        let mut registration = valid();
        registration.sender_localpart = "Irc Bot:x!".to_owned();
        let error = only_problem(&registration);
        assert_eq!(
            error,
            ValidationError::new(
                "sender_localpart",
                Problem::InvalidLocalpart {
                    value: "Irc Bot:x!".to_owned(),
                    invalid: vec!['I', ' ', 'B', ':', '!'],
                }
            )
        );
        assert_eq!(
            error.to_string(),
            "sender_localpart: \"Irc Bot:x!\" is not a valid Matrix user localpart: \
             'I', ' ', 'B', ':', '!' not allowed (use only a-z, 0-9, '.', '_', '=', '-', '/', '+')"
        );
    }

    #[test]
    fn sender_localpart_that_synapse_refuses() {
        let mut registration = valid();
        registration.sender_localpart = "irc=bot+1".to_owned();
        let error = only_problem(&registration);
        assert_eq!(
            error,
            ValidationError::new(
                "sender_localpart",
                Problem::LocalpartNeedsUrlEncoding {
                    value: "irc=bot+1".to_owned(),
                    chars: vec!['=', '+'],
                }
            )
        );
    }

    #[test]
    fn sender_localpart_with_every_allowed_character() {
        let mut registration = valid();
        registration.sender_localpart = "a-z_0.9/x".to_owned();
        assert_eq!(registration.validate(), Ok(()));
    }

    #[test]
    fn invalid_regex_names_its_entry() {
        let mut registration = valid();
        registration.namespaces.users[1].regex = "@irc_(unclosed".to_owned();
        let error = only_problem(&registration);
        assert_eq!(error.path, "namespaces.users[1].regex");
        assert!(matches!(error.problem, Problem::InvalidRegex(_)));
        assert!(
            error
                .to_string()
                .starts_with("namespaces.users[1].regex: invalid regex: "),
            "{error}"
        );
    }

    #[test]
    fn python_only_regex_syntax_is_reported() {
        let mut registration = valid();
        registration.namespaces.aliases[0].regex = "#(?!admin).*".to_owned();
        assert_eq!(
            paths(registration.validate()),
            ["namespaces.aliases[0].regex"]
        );
    }

    #[test]
    fn regex_that_only_breaks_when_anchored_is_reported() {
        let mut registration = valid();
        // In verbose mode the trailing comment would swallow the wrapper's `)`.
        registration.namespaces.rooms[0].regex = "(?x)!room # comment".to_owned();
        assert_eq!(
            paths(registration.validate()),
            ["namespaces.rooms[0].regex"]
        );
    }

    #[test]
    fn empty_regex_is_reported() {
        let mut registration = valid();
        registration.namespaces.rooms[0].regex.clear();
        assert_eq!(
            only_problem(&registration),
            ValidationError::new("namespaces.rooms[0].regex", Problem::Empty)
        );
    }

    #[test]
    fn bridge_needs_an_exclusive_user_namespace() {
        let mut registration = valid();
        for namespace in &mut registration.namespaces.users {
            namespace.exclusive = false;
        }
        assert_eq!(registration.validate(), Ok(()));
        let errors = registration
            .validate_for_bridge()
            .expect_err("no exclusive");
        assert_eq!(
            errors.into_vec(),
            [ValidationError::new(
                "namespaces.users",
                Problem::NoExclusiveUserNamespace
            )]
        );

        registration.namespaces.users.clear();
        assert_eq!(
            paths(registration.validate_for_bridge()),
            ["namespaces.users"]
        );
    }

    #[test]
    fn sender_need_not_match_a_namespace() {
        let mut registration = valid();
        registration.namespaces.users.truncate(1);
        registration.sender_localpart = "bridgebot".to_owned();
        assert_eq!(registration.validate_for_bridge(), Ok(()));
    }

    #[test]
    fn every_problem_is_reported_at_once_in_file_order() {
        let mut registration = valid();
        registration.id.clear();
        registration.url = None;
        registration.hs_token = registration.as_token.clone();
        registration.sender_localpart = "Bot".to_owned();
        registration.namespaces.users[0].regex = "(".to_owned();
        registration.namespaces.users[0].exclusive = false;
        registration.namespaces.aliases[0].regex = "[".to_owned();
        registration.namespaces.rooms[0].regex = String::new();

        let errors = registration
            .validate_for_bridge()
            .expect_err("many problems");
        assert_eq!(
            paths(Err(errors.clone())),
            [
                "id",
                "url",
                "hs_token",
                "sender_localpart",
                "namespaces.users[0].regex",
                "namespaces.aliases[0].regex",
                "namespaces.rooms[0].regex",
                "namespaces.users",
            ]
        );

        let message = errors.to_string();
        assert!(
            message.starts_with("invalid registration (8 problems):\n  - id: must not be empty\n"),
            "{message}"
        );
        assert!(message.contains("\n  - url: is null"), "{message}");
        assert!(
            message.contains("\n  - namespaces.users: has no exclusive namespace"),
            "{message}"
        );
    }

    #[test]
    fn multi_line_problems_are_indented_under_their_bullet() {
        let mut registration = valid();
        registration.id.clear();
        registration.namespaces.users[1].regex = "@a(".to_owned();
        let message = registration
            .validate()
            .expect_err("two problems")
            .to_string();
        let continuation: Vec<_> = message.lines().skip(3).collect();
        assert!(!continuation.is_empty(), "{message}");
        assert!(
            continuation.iter().all(|line| line.starts_with("    ")),
            "{message}"
        );
    }

    #[test]
    fn single_problem_message_is_one_line() {
        let mut registration = valid();
        registration.id.clear();
        let errors = registration.validate().expect_err("empty id");
        assert_eq!(
            errors.to_string(),
            "invalid registration: id: must not be empty"
        );
    }
}
