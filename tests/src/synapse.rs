//! A real Synapse homeserver: SQLite, rate limits lifted, federation off, the appservice
//! registrations a test gives it, and users created through the shared-secret admin API.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hmac::{Hmac, Mac};
use tokio::sync::OnceCell;

use crate::matrix::MatrixClient;
use crate::paths::{render_template, server_dir, synapse_venv};
use crate::process::{ServerProcess, free_port};
use crate::{Error, Result};

/// The server name every test Synapse uses.
pub const SERVER_NAME: &str = "localhost";

/// How to start a Synapse of one's own.
#[derive(Debug, Clone, Default)]
pub struct SynapseOptions {
    /// Appservice registration files it loads.
    pub appservice_files: Vec<PathBuf>,
    /// The client port to use if it is free (else a free one is chosen).
    pub port: Option<u16>,
}

/// A running Synapse on 127.0.0.1.
#[derive(Debug)]
pub struct Synapse {
    process: ServerProcess,
    port: u16,
    shared_secret: String,
    dir: PathBuf,
}

impl Synapse {
    /// One Synapse without appservices, shared by the tests of this process.
    pub async fn shared() -> Result<&'static Synapse> {
        static SHARED: OnceCell<Synapse> = OnceCell::const_new();
        SHARED.get_or_try_init(|| Synapse::start(&[])).await
    }

    /// Starts a Synapse of its own that loads the given appservice registration files.
    pub async fn start(appservice_files: &[PathBuf]) -> Result<Synapse> {
        Synapse::start_with(SynapseOptions {
            appservice_files: appservice_files.to_vec(),
            ..SynapseOptions::default()
        })
        .await
    }

    /// Starts a Synapse of its own with the given options.
    pub async fn start_with(options: SynapseOptions) -> Result<Synapse> {
        let SynapseOptions {
            appservice_files,
            port,
        } = options;
        let dir = server_dir("synapse")?;
        let port = match port {
            Some(port) if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() => port,
            _ => free_port()?,
        };
        let shared_secret = random_token();
        let files = appservice_files
            .iter()
            .map(|f| serde_json::Value::String(f.display().to_string()))
            .collect::<Vec<_>>();
        let config = dir.join("homeserver.yaml");
        render_template(
            "synapse.yaml",
            &[
                ("DIR", &dir.display().to_string()),
                ("PORT", &port.to_string()),
                ("SHARED_SECRET", &shared_secret),
                // A JSON array is a YAML flow sequence, with every path quoted.
                (
                    "APPSERVICE_FILES",
                    &serde_json::Value::Array(files).to_string(),
                ),
            ],
            &config,
        )?;
        render_template(
            "synapse.log.yaml",
            &[("DIR", &dir.display().to_string())],
            &dir.join("log.yaml"),
        )?;

        // Synapse writes its signing key on first start; no separate key step needed.
        let python = synapse_venv()?.join("bin/python");

        let mut command = eatmydata();
        command
            .arg(&python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&config);
        let process = ServerProcess::spawn("synapse", command, &dir.join("stdout.log"))?;
        let synapse = Synapse {
            process,
            port,
            shared_secret,
            dir,
        };
        let versions = format!("{}/_matrix/client/versions", synapse.url());
        let http = reqwest::Client::new();
        synapse
            .process
            .wait_ready(Duration::from_secs(60), || async {
                matches!(http.get(&versions).send().await, Ok(r) if r.status().is_success())
            })
            .await
            .map_err(|e| synapse.with_homeserver_log(e))?;
        Ok(synapse)
    }

    /// The client-server base URL, e.g. `http://127.0.0.1:8008`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port of the client listener.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server name (the part after `:` in user ids).
    pub fn server_name(&self) -> &'static str {
        SERVER_NAME
    }

    /// The instance folder (config, database, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process, for tests that stop or inspect it.
    pub fn process(&self) -> &ServerProcess {
        &self.process
    }

    /// Registers a user through the shared-secret admin API and returns a logged-in client.
    pub async fn register_user(
        &self,
        localpart: &str,
        password: &str,
        admin: bool,
    ) -> Result<MatrixClient> {
        let http = reqwest::Client::new();
        let endpoint = format!("{}/_synapse/admin/v1/register", self.url());
        let nonce: serde_json::Value = http
            .get(&endpoint)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(Error::http("asking Synapse for a registration nonce"))?
            .json()
            .await
            .map_err(Error::http("reading the registration nonce"))?;
        let nonce = nonce["nonce"]
            .as_str()
            .ok_or_else(|| Error::Protocol(format!("no nonce in {nonce}")))?;
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(self.shared_secret.as_bytes())
            .map_err(|e| Error::Protocol(e.to_string()))?;
        let role = if admin { "admin" } else { "notadmin" };
        for (i, part) in [nonce, localpart, password, role].iter().enumerate() {
            if i > 0 {
                mac.update(b"\0");
            }
            mac.update(part.as_bytes());
        }
        let body = serde_json::json!({
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "mac": hex::encode(mac.finalize().into_bytes()),
        });
        let response = http
            .post(&endpoint)
            .json(&body)
            .send()
            .await
            .map_err(Error::http("registering a user"))?;
        let status = response.status();
        let answer: serde_json::Value = response
            .json()
            .await
            .map_err(Error::http("reading the registration answer"))?;
        if !status.is_success() {
            return Err(Error::Protocol(format!(
                "registering @{localpart}: {status} {answer}"
            )));
        }
        let token = answer["access_token"].as_str().unwrap_or_default();
        let user_id = answer["user_id"].as_str().unwrap_or_default();
        MatrixClient::from_token(&self.url(), user_id, token)
    }

    fn with_homeserver_log(&self, error: Error) -> Error {
        match error {
            Error::ServerStart { server, reason, .. } => {
                let log = self.dir.join("homeserver.log");
                let log_tail = format!(
                    "{}\n--- last lines of {} ---\n{}",
                    self.process.log_tail(20),
                    log.display(),
                    crate::process::log_tail(&log, 40)
                );
                Error::ServerStart {
                    server,
                    reason,
                    log: self.process.log_path().to_path_buf(),
                    log_tail,
                }
            }
            other => other,
        }
    }
}

/// `eatmydata` when installed (SQLite fsyncs make Synapse ~25% slower and prove nothing
/// about our code), else a plain command.
fn eatmydata() -> Command {
    if Path::new("/usr/bin/eatmydata").exists() {
        Command::new("/usr/bin/eatmydata")
    } else {
        let mut env = Command::new("/usr/bin/env");
        env.arg("--");
        env
    }
}

/// A 32-character random alphanumeric secret.
pub(crate) fn random_token() -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}
