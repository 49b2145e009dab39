//! bridge-irc's library: the parts of the IRC connector, usable apart from the binary.
//!
//! - [`formatting`]: mIRC formatting codes to and from Matrix HTML;
//! - [`split`]: a message body as IRC lines within the 512-byte limit, with no CR, LF or
//!   NUL that could start a new command.

pub mod formatting;
pub mod split;
