//! `/health/live` and `/health/ready`, for orchestrators: live answers as long as the
//! process serves HTTP; ready answers 200 only while a [`Readiness`] check passes (for
//! example, while the store and the remote networks are reachable). Not behind the
//! `hs_token`: probes do not have it.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::AppState;
use super::error::MatrixError;

/// How long a readiness check may take before it counts as "not ready": a probe that
/// hangs is as bad as one that fails, and orchestrators time out on their own anyway.
const READINESS_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the bridge can do its work now.
#[async_trait::async_trait]
pub trait Readiness: Send + Sync + 'static {
    /// `true` if the bridge is ready to serve. Should be quick: it is called on every
    /// probe, and counts as not ready after five seconds.
    async fn is_ready(&self) -> bool;
}

/// A [`Readiness`] that is always ready.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysReady;

#[async_trait::async_trait]
impl Readiness for AlwaysReady {
    async fn is_ready(&self) -> bool {
        true
    }
}

/// `GET /health/live`: always 200.
pub(crate) async fn live() -> Json<Value> {
    Json(json!({ "status": "live" }))
}

/// `GET /health/ready`: 200 when ready, 503 `M_UNKNOWN` when not.
pub(crate) async fn ready(State(state): State<AppState>) -> Result<Json<Value>, MatrixError> {
    let ready = tokio::time::timeout(READINESS_TIMEOUT, state.readiness.is_ready())
        .await
        .unwrap_or(false);
    if ready {
        Ok(Json(json!({ "status": "ready" })))
    } else {
        Err(MatrixError::unavailable("the bridge is not ready"))
    }
}
