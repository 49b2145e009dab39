//! Portal rooms: one remote chat and its Matrix room. A portal is known (its row exists)
//! before its room does: `room_id` stays empty while the room is being created, and
//! messages queued for it wait.

use sqlx::Row;

use super::{Store, StoreError, now_ms};

/// A portal as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalRow {
    /// The connector's id of the remote chat (a channel, a group chat).
    pub remote_id: String,
    /// The Matrix room, once created.
    pub room_id: Option<String>,
    /// The full alias, if the portal has one.
    pub alias: Option<String>,
    /// The room name last set.
    pub name: Option<String>,
    /// The topic last set.
    pub topic: Option<String>,
    /// The avatar's `mxc://` URI last set.
    pub avatar_url: Option<String>,
    /// Where the avatar comes from (the connector's source).
    pub avatar_source: Option<String>,
    /// Whether anyone may join the room and it is listed in the directory.
    pub public: bool,
    /// Connector-owned data, JSON.
    pub metadata: String,
    /// For a direct chat: the Matrix user in it.
    pub direct_user: Option<String>,
    /// For a direct chat: the remote user in it (their remote id).
    pub direct_ghost: Option<String>,
}

impl PortalRow {
    /// The row of a portal whose room exists already (a linked room, a direct chat the
    /// Matrix user made): the room keeps its own alias, name, topic and avatar.
    pub fn with_room(remote_id: &str, room_id: &str, metadata: String) -> PortalRow {
        PortalRow {
            remote_id: remote_id.to_owned(),
            room_id: Some(room_id.to_owned()),
            alias: None,
            name: None,
            topic: None,
            avatar_url: None,
            avatar_source: None,
            public: false,
            metadata,
            direct_user: None,
            direct_ghost: None,
        }
    }
}

const COLUMNS: &str = "remote_id, room_id, alias, name, topic, avatar_url, avatar_source, \
     public, metadata, direct_user, direct_ghost";

fn from_row(row: &sqlx::any::AnyRow) -> Result<PortalRow, StoreError> {
    Ok(PortalRow {
        remote_id: row.try_get("remote_id")?,
        room_id: row.try_get("room_id")?,
        alias: row.try_get("alias")?,
        name: row.try_get("name")?,
        topic: row.try_get("topic")?,
        avatar_url: row.try_get("avatar_url")?,
        avatar_source: row.try_get("avatar_source")?,
        public: row.try_get::<i64, _>("public")? != 0,
        metadata: row.try_get("metadata")?,
        direct_user: row.try_get("direct_user")?,
        direct_ghost: row.try_get("direct_ghost")?,
    })
}

impl Store {
    /// The portal of `remote_id` on `network`.
    pub async fn portal(
        &self,
        network: &str,
        remote_id: &str,
    ) -> Result<Option<PortalRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM portals WHERE network = $1 AND remote_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(network)
            .bind(remote_id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The portal whose Matrix room is `room_id`.
    pub async fn portal_by_room(
        &self,
        network: &str,
        room_id: &str,
    ) -> Result<Option<PortalRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM portals WHERE network = $1 AND room_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(network)
            .bind(room_id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Every portal of `network` with a room.
    pub async fn portals_with_rooms(&self, network: &str) -> Result<Vec<PortalRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM portals WHERE network = $1 AND room_id IS NOT NULL \
             ORDER BY remote_id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(network)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Records a portal without a room yet; an existing row is left as it is.
    pub async fn insert_portal(&self, network: &str, portal: &PortalRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO portals (network, remote_id, room_id, alias, name, topic, avatar_url, \
             metadata, created_at, avatar_source, public, direct_user, direct_ghost) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (network, remote_id) DO NOTHING",
        )
        .bind(network)
        .bind(&portal.remote_id)
        .bind(portal.room_id.as_deref())
        .bind(portal.alias.as_deref())
        .bind(portal.name.as_deref())
        .bind(portal.topic.as_deref())
        .bind(portal.avatar_url.as_deref())
        .bind(&portal.metadata)
        .bind(now_ms())
        .bind(portal.avatar_source.as_deref())
        .bind(i64::from(portal.public))
        .bind(portal.direct_user.as_deref())
        .bind(portal.direct_ghost.as_deref())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Saves every column of an existing portal.
    pub async fn update_portal(&self, network: &str, portal: &PortalRow) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE portals SET room_id = $3, alias = $4, name = $5, topic = $6, \
             avatar_url = $7, metadata = $8, avatar_source = $9, public = $10, \
             direct_user = $11, direct_ghost = $12 \
             WHERE network = $1 AND remote_id = $2",
        )
        .bind(network)
        .bind(&portal.remote_id)
        .bind(portal.room_id.as_deref())
        .bind(portal.alias.as_deref())
        .bind(portal.name.as_deref())
        .bind(portal.topic.as_deref())
        .bind(portal.avatar_url.as_deref())
        .bind(&portal.metadata)
        .bind(portal.avatar_source.as_deref())
        .bind(i64::from(portal.public))
        .bind(portal.direct_user.as_deref())
        .bind(portal.direct_ghost.as_deref())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Forgets a portal (its room stays on Matrix).
    pub async fn delete_portal(&self, network: &str, remote_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM portals WHERE network = $1 AND remote_id = $2")
            .bind(network)
            .bind(remote_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
