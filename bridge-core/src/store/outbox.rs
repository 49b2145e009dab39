//! The Matrix outbox: remote events accepted for a portal and not yet confirmed by the
//! homeserver, in order per portal. A row leaves the outbox in the same database
//! transaction that records its Matrix event in the message map, so after a crash an
//! event is either still queued or known to be sent, never both and never neither.

use sqlx::Row;

use super::message_map::{self, MappedEvent};
use super::{Store, StoreError, error_text, now_ms};

/// One queued remote event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Queue order over all portals.
    pub seq: i64,
    /// The portal's remote id.
    pub portal: String,
    /// The deterministic transaction id its Matrix send uses.
    pub txn_id: String,
    /// The remote sender's id.
    pub sender: String,
    /// What kind of event (for logs and metrics).
    pub kind: String,
    /// The event, JSON.
    pub content: String,
    /// How often sending it failed so far.
    pub attempts: i64,
}

impl Store {
    /// The highest outbox `seq`, or 0.
    pub async fn max_outbox_seq(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS max_seq FROM matrix_outbox")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get::<i64, _>("max_seq")?)
    }

    /// Queues a row; returns `false` (and changes nothing) if its transaction id is
    /// already queued.
    pub async fn push_outbox(&self, row: &OutboxRow) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO matrix_outbox (seq, room_key, txn_id, sender, event_type, content, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (txn_id) DO NOTHING",
        )
        .bind(row.seq)
        .bind(&row.portal)
        .bind(&row.txn_id)
        .bind(&row.sender)
        .bind(&row.kind)
        .bind(&row.content)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The first 64 rows queued for `portal`, in order.
    pub async fn outbox_head(&self, portal: &str) -> Result<Vec<OutboxRow>, StoreError> {
        // A literal LIMIT: SQLite plans a bound one by its value, and so prepares the
        // statement anew at every use.
        let rows = sqlx::query(
            "SELECT seq, room_key, txn_id, sender, event_type, content, attempts \
             FROM matrix_outbox WHERE room_key = $1 ORDER BY seq LIMIT 64",
        )
        .bind(portal)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(OutboxRow {
                    seq: row.try_get("seq")?,
                    portal: row.try_get("room_key")?,
                    txn_id: row.try_get("txn_id")?,
                    sender: row.try_get("sender")?,
                    kind: row.try_get("event_type")?,
                    content: row.try_get("content")?,
                    attempts: row.try_get("attempts")?,
                })
            })
            .collect()
    }

    /// The portals with queued rows.
    pub async fn outbox_portals(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT DISTINCT room_key FROM matrix_outbox")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| Ok(row.try_get::<String, _>("room_key")?))
            .collect()
    }

    /// Removes a sent (or abandoned) row and records what it became, in one transaction.
    pub async fn complete_outbox(
        &self,
        network: &str,
        seq: i64,
        mapped: &[MappedEvent],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        for mapped in mapped {
            message_map::insert(&mut *tx, network, mapped).await?;
        }
        sqlx::query("DELETE FROM matrix_outbox WHERE seq = $1")
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Counts a failed attempt at sending a row.
    pub async fn outbox_attempt_failed(&self, seq: i64, error: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE matrix_outbox SET attempts = attempts + 1, last_error = $2 WHERE seq = $1",
        )
        .bind(seq)
        .bind(error_text(error))
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
