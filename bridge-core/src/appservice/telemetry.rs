//! The endpoint's side of [`Metrics`]: serving them as `/metrics` (not behind the
//! `hs_token`: Prometheus does not have it), and counting every request by route
//! template and status.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::metrics::{Metrics, RequestLabels};

/// The content type of [`Metrics::encode`]'s output, which is OpenMetrics text.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The route label of a request that matched no route; a fixed value, because the raw
/// path of an unknown request is whatever the caller made up.
const UNMATCHED: &str = "unmatched";

/// `GET /metrics`.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    ([(CONTENT_TYPE, OPENMETRICS)], state.metrics.encode()).into_response()
}

/// Middleware counting each request in `http_requests`, by route template and status.
pub(crate) async fn count_requests(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let response = next.run(request).await;
    metrics
        .http_requests
        .get_or_create(&RequestLabels {
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
