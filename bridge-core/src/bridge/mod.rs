//! The running bridge: the foundation (endpoint, store, durable ingest) with a
//! [`Connector`] on top, and everything between them.
//!
//! - [`handle`]: the shared state and [`BridgeHandle`], the connector's way in;
//! - [`dispatch`]: Matrix events to the connector (echo suppression, permissions, the
//!   message map), one room at a time in order;
//! - [`outbox`]: remote events to Matrix, persisted and ordered per portal;
//! - [`portals`] and [`ghosts`]: portal rooms and ghost users on the homeserver;
//! - [`power`]: users' power in rooms;
//! - [`queries`]: dynamic portals and ghosts from the homeserver's alias and user queries;
//! - [`direct`]: direct chats with remote users started from Matrix;
//! - [`links`]: existing rooms linked to remote chats, and unlinking;
//! - [`commands`]: the bot's commands and management rooms;
//! - [`ids`]: remote ids in Matrix ids, and deterministic transaction ids;
//! - [`media`]: fetching media a network refers to;
//! - [`media_link`]: Matrix files served to a network as signed links.
//!
//! [`run_bridge`] starts it all: the endpoint first (so the homeserver's ping reaches
//! it), then it waits for the homeserver, checks the registration with the appservice
//! ping, starts the connector, and resumes the outbox. Matrix events wait for the
//! connector; queued remote events wait for their portal's room.

pub mod commands;
mod direct;
mod dispatch;
mod error;
mod ghosts;
pub mod handle;
pub mod ids;
mod links;
pub mod media;
mod media_link;
mod outbox;
mod portals;
mod power;
mod queries;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use registration::Registration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use self::commands::CommandContext;
pub use self::error::BridgeError;
pub use self::handle::BridgeHandle;
use self::handle::Shared;
use self::outbox::Outbox;
pub use crate::config::Permission;
use crate::config::{BridgeConfig, NetworkConfig};
use crate::connector::Connector;
use crate::matrix::{HomeserverClient, MatrixError};
use crate::metrics::Metrics;
use crate::runtime::{Foundation, FoundationError, FoundationOptions};

/// How long to wait for the homeserver at start.
const HOMESERVER_WAIT: Duration = Duration::from_secs(300);
/// The upload limit assumed when the homeserver does not say.
const DEFAULT_UPLOAD_LIMIT: u64 = 50 * 1024 * 1024;

