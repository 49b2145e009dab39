//! The running foundation of a bridge: the store, the durable ingest and the appservice
//! endpoint, wired together and stopped in the right order.
//!
//! On shutdown the endpoint stops first (the homeserver keeps what it could not deliver
//! and retries later), then the ingest finishes the events in hand and records them.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::appservice::{self, EndpointOptions, QueryHandler, Readiness};
use crate::ingest::{EventHandler, Ingest};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Where and how the foundation runs.
#[derive(Debug, Clone)]
pub struct FoundationOptions {
    /// The address the endpoint listens on.
    pub bind: SocketAddr,
    /// The database URL (`sqlite://...` or `postgres://...`).
    pub database_url: String,
    /// The most database connections.
    pub max_connections: u32,
    /// The endpoint's token and body limit.
    pub endpoint: EndpointOptions,
}

/// Why the foundation could not run.
#[derive(Debug, thiserror::Error)]
pub enum FoundationError {
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The endpoint could not listen or serve.
    #[error("the appservice endpoint on {bind}: {source}")]
    Endpoint {
        /// The address it tried.
        bind: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Ready when the database answers.
#[derive(Debug)]
struct StoreReadiness(Store);

#[async_trait]
impl Readiness for StoreReadiness {
    async fn is_ready(&self) -> bool {
        self.0.is_reachable().await
    }
}

/// Runs the store, ingest and endpoint until `shutdown` is cancelled.
pub async fn run_foundation(
    options: FoundationOptions,
    handler: Arc<dyn EventHandler>,
    queries: Arc<dyn QueryHandler>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), FoundationError> {
    let store = Store::connect(&options.database_url, options.max_connections).await?;
    let ingest_shutdown = CancellationToken::new();
    let (ingest, ingest_tasks) = Ingest::start(
        store.clone(),
        handler,
        metrics.clone(),
        ingest_shutdown.clone(),
    )
    .await?;
    let bind = options.bind;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|source| FoundationError::Endpoint { bind, source })?;
    tracing::info!(%bind, "appservice endpoint listening");
    let router = appservice::router(
        options.endpoint,
        Arc::new(ingest),
        queries,
        Arc::new(StoreReadiness(store.clone())),
        metrics,
    );
    let served =
        appservice::serve(listener, router, async move { shutdown.cancelled().await }).await;
    ingest_shutdown.cancel();
    ingest_tasks.join().await;
    store.close().await;
    served.map_err(|source| FoundationError::Endpoint { bind, source })
}
