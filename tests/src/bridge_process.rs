//! A bridge binary run as an operator runs it: `generate-config`, settings through
//! `TRESTLE__...` variables, `generate-registration`, then run, stopped or killed as
//! often as a test asks, on the same database.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{ServerProcess, free_port};
use crate::{Error, Result, next_folder};

/// A bridge binary, configured and registered, run on demand.
#[derive(Debug)]
pub struct BridgeProcess {
    binary: PathBuf,
    label: String,
    dir: PathBuf,
    port: u16,
    env: Vec<(String, String)>,
    process: Option<ServerProcess>,
    runs: usize,
}

impl BridgeProcess {
    /// Writes the config (`generate-config`, then `edit`) and the registration
    /// (`generate-registration`) of `binary`, with `env` added to the settings every
    /// bridge needs here, on the database at `database_url` (default: SQLite in its
    /// folder). Returns it and its registration file, which the homeserver must load
    /// before [`BridgeProcess::start`].
    pub fn prepare(
        binary: PathBuf,
        label: &str,
        env: &[(&str, String)],
        database_url: Option<String>,
        edit: impl FnOnce(&str) -> String,
    ) -> Result<(BridgeProcess, PathBuf)> {
        let dir = next_folder(label)?;
        let port = free_port()?;
        let registration = dir.join("registration.yaml");
        let database_url = database_url
            .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", dir.join("bridge.db").display()));
        let mut all_env = vec![
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
        ];
        all_env.extend(env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let bridge = BridgeProcess {
            binary,
            label: label.to_owned(),
            dir,
            port,
            env: all_env,
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
        let mut command = Command::new(&self.binary);
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
        crate::process::run_to_completion(
            &format!("{} {}", self.label, args.join(" ")),
            &mut command,
        )
    }

    /// Starts the bridge against the homeserver at `homeserver_url` and waits until its
    /// connector runs.
    pub async fn start(&mut self, homeserver_url: &str) -> Result<()> {
        self.runs += 1;
        let log = self.dir.join(format!("bridge-{}.log", self.runs));
        let command = self.command(Some(homeserver_url))?;
        let process = ServerProcess::spawn(&self.label, command, &log)?;
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

    /// The running process's id, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ServerProcess::pid)
    }

    /// The endpoint's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bridge's folder (config, registration, logs, SQLite database).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The whole log of the current run.
    pub fn full_log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("bridge-{}.log", self.runs)))
            .unwrap_or_default()
    }

    /// The current run's log (its last 200 lines).
    pub fn log(&self) -> String {
        self.process
            .as_ref()
            .map(|p| p.log_tail(200))
            .unwrap_or_default()
    }
}
