//! bridge-irc: the Trestle bridge between Matrix and IRC.
//!
//! The command line, config loading and logging are shared with every Trestle bridge
//! ([`bridge_core::cli`]); this binary adds its `irc` config section and, in
//! [`IrcBridge::run`], the IRC connector on the bridge runtime.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use bridge_core::bridge::run_bridge;
use bridge_core::cli::{self, Bridge};
use bridge_core::config::{BridgeConfig, BridgeInfo};
use bridge_core::metrics::Metrics;
use bridge_irc::config::IrcConfig;
use bridge_irc::connector::IrcConnector;
use registration::Registration;

/// The IRC bridge, as the shared command line sees it.
struct IrcBridge;

impl Bridge for IrcBridge {
    const INFO: BridgeInfo = BridgeInfo {
        name: "irc",
        binary: env!("CARGO_PKG_NAME"),
        version: env!("CARGO_PKG_VERSION"),
        default_port: 9340,
    };

    type Network = IrcConfig;

    async fn run(
        config: BridgeConfig<IrcConfig>,
        registration: Registration,
    ) -> anyhow::Result<()> {
        // Handlers first, so that a stop signal right after "starting" is not fatal.
        let stop = cli::shutdown_signal().context("cannot install the stop-signal handlers")?;
        tracing::info!(
            version = IrcBridge::INFO.version,
            bind = %config.appservice.bind,
            homeserver = %config.homeserver.url,
            networks = config.network.networks.len(),
            "starting"
        );
        for network in &config.network.networks {
            tracing::info!(
                name = %network.name,
                host = %network.host,
                port = network.port,
                tls = network.tls,
                "configured IRC network"
            );
        }
        let connector = Arc::new(IrcConnector::new(&config.network)?);
        run_bridge(&config, &registration, connector, Metrics::new(), stop).await?;
        Ok(())
    }
}

fn main() -> ExitCode {
    cli::main::<IrcBridge>()
}
