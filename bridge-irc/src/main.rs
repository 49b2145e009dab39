//! bridge-irc: the Trestle bridge between Matrix and IRC.
//!
//! The command line, config loading and logging are shared with every Trestle bridge
//! ([`bridge_core::cli`]); this binary adds its `irc` config section ([`network`]) and, in
//! [`IrcBridge::run`], what happens once everything is loaded.

mod network;

use std::process::ExitCode;

use anyhow::Context as _;
use bridge_core::cli::{self, Bridge};
use bridge_core::config::{BridgeConfig, BridgeInfo};
use registration::Registration;

use crate::network::IrcConfig;

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
        _registration: Registration,
    ) -> anyhow::Result<()> {
        // The bridge runtime (appservice endpoint, store, ingest, IRC connections) is wired
        // in later; until then `run` only shows that the config and the registration are
        // usable, and waits to be stopped.
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
        cli::shutdown_signal()
            .await
            .context("cannot wait for a stop signal")?;
        tracing::info!("stopping");
        Ok(())
    }
}

fn main() -> ExitCode {
    cli::main::<IrcBridge>()
}
