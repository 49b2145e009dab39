//! The example network of `bridge-core/examples`: its server (`linechat-server`) and its
//! bridge (`linechat`), run as the operator runs them, plus the client tests talk with.
//!
//! [`LinechatBridge`] writes the bridge's config with `generate-config` and
//! `generate-registration`, then runs and stops it (or kills it) as often as a test asks,
//! on the same database.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use crate::linechat_client::LineChatClient;
use crate::process::{ServerProcess, free_port, port_open};
use crate::{Error, Result, run_dir};

/// A built binary of the workspace's examples (`cargo test --workspace` builds them).
pub fn example_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(Error::io("finding the test binary"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| Error::Protocol("the test binary is not in target/<profile>/deps".into()))?;
    let binary = profile_dir.join("examples").join(name);
    if binary.exists() {
        Ok(binary)
    } else {
        Err(Error::Protocol(format!(
            "{} is not built: run `cargo build -p bridge-core --examples` (tests/run does)",
            binary.display()
        )))
    }
}

fn next_folder(what: &str) -> Result<PathBuf> {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let dir = run_dir().join(format!("{what}-{}", COUNT.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    Ok(dir)
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

/// The example bridge, configured and registered, run on demand.
#[derive(Debug)]
pub struct LinechatBridge {
    dir: PathBuf,
    port: u16,
    env: Vec<(String, String)>,
    process: Option<ServerProcess>,
    runs: usize,
}

impl LinechatBridge {
    /// Writes the config and registration for a bridge to the linechat server at `server`,
    /// on the database at `database_url`. Returns it and its registration file, which
    /// the homeserver must load before [`LinechatBridge::start`].
    pub fn prepare(
        server: SocketAddr,
        database_url: Option<String>,
    ) -> Result<(LinechatBridge, PathBuf)> {
        Self::prepare_with(server, database_url, str::to_owned)
    }

    /// [`LinechatBridge::prepare`], with the generated config file passed through `edit`
    /// (for settings the environment cannot carry, such as permissions).
    pub fn prepare_with(
        server: SocketAddr,
        database_url: Option<String>,
        edit: impl FnOnce(&str) -> String,
    ) -> Result<(LinechatBridge, PathBuf)> {
        let dir = next_folder("linechat-bridge")?;
        let port = free_port()?;
        let registration = dir.join("registration.yaml");
        let database_url = database_url
            .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", dir.join("bridge.db").display()));
        let env = vec![
            (
                "TRESTLE__HOMESERVER__DOMAIN".to_owned(),
                "localhost".to_owned(),
            ),
            (
                "TRESTLE__APPSERVICE__BIND".to_owned(),
                format!("127.0.0.1:{port}"),
            ),
            (
                "TRESTLE__APPSERVICE__URL".to_owned(),
                format!("http://127.0.0.1:{port}"),
            ),
            (
                "TRESTLE__APPSERVICE__RECEIVE_EPHEMERAL".to_owned(),
                "true".to_owned(),
            ),
            (
                "TRESTLE__APPSERVICE__REGISTRATION".to_owned(),
                registration.display().to_string(),
            ),
            ("TRESTLE__DATABASE__URL".to_owned(), database_url),
            ("TRESTLE__LINECHAT__SERVER".to_owned(), server.to_string()),
            (
                "TRESTLE__LOGGING__LEVEL".to_owned(),
                "info,bridge_core=debug".to_owned(),
            ),
        ];
        let bridge = LinechatBridge {
            dir,
            port,
            env,
            process: None,
            runs: 0,
        };
        let config = bridge.config_path();
        bridge.run_command(&["generate-config", "--output", &config.display().to_string()])?;
        let text = std::fs::read_to_string(&config).map_err(Error::io("reading the config"))?;
        std::fs::write(&config, edit(&text)).map_err(Error::io("writing the config"))?;
        bridge.run_command(&["generate-registration"])?;
        Ok((bridge, registration))
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    fn command(&self, homeserver: Option<&str>) -> Result<Command> {
        let mut command = Command::new(example_binary("linechat")?);
        command.arg("--config").arg(self.config_path());
        command.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command.env(
            "TRESTLE__HOMESERVER__URL",
            homeserver.unwrap_or("http://127.0.0.1:9"),
        );
        Ok(command)
    }

    fn run_command(&self, args: &[&str]) -> Result<()> {
        let mut command = self.command(None)?;
        command.args(args);
        crate::process::run_to_completion(&format!("linechat {}", args.join(" ")), &mut command)
    }

    /// Starts the bridge against the homeserver at `homeserver_url` and waits until its
    /// connector runs.
    pub async fn start(&mut self, homeserver_url: &str) -> Result<()> {
        self.runs += 1;
        let log = self.dir.join(format!("bridge-{}.log", self.runs));
        let command = self.command(Some(homeserver_url))?;
        let process = ServerProcess::spawn("linechat-bridge", command, &log)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("bridge running") {
                break;
            }
            if process.exit_status().is_some() || Instant::now() > deadline {
                return Err(process.start_error("the bridge did not start"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.process = Some(process);
        Ok(())
    }

    /// Kills the bridge at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill();
        }
    }

    /// Stops the bridge with SIGTERM, waiting up to 20 s.
    pub async fn stop(&mut self) {
        if let Some(process) = self.process.take() {
            process.stop(Duration::from_secs(20)).await;
        }
    }

    /// The endpoint's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The current run's log.
    pub fn log(&self) -> String {
        self.process
            .as_ref()
            .map(|p| p.log_tail(200))
            .unwrap_or_default()
    }
}
