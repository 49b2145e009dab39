//! The example bridge: Matrix to linechat, a line-based chat network small enough to read
//! in one sitting (`examples/linechat-server.rs`). It exercises the whole connector API;
//! `docs/writing-a-connector.md` walks through it.
//!
//! ```text
//! cargo run --example linechat-server &                 # the network, on 127.0.0.1:7667
//! cargo run --example linechat -- generate-config       # then edit config.yaml
//! cargo run --example linechat -- generate-registration # and give it to the homeserver
//! cargo run --example linechat                          # the bridge
//! ```
//!
//! Then join `#linechat_general:<your server>` from a Matrix client: the portal of the
//! linechat channel `#general` is created on the spot.

mod config;
mod conn;
mod connector;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use bridge_core::bridge::run_bridge;
use bridge_core::cli::{self, Bridge};
use bridge_core::config::{BridgeConfig, BridgeInfo};
use bridge_core::metrics::Metrics;
use registration::Registration;

use crate::config::LinechatConfig;
use crate::connector::Linechat;

/// The example bridge, as the shared command line sees it.
struct LinechatBridge;

impl Bridge for LinechatBridge {
    const INFO: BridgeInfo = BridgeInfo {
        name: "linechat",
        binary: "linechat",
        version: env!("CARGO_PKG_VERSION"),
        default_port: 9342,
    };

    type Network = LinechatConfig;

    async fn run(
        config: BridgeConfig<LinechatConfig>,
        registration: Registration,
    ) -> anyhow::Result<()> {
        let stop = cli::shutdown_signal().context("cannot install the stop-signal handlers")?;
        let connector = Arc::new(Linechat::new(config.network.clone()));
        run_bridge(&config, &registration, connector, Metrics::new(), stop).await?;
        Ok(())
    }
}

fn main() -> ExitCode {
    cli::main::<LinechatBridge>()
}
