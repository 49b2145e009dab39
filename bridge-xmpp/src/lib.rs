//! bridge-xmpp's library: the XMPP connector and its parts.
//!
//! - [`config`]: the `xmpp` config section;
//! - [`connector`]: what bridge-core asks of XMPP, carried out by the [`gateway`];
//! - [`gateway`]: the XMPP side at run time: the bot in group chats, puppets, and every
//!   stanza the server sends;
//! - [`payloads`]: message payloads xmpp-parsers lacks (retraction, replies, fallback);
//! - [`rooms`]: what the bridge knows of the group chats it is in;
//! - [`styling`]: Matrix HTML as XMPP message styling (XEP-0393);
//! - [`stanza_ids`]: the ids group chats give messages, beside the bridge's own;
//! - [`component`]: the component connection (XEP-0114), kept up;
//! - [`ids`]: XMPP addresses as bridge ids, Matrix ids as XMPP addresses.

pub mod component;
pub mod config;
pub mod connector;
pub mod disco;
pub mod gateway;
pub mod ids;
pub mod payloads;
pub mod rooms;
pub mod stanza_ids;
pub mod styling;
pub mod xhtml;
