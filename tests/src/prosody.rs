//! A real Prosody: c2s for test users, a MUC service, and a component domain for the
//! bridge (XEP-0114).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OnceCell;

use crate::Result;
use crate::paths::{program, render_template, server_dir};
use crate::process::{ServerProcess, free_port, run_to_completion};
use crate::synapse::random_token;
use crate::xmpp::XmppClient;

/// A running Prosody on 127.0.0.1.
#[derive(Debug)]
pub struct Prosody {
    process: ServerProcess,
    config: PathBuf,
    c2s_port: u16,
    component_port: u16,
    component_secret: String,
}

impl Prosody {
    /// The user domain.
    pub const DOMAIN: &'static str = "localhost";
    /// The MUC service.
    pub const MUC_DOMAIN: &'static str = "conference.localhost";
    /// The bridge's component domain.
    pub const COMPONENT_DOMAIN: &'static str = "bridge.localhost";

    /// One Prosody shared by the tests of this process.
    pub async fn shared() -> Result<&'static Prosody> {
        static SHARED: OnceCell<Prosody> = OnceCell::const_new();
        SHARED.get_or_try_init(Prosody::start).await
    }

    /// Starts a Prosody of its own.
    pub async fn start() -> Result<Prosody> {
        let dir = server_dir("prosody")?;
        let c2s_port = free_port()?;
        let component_port = free_port()?;
        let component_secret = random_token();
        let config = dir.join("prosody.cfg.lua");
        render_template(
            "prosody.cfg.lua",
            &[
                ("DIR", &dir.display().to_string()),
                ("C2S_PORT", &c2s_port.to_string()),
                ("COMPONENT_PORT", &component_port.to_string()),
                ("COMPONENT_SECRET", &component_secret),
            ],
            &config,
        )?;
        let process = spawn(&config, c2s_port, component_port).await?;
        Ok(Prosody {
            process,
            config,
            c2s_port,
            component_port,
            component_secret,
        })
    }

    /// Stops the server (as a crash would: SIGKILL) and starts it again on the same
    /// ports and data; accounts stay, non-persistent rooms are gone.
    pub async fn restart(&mut self) -> Result<()> {
        self.process.kill();
        self.process = spawn(&self.config, self.c2s_port, self.component_port).await?;
        Ok(())
    }

    /// Runs `line` in Prosody's admin shell (`prosodyctl shell`; a line starting with `>`
    /// is Lua run inside the server), for a state no client can bring about.
    pub fn shell(&self, line: &str) -> Result<()> {
        run_to_completion(
            "prosodyctl shell",
            Command::new(program("prosodyctl")?)
                .arg("--config")
                .arg(&self.config)
                .args(["shell", line]),
        )
    }

    /// Makes the group chat `room` forget its occupant `nick` without telling anyone, as
    /// a room restarted inside a running server would.
    pub fn forget_occupant(&self, room: &str, nick: &str) -> Result<()> {
        let occupant = format!("{room}/{nick}");
        self.shell(&format!(
            "> local room = prosody.hosts[\"{}\"].modules.muc.get_room_from_jid(\"{room}\"); \
             local occupant = room:get_occupant_by_nick(\"{occupant}\"); \
             for jid in occupant:each_session() do room._jid_nick[jid] = nil end; \
             room._occupants[\"{occupant}\"] = nil",
            Self::MUC_DOMAIN
        ))
    }

    /// Creates a user account `user@localhost`.
    pub fn register_user(&self, user: &str, password: &str) -> Result<()> {
        run_to_completion(
            "prosodyctl register",
            Command::new(program("prosodyctl")?)
                .arg("--config")
                .arg(&self.config)
                .args(["register", user, Self::DOMAIN, password]),
        )
    }

    /// Creates the account if needed and returns a logged-in client.
    pub async fn client(&self, user: &str, password: &str) -> Result<XmppClient> {
        self.register_user(user, password)?;
        XmppClient::connect(self.c2s_port, Self::DOMAIN, user, password).await
    }

    /// The client-to-server port.
    pub fn c2s_port(&self) -> u16 {
        self.c2s_port
    }

    /// The component port (XEP-0114).
    pub fn component_port(&self) -> u16 {
        self.component_port
    }

    /// The secret of the bridge component.
    pub fn component_secret(&self) -> &str {
        &self.component_secret
    }

    /// The config file.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// The process, for tests that stop or inspect it.
    pub fn process(&self) -> &ServerProcess {
        &self.process
    }
}

/// Starts Prosody with `config` and waits until both its ports answer.
async fn spawn(config: &Path, c2s_port: u16, component_port: u16) -> Result<ServerProcess> {
    let mut command = Command::new(program("prosody")?);
    command.arg("--config").arg(config).arg("-F");
    let log = config.with_file_name("prosody.stdout.log");
    let process = ServerProcess::spawn("prosody", command, &log)?;
    process
        .wait_ready(Duration::from_secs(30), || async {
            stream_opens(c2s_port, "jabber:client", Prosody::DOMAIN).await
                && stream_opens(
                    component_port,
                    "jabber:component:accept",
                    Prosody::COMPONENT_DOMAIN,
                )
                .await
        })
        .await?;
    Ok(process)
}

/// Whether an XMPP server answers a stream header on `port` with its own.
async fn stream_opens(port: u16, namespace: &str, to: &str) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let header = format!(
            "<?xml version='1.0'?><stream:stream to='{to}' version='1.0' xmlns='{namespace}' xmlns:stream='http://etherx.jabber.org/streams'>"
        );
        stream.write_all(header.as_bytes()).await.ok()?;
        let mut seen = Vec::new();
        let mut buffer = [0u8; 1024];
        while !String::from_utf8_lossy(&seen).contains("stream:stream") {
            let read = stream.read(&mut buffer).await.ok()?;
            if read == 0 {
                return None;
            }
            seen.extend_from_slice(&buffer[..read]);
        }
        Some(())
    };
    tokio::time::timeout(Duration::from_secs(3), attempt)
        .await
        .ok()
        .flatten()
        .is_some()
}
