//! What the homeserver pushed, as stored rows: written in batches before a transaction is
//! acknowledged, read back at start for whatever was not yet handled, marked when handled.

use std::sync::Arc;

use sqlx::Row;

use super::{
    Store, StoreError, column_text, error_text, fixed_size_chunks, now_ms, values_placeholders,
};

/// What kind of data a row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A room timeline event (message, state, redaction...).
    Timeline,
    /// Ephemeral data: typing, receipts, presence.
    Ephemeral,
    /// A to-device message (MSC2409).
    ToDevice,
    /// MSC3202 device lists and key counts.
    DeviceData,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            EventKind::Timeline => "timeline",
            EventKind::Ephemeral => "ephemeral",
            EventKind::ToDevice => "to_device",
            EventKind::DeviceData => "device_data",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        Ok(match text {
            "timeline" => EventKind::Timeline,
            "ephemeral" => EventKind::Ephemeral,
            "to_device" => EventKind::ToDevice,
            "device_data" => EventKind::DeviceData,
            other => return Err(StoreError::Corrupt(format!("event kind {other:?}"))),
        })
    }
}

/// One row to store.
#[derive(Debug, Clone)]
pub struct NewInboundRow {
    /// The homeserver transaction it came in.
    pub txn_id: String,
    /// What it is.
    pub kind: EventKind,
    /// The event id (timeline events only): a second copy of an event is dropped.
    pub event_id: Option<String>,
    /// The room it belongs to, if any: rows are handled in order per room.
    pub room_id: Option<String>,
    /// The event or data type.
    pub event_type: String,
    /// The JSON as received.
    pub content: String,
    /// Why the row cannot be handled (a malformed event): it is stored as already
    /// handled, with this as its error, so it is on record and holds nothing up.
    pub rejected: Option<String>,
}

/// A stored row, as handed to the bridge.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Arrival order over all rows.
    pub seq: i64,
    /// What it is.
    pub kind: EventKind,
    /// The event id (timeline events).
    pub event_id: Option<String>,
    /// The room, if any.
    pub room_id: Option<String>,
    /// The event or data type.
    pub event_type: String,
    /// The JSON as received.
    pub content: Arc<str>,
    /// When the transaction arrived (ms since the epoch).
    pub received_at: i64,
    /// True when the event may have been handed over before: it was pending when the
    /// process started, so a handler that finished just before a crash sees it again.
    pub redelivered: bool,
}

/// What a stored batch came to, per transaction, in the order given.
#[derive(Debug)]
pub struct BatchOutcome {
    /// Per transaction: `true` if new, `false` if its txn id was stored before.
    pub new_transactions: Vec<bool>,
    /// The rows actually inserted (not duplicates), in arrival order.
    pub stored: Vec<StoredEvent>,
}

impl Store {
    /// The highest `seq` stored, or 0.
    pub async fn max_inbound_seq(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS max_seq FROM inbound_events")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get::<i64, _>("max_seq")?)
    }

    /// Stores the transactions of one batch in one database transaction: a transaction id
    /// seen before (or earlier in the batch) is skipped whole, an event id seen before is
    /// skipped, and every other row gets the next `seq` from `next_seq`. Nothing is
    /// visible unless everything commits. `next_seq` advances even when the commit fails:
    /// a commit can fail after the database applied it (the connection dropped), and the
    /// next batch must not reuse those numbers; gaps are harmless.
    pub async fn store_transactions(
        &self,
        transactions: &[(String, Vec<NewInboundRow>)],
        next_seq: &mut i64,
    ) -> Result<BatchOutcome, StoreError> {
        let received_at = now_ms();
        let mut seq = *next_seq;
        let mut tx = self.pool().begin().await?;
        let mut new_transactions = Vec::with_capacity(transactions.len());
        let mut candidates: Vec<(i64, &NewInboundRow)> = Vec::new();
        for (txn_id, rows) in transactions {
            let inserted = sqlx::query(
                "INSERT INTO appservice_transactions (txn_id, received_at) VALUES ($1, $2) \
                 ON CONFLICT (txn_id) DO NOTHING",
            )
            .bind(column_text(txn_id).as_ref())
            .bind(received_at)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            new_transactions.push(inserted);
            if inserted {
                for row in rows {
                    seq += 1;
                    candidates.push((seq, row));
                }
            }
        }

        *next_seq = seq;
        let mut inserted_seqs = std::collections::HashSet::new();
        for chunk in fixed_size_chunks(&candidates) {
            let sql = format!(
                "INSERT INTO inbound_events (seq, txn_id, kind, event_id, room_id, \
                 event_type, content, received_at, handled_at, error) \
                 VALUES {} ON CONFLICT (event_id) DO NOTHING RETURNING seq",
                values_placeholders(chunk.len(), 10)
            );
            // Only numbered placeholders are spliced in; every value is bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (seq, row) in chunk {
                let rejected_at = row.rejected.as_ref().map(|_| received_at);
                query = query
                    .bind(*seq)
                    .bind(column_text(&row.txn_id).into_owned())
                    .bind(row.kind.as_str())
                    .bind(row.event_id.as_deref().map(|t| column_text(t).into_owned()))
                    .bind(row.room_id.as_deref().map(|t| column_text(t).into_owned()))
                    .bind(column_text(&row.event_type).into_owned())
                    .bind(&row.content)
                    .bind(received_at)
                    .bind(rejected_at)
                    .bind(row.rejected.as_deref().map(error_text));
            }
            for returned in query.fetch_all(&mut *tx).await? {
                inserted_seqs.insert(returned.try_get::<i64, _>("seq")?);
            }
        }
        tx.commit().await?;

