//! bridge-xmpp: the Trestle bridge between Matrix and XMPP.
//!
//! The command line, config loading and logging are shared with every Trestle bridge
//! ([`bridge_core::cli`]); this binary adds its `xmpp` config section and, in
//! [`XmppBridge::run`], the XMPP connector on the bridge runtime.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use bridge_core::bridge::run_bridge;
use bridge_core::cli::{self, Bridge};
use bridge_core::config::{BridgeConfig, BridgeInfo};
use bridge_core::metrics::Metrics;
use bridge_xmpp::config::XmppConfig;
use bridge_xmpp::connector::XmppConnector;
use registration::Registration;

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
        registration: Registration,
    ) -> anyhow::Result<()> {
        // Handlers first, so that a stop signal right after "starting" is not fatal.
        let stop = cli::shutdown_signal().context("cannot install the stop-signal handlers")?;
        tracing::info!(
            version = XmppBridge::INFO.version,
            bind = %config.appservice.bind,
            homeserver = %config.homeserver.url,
            component = %config.network.component_domain,
            "starting"
        );
        let connector = Arc::new(XmppConnector::new(config.network.clone()));
        run_bridge(&config, &registration, connector, Metrics::new(), stop).await?;
        Ok(())
    }
}

fn main() -> ExitCode {
    cli::main::<XmppBridge>()
}
