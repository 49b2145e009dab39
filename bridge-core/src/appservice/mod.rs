//! The HTTP endpoint the homeserver calls (the spec's application service API): the
//! routes, the state they share, and serving them.
//!
//! Routes, under `/_matrix/app/v1` and, for older homeservers, their legacy paths:
//!
//! | route | handled by |
//! |---|---|
//! | `PUT /transactions/{txnId}` | [`TransactionSink`] |
//! | `GET /users/{userId}`, `GET /rooms/{roomAlias}` | [`QueryHandler`] |
//! | `GET /thirdparty/{protocol,user,location}/…`, `/thirdparty/{user,location}` | [`QueryHandler`] |
//! | `POST /ping` | answered here |
//!
//! All of them require the `hs_token`. `/metrics`, `/health/live` and `/health/ready`
//! do not, as Prometheus and orchestrators call them. Every refusal is a Matrix error
//! body (`{"errcode", "error"}`); an unknown route is 404 `M_UNRECOGNIZED` and a wrong
//! method 405 `M_UNRECOGNIZED`.

mod auth;
mod error;
mod extract;
mod health;
mod ping;
mod queries;
mod telemetry;
mod transactions;

use std::fmt;
use std::future::Future;
use std::io;
use std::sync::Arc;

use axum::Router;
use axum::middleware;
use axum::routing::{get, post, put};
use tokio::net::TcpListener;

pub use health::{AlwaysReady, Readiness};
pub use queries::{NoQueries, QueryError, QueryHandler};

use crate::metrics::Metrics;
use crate::transaction::TransactionSink;

/// The default limit of a request body: far above what a homeserver puts in one
/// transaction (Synapse batches at most 100 events), while still bounding memory.
pub const DEFAULT_BODY_LIMIT: usize = 32 * 1024 * 1024;

/// The prefixes of the transaction and existence-query routes: the spec's, then the
/// legacy unprefixed one.
const CORE_PREFIXES: [&str; 2] = ["/_matrix/app/v1", ""];

/// The prefixes of the third-party routes: the spec's, then the legacy unstable one.
const THIRDPARTY_PREFIXES: [&str; 2] = ["/_matrix/app/v1", "/_matrix/app/unstable"];

/// How the endpoint is set up.
#[derive(Clone)]
pub struct EndpointOptions {
    /// The registration's `hs_token`, which the homeserver must present. An empty token
    /// refuses every request.
    pub hs_token: String,
    /// The largest request body accepted, in bytes; larger ones get 413 `M_TOO_LARGE`.
    pub body_limit: usize,
}

impl EndpointOptions {
    /// Options with the given `hs_token` and [`DEFAULT_BODY_LIMIT`].
    pub fn new(hs_token: impl Into<String>) -> Self {
        EndpointOptions {
            hs_token: hs_token.into(),
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }
}

// Written by hand so the token never reaches a log.
impl fmt::Debug for EndpointOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointOptions")
            .field("hs_token", &"<redacted>")
            .field("body_limit", &self.body_limit)
            .finish()
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub(crate) struct AppState {
    hs_token: Arc<str>,
    body_limit: usize,
    sink: Arc<dyn TransactionSink>,
    queries: Arc<dyn QueryHandler>,
    readiness: Arc<dyn Readiness>,
    metrics: Arc<Metrics>,
}

impl fmt::Debug for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppState")
            .field("hs_token", &"<redacted>")
            .field("body_limit", &self.body_limit)
            .finish_non_exhaustive()
    }
}

/// The endpoint's routes: transactions go to `sink`, queries to `queries`,
/// `/health/ready` asks `readiness`, and every request is counted in `metrics`.
pub fn router(
    options: EndpointOptions,
    sink: Arc<dyn TransactionSink>,
    queries: Arc<dyn QueryHandler>,
    readiness: Arc<dyn Readiness>,
    metrics: Arc<Metrics>,
) -> Router {
    let state = AppState {
        hs_token: Arc::from(options.hs_token),
        body_limit: options.body_limit,
        sink,
        queries,
        readiness,
        metrics: metrics.clone(),
    };

    let mut homeserver = Router::new().route("/_matrix/app/v1/ping", post(ping::post_ping));
    for prefix in CORE_PREFIXES {
        homeserver = homeserver
            .route(
                &format!("{prefix}/transactions/{{txnId}}"),
                put(transactions::put_transaction),
            )
            // Catch-alls: Synapse leaves `/` unescaped in these path parameters, and an
            // alias (an IRC channel) or a user id may hold one.
            .route(
                &format!("{prefix}/users/{{*userId}}"),
                get(queries::get_user),
            )
            .route(
                &format!("{prefix}/rooms/{{*roomAlias}}"),
                get(queries::get_room_alias),
            );
    }
    for prefix in THIRDPARTY_PREFIXES {
        homeserver = homeserver
            .route(
                &format!("{prefix}/thirdparty/protocol/{{protocol}}"),
                get(queries::get_protocol),
            )
            .route(
                &format!("{prefix}/thirdparty/user/{{protocol}}"),
                get(queries::get_users_for_protocol),
            )
            .route(
                &format!("{prefix}/thirdparty/location/{{protocol}}"),
                get(queries::get_locations_for_protocol),
            )
            .route(
                &format!("{prefix}/thirdparty/user"),
                get(queries::get_user_by_id),
            )
            .route(
                &format!("{prefix}/thirdparty/location"),
                get(queries::get_location_by_alias),
            );
    }
    // A route layer, so it guards exactly these routes: an unknown path is 404 and a
    // wrong method 405 whatever the token, which tells a caller nothing the spec does not.
    let homeserver = homeserver.route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::require_hs_token,
    ));

    let open = Router::new()
        .route("/metrics", get(telemetry::metrics))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready));

    homeserver
        .merge(open)
        .fallback(error::unknown_route)
        // After every route is added: it only applies to routes that exist already.
        .method_not_allowed_fallback(error::method_not_allowed)
        // Outermost, so it sees the final status of every request, refusals included.
        .layer(middleware::from_fn_with_state(
            metrics,
            telemetry::count_requests,
        ))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` completes, then lets the requests in
/// flight finish.
pub async fn serve<F>(listener: TcpListener, router: Router, shutdown: F) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
