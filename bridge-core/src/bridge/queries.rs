//! The homeserver's questions, answered for the connector: an alias in the bridge's
//! namespace is a dynamic portal (the room is created before the answer, as the spec
//! asks), a user in it a ghost (registered before the answer).

use std::sync::Arc;

use async_trait::async_trait;
use ruma::{RoomAliasId, UserId};

use super::handle::Shared;
use crate::appservice::{QueryError, QueryHandler};

/// The bridge's [`QueryHandler`].
#[derive(Debug)]
pub(crate) struct BridgeQueries {
    pub(crate) shared: Arc<Shared>,
}

#[async_trait]
impl QueryHandler for BridgeQueries {
    async fn query_room_alias(&self, alias: &RoomAliasId) -> Result<bool, QueryError> {
        let shared = &self.shared;
        if !shared.wait_started().await {
            return Err(QueryError("the bridge is not running".to_owned()));
        }
        if alias.server_name() != shared.domain {
            return Ok(false);
        }
        let Some(suffix) = alias.alias().strip_prefix(&shared.alias_prefix) else {
            return Ok(false);
        };
        let failed = |error: &dyn std::fmt::Display| QueryError(error.to_string());
        let Some(mut info) = shared
            .connector
            .resolve_portal(suffix)
            .await
            .map_err(|e| failed(&e))?
        else {
            return Ok(false);
        };
        // The room must get exactly the alias asked about.
        info.alias_suffix = Some(suffix.to_owned());
        let portal = shared.create_portal(&info).await.map_err(|e| failed(&e))?;
        // The portal may exist under another spelling of its alias (`#Rust` for `#rust`
        // on a case-insensitive network): this alias then leads to that same room, never
        // to a second room for the same remote chat.
        shared
            .matrix
            .bot()
            .create_alias(alias, &portal.room_id)
            .await
            .map_err(|e| failed(&e))?;
        Ok(true)
    }

    async fn query_user(&self, user_id: &UserId) -> Result<bool, QueryError> {
        let shared = &self.shared;
        if !shared.wait_started().await {
            return Err(QueryError("the bridge is not running".to_owned()));
        }
        let Some(id) = shared.ghost_id_of(user_id) else {
            return Ok(false);
        };
        let failed = |error: &dyn std::fmt::Display| QueryError(error.to_string());
        let Some(info) = shared
            .connector
            .resolve_ghost(&id)
            .await
            .map_err(|e| failed(&e))?
        else {
            return Ok(false);
        };
        if info.id != id {
            return Ok(false);
        }
        shared.ensure_ghost(&info).await.map_err(|e| failed(&e))?;
        Ok(true)
    }
}
