//! Ghosts: remote users as Matrix users, with the profile last set on Matrix so an
//! unchanged one is not sent again (and an unchanged avatar not uploaded again).

use sqlx::Row;

use super::{Store, StoreError};

/// A ghost as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GhostRow {
    /// The connector's id of the remote user.
    pub remote_id: String,
    /// The Matrix user id.
    pub user_id: String,
    /// The display name last set.
    pub display_name: Option<String>,
    /// Where the avatar last set came from (the connector's source, a URL say).
    pub avatar_source: Option<String>,
    /// The `mxc://` URI of that avatar.
    pub avatar_mxc: Option<String>,
    /// Whether the user is registered on the homeserver.
    pub registered: bool,
    /// Connector-owned data, JSON.
    pub metadata: String,
}

impl Store {
    /// The ghost of `remote_id` on `network`.
    pub async fn ghost(
        &self,
        network: &str,
        remote_id: &str,
    ) -> Result<Option<GhostRow>, StoreError> {
        let row = sqlx::query(
            "SELECT remote_id, user_id, display_name, avatar_source, avatar_mxc, registered, \
             metadata FROM ghosts WHERE network = $1 AND remote_id = $2",
        )
        .bind(network)
        .bind(remote_id)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(GhostRow {
            remote_id: row.try_get("remote_id")?,
            user_id: row.try_get("user_id")?,
            display_name: row.try_get("display_name")?,
            avatar_source: row.try_get("avatar_source")?,
            avatar_mxc: row.try_get("avatar_mxc")?,
            registered: row.try_get::<i64, _>("registered")? != 0,
            metadata: row.try_get("metadata")?,
        }))
    }

    /// Saves a ghost, inserting or replacing its row.
    pub async fn save_ghost(&self, network: &str, ghost: &GhostRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO ghosts (network, remote_id, user_id, display_name, avatar_source, \
             avatar_mxc, registered, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (network, remote_id) DO UPDATE SET user_id = $3, display_name = $4, \
             avatar_source = $5, avatar_mxc = $6, registered = $7, metadata = $8",
        )
        .bind(network)
        .bind(&ghost.remote_id)
        .bind(&ghost.user_id)
        .bind(ghost.display_name.as_deref())
        .bind(ghost.avatar_source.as_deref())
        .bind(ghost.avatar_mxc.as_deref())
        .bind(i64::from(ghost.registered))
        .bind(&ghost.metadata)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
