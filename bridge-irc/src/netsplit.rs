//! Netsplits: when a link between IRC servers breaks, everyone behind it QUITs at once,
//! and most come back minutes later when it heals. Mirrored one by one, that is a flood
//! of leaves and joins in every portal. Instead, quits that look like a split are held
//! for a grace period: a user who rejoins in time never left as far as Matrix knows, and
//! only those still gone when it ends are shown leaving.
//!
//! A quit is a split's when it comes inside an IRCv3 `netsplit` batch, or when its reason
//! is the classic pair of server names (`hub.example.net leaf.example.net`, or `*.net
//! *.split` where servers hide their names).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

/// A held quit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldQuit {
    /// The nick as written.
    pub nick: String,
    /// The channels (folded) it left and has not rejoined.
    pub channels: Vec<String>,
    /// The quit reason.
    pub reason: String,
    /// The server time of the quit, if given.
    pub timestamp: Option<i64>,
    at: Instant,
}

/// The quits held while splits heal, for one network.
#[derive(Debug)]
pub struct Splits {
    grace: Duration,
    /// By folded nick.
    held: HashMap<String, HeldQuit>,
    /// Open `netsplit` batches by id.
    batches: HashSet<String>,
}

impl Splits {
    /// Holds split quits for `grace`.
    pub fn new(grace: Duration) -> Splits {
        Splits {
            grace,
            held: HashMap::new(),
            batches: HashSet::new(),
        }
    }

    /// Notes a BATCH line (`+id type ...` or `-id`).
    pub fn batch(&mut self, reference: &str, kind: &str) {
        if let Some(id) = reference.strip_prefix('+') {
            if kind == "netsplit" {
                self.batches.insert(id.to_owned());
            }
        } else if let Some(id) = reference.strip_prefix('-') {
            self.batches.remove(id);
        }
    }

    /// Whether a QUIT with `reason`, in batch `batch` (its `batch` tag), is a split's.
    pub fn is_split(&self, reason: &str, batch: Option<&str>) -> bool {
        if batch.is_some_and(|id| self.batches.contains(id)) {
            return true;
        }
        let mut words = reason.split(' ');
        match (words.next(), words.next(), words.next()) {
            (Some(a), Some(b), None) => is_server_name(a) && is_server_name(b) && a != b,
            _ => false,
        }
    }

    /// Holds the quit of `folded` (`nick` as written) from `channels`.
    pub fn hold(
        &mut self,
        folded: String,
        nick: &str,
        channels: Vec<String>,
        reason: &str,
        timestamp: Option<i64>,
    ) {
        if channels.is_empty() {
            return;
        }
        self.held.insert(
            folded,
            HeldQuit {
                nick: nick.to_owned(),
                channels,
                reason: reason.to_owned(),
                timestamp,
                at: Instant::now(),
            },
        );
    }

    /// A JOIN of `folded` to `channel`: true if it is back from a held quit there (so the
    /// join is not shown either).
    pub fn rejoined(&mut self, folded: &str, channel: &str) -> bool {
        let Some(held) = self.held.get_mut(folded) else {
            return false;
        };
        let Some(index) = held.channels.iter().position(|c| c == channel) else {
            return false;
        };
        held.channels.remove(index);
        if held.channels.is_empty() {
            self.held.remove(folded);
        }
        true
    }

    /// Whether `folded` has a held quit (its channels are not its own any more).
    pub fn is_held(&self, folded: &str) -> bool {
        self.held.contains_key(folded)
    }

    /// When the next held quit is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.held.values().map(|held| held.at + self.grace).min()
    }

    /// The held quits due by `now`, no longer held; to be shown as leaves.
    pub fn due(&mut self, now: Instant) -> Vec<HeldQuit> {
        let grace = self.grace;
        let due: Vec<String> = self
            .held
            .iter()
            .filter(|(_, held)| held.at + grace <= now)
            .map(|(nick, _)| nick.clone())
            .collect();
        let mut quits: Vec<HeldQuit> = due
            .iter()
            .filter_map(|nick| self.held.remove(nick))
            .collect();
        quits.sort_by_key(|held| held.at);
        quits
    }

    /// Every held quit, no longer held (the connection ended).
    pub fn drain(&mut self) -> Vec<HeldQuit> {
        self.batches.clear();
        let mut quits: Vec<HeldQuit> = self.held.drain().map(|(_, held)| held).collect();
        quits.sort_by_key(|held| held.at);
        quits
    }
}

/// A server name as split reasons give it: dotted labels, `*` allowed (hidden names).
fn is_server_name(word: &str) -> bool {
    word.contains('.')
        && !word.starts_with('.')
        && !word.ends_with('.')
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '*' | '_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_reasons_are_recognised() {
        let mut splits = Splits::new(Duration::from_secs(60));
        assert!(splits.is_split("hub.example.net leaf.example.net", None));
        assert!(splits.is_split("*.net *.split", None));
        for reason in [
            "Quit: bye",
            "bye now",
            "a.b a.b",
            "hub.net",
            "a.b c.d e.f",
            "",
        ] {
            assert!(!splits.is_split(reason, None), "{reason}");
        }
        splits.batch("+x1", "netsplit");
        assert!(splits.is_split("Quit: whatever", Some("x1")));
        splits.batch("-x1", "");
        assert!(!splits.is_split("Quit: whatever", Some("x1")));
    }

    #[test]
    fn a_rejoin_in_time_cancels_the_quit() {
        let mut splits = Splits::new(Duration::from_secs(60));
        let channels = vec!["#a".to_owned(), "#b".to_owned()];
        splits.hold("dave".to_owned(), "Dave", channels, "x.net y.net", None);
        assert!(splits.is_held("dave"));
        assert!(splits.rejoined("dave", "#a"));
        assert!(!splits.rejoined("dave", "#a"), "only once");
        assert!(!splits.rejoined("erin", "#a"));
        let due = splits.due(Instant::now() + Duration::from_secs(61));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].channels, ["#b"], "only the channel not rejoined");
        assert!(splits.next_due().is_none());
    }

    #[test]
    fn quits_come_due_after_the_grace() {
        let mut splits = Splits::new(Duration::from_secs(60));
        splits.hold("a".to_owned(), "a", vec!["#c".to_owned()], "x.y z.w", None);
        assert!(splits.due(Instant::now()).is_empty());
        assert!(splits.next_due().is_some());
        assert_eq!(splits.drain().len(), 1);
        assert!(!splits.is_held("a"));
    }
}
