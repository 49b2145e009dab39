//! The running foundation of a bridge: the store, the durable ingest and the appservice
//! endpoint, wired together and stopped in the right order.
//!
//! On shutdown the endpoint stops first (the homeserver keeps what it could not deliver
//! and retries later), then the ingest finishes the events in hand and records them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use registration::Registration;

use crate::appservice::{self, EndpointOptions, QueryHandler, Readiness};
use crate::config::BridgeConfig;
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

impl FoundationOptions {
    /// The options a bridge's config and its checked registration give.
    pub fn from_config<N>(config: &BridgeConfig<N>, registration: &Registration) -> Self {
        FoundationOptions {
            bind: config.appservice.bind,
            database_url: config.database.url.expose().to_owned(),
            max_connections: config.database.max_connections,
            endpoint: EndpointOptions {
                hs_token: registration.hs_token.clone(),
                body_limit: config.appservice.body_limit,
            },
        }
    }
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

/// How long requests in flight may take to finish at shutdown.
const HTTP_STOP_DEADLINE: Duration = Duration::from_secs(10);

/// Ready when the database answers and the ingest takes transactions.
#[derive(Debug)]
struct FoundationReadiness {
    store: Store,
    ingest: Ingest,
}

#[async_trait]
impl Readiness for FoundationReadiness {
    async fn is_ready(&self) -> bool {
        self.ingest.is_accepting() && self.store.is_reachable().await
    }
}

/// The foundation, opened: the endpoint's port bound and the database connected, migrated
/// and locked, before anything is handled, so that a second process started by mistake
/// stops at once instead of handling the same events.
#[derive(Debug)]
pub struct Foundation {
    options: FoundationOptions,
    listener: tokio::net::TcpListener,
    store: Store,
    instance_lock: crate::store::InstanceLock,
    /// Routes served beside the appservice API (the bridge's media links).
    routes: axum::Router,
}

impl Foundation {
    /// The same foundation, also serving `routes` (without the homeserver's token).
    pub fn with_routes(mut self, routes: axum::Router) -> Foundation {
        self.routes = self.routes.merge(routes);
        self
    }

    /// Binds the endpoint's port, then connects to the database, migrates and locks it.
    pub async fn open(options: FoundationOptions) -> Result<Foundation, FoundationError> {
        let bind = options.bind;
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|source| FoundationError::Endpoint { bind, source })?;
        let store = Store::connect(&options.database_url, options.max_connections).await?;
        let instance_lock = store.lock_instance(&options.database_url).await?;
        Ok(Foundation {
            routes: axum::Router::new(),
            options,
            listener,
            store,
            instance_lock,
        })
    }

    /// The database, for what runs beside the foundation.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Runs the ingest and the endpoint until `shutdown` completes (for a binary: the stop
    /// signal from [`crate::cli::shutdown_signal`]), then stops them in order.
    pub async fn run(
        self,
        handler: Arc<dyn EventHandler>,
        queries: Arc<dyn QueryHandler>,
        metrics: Arc<Metrics>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), FoundationError> {
        let Foundation {
            options,
            listener,
            store,
            instance_lock,
            routes,
        } = self;
        let bind = options.bind;
        let ingest_shutdown = CancellationToken::new();
        let (ingest, ingest_tasks) = Ingest::start(
            store.clone(),
            handler,
            metrics.clone(),
            ingest_shutdown.clone(),
        )
        .await?;
        tracing::info!(%bind, "appservice endpoint listening");
        let readiness = FoundationReadiness {
            store: store.clone(),
            ingest: ingest.clone(),
        };
        let router = appservice::router(
            options.endpoint,
            Arc::new(ingest),
            queries,
            Arc::new(readiness),
            metrics,
        )
        .merge(routes);
        let stopping = CancellationToken::new();
        let stop_signal = stopping.clone();
        let serve = appservice::serve(listener, router, async move {
            shutdown.await;
            tracing::info!("stopping");
            stop_signal.cancel();
        });
        // Graceful shutdown waits for open connections; a stalled client must not keep the
        // bridge from stopping.
        let served = tokio::select! {
            served = serve => served,
            () = async {
                stopping.cancelled().await;
                tokio::time::sleep(HTTP_STOP_DEADLINE).await;
            } => {
                tracing::warn!("requests still open at shutdown were dropped");
                Ok(())
            }
        };
        ingest_shutdown.cancel();
        ingest_tasks.join().await;
        store.close().await;
        drop(instance_lock);
        served.map_err(|source| FoundationError::Endpoint { bind, source })
    }
}

/// Opens the foundation and runs it until `shutdown` completes: [`Foundation::open`]
/// then [`Foundation::run`].
pub async fn run_foundation(
    options: FoundationOptions,
    handler: Arc<dyn EventHandler>,
    queries: Arc<dyn QueryHandler>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), FoundationError> {
    Foundation::open(options)
        .await?
        .run(handler, queries, metrics, shutdown)
        .await
}

/// A handler that only logs each event: what a bridge binary runs until its connector
/// exists. Events are still stored durably and recorded as handled.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogEvents;

#[async_trait]
impl EventHandler for LogEvents {
    async fn handle(
        &self,
        event: &crate::store::StoredEvent,
    ) -> Result<(), crate::ingest::HandleError> {
        tracing::debug!(
            seq = event.seq,
            event_type = %event.event_type,
            room_id = ?event.room_id,
            event_id = ?event.event_id,
            "event received (no connector handles it yet)"
        );
        Ok(())
    }
}
