//! The homeserver's questions to the bridge: does this user or room alias exist
//! (`/users/{userId}`, `/rooms/{roomAlias}`), and the third-party lookups
//! (`/thirdparty/...`). The answers come from a [`QueryHandler`] the connector layer
//! provides; this module only parses the question and shapes the answer.

use std::collections::BTreeMap;
use std::future::Future;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use ruma::api::appservice::thirdparty::get_protocol::v1::AppserviceProtocol;
use ruma::thirdparty::{Location, User};
use ruma::{OwnedRoomAliasId, OwnedUserId, RoomAliasId, UserId};
use serde_json::json;

use super::AppState;
use super::error::MatrixError;
use super::extract::{PathParam, query_pairs, query_param};

/// Why a query could not be answered; the homeserver is told 500 `M_UNKNOWN`.
#[derive(Debug, thiserror::Error)]
#[error("the query could not be answered: {0}")]
pub struct QueryError(pub String);

/// Answers the homeserver's queries. Every method has a default answering "not found",
/// so a bridge implements only what it supports.
///
/// The user and alias queries may create the entity before answering (the spec asks the
/// bridge to create it through the client-server API before saying it exists); they run
/// to completion even if the homeserver hangs up.
#[async_trait::async_trait]
pub trait QueryHandler: Send + Sync + 'static {
    /// Whether `user_id` (in the bridge's namespace) exists now: `true` answers `200 {}`,
    /// `false` answers 404 `M_NOT_FOUND`.
    async fn query_user(&self, user_id: &UserId) -> Result<bool, QueryError> {
        let _ = user_id;
        Ok(false)
    }

    /// Whether the room alias `alias` exists now (its room created and the alias set):
    /// `true` answers `200 {}`, `false` answers 404 `M_NOT_FOUND`.
    async fn query_room_alias(&self, alias: &RoomAliasId) -> Result<bool, QueryError> {
        let _ = alias;
        Ok(false)
    }

    /// The metadata of a third-party protocol, or `None` (404 `M_NOT_FOUND`) if the
    /// bridge does not provide it.
    async fn thirdparty_protocol(
        &self,
        protocol: &str,
    ) -> Result<Option<AppserviceProtocol>, QueryError> {
        let _ = protocol;
        Ok(None)
    }

    /// The Matrix users of the third-party users matching `fields` (the query parameters
    /// of the request). An empty list answers 404 `M_NOT_FOUND`.
    async fn thirdparty_users(
        &self,
        protocol: &str,
        fields: BTreeMap<String, String>,
    ) -> Result<Vec<User>, QueryError> {
        let _ = (protocol, fields);
        Ok(Vec::new())
    }

    /// The portal rooms of the third-party locations matching `fields`. An empty list
    /// answers 404 `M_NOT_FOUND`.
    async fn thirdparty_locations(
        &self,
        protocol: &str,
        fields: BTreeMap<String, String>,
    ) -> Result<Vec<Location>, QueryError> {
        let _ = (protocol, fields);
        Ok(Vec::new())
    }

    /// The third-party users behind a Matrix user. An empty list answers 404
    /// `M_NOT_FOUND`.
    async fn thirdparty_user_by_id(&self, user_id: &UserId) -> Result<Vec<User>, QueryError> {
        let _ = user_id;
        Ok(Vec::new())
    }

    /// The third-party locations behind a Matrix room alias. An empty list answers 404
    /// `M_NOT_FOUND`.
    async fn thirdparty_location_by_alias(
        &self,
        alias: &RoomAliasId,
    ) -> Result<Vec<Location>, QueryError> {
        let _ = alias;
        Ok(Vec::new())
    }
}

/// A [`QueryHandler`] that knows nothing: every query answers "not found".
#[derive(Debug, Clone, Copy, Default)]
pub struct NoQueries;

impl QueryHandler for NoQueries {}

/// `GET /_matrix/app/v1/users/{userId}`.
pub(crate) async fn get_user(
    State(state): State<AppState>,
    PathParam(user_id): PathParam,
) -> Result<Response, MatrixError> {
    let user_id = parse_user_id(user_id)?;
    let queries = state.queries.clone();
    let id = user_id.clone();
    let exists = detached(async move { queries.query_user(&id).await }).await;
    existence(exists, || format!("no such user: {user_id}"))
}

/// `GET /_matrix/app/v1/rooms/{roomAlias}`.
pub(crate) async fn get_room_alias(
    State(state): State<AppState>,
    PathParam(alias): PathParam,
) -> Result<Response, MatrixError> {
    let alias = parse_alias(alias)?;
    let queries = state.queries.clone();
    let id = alias.clone();
    let exists = detached(async move { queries.query_room_alias(&id).await }).await;
    existence(exists, || format!("no such room alias: {alias}"))
}

