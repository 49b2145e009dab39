//! IRC names as bridge ids, and Matrix names as IRC nicks.
//!
//! - A portal's remote id is `<network>/<channel>`, the channel folded with the
//!   network's CASEMAPPING, so `#Rust` and `#rust` are one portal; its alias is
//!   `#<alias prefix>` and the network's alias template (`{network}_{channel}`).
//! - A ghost's remote id is `<network>/<nick>`, the nick folded likewise; its localpart
//!   is `<ghost prefix>` and the network's ghost template (`{network}_{nick}`), the nick
//!   escaped with the spec's reversible mapping. Config checks keep the networks'
//!   templates apart, so every localpart and alias reads back to one network.
//! - A Matrix user's nick comes from their display name, reduced to what IRC allows.

use bridge_core::bridge::ids::{escape_localpart, unescape_localpart};

use crate::config::is_valid_nick;

/// The remote id of a channel's portal (`channel` already folded).
pub fn portal_id(network: &str, channel: &str) -> String {
    format!("{network}/{channel}")
}

/// The remote id of the direct chat between a nick (folded) and a Matrix user.
pub fn direct_id(network: &str, nick: &str, user: &ruma::UserId) -> String {
    format!("{network}/{nick}/{user}")
}

/// The remote id of a nick's ghost (`nick` already folded).
pub fn ghost_id(network: &str, nick: &str) -> String {
    format!("{network}/{nick}")
}

/// The network and name of a portal or ghost id.
pub fn split_id(id: &str) -> Option<(&str, &str)> {
    id.split_once('/')
}

/// A network's spelling of one kind of name in Matrix: the text before and after the
/// placeholder (`{nick}` or `{channel}`) of its template, with `{network}` filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameTemplate {
    before: String,
    after: String,
}

/// The placeholder of a ghost template.
pub const NICK: &str = "{nick}";
/// The placeholder of an alias template.
pub const CHANNEL: &str = "{channel}";

impl NameTemplate {
    /// Reads `template` for `network`: `placeholder` exactly once, and around it only
    /// `{network}` and what a localpart may hold (`a-z 0-9 . _ = -`).
    pub fn parse(template: &str, placeholder: &str, network: &str) -> Result<NameTemplate, String> {
        let filled = template.replace("{network}", network);
        let Some((before, after)) = filled.split_once(placeholder) else {
            return Err(format!("must contain {placeholder}"));
        };
        if after.contains(placeholder) {
            return Err(format!("must contain {placeholder} only once"));
        }
        let literal = format!("{before}{after}");
        if let Some(bad) = literal
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "._=-".contains(*c)))
        {
            return Err(format!(
                "{bad:?} is not allowed: besides {placeholder} and {{network}}, use only a-z, 0-9 and . _ = -"
            ));
        }
        Ok(NameTemplate {
            before: before.to_owned(),
            after: after.to_owned(),
        })
    }

    /// The template with `name` in its place.
    pub fn render(&self, name: &str) -> String {
        format!("{}{name}{}", self.before, self.after)
    }

    /// The name in `text`, if `text` is this template filled with a non-empty name.
    pub fn read<'a>(&self, text: &'a str) -> Option<&'a str> {
        text.strip_prefix(self.before.as_str())?
            .strip_suffix(self.after.as_str())
            .filter(|name| !name.is_empty())
    }

    /// Whether some text could be read by both templates, which would make it mean two
    /// networks' names. None can when neither's start begins the other's, or neither's
    /// end ends the other's.
    pub fn overlaps(&self, other: &NameTemplate) -> bool {
        let starts = self.before.starts_with(other.before.as_str())
            || other.before.starts_with(self.before.as_str());
        let ends = self.after.ends_with(other.after.as_str())
            || other.after.ends_with(self.after.as_str());
        starts && ends
    }
}

/// The localpart (after the ghost prefix) of `nick` (folded) under `template`.
pub fn ghost_localpart(template: &NameTemplate, nick: &str) -> String {
    template.render(&escape_localpart(nick))
}

/// The nick behind `localpart` (after the ghost prefix), if it is one
/// [`ghost_localpart`] gives with `template`.
pub fn nick_of_localpart(template: &NameTemplate, localpart: &str) -> Option<String> {
    let nick = unescape_localpart(template.read(localpart)?)?;
    is_valid_nick(&nick).then_some(nick)
}

/// Whether `name` may be a channel name: a channel prefix, then no space, comma, BEL or
/// control character, at most 50 bytes (RFC 2812).
pub fn is_valid_channel(name: &str, chantypes: &str) -> bool {
    name.chars().next().is_some_and(|c| chantypes.contains(c))
        && name.len() > 1
        && name.len() <= 50
        && !name.chars().any(|c| c == ' ' || c == ',' || c.is_control())
}

/// An IRC nick for a Matrix user: their display name (or localpart) with what IRC
/// forbids dropped, `suffix` appended, cut to `nicklen`.
pub fn nick_for(
    display_name: Option<&str>,
    localpart: &str,
    suffix: &str,
    nicklen: usize,
) -> String {
    let clean = |name: &str| -> String {
        let mut nick: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "[]\\`_^{|}-".contains(*c))
            .collect();
        // A nick cannot start with a digit or `-`.
        while nick.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
            nick.remove(0);
        }
        nick
    };
    let mut base = display_name.map(clean).unwrap_or_default();
    if base.is_empty() {
        base = clean(localpart);
    }
    if base.is_empty() {
        base = "matrix".to_owned();
    }
    let keep = nicklen.saturating_sub(suffix.len()).max(1);
    let mut nick: String = base.chars().take(keep).collect();
    nick.push_str(suffix);
    nick.chars().take(nicklen.max(1)).collect()
}

