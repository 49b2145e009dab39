//! The XMPP bridge (`bridge-xmpp`) run as an operator runs it, connected as a component to
//! a test bed Prosody.

use std::path::PathBuf;

use crate::Result;
use crate::bridge_process::BridgeProcess;
use crate::prosody::Prosody;

/// `bridge-xmpp` configured for `prosody`'s component and registered; the generated
/// config is passed through `edit` once the component is in.
pub fn xmpp_bridge_with(
    prosody: &Prosody,
    database_url: Option<String>,
    edit: impl FnOnce(&str) -> String,
) -> Result<(BridgeProcess, PathBuf)> {
    xmpp_bridge_logging(
        prosody,
        "info,bridge_core=debug,bridge_xmpp=trace",
        database_url,
        edit,
    )
}

/// [`xmpp_bridge_with`] logging at `level` (a tracing filter).
pub fn xmpp_bridge_logging(
    prosody: &Prosody,
    level: &str,
    database_url: Option<String>,
    edit: impl FnOnce(&str) -> String,
) -> Result<(BridgeProcess, PathBuf)> {
    let port = prosody.component_port();
    let secret = prosody.component_secret().to_owned();
    BridgeProcess::prepare(
        crate::workspace_binary("bridge-xmpp")?,
        "xmpp-bridge",
        &[("TRESTLE__LOGGING__LEVEL", level.to_owned())],
        database_url,
        move |config| {
            let mut lines = Vec::new();
            for line in config.lines() {
                let key = line.trim_start().split(':').next().unwrap_or_default();
                let line = match key {
                    "component_domain" => {
                        format!("  component_domain: \"{}\"", Prosody::COMPONENT_DOMAIN)
                    }
                    "server_port" => format!("  server_port: {port}"),
                    "component_secret" => format!("  component_secret: \"{secret}\""),
                    // The tests serve files on loopback, as an XMPP server's own upload
                    // service on the operator's network would.
                    "trusted_media_hosts" => "  trusted_media_hosts: [\"127.0.0.1\"]".to_owned(),
                    _ => line.to_owned(),
                };
                lines.push(line);
            }
            edit(&(lines.join("\n") + "\n"))
        },
    )
}

/// [`xmpp_bridge_with`] with the config as generated.
pub fn xmpp_bridge(prosody: &Prosody) -> Result<(BridgeProcess, PathBuf)> {
    xmpp_bridge_with(prosody, None, str::to_owned)
}
