//! Formatting helpers shared by all bridges: sanitizing Matrix HTML, turning
//! it into a remote network's text and back, reply fallbacks and mentions.
//!
//! Every helper that reads HTML parses it with a real HTML5 parser, so
//! malformed input is repaired the way a client would repair it and never
//! makes a helper panic.

mod dom;
mod mention;
mod reply;
mod sanitize;
mod to_html;
mod to_text;
mod tree;

pub use mention::{mention_pill, mentioned_users};
pub use reply::{strip_reply_fallback_html, strip_reply_fallback_text};
pub use sanitize::sanitize_html;
pub use to_html::{escape_html, text_to_html};
pub use to_text::{PlainText, TextMarkup, html_to_text};
pub use tree::{HtmlNode, html_tree};
