//! Small named values a connector keeps between runs (a history cursor, a server's
//! capabilities), and the rooms where the bot takes commands without a prefix.

use sqlx::Row;

use super::{Store, StoreError, now_ms};

impl Store {
    /// The value stored under `key` for `network`.
    pub async fn connector_value(
        &self,
        network: &str,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM connector_state WHERE network = $1 AND key = $2")
            .bind(network)
            .bind(key)
            .fetch_optional(self.pool())
            .await?;
        row.map(|row| Ok(row.try_get::<String, _>("value")?))
            .transpose()
    }

    /// Stores `value` under `key` for `network`, replacing what was there.
    pub async fn set_connector_value(
        &self,
        network: &str,
        key: &str,
        value: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO connector_state (network, key, value, updated_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (network, key) DO UPDATE SET value = $3, updated_at = $4",
        )
        .bind(network)
        .bind(key)
        .bind(value)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records `room_id` as `user_id`'s management room with the bot.
    pub async fn add_management_room(
        &self,
        room_id: &str,
        user_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO management_rooms (room_id, user_id, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (room_id) DO NOTHING",
        )
        .bind(room_id)
        .bind(user_id)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The user whose management room `room_id` is, if it is one.
    pub async fn management_room_owner(&self, room_id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT user_id FROM management_rooms WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(self.pool())
            .await?;
        row.map(|row| Ok(row.try_get::<String, _>("user_id")?))
            .transpose()
    }

    /// Forgets a management room (the bot left it).
    pub async fn remove_management_room(&self, room_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM management_rooms WHERE room_id = $1")
            .bind(room_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
