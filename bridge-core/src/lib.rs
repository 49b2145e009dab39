//! bridge-core: the framework every Trestle bridge stands on.
//!
//! - [`appservice`]: the HTTP endpoint the homeserver pushes to (transactions, user and
//!   alias queries, third-party lookups, ping), with authentication and spec-shaped errors;
//! - [`transaction`]: what one pushed transaction holds, parsed with ruma types;
//! - [`ingest`]: storing each transaction durably before it is acknowledged, and handing
//!   its events on once, in order per room (again after a crash only if their handling
//!   was not recorded, and then flagged);
//! - [`store`]: the database (SQLite by default, PostgreSQL by URL) and its tables;
//! - [`matrix`]: the homeserver client (as the bot or a ghost user), with retries;
//! - [`runtime`]: the store, ingest and endpoint running together;
//! - [`connector`]: the API a protocol crate implements, and [`bridge`]: the running
//!   bridge around it (portals, ghosts, ordered delivery both ways, the bot);
//! - [`format`]: Matrix HTML to and from a network's text, sanitizing, mentions;
//! - [`config`], [`cli`], [`logging`], [`metrics`]: what a bridge binary needs at its edge.

#![warn(missing_docs)]

pub mod appservice;
pub mod bridge;
pub mod cli;
pub mod config;
pub mod connector;
pub mod format;
pub mod ingest;
pub mod logging;
pub mod matrix;
pub mod metrics;
pub mod runtime;
pub mod store;
pub mod transaction;
