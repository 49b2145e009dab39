//! XMPP addresses as bridge ids, and Matrix ids as XMPP addresses.
//!
//! - A portal's remote id is the group chat's bare JID, normalized (`room@muc.example`).
//!   Its alias suffix spells it `room_muc.example`: the local part escaped with `=` and
//!   two hex digits for every byte outside `a-z 0-9 . -`, so the first `_` ends it.
//! - A ghost's remote id names an XMPP user by the best handle the room gives
//!   ([`GhostId`]).
//! - A direct chat's remote id is `direct/<Matrix user>/<XMPP bare JID>`.
//! - A Matrix user's puppet is `<localpart>\3a<server>@<component domain>`: the user id
//!   without its `@`, escaped by XEP-0106.

use std::fmt;

use ruma::{OwnedUserId, UserId};
use xmpp_parsers::jid::{BareJid, FullJid};

/// The resource every puppet and the bot use.
pub const RESOURCE: &str = "trestle";

/// How a ghost's XMPP user is known, best first (XEP-0421 occupant ids are stable across
/// nick changes but local to one room; a real JID is shown in non-anonymous rooms only;
/// the nick is all an anonymous room without occupant ids gives).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GhostId {
    /// An occupant id in a room.
    Occupant {
        /// The room.
        room: BareJid,
        /// The occupant id (XEP-0421).
        id: String,
    },
    /// A real JID.
    Jid(BareJid),
    /// A nick in a room.
    Nick {
        /// The room.
        room: BareJid,
        /// The nick.
        nick: String,
    },
}

impl fmt::Display for GhostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A bare JID never contains ':' before its '@' (RFC 7622 forbids it in local
        // parts) and a domain never starts with these words and a ':', so the three
        // kinds cannot be mistaken for one another.
        match self {
            GhostId::Occupant { room, id } => write!(f, "occupant:{room}/{id}"),
            GhostId::Jid(jid) => write!(f, "{jid}"),
            GhostId::Nick { room, nick } => write!(f, "nick:{room}/{nick}"),
        }
    }
}

impl GhostId {
    /// Parses what [`GhostId`]'s `Display` writes.
    pub fn parse(id: &str) -> Option<GhostId> {
        let in_room = |rest: &str| -> Option<(BareJid, String)> {
            let (room, tail) = rest.split_once('/')?;
            let room = BareJid::new(room).ok()?;
            (room.node().is_some() && !tail.is_empty()).then(|| (room, tail.to_owned()))
        };
        if let Some(rest) = id.strip_prefix("occupant:") {
            let (room, id) = in_room(rest)?;
            return Some(GhostId::Occupant { room, id });
        }
        if let Some(rest) = id.strip_prefix("nick:") {
            let (room, nick) = in_room(rest)?;
            return Some(GhostId::Nick { room, nick });
        }
        let jid = BareJid::new(id).ok()?;
        (jid.as_str() == id).then_some(GhostId::Jid(jid))
    }

    /// The room a ghost belongs to, for those known only in one room.
    pub fn room(&self) -> Option<&BareJid> {
        match self {
            GhostId::Occupant { room, .. } | GhostId::Nick { room, .. } => Some(room),
            GhostId::Jid(_) => None,
        }
    }
}

/// The remote id of the direct chat between Matrix user `user` and XMPP user `jid`.
pub fn direct_id(user: &UserId, jid: &BareJid) -> String {
    format!("direct/{user}/{jid}")
}

/// The alias suffix of a group chat: `room_muc.example`.
pub fn alias_suffix(room: &BareJid) -> String {
    let mut suffix = String::new();
    for byte in room.node().map(|n| n.as_str()).unwrap_or_default().bytes() {
        match byte {
            b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' => suffix.push(char::from(byte)),
            other => suffix.push_str(&format!("={other:02x}")),
        }
    }
    suffix.push('_');
    suffix.push_str(room.domain().as_str());
    suffix
}

/// The group chat an alias suffix names, if it names one. Letters are taken in either
/// case, as XMPP addresses are case-insensitive.
pub fn room_of_alias(suffix: &str) -> Option<BareJid> {
    let (node, domain) = suffix.split_once('_')?;
    let mut bytes = Vec::with_capacity(node.len());
    let mut input = node.bytes();
    while let Some(byte) = input.next() {
        if byte == b'=' {
            let high = char::from(input.next()?).to_digit(16)?;
            let low = char::from(input.next()?).to_digit(16)?;
            bytes.push(u8::try_from(high * 16 + low).ok()?);
        } else {
            bytes.push(byte);
        }
    }
    let node = String::from_utf8(bytes).ok()?;
    if node.is_empty()
        || domain.is_empty()
        || !domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return None;
    }
    BareJid::new(&format!("{node}@{domain}")).ok()
}

/// The group chat a person names (`room@conference.example.org`, or as an `xmpp:` URI
/// with `?join`), if it is one: a bare address with a local part.
pub fn parse_room_address(address: &str) -> Option<BareJid> {
    let address = address.trim();
    let address = address.strip_prefix("xmpp:").unwrap_or(address);
    let address = address.strip_suffix("?join").unwrap_or(address);
    let room = BareJid::new(address).ok()?;
    room.node().is_some().then_some(room)
}

