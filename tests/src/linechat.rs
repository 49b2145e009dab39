//! The example network of `bridge-core/examples`: its server (`linechat-server`) and its
//! bridge (`linechat`), run as the operator runs them, plus the client tests talk with.
//!
//! [`LinechatBridge`] writes the bridge's config with `generate-config` and
//! `generate-registration`, then runs and stops it (or kills it) as often as a test asks,
//! on the same database.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub use crate::bridge_process::BridgeProcess;
pub use crate::linechat_client::LineChatClient;
use crate::process::{ServerProcess, free_port, port_open};
use crate::{Error, Result, next_folder};

/// A built binary of the workspace's examples (`cargo test --workspace` builds them;
/// `cargo build -p bridge-core --examples` rebuilds them alone).
pub fn example_binary(name: &str) -> Result<PathBuf> {
    crate::workspace_binary(&format!("examples/{name}"))
}

/// A running linechat server.
#[derive(Debug)]
pub struct LinechatServer {
    process: ServerProcess,
    port: u16,
}

impl LinechatServer {
    /// Starts a server on a free port.
    pub async fn start() -> Result<LinechatServer> {
        let dir = next_folder("linechat-server")?;
        let port = free_port()?;
        let mut command = Command::new(example_binary("linechat-server")?);
        command.arg("--listen").arg(format!("127.0.0.1:{port}"));
        let process = ServerProcess::spawn("linechat-server", command, &dir.join("server.log"))?;
        process
            .wait_ready(Duration::from_secs(10), || port_open(port))
            .await?;
        Ok(LinechatServer { process, port })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A client logged in as `user`.
    pub async fn client(&self, user: &str, name: &str) -> Result<LineChatClient> {
        LineChatClient::connect(self.addr(), user, name)
            .await
            .map_err(Error::io(format!("connecting to linechat as {user}")))
    }

    /// The server process.
    pub fn process(&self) -> &ServerProcess {
        &self.process
    }
}

/// The example bridge, run as a [`BridgeProcess`].
pub type LinechatBridge = BridgeProcess;

/// The example bridge to the linechat server at `server`, configured and registered (see
/// [`BridgeProcess::prepare`]).
pub fn linechat_bridge(
    server: SocketAddr,
    database_url: Option<String>,
) -> Result<(LinechatBridge, PathBuf)> {
    linechat_bridge_with(server, database_url, str::to_owned)
}

/// [`linechat_bridge`], with the generated config file passed through `edit` (for
/// settings the environment cannot carry, such as permissions).
pub fn linechat_bridge_with(
    server: SocketAddr,
    database_url: Option<String>,
    edit: impl FnOnce(&str) -> String,
) -> Result<(LinechatBridge, PathBuf)> {
    BridgeProcess::prepare(
        example_binary("linechat")?,
        "linechat-bridge",
        &[
            ("TRESTLE__LINECHAT__SERVER", server.to_string()),
            (
                "TRESTLE__LOGGING__LEVEL",
                "info,bridge_core=debug".to_owned(),
            ),
        ],
        database_url,
        edit,
    )
}