/// Milliseconds since the epoch of an IRCv3 `server-time` value
/// (`2026-01-01T12:00:00.000Z`), if it is one.
pub fn parse_server_time(time: &str) -> Option<i64> {
    let time = time.strip_suffix('Z')?;
    let (date, clock) = time.split_once('T')?;
    let mut date = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let (clock, fraction) = clock.split_once('.').unwrap_or((clock, "0"));
    let mut clock = clock.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (clock.next()??, clock.next()??, clock.next()??);
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || !(0..=23).contains(&hour)
        || !(0..=59).contains(&minute)
        || !(0..=60).contains(&second)
    {
        return None;
    }
    // Milliseconds: the first three digits of the fraction (a server's own text: never
    // sliced where it might not be ASCII).
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = fraction.chars().chain("000".chars()).take(3).collect();
    let millis: i64 = digits.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hour * 3_600 + minute * 60 + second) * 1_000) + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(text: &str, placeholder: &str) -> NameTemplate {
        NameTemplate::parse(text, placeholder, "libera").unwrap()
    }

    #[test]
    fn ghost_localparts_read_back() {
        let default = template("{network}_{nick}", NICK);
        let suffixed = template("{nick}.{network}", NICK);
        for template in [&default, &suffixed] {
            for nick in ["alice", "bob_smith", "x{y}|z", "Q"] {
                let localpart = ghost_localpart(template, nick);
                assert_eq!(
                    nick_of_localpart(template, &localpart).as_deref(),
                    Some(nick),
                    "{localpart}"
                );
            }
        }
        assert_eq!(ghost_localpart(&default, "bob_smith"), "libera_bob__smith");
        assert_eq!(ghost_localpart(&default, "x{y}"), "libera_x=7by=7d");
        assert_eq!(ghost_localpart(&suffixed, "Q"), "_q.libera");
        // Not a nick, not this network, or not canonical: no ghost.
        assert_eq!(nick_of_localpart(&default, "libera_9lives"), None);
        assert_eq!(nick_of_localpart(&default, "oftc_alice"), None);
        assert_eq!(nick_of_localpart(&default, "libera_=61lice"), None);
        assert_eq!(nick_of_localpart(&default, "libera_"), None);
        assert_eq!(nick_of_localpart(&suffixed, "alice.oftc"), None);
    }

    #[test]
    fn templates_are_checked_and_kept_apart() {
        for (bad, why) in [
            ("{network}", "must contain {nick}"),
            ("{nick}{nick}", "only once"),
            ("{network}_{nick}:x", "':' is not allowed"),
            ("Big_{nick}", "'B' is not allowed"),
        ] {
            let error = NameTemplate::parse(bad, NICK, "libera").unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
        let of = |text: &str, network: &str| NameTemplate::parse(text, NICK, network).unwrap();
        // The default keeps networks apart unless one's name and `_` begins another's.
        assert!(!of("{network}_{nick}", "libera").overlaps(&of("{network}_{nick}", "oftc")));
        assert!(of("{network}_{nick}", "a").overlaps(&of("a_{nick}", "b")));
        // A shared start is fine when the ends differ.
        assert!(!of("{nick}.{network}", "libera").overlaps(&of("{nick}.{network}", "oftc")));
        assert!(of("{nick}", "libera").overlaps(&of("{nick}.{network}", "oftc")));
        let alias = NameTemplate::parse("{network}_{channel}", CHANNEL, "libera").unwrap();
        assert_eq!(alias.render("#rust"), "libera_#rust");
        assert_eq!(alias.read("libera_#rust"), Some("#rust"));
    }

    #[test]
    fn nicks_come_from_names() {
        assert_eq!(
            nick_for(Some("Alice Liddell"), "alice", "[m]", 30),
            "AliceLiddell[m]"
        );
        assert_eq!(nick_for(Some("😀"), "bob", "[m]", 30), "bob[m]");
        assert_eq!(nick_for(None, "42", "", 30), "matrix");
        assert_eq!(
            nick_for(Some("Averyveryverylongname"), "x", "[m]", 9),
            "Averyv[m]"
        );
        assert!(is_valid_nick(&nick_for(
            Some("-9x\r\nQUIT"),
            "x",
            "[m]",
            30
        )));
    }

    #[test]
    fn channels_are_checked() {
        assert!(is_valid_channel("#rust", "#&"));
        for bad in ["rust", "#", "#a b", "#a,b", "#a\x07", "#a\rb"] {
            assert!(!is_valid_channel(bad, "#&"), "{bad:?}");
        }
    }

    #[test]
    fn server_time_parses() {
        assert_eq!(parse_server_time("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(
            parse_server_time("2026-11-22T10:20:30.456Z"),
            Some(1_795_342_830_456)
        );
        assert_eq!(
            parse_server_time("2026-11-22T10:20:30Z"),
            Some(1_795_342_830_000)
        );
        assert_eq!(parse_server_time("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_server_time("yesterday"), None);
        // Hostile values: no panic, no overflow.
        assert_eq!(parse_server_time("2026-01-01T00:00:00.12éZ"), None);
        assert_eq!(parse_server_time("2026-01-01T00:00:00.€Z"), None);
        assert_eq!(parse_server_time("99999999999999-01-01T00:00:00Z"), None);
        assert_eq!(parse_server_time("2026-01-01T-1:00:00Z"), None);
        assert_eq!(
            parse_server_time("2026-01-01T00:00:00.5Z"),
            Some(1_767_225_600_500)
        );
    }
}
