//! Noticing a transaction the homeserver never sent.
//!
//! Synapse numbers an appservice's transactions 1, 2, 3... and normally sends them in
//! order. A race in its scheduler can leave one unsent after a recovery: its recoverer
//! sends only the oldest unsent transaction and stops once it has caught up, while the
//! normal sender has moved on. Refusing the next transaction starts the recoverer again,
//! which sends the missing one and then the refused one, in order.
//!
//! Transaction ids are opaque in the spec: ids that are not integers are never checked.
//! If the missing id never comes (a homeserver that skips numbers), the later one is
//! accepted after [`GIVE_UP_AFTER`], with a warning, so the stream is never wedged.

use std::time::{Duration, Instant};

/// How long a gap is waited for before the later transaction is accepted anyway.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// What to do with a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Store it.
    Accept,
    /// Refuse it for now: the transaction with this id has not arrived.
    WaitFor(u64),
}

/// The numbering seen so far.
#[derive(Debug, Default)]
pub struct GapWatch {
    /// The number of the transaction stored last, if it was a number.
    last: Option<u64>,
    /// The gap being waited for, and since when.
    waiting: Option<(u64, Instant)>,
}

impl GapWatch {
    /// Starts from the id of the transaction stored last.
    pub fn new(last_stored: Option<&str>) -> Self {
        GapWatch {
            last: last_stored.and_then(|id| id.parse().ok()),
            waiting: None,
        }
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
        let missing = last + 1;
        match self.waiting {
            Some((gap, since)) if gap == missing => {
                if now.duration_since(since) >= GIVE_UP_AFTER {
                    tracing::warn!(
                        missing,
                        "the homeserver never sent this transaction; moving on"
                    );
                    Verdict::Accept
                } else {
                    Verdict::WaitFor(missing)
                }
            }
            _ => {
                self.waiting = Some((missing, now));
                Verdict::WaitFor(missing)
            }
        }
    }

    /// Records a newly stored transaction (not a repeat: a repeat of an old transaction
    /// says nothing about the next one). The latest new one is where the numbering is,
    /// even if lower: a new registration numbers from 1 again.
    pub fn stored(&mut self, txn_id: &str) {
        self.last = txn_id.parse::<u64>().ok();
        if self
            .waiting
            .is_some_and(|(gap, _)| self.last.is_some_and(|last| last >= gap))
        {
            self.waiting = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_is_refused_until_filled() {
        let start = Instant::now();
        let mut watch = GapWatch::new(Some("88"));
        assert_eq!(watch.check("89", start), Verdict::Accept);
        watch.stored("89");
        assert_eq!(watch.check("91", start), Verdict::WaitFor(90));
        assert_eq!(
            watch.check("91", start + Duration::from_secs(5)),
            Verdict::WaitFor(90)
        );
        assert_eq!(
            watch.check("90", start + Duration::from_secs(6)),
            Verdict::Accept
        );
        watch.stored("90");
        assert_eq!(
            watch.check("91", start + Duration::from_secs(6)),
            Verdict::Accept
        );
        watch.stored("91");
        // A repeat of an old transaction is accepted (and recognised as a repeat, so it is
        // not recorded here).
        assert_eq!(watch.check("50", start), Verdict::Accept);
        assert_eq!(watch.check("92", start), Verdict::Accept);
    }

    #[test]
    fn a_gap_that_never_fills_is_given_up_on() {
        let start = Instant::now();
        let mut watch = GapWatch::new(Some("10"));
        assert_eq!(watch.check("12", start), Verdict::WaitFor(11));
        assert_eq!(watch.check("12", start + GIVE_UP_AFTER), Verdict::Accept);
        watch.stored("12");
        assert_eq!(watch.check("13", start + GIVE_UP_AFTER), Verdict::Accept);
    }

    #[test]
    fn ids_that_are_not_numbers_and_a_fresh_start_are_never_refused() {
        let now = Instant::now();
        assert_eq!(GapWatch::new(None).check("57", now), Verdict::Accept);
        assert_eq!(
            GapWatch::new(Some("txn-a")).check("txn-c", now),
            Verdict::Accept
        );
        // A new registration numbers from 1 again.
        let mut watch = GapWatch::new(Some("500"));
        assert_eq!(watch.check("1", now), Verdict::Accept);
        watch.stored("1");
        assert_eq!(watch.check("2", now), Verdict::Accept);
        assert_eq!(
            GapWatch::new(Some("7")).check("9", now),
            Verdict::WaitFor(8)
        );
    }

    #[test]
    fn consecutive_transactions_in_one_batch_have_no_gap() {
        let now = Instant::now();
        let mut watch = GapWatch::new(Some("4"));
        assert_eq!(watch.check("5", now), Verdict::Accept);
        assert_eq!(watch.check("6", now), Verdict::Accept);
        assert_eq!(watch.check("8", now), Verdict::WaitFor(7));
    }
}