/// Why the bridge stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The foundation failed (database, endpoint).
    #[error(transparent)]
    Foundation(#[from] FoundationError),
    /// The homeserver client could not be made (a bad URL or bot localpart).
    #[error("homeserver client: {0}")]
    Client(#[source] MatrixError),
    /// The homeserver never answered.
    #[error("the homeserver did not answer: {0}")]
    Homeserver(#[source] MatrixError),
    /// The homeserver does not accept this bridge's registration (its token, or the ping
    /// to the bridge's endpoint failed).
    #[error(
        "the homeserver does not accept this bridge: {0}. Check that the homeserver loaded \
         this registration file (same tokens) and can reach appservice.url"
    )]
    Registration(#[source] MatrixError),
    /// The connector could not start.
    #[error("the connector could not start: {0}")]
    Connector(#[source] crate::connector::ConnectorError),
    /// The database failed at start.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Resuming the outbox failed.
    #[error(transparent)]
    Bridge(#[from] BridgeError),
}

/// Runs a bridge with `connector` until `shutdown` completes or startup fails.
pub async fn run_bridge<N: NetworkConfig>(
    config: &BridgeConfig<N>,
    registration: &Registration,
    connector: Arc<dyn Connector>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let foundation = Foundation::open(FoundationOptions::from_config(config, registration)).await?;
    let store = foundation.store().clone();
    let matrix = HomeserverClient::new(
        config.homeserver.url.clone(),
        &config.homeserver.domain,
        registration.as_token.clone(),
        &config.appservice.bot_localpart,
    )
    .map_err(RunError::Client)?;
    let info = connector.info();
    let outbox_shutdown = CancellationToken::new();
    let shared = Arc::new(Shared {
        network: info.network,
        network_name: info.display_name,
        outbox: Outbox::new(store.max_outbox_seq().await?, outbox_shutdown.clone()),
        store,
        matrix,
        domain: config.homeserver.domain.clone(),
        ghost_prefix: config.appservice.ghost_prefix.clone(),
        alias_prefix: config.appservice.alias_prefix.clone(),
        command_prefix: config.bridge_settings.command_prefix.clone(),
        permissions: config.bridge_settings.permissions.clone(),
        capabilities: info.capabilities,
        connector,
        ghosts: Default::default(),
        joined: Default::default(),
        display_names: Default::default(),
        typing: Default::default(),
        creating: Default::default(),
        started: watch::Sender::new(None),
        upload_limit: AtomicU64::new(DEFAULT_UPLOAD_LIMIT),
        secrets: crate::store::SecretBox::from_key(&config.encryption.key),
        media_links: media_link::MediaLinks::new(
            config
                .bridge_settings
                .media_url
                .clone()
                .unwrap_or_else(|| config.appservice.url.clone()),
            config.encryption.key.as_bytes(),
        ),
    });

    let failed = CancellationToken::new();
    let (startup_error_tx, startup_error) = tokio::sync::oneshot::channel();
    let startup = tokio::spawn(start(
        Arc::clone(&shared),
        config.appservice.id.clone(),
        failed.clone(),
        startup_error_tx,
    ));
    // Stopping: Matrix events stop waiting for the connector, the outbox finishes the
    // sends in hand and the connector disconnects, all while the database is still open
    // (the foundation closes it once this completes).
    let stop = {
        let failed = failed.clone();
        let shared = Arc::clone(&shared);
        async move {
            tokio::select! {
                () = shutdown => {}
                () = failed.cancelled() => {}
            }
            shared.started.send_replace(Some(false));
            outbox_shutdown.cancel();
            shared.outbox.stopped().await;
            shared.connector.stop().await;
        }
    };
    let handler = Arc::new(dispatch::MatrixEvents {
        shared: Arc::clone(&shared),
    });
    let queries = Arc::new(queries::BridgeQueries {
        shared: Arc::clone(&shared),
    });
    let served = foundation
        .with_routes(media_link::routes(Arc::clone(&shared)))
        .run(handler, queries, metrics, stop)
        .await;
    startup.abort();
    if let Ok(error) = startup_error.await {
        return Err(error);
    }
    Ok(served?)
}

/// Waits for the homeserver, pings it, starts the connector and resumes the outbox; on
/// failure, reports the error and stops the bridge.
async fn start(
    shared: Arc<Shared>,
    appservice_id: String,
    failed: CancellationToken,
    report: tokio::sync::oneshot::Sender<RunError>,
) {
    let started = async {
        let versions = shared
            .matrix
            .wait_for_homeserver(HOMESERVER_WAIT)
            .await
            .map_err(|error| {
                if crate::matrix::server::is_token_refused(&error) {
                    RunError::Registration(error)
                } else {
                    RunError::Homeserver(error)
                }
            })?;
        tracing::debug!(?versions, "homeserver answers");
        let took = shared
            .matrix
            .ping(&appservice_id)
            .await
            .map_err(RunError::Registration)?;
        tracing::info!(
            took_ms = took.as_millis(),
            "the homeserver reaches the bridge"
        );
        let bot = shared.matrix.bot();
        match bot.upload_size_limit().await {
            Ok(Some(limit)) => shared.upload_limit.store(limit, Ordering::Relaxed),
            Ok(None) => {}
            Err(error) => tracing::debug!(%error, "no upload limit from the homeserver"),
        }
        if let Err(error) = bot
            .set_display_name(Some(&format!("{} bridge", shared.network_name)))
            .await
        {
            tracing::warn!(%error, "cannot set the bot's display name");
        }
        let handle = BridgeHandle {
            shared: Arc::clone(&shared),
        };
        shared
            .connector
            .start(handle)
            .await
            .map_err(RunError::Connector)?;
        shared.started.send_replace(Some(true));
        Outbox::resume(&shared).await?;
        tracing::info!(network = shared.network, "bridge running");
        Ok::<(), RunError>(())
    };
    if let Err(error) = started.await {
        tracing::error!("{error}");
        shared.started.send_replace(Some(false));
        let _ = report.send(error);
        failed.cancel();
    }
}
