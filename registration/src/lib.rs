//! The application service registration file that connects a Trestle bridge
//! to its homeserver.
//!
//! This crate owns that file end to end:
//!
//! - [`model`]: the typed registration ([`Registration`], [`Namespaces`],
//!   [`Namespace`]), including unstable keys, with unknown keys preserved;
//! - [`generate`]: deriving it from the bridge's config ([`RegistrationSpec`],
//!   [`Registration::generate`]) while keeping existing tokens;
//! - `file` (private, methods on [`Registration`]): YAML text
//!   ([`Registration::from_yaml_str`], [`Registration::to_yaml_string`]) and
//!   files ([`Registration::load`], atomic owner-only [`Registration::save`]);
//! - [`validate`]: reporting every problem with its key path;
//! - [`matcher`]: matching IDs against the namespaces exactly as Synapse does
//!   ([`NamespaceMatcher`]);
//! - [`error`]: the load/save/parse [`Error`].
//!
//! ```
//! use registration::{Namespace, NamespaceMatcher, Registration, RegistrationSpec};
//! use ruma::{server_name, user_id};
//!
//! let spec = RegistrationSpec {
//!     id: "irc".to_owned(),
//!     url: Some("http://localhost:9000".parse()?),
//!     sender_localpart: "ircbot".to_owned(),
//!     user_namespaces: vec![Namespace::user_prefix("irc_", "example.org")],
//!     alias_namespaces: vec![Namespace::alias_prefix("irc_", "example.org")],
//!     protocols: vec!["irc".to_owned()],
//!     ..RegistrationSpec::default()
//! };
//! let registration = Registration::generate(spec, None);
//! registration.validate_for_bridge()?;
//!
//! let matcher = NamespaceMatcher::new(&registration, server_name!("example.org"))?;
//! assert!(matcher.is_exclusive_user(user_id!("@irc_alice:example.org")));
//! assert!(matcher.is_ours(user_id!("@ircbot:example.org")));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod error;
mod file;
pub mod generate;
pub mod matcher;
pub mod model;
pub mod validate;

pub use error::Error;
pub use generate::{RegistrationSpec, TOKEN_LENGTH, generate_token};
pub use matcher::{Exclusivity, NamespaceMatcher};
pub use model::{Namespace, Namespaces, Registration};
pub use validate::{Problem, ValidationError, ValidationErrors};