/// Escapes `text` for a JID's local part (XEP-0106).
pub fn escape_node(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            ' ' => escaped.push_str("\\20"),
            '"' => escaped.push_str("\\22"),
            '&' => escaped.push_str("\\26"),
            '\'' => escaped.push_str("\\27"),
            '/' => escaped.push_str("\\2f"),
            ':' => escaped.push_str("\\3a"),
            '<' => escaped.push_str("\\3c"),
            '>' => escaped.push_str("\\3e"),
            '@' => escaped.push_str("\\40"),
            '\\' => escaped.push_str("\\5c"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// Reverses [`escape_node`].
pub fn unescape_node(escaped: &str) -> String {
    const CODES: [(&str, char); 10] = [
        ("20", ' '),
        ("22", '"'),
        ("26", '&'),
        ("27", '\''),
        ("2f", '/'),
        ("3a", ':'),
        ("3c", '<'),
        ("3e", '>'),
        ("40", '@'),
        ("5c", '\\'),
    ];
    let mut text = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(at) = rest.find('\\') {
        text.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        match CODES
            .iter()
            .find(|(code, _)| after.get(..2).is_some_and(|a| a.eq_ignore_ascii_case(code)))
        {
            Some((_, c)) => {
                text.push(*c);
                rest = &after[2..];
            }
            None => {
                text.push('\\');
                rest = after;
            }
        }
    }
    text.push_str(rest);
    text
}

/// The bare JID of `user`'s puppet on the component `domain`.
pub fn puppet_jid(user: &UserId, domain: &str) -> Option<BareJid> {
    let without_sigil = &user.as_str()[1..];
    BareJid::new(&format!("{}@{domain}", escape_node(without_sigil))).ok()
}

/// The full JID the puppet of `user` speaks from.
pub fn puppet_full_jid(user: &UserId, domain: &str) -> Option<FullJid> {
    puppet_jid(user, domain)?.with_resource_str(RESOURCE).ok()
}

/// The Matrix user behind a puppet's bare JID, if it is one.
pub fn user_of_puppet(jid: &BareJid) -> Option<OwnedUserId> {
    let node = unescape_node(jid.node()?.as_str());
    if !node.contains(':') {
        return None;
    }
    UserId::parse(format!("@{node}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_addresses_are_bare_with_a_local_part() {
        let room = BareJid::new("lounge@conference.example.org").unwrap();
        assert_eq!(
            parse_room_address(" lounge@conference.example.org "),
            Some(room.clone())
        );
        assert_eq!(
            parse_room_address("xmpp:lounge@conference.example.org?join"),
            Some(room)
        );
        assert_eq!(parse_room_address("conference.example.org"), None);
        assert_eq!(
            parse_room_address("lounge@conference.example.org/nick"),
            None
        );
        assert_eq!(parse_room_address("a b@c"), None);
    }

    #[test]
    fn ghost_ids_round_trip_and_stay_apart() {
        let room = BareJid::new("room@muc.example").unwrap();
        for ghost in [
            GhostId::Occupant {
                room: room.clone(),
                id: "aB+/=".into(),
            },
            GhostId::Jid(BareJid::new("carol@example.org").unwrap()),
            GhostId::Nick {
                room: room.clone(),
                nick: "carol / <x> occupant:".into(),
            },
        ] {
            assert_eq!(GhostId::parse(&ghost.to_string()), Some(ghost));
        }
        for bad in ["", "nick:room@muc.example", "occupant:nojid/x", "a b@c"] {
            assert_eq!(GhostId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn alias_suffixes_round_trip_and_fold_case() {
        for room in ["room@muc.example", "we_are@conf.example", "caf\u{e9}=1@x.y"] {
            let jid = BareJid::new(room).unwrap();
            let suffix = alias_suffix(&jid);
            assert_eq!(suffix.matches('_').count(), 1, "{suffix}");
            assert_eq!(room_of_alias(&suffix), Some(jid), "{suffix}");
        }
        assert_eq!(
            room_of_alias("Room_MUC.example").map(|j| j.to_string()),
            Some("room@muc.example".into())
        );
        for bad in [
            "",
            "room",
            "_muc.example",
            "room_",
            "room_bad domain",
            "a=zz_b",
        ] {
            assert_eq!(room_of_alias(bad), None, "{bad}");
        }
    }

    #[test]
    fn puppets_are_escaped_matrix_ids() {
        let user = UserId::parse("@alice/x:example.org").unwrap();
        let jid = puppet_jid(&user, "bridge.example").unwrap();
        assert_eq!(jid.as_str(), "alice\\2fx\\3aexample.org@bridge.example");
        assert_eq!(user_of_puppet(&jid), Some(user));
        assert_eq!(
            user_of_puppet(&BareJid::new("bot@bridge.example").unwrap()),
            None
        );
        assert_eq!(unescape_node("a\\b\\5c"), "a\\b\\");
    }
}
