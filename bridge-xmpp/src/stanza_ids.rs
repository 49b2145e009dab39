//! The ids a group chat gives messages (XEP-0359 stanza ids), beside the ids the bridge
//! knows them by.
//!
//! The message map holds a message's own id (the sender's `id`, which corrections
//! name); retractions, replies and reactions in a group chat name the room's stanza id
//! instead. This keeps the recent pairs, both ways, in memory: a room's history, asked
//! for after a restart, fills it again.

use std::collections::{HashMap, VecDeque};

use xmpp_parsers::jid::BareJid;

/// How many pairs are kept.
const CAPACITY: usize = 50_000;

/// Recent stanza ids and message ids, per room.
#[derive(Debug, Default)]
pub struct StanzaIds {
    by_stanza_id: HashMap<(BareJid, String), String>,
    by_message_id: HashMap<(BareJid, String), String>,
    order: VecDeque<(BareJid, String, String)>,
}

impl StanzaIds {
    /// Records that `room` gave the message `message_id` the stanza id `stanza_id`.
    pub fn insert(&mut self, room: &BareJid, stanza_id: &str, message_id: &str) {
        let key = (room.clone(), stanza_id.to_owned());
        if self.by_stanza_id.contains_key(&key) {
            return;
        }
        self.by_stanza_id.insert(key, message_id.to_owned());
        self.by_message_id
            .insert((room.clone(), message_id.to_owned()), stanza_id.to_owned());
        self.order
            .push_back((room.clone(), stanza_id.to_owned(), message_id.to_owned()));
        if self.order.len() > CAPACITY
            && let Some((room, stanza_id, message_id)) = self.order.pop_front()
        {
            self.by_stanza_id.remove(&(room.clone(), stanza_id));
            self.by_message_id.remove(&(room, message_id));
        }
    }

    /// The message id behind an id a stanza names: a stanza id the room gave, or else
    /// the id itself.
    pub fn message_id(&self, room: &BareJid, id: &str) -> String {
        self.by_stanza_id
            .get(&(room.clone(), id.to_owned()))
            .cloned()
            .unwrap_or_else(|| id.to_owned())
    }

    /// The id to name message `message_id` by in `room`: its stanza id if known, else
    /// its own id.
    pub fn stanza_id(&self, room: &BareJid, message_id: &str) -> String {
        self.by_message_id
            .get(&(room.clone(), message_id.to_owned()))
            .cloned()
            .unwrap_or_else(|| message_id.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_map_both_ways_and_old_ones_go() {
        let room = BareJid::new("r@muc.example").unwrap();
        let mut ids = StanzaIds::default();
        ids.insert(&room, "s1", "m1");
        assert_eq!(ids.message_id(&room, "s1"), "m1");
        assert_eq!(ids.stanza_id(&room, "m1"), "s1");
        assert_eq!(ids.message_id(&room, "m1"), "m1");
        for i in 0..CAPACITY {
            ids.insert(&room, &format!("s{i}x"), &format!("m{i}x"));
        }
        assert_eq!(ids.message_id(&room, "s1"), "s1");
        assert_eq!(ids.order.len(), CAPACITY);
    }
}
