//! The message map: which Matrix event a remote message became, and which remote message
//! a Matrix event became, so that edits, redactions, replies and reactions find their
//! target on the other side, and a message handled twice is recognised.

use sqlx::Row;

use super::{Store, StoreError, now_ms};

/// One remote message (or one part of it) and its Matrix event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedEvent {
    /// The remote chat (the portal's remote id).
    pub remote_chat: String,
    /// The remote message id.
    pub remote_id: String,
    /// The part, when one message became several (split lines, text and files).
    pub part: i64,
    /// The Matrix room.
    pub room_id: String,
    /// The Matrix event.
    pub event_id: String,
    /// Who sent it, on the side it came from (a Matrix user id or a remote user id).
    pub sender: String,
}

fn from_row(row: &sqlx::any::AnyRow) -> Result<MappedEvent, StoreError> {
    Ok(MappedEvent {
        remote_chat: row.try_get("remote_chat")?,
        remote_id: row.try_get("remote_id")?,
        part: row.try_get("part")?,
        room_id: row.try_get("room_id")?,
        event_id: row.try_get("event_id")?,
        sender: row.try_get("sender")?,
    })
}

impl Store {
    /// Records a mapping; one already recorded for the same remote part is kept.
    pub async fn map_event(&self, network: &str, mapped: &MappedEvent) -> Result<(), StoreError> {
        insert(self.pool(), network, mapped).await
    }

    /// Records the mappings of one event's parts, all or none.
    pub async fn map_events(
        &self,
        network: &str,
        mapped: &[MappedEvent],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        for mapped in mapped {
            insert(&mut *tx, network, mapped).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The Matrix event of a remote message's part.
    pub async fn event_of_remote(
        &self,
        network: &str,
        remote_chat: &str,
        remote_id: &str,
        part: i64,
    ) -> Result<Option<MappedEvent>, StoreError> {
        let row = sqlx::query(
            "SELECT remote_chat, remote_id, part, room_id, event_id, sender FROM message_map \
             WHERE network = $1 AND remote_chat = $2 AND remote_id = $3 AND part = $4",
        )
        .bind(network)
        .bind(remote_chat)
        .bind(remote_id)
        .bind(part)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The remote parts a Matrix event maps to, in part order (empty if none).
    pub async fn remote_of_event(
        &self,
        network: &str,
        room_id: &str,
        event_id: &str,
    ) -> Result<Vec<MappedEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT remote_chat, remote_id, part, room_id, event_id, sender FROM message_map \
             WHERE network = $1 AND room_id = $2 AND event_id = $3 ORDER BY part",
        )
        .bind(network)
        .bind(room_id)
        .bind(event_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }
}

/// The insert, on the pool or inside a transaction.
pub(super) async fn insert<'e, E>(
    executor: E,
    network: &str,
    mapped: &MappedEvent,
) -> Result<(), StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO message_map (network, remote_chat, remote_id, part, room_id, event_id, \
         sender, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (network, remote_chat, remote_id, part) DO NOTHING",
    )
    .bind(network)
    .bind(&mapped.remote_chat)
    .bind(&mapped.remote_id)
    .bind(mapped.part)
    .bind(&mapped.room_id)
    .bind(&mapped.event_id)
    .bind(&mapped.sender)
    .bind(now_ms())
    .execute(executor)
    .await?;
    Ok(())
}
