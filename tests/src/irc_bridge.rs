//! The IRC bridge (`bridge-irc`) run as an operator runs it, pointed at test bed IRC
//! servers over plain TCP.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::Result;
use crate::bridge_process::BridgeProcess;

/// The network name the tests give their IRC server.
pub const NETWORK: &str = "testnet";

/// `bridge-irc` configured for `networks` (name, port on 127.0.0.1), each with `extra`
/// settings (YAML lines at the network's indentation), and registered; the generated
/// config is passed through `edit` once the networks are in.
pub fn irc_bridge_for(
    networks: &[(&str, u16)],
    extra: &str,
    database_url: Option<String>,
    edit: impl FnOnce(&str) -> String,
) -> Result<(BridgeProcess, PathBuf)> {
    let mut section = "  networks:\n".to_owned();
    for (name, port) in networks {
        let _ = write!(
            section,
            "    - name: \"{name}\"\n      host: \"127.0.0.1\"\n      port: {port}\n      tls: false\n{extra}"
        );
    }
    BridgeProcess::prepare(
        crate::workspace_binary("bridge-irc")?,
        "irc-bridge",
        &[(
            "TRESTLE__LOGGING__LEVEL",
            "info,bridge_core=debug,bridge_irc=trace".to_owned(),
        )],
        database_url,
        move |config| edit(&config.replace("  networks: []\n", &section)),
    )
}

/// `bridge-irc` for the one network [`NETWORK`] on 127.0.0.1:`irc_port`, with flood
/// control loosened for bursts; the generated config is passed through `edit`.
pub fn irc_bridge_with(
    irc_port: u16,
    database_url: Option<String>,
    edit: impl FnOnce(&str) -> String,
) -> Result<(BridgeProcess, PathBuf)> {
    let loose =
        "      flood_burst: 50\n      lines_per_second: 500\n      connects_per_second: 50\n";
    irc_bridge_for(&[(NETWORK, irc_port)], loose, database_url, edit)
}

/// [`irc_bridge_with`] with the config as generated.
pub fn irc_bridge(irc_port: u16, database_url: Option<String>) -> Result<(BridgeProcess, PathBuf)> {
    irc_bridge_with(irc_port, database_url, str::to_owned)
}
