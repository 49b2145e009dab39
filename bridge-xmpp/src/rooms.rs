//! What the bridge knows of the group chats it is in: who is there (and as which ghost),
//! its own occupants there (the bot and the puppets) and the joins under way.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use ruma::OwnedUserId;
use tokio::sync::oneshot;
use xmpp_parsers::jid::{BareJid, FullJid};
use xmpp_parsers::muc::user::{Affiliation, Role};

use crate::ids::GhostId;

/// How long a puppet's leave may take to come back from the room.
const LEAVE_ECHO: Duration = Duration::from_secs(30);

/// An XMPP user in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occupant {
    /// Their ghost.
    pub ghost: GhostId,
    /// Their power level in the portal, from affiliation and role.
    pub level: i64,
    /// Their presence as Matrix says it (`online`, `unavailable`) and status message.
    pub presence: (String, Option<String>),
    /// The hash of their avatar (XEP-0153), hex, if they have one.
    pub photo: Option<String>,
}

/// The power level a Matrix room gives an occupant: owners 100, admins and moderators 50.
pub fn level_of(affiliation: &Affiliation, role: &Role) -> i64 {
    match (affiliation, role) {
        (Affiliation::Owner, _) => 100,
        (Affiliation::Admin, _) | (_, Role::Moderator) => 50,
        _ => 0,
    }
}

/// An XMPP presence's availability (`show`) as Matrix presence: away, extended away
/// and do-not-disturb are `unavailable`.
pub fn matrix_presence(show: Option<&xmpp_parsers::presence::Show>) -> &'static str {
    match show {
        None | Some(xmpp_parsers::presence::Show::Chat) => "online",
        Some(_) => "unavailable",
    }
}

/// Why a join failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinRefusal {
    /// The nick is taken (409): try another.
    Conflict,
    /// Any other refusal, as the room said it.
    Other(String),
}

/// One group chat.
#[derive(Debug, Default)]
pub struct Room {
    /// The bot's nick, once it is in.
    pub bot_nick: Option<String>,
    /// The room's subject, once seen (the room sends it last when someone joins).
    pub subject: Option<String>,
    /// Whether the subject came since the bot's last join.
    pub subject_seen: bool,
    /// Everyone in the room but the bot and the puppets, by nick.
    pub occupants: HashMap<String, Occupant>,
    /// The puppets in the room, by Matrix user: their nick.
    pub puppets: HashMap<OwnedUserId, String>,
    /// Nicks the bot or a puppet is joining under: the room may tell the bot of the new
    /// occupant before it answers the join.
    pub joining: HashSet<String>,
    /// Nicks puppets left under lately: the room tells the bot of the leave too.
    pub leaving: HashMap<String, Instant>,
}

impl Room {
    /// Whether `nick` is the bot or a puppet.
    pub fn is_ours(&self, nick: &str) -> bool {
        self.bot_nick.as_deref() == Some(nick)
            || self.joining.contains(nick)
            || self
                .leaving
                .get(nick)
                .is_some_and(|at| at.elapsed() < LEAVE_ECHO)
            || self.puppets.values().any(|n| n == nick)
    }

    /// Notes that a puppet left under `nick` (and forgets older leaves).
    pub fn left(&mut self, nick: &str) {
        self.leaving.retain(|_, at| at.elapsed() < LEAVE_ECHO);
        self.leaving.insert(nick.to_owned(), Instant::now());
    }

    /// The Matrix user whose puppet has `nick`.
    pub fn puppet_with_nick(&self, nick: &str) -> Option<&OwnedUserId> {
        self.puppets
            .iter()
            .find_map(|(user, n)| (n == nick).then_some(user))
    }
}

/// Every room, and the joins waiting for an answer.
#[derive(Debug, Default)]
pub struct Rooms {
    /// The rooms by bare JID.
    pub rooms: HashMap<BareJid, Room>,
    /// Joins under way: who joins (the bot's or a puppet's full JID) and which room, and
    /// who waits for the answer (the nick the room gave, or why not).
    pub joins: HashMap<(FullJid, BareJid), oneshot::Sender<Result<String, JoinRefusal>>>,
}

impl Rooms {
    /// The room `jid`, made if new.
    pub fn room(&mut self, jid: &BareJid) -> &mut Room {
        self.rooms.entry(jid.clone()).or_default()
    }

    /// Forgets every join: after a reconnect nobody is in any room.
    pub fn reset(&mut self) {
        for room in self.rooms.values_mut() {
            room.left_for_good();
        }
        self.joins.clear();
    }
}

impl Room {
    /// Forgets that the bot and the puppets are in the room, and who else is: the room
    /// no longer has them.
    pub fn left_for_good(&mut self) {
        self.bot_nick = None;
        self.subject_seen = false;
        self.occupants.clear();
        self.puppets.clear();
        self.joining.clear();
    }
}

/// The nicks to try for a name, in order: the name, then with a suffix (XMPP nicks are
/// free text, so a suffix is only needed when the name is taken).
pub fn nick_candidates(name: &str, suffix: &str) -> Vec<String> {
    let clean: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
    let base = if clean.trim().is_empty() {
        "matrix user".to_owned()
    } else {
        clean.trim().to_owned()
    };
    let mut candidates = vec![base.clone(), format!("{base} ({suffix})")];
    candidates.extend((2..=4).map(|n| format!("{base} ({suffix} {n})")));
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nick_candidates_add_a_suffix_and_drop_control_characters() {
        assert_eq!(
            nick_candidates("al\nice ", "matrix")[..3],
            [
                "alice".to_owned(),
                "alice (matrix)".to_owned(),
                "alice (matrix 2)".to_owned()
            ]
        );
        assert_eq!(nick_candidates("\u{7}", "m")[0], "matrix user");
    }

    #[test]
    fn levels_follow_affiliation_then_role() {
        assert_eq!(level_of(&Affiliation::Owner, &Role::Participant), 100);
        assert_eq!(level_of(&Affiliation::Admin, &Role::Moderator), 50);
        assert_eq!(level_of(&Affiliation::Member, &Role::Moderator), 50);
        assert_eq!(level_of(&Affiliation::None, &Role::Participant), 0);
    }
}
