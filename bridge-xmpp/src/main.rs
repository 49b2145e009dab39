//! bridge-xmpp: the Trestle bridge between Matrix and XMPP.
//!
//! The command line, config loading and logging are shared with every Trestle bridge
//! ([`bridge_core::cli`]); this binary adds its `xmpp` config section ([`network`]) and, in
//! [`XmppBridge::run`], what happens once everything is loaded.

mod network;

use std::process::ExitCode;

use anyhow::Context as _;
use bridge_core::cli::{self, Bridge};
use bridge_core::config::{BridgeConfig, BridgeInfo};
use registration::Registration;

use crate::network::XmppConfig;

/// The XMPP bridge, as the shared command line sees it.
struct XmppBridge;

impl Bridge for XmppBridge {
    const INFO: BridgeInfo = BridgeInfo {
        name: "xmpp",
        binary: env!("CARGO_PKG_NAME"),
        version: env!("CARGO_PKG_VERSION"),
        default_port: 9341,
    };

    type Network = XmppConfig;

    async fn run(
        config: BridgeConfig<XmppConfig>,
        _registration: Registration,
    ) -> anyhow::Result<()> {
        // The bridge runtime (appservice endpoint, store, ingest, the XMPP component
        // connection) is wired in later; until then `run` only shows that the config and the
        // registration are usable, and waits to be stopped.
        tracing::info!(
            version = XmppBridge::INFO.version,
            bind = %config.appservice.bind,
            homeserver = %config.homeserver.url,
            component = %config.network.component_domain,
            "starting"
        );
        cli::shutdown_signal()
            .await
            .context("cannot wait for a stop signal")?;
        tracing::info!("stopping");
        Ok(())
    }
}

fn main() -> ExitCode {
    cli::main::<XmppBridge>()
}