/// `GET /_matrix/app/v1/thirdparty/protocol/{protocol}`.
pub(crate) async fn get_protocol(
    State(state): State<AppState>,
    PathParam(protocol): PathParam,
) -> Result<Response, MatrixError> {
    match state.queries.thirdparty_protocol(&protocol).await {
        Ok(Some(metadata)) => Ok(Json(metadata).into_response()),
        Ok(None) => Err(MatrixError::not_found(format!(
            "no such protocol: {protocol}"
        ))),
        Err(error) => Err(failed("thirdparty protocol", &error)),
    }
}

/// `GET /_matrix/app/v1/thirdparty/user/{protocol}`.
pub(crate) async fn get_users_for_protocol(
    State(state): State<AppState>,
    PathParam(protocol): PathParam,
    RawQuery(query): RawQuery,
) -> Result<Response, MatrixError> {
    let fields = fields(query.as_deref());
    let users = state.queries.thirdparty_users(&protocol, fields).await;
    list(users, "thirdparty users", "no third-party user matches")
}

/// `GET /_matrix/app/v1/thirdparty/location/{protocol}`.
pub(crate) async fn get_locations_for_protocol(
    State(state): State<AppState>,
    PathParam(protocol): PathParam,
    RawQuery(query): RawQuery,
) -> Result<Response, MatrixError> {
    let fields = fields(query.as_deref());
    let locations = state.queries.thirdparty_locations(&protocol, fields).await;
    list(
        locations,
        "thirdparty locations",
        "no third-party location matches",
    )
}

/// `GET /_matrix/app/v1/thirdparty/user?userid=…`.
pub(crate) async fn get_user_by_id(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, MatrixError> {
    let user_id = query_param(query.as_deref(), "userid")
        .ok_or_else(|| MatrixError::missing_param("userid"))?;
    let user_id = parse_user_id(user_id)?;
    let users = state.queries.thirdparty_user_by_id(&user_id).await;
    list(
        users,
        "thirdparty user by id",
        "no third-party user for this Matrix user",
    )
}

/// `GET /_matrix/app/v1/thirdparty/location?alias=…`.
pub(crate) async fn get_location_by_alias(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, MatrixError> {
    let alias = query_param(query.as_deref(), "alias")
        .ok_or_else(|| MatrixError::missing_param("alias"))?;
    let alias = parse_alias(alias)?;
    let locations = state.queries.thirdparty_location_by_alias(&alias).await;
    list(
        locations,
        "thirdparty location by alias",
        "no third-party location for this room alias",
    )
}

fn parse_user_id(user_id: String) -> Result<OwnedUserId, MatrixError> {
    OwnedUserId::try_from(user_id.as_str())
        .map_err(|error| MatrixError::invalid_param(format!("invalid user id: {error}")))
}

fn parse_alias(alias: String) -> Result<OwnedRoomAliasId, MatrixError> {
    OwnedRoomAliasId::try_from(alias.as_str())
        .map_err(|error| MatrixError::invalid_param(format!("invalid room alias: {error}")))
}

/// The search fields of a third-party lookup: the query parameters, without the legacy
/// `access_token`, which is a credential and not a field.
fn fields(query: Option<&str>) -> BTreeMap<String, String> {
    query_pairs(query)
        .into_iter()
        .filter(|(key, _)| key != "access_token")
        .collect()
}

/// Runs a query in its own task, so that it completes even if the request is dropped.
async fn detached<F>(future: F) -> Result<bool, QueryError>
where
    F: Future<Output = Result<bool, QueryError>> + Send + 'static,
{
    tokio::spawn(future)
        .await
        .unwrap_or_else(|join_error| Err(QueryError(join_error.to_string())))
}

fn existence(
    exists: Result<bool, QueryError>,
    not_found: impl FnOnce() -> String,
) -> Result<Response, MatrixError> {
    match exists {
        Ok(true) => Ok(Json(json!({})).into_response()),
        Ok(false) => Err(MatrixError::not_found(not_found())),
        Err(error) => Err(failed("existence query", &error)),
    }
}

/// A list answer: the spec answers "no result" with 404 rather than an empty list.
fn list<T: serde::Serialize>(
    found: Result<Vec<T>, QueryError>,
    what: &'static str,
    none: &'static str,
) -> Result<Response, MatrixError> {
    match found {
        Ok(items) if items.is_empty() => Err(MatrixError::not_found(none)),
        Ok(items) => Ok(Json(items).into_response()),
        Err(error) => Err(failed(what, &error)),
    }
}

fn failed(what: &'static str, error: &QueryError) -> MatrixError {
    tracing::error!(query = what, %error, "a homeserver query failed");
    MatrixError::internal("the query could not be answered")
}
