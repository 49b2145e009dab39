//! Noticing a transaction the homeserver left unsent.
//!
//! Synapse numbers transactions from one sequence shared by all its appservices, so the
//! numbers one appservice sees grow but skip the others': a gap is normal. A race in its
//! scheduler, though, can leave one of ours unsent after a recovery (88, then 90, never
//! 89): its recoverer sends only the oldest unsent transaction and stops once caught up,
//! while the normal sender has moved on. Refusing the transaction after a gap starts the
//! recoverer again, and it sends our oldest unsent transaction first: the missing one if
//! there is one, else the refused one again. So a transaction after a gap is refused
//! once, and accepted when it is offered again with nothing older before it.
//!
//! Recoveries follow a failure: the bridge was away (it started), answered an error, or
//! its answer was lost (the homeserver sends a transaction again that was stored). Gaps
//! are checked only for [`ARMED_FOR`] after any of these; at other times a homeserver
//! with other busy appservices would cost a refusal, and the recoverer's backoff, for
//! nearly every transaction. Transaction ids are opaque in the spec: ids that are not
//! integers are never checked.

use std::time::{Duration, Instant};

/// How long after a start or a failed answer gaps are checked.
pub const ARMED_FOR: Duration = Duration::from_secs(300);

/// What to do with a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Store it.
    Accept,
    /// Refuse it for now: this one, or another of ours, may be missing before it.
    WaitFor(u64),
}

/// The numbering seen so far.
#[derive(Debug)]
pub struct GapWatch {
    /// The number of the transaction stored last, if it was a number.
    last: Option<u64>,
    /// The transaction refused for a gap, accepted when offered again.
    refused: Option<String>,
    /// Until when gaps are checked.
    armed_until: Instant,
}

impl GapWatch {
    /// Starts, armed, from the id of the transaction stored last.
    pub fn new(last_stored: Option<&str>, now: Instant) -> Self {
        GapWatch {
            last: last_stored.and_then(|id| id.parse().ok()),
            refused: None,
            armed_until: now + ARMED_FOR,
        }
    }

    /// Records a failure the homeserver saw (an error answered, or a transaction sent
    /// again): it recovers next, and the race may follow.
    pub fn failed(&mut self, now: Instant) {
        self.armed_until = now + ARMED_FOR;
    }

    /// Whether to store a transaction with this id now.
    pub fn check(&mut self, txn_id: &str, now: Instant) -> Verdict {
        let (Some(last), Ok(number)) = (self.last, txn_id.parse::<u64>()) else {
            return Verdict::Accept;
        };
        // Repeats, the next one, and a restarted numbering (a new registration) go in.
        if number <= last.saturating_add(1) {
            if number == last.saturating_add(1) {
                // At once, so a batch holding consecutive transactions has no gap.
                self.last = Some(number);
            }
            return Verdict::Accept;
        }
        if now >= self.armed_until {
            return Verdict::Accept;
        }
        if self.refused.as_deref() == Some(txn_id) {
            // Offered again with nothing older: the numbers between were another
            // appservice's.
            self.refused = None;
            return Verdict::Accept;
        }
        // Not a failure that arms the watch again: with a busy neighbour appservice there
        // would always be a next gap, and it would never disarm.
        self.refused = Some(txn_id.to_owned());
        Verdict::WaitFor(last + 1)
    }

    /// Records a newly stored transaction (not a repeat: a repeat of an old transaction
    /// says nothing about the next one). The latest new one is where the numbering is,
    /// even if lower: a new registration numbers from 1 again.
    pub fn stored(&mut self, txn_id: &str) {
        self.last = txn_id.parse::<u64>().ok();
        if self.refused.as_deref() == Some(txn_id) {
            self.refused = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_is_refused_once_and_the_missing_one_comes_first() {
        let start = Instant::now();
        let mut watch = GapWatch::new(Some("88"), start);
        assert_eq!(watch.check("89", start), Verdict::Accept);
        watch.stored("89");
        assert_eq!(watch.check("91", start), Verdict::WaitFor(90));
        // The recoverer sends the missing one, then the refused one.
        assert_eq!(watch.check("90", start), Verdict::Accept);
        watch.stored("90");
        assert_eq!(watch.check("91", start), Verdict::Accept);
        watch.stored("91");
        // A repeat of an old transaction is accepted (and recognised as a repeat, so it is
        // not recorded here).
        assert_eq!(watch.check("50", start), Verdict::Accept);
        assert_eq!(watch.check("92", start), Verdict::Accept);
    }

    #[test]
    fn another_appservices_numbers_cost_one_refusal_while_armed_and_none_after() {
        let start = Instant::now();
        let mut watch = GapWatch::new(Some("22"), start);
        assert_eq!(watch.check("60", start), Verdict::WaitFor(23));
        // Offered again: nothing of ours was older.
        assert_eq!(watch.check("60", start), Verdict::Accept);
        watch.stored("60");
        // Still armed just before the start's window ends; the refusal does not extend it.
        let later = start + ARMED_FOR - Duration::from_secs(1);
        assert_eq!(watch.check("70", later), Verdict::WaitFor(61));
        assert_eq!(watch.check("70", later), Verdict::Accept);
        watch.stored("70");
        // After the window, gaps are the other appservices' and go in.
        let quiet = start + ARMED_FOR;
        assert_eq!(watch.check("80", quiet), Verdict::Accept);
        watch.stored("80");
        // An error answered arms it again.
        watch.failed(quiet);
        assert_eq!(watch.check("90", quiet), Verdict::WaitFor(81));
    }

    #[test]
    fn ids_that_are_not_numbers_and_a_fresh_start_are_never_refused() {
        let now = Instant::now();
        assert_eq!(GapWatch::new(None, now).check("57", now), Verdict::Accept);
        assert_eq!(
            GapWatch::new(Some("txn-a"), now).check("txn-c", now),
            Verdict::Accept
        );
        // A new registration numbers from 1 again.
        let mut watch = GapWatch::new(Some("500"), now);
        assert_eq!(watch.check("1", now), Verdict::Accept);
        watch.stored("1");
        assert_eq!(watch.check("2", now), Verdict::Accept);
        assert_eq!(
            GapWatch::new(Some("7"), now).check("9", now),
            Verdict::WaitFor(8)
        );
    }

    #[test]
    fn consecutive_transactions_in_one_batch_have_no_gap() {
        let now = Instant::now();
        let mut watch = GapWatch::new(Some("4"), now);
        assert_eq!(watch.check("5", now), Verdict::Accept);
        assert_eq!(watch.check("6", now), Verdict::Accept);
        assert_eq!(watch.check("8", now), Verdict::WaitFor(7));
    }
}
