//! The IRC bridge (`bridge-irc`) run as an operator runs it, with one network, `testnet`,
//! pointing at a test bed IRC server.

use std::path::PathBuf;

use crate::Result;
use crate::bridge_process::BridgeProcess;

/// The network name the tests give their IRC server.
pub const NETWORK: &str = "testnet";

/// `bridge-irc` configured for the IRC server on 127.0.0.1:`irc_port` (plain TCP, flood
/// control loosened for bursts) and registered; the generated config is passed through
/// `edit` after the network is added.
pub fn irc_bridge_with(
    irc_port: u16,
    database_url: Option<String>,
    edit: impl FnOnce(&str) -> String,
) -> Result<(BridgeProcess, PathBuf)> {
    let network = format!(
        r#"  networks:
    - name: "{NETWORK}"
      host: "127.0.0.1"
      port: {irc_port}
      tls: false
      flood_burst: 50
      lines_per_second: 500
      connects_per_second: 50
"#
    );
    BridgeProcess::prepare(
        crate::workspace_binary("bridge-irc")?,
        "irc-bridge",
        &[(
            "TRESTLE__LOGGING__LEVEL",
            "info,bridge_core=debug,bridge_irc=trace".to_owned(),
        )],
        database_url,
        move |config| edit(&config.replace("  networks: []\n", &network)),
    )
}

/// [`irc_bridge_with`] with the config as generated.
pub fn irc_bridge(irc_port: u16, database_url: Option<String>) -> Result<(BridgeProcess, PathBuf)> {
    irc_bridge_with(irc_port, database_url, str::to_owned)
}