        let stored = candidates
            .into_iter()
            .filter(|(seq, row)| inserted_seqs.contains(seq) && row.rejected.is_none())
            .map(|(seq, row)| StoredEvent {
                seq,
                kind: row.kind,
                event_id: row.event_id.clone(),
                room_id: row.room_id.clone(),
                event_type: row.event_type.clone(),
                content: Arc::from(row.content.as_str()),
                received_at,
                redelivered: false,
            })
            .collect();
        Ok(BatchOutcome {
            new_transactions,
            stored,
        })
    }

    /// The id of the transaction received last, if any.
    pub async fn last_transaction_id(&self) -> Result<Option<String>, StoreError> {
        // Several transactions can share the last millisecond: of those, the highest
        // number is the last (homeservers number them in order), else any.
        let rows = sqlx::query(
            "SELECT txn_id FROM appservice_transactions \
             WHERE received_at = (SELECT MAX(received_at) FROM appservice_transactions)",
        )
        .fetch_all(self.pool())
        .await?;
        let ids = rows
            .iter()
            .map(|row| row.try_get::<String, _>("txn_id"))
            .collect::<Result<Vec<String>, _>>()?;
        Ok(ids
            .into_iter()
            .max_by_key(|id| id.parse::<u64>().map_or((false, 0), |n| (true, n))))
    }

    /// Every stored row not yet handled, in arrival order, flagged as redelivered.
    pub async fn pending_events(&self) -> Result<Vec<StoredEvent>, StoreError> {
        self.pending_events_after(0, i64::MAX).await
    }

    /// How many stored rows are not yet handled.
    pub async fn count_pending(&self) -> Result<i64, StoreError> {
        let row =
            sqlx::query("SELECT COUNT(*) AS pending FROM inbound_events WHERE handled_at IS NULL")
                .fetch_one(self.pool())
                .await?;
        Ok(row.try_get("pending")?)
    }

    /// At most `limit` stored rows not yet handled whose `seq` is above `after`, in
    /// arrival order, flagged as redelivered.
    pub async fn pending_events_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, kind, event_id, room_id, event_type, content, received_at \
             FROM inbound_events WHERE handled_at IS NULL AND seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(StoredEvent {
                    seq: row.try_get("seq")?,
                    kind: EventKind::parse(&row.try_get::<String, _>("kind")?)?,
                    event_id: row.try_get("event_id")?,
                    room_id: row.try_get("room_id")?,
                    event_type: row.try_get("event_type")?,
                    content: Arc::from(row.try_get::<String, _>("content")?),
                    received_at: row.try_get("received_at")?,
                    redelivered: true,
                })
            })
            .collect()
    }

    /// Marks rows handled, with the error of those that failed for good.
    pub async fn mark_handled(&self, done: &[(i64, Option<String>)]) -> Result<(), StoreError> {
        let handled_at = now_ms();
        let mut tx = self.pool().begin().await?;
        let succeeded: Vec<i64> = done
            .iter()
            .filter(|(_, error)| error.is_none())
            .map(|(seq, _)| *seq)
            .collect();
        for chunk in fixed_size_chunks(&succeeded) {
            let list = (2..chunk.len() + 2)
                .map(|n| format!("${n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!("UPDATE inbound_events SET handled_at = $1 WHERE seq IN ({list})");
            // Only numbered placeholders are spliced in; every value is bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(handled_at);
            for seq in chunk {
                query = query.bind(*seq);
            }
            query.execute(&mut *tx).await?;
        }
        for (seq, error) in done.iter().filter(|(_, error)| error.is_some()) {
            sqlx::query("UPDATE inbound_events SET handled_at = $1, error = $2 WHERE seq = $3")
                .bind(handled_at)
                .bind(error.as_deref().map(error_text))
                .bind(*seq)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Forgets transactions and handled rows received before `before_ms`: past that
    /// horizon a repeat of them is no longer recognised.
    pub async fn prune_inbound(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool().begin().await?;
        let events = sqlx::query(
            "DELETE FROM inbound_events WHERE handled_at IS NOT NULL AND received_at < $1",
        )
        .bind(before_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM appservice_transactions WHERE received_at < $1")
            .bind(before_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(events)
    }
}
