//! bridge-irc's library: the IRC connector and its parts.
//!
//! - [`config`]: the `irc` config section;
//! - [`connector`]: what bridge-core asks of IRC, routed to a [`network`];
//! - [`network`]: one network at run time: the bot in portal channels, and puppets;
//! - [`netsplit`]: quits of a netsplit held until the split heals;
//! - [`connection`]: one IRC connection: TLS, CAP/SASL registration, flood control;
//! - [`line`]: IRC lines parsed and built (never with CR, LF or NUL);
//! - [`isupport`]: what the server says of itself (casemapping, modes, nick length);
//! - [`ids`]: IRC names as bridge ids, Matrix names as nicks;
//! - [`formatting`]: mIRC formatting codes to and from Matrix HTML;
//! - [`edits`]: Matrix edits as one short IRC line;
//! - [`split`]: a message body as IRC lines within the 512-byte limit;
//! - [`tls`]: TLS settings;
//! - [`client_cert`]: users' own client certificates, for SASL EXTERNAL;
//! - [`ident`]: the ident server (RFC 1413) that names each connection's user.

pub mod client_cert;
pub mod config;
pub mod connection;
pub mod connector;
pub mod edits;
pub mod formatting;
pub mod ident;
pub mod ids;
pub mod isupport;
pub mod line;
pub mod netsplit;
pub mod network;
pub mod split;
pub mod tls;
