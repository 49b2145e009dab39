//! The Trestle test bed: real servers on loopback for end-to-end tests.
//!
//! Each server (Synapse, InspIRCd with Atheme, ngircd, Prosody, PostgreSQL) is started in
//! its own folder under the run folder ([`run_dir`]), on free ports of 127.0.0.1, owned by
//! pid and killed when its handle is dropped or when the test process dies. Readiness is
//! probed (an HTTP endpoint, an IRC registration, an XMPP stream), never slept for.
//!
//! Tests use the `start`/`shared` constructors of each server and the real clients in
//! [`matrix`], [`irc`] and [`xmpp`]. What the servers need installed is put there by
//! `tests/install-deps.sh`, which the README's test command runs first.

pub mod error;
pub mod inspircd;
pub mod irc;
pub mod linechat;
mod linechat_client;
pub mod matrix;
pub mod ngircd;
pub mod postgres;
pub mod probe;
pub mod process;
pub mod prosody;
pub mod synapse;
pub mod xmpp;

mod paths;

pub use error::{Error, Result};

pub use inspircd::InspIrcd;
pub use ngircd::Ngircd;
pub use paths::{run_dir, schemathesis_venv, workspace_root};
pub use postgres::Postgres;
pub use prosody::Prosody;

pub use synapse::Synapse;

pub mod databases;
