//! A real ngircd: the minimal IRC server (no SASL, no IRCv3 but multi-prefix) that keeps
//! the bridge honest about servers that offer nothing.

use std::process::Command;
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::Result;
use crate::irc::{IrcClient, irc_ready};
use crate::paths::{program, render_template, server_dir};
use crate::process::{ServerProcess, free_port, run_as_system_user};

/// A running ngircd on 127.0.0.1.
#[derive(Debug)]
pub struct Ngircd {
    process: ServerProcess,
    port: u16,
}

impl Ngircd {
    /// The server name it announces.
    pub const SERVER_NAME: &'static str = "ngircd.test";

    /// One ngircd shared by the tests of this process.
    pub async fn shared() -> Result<&'static Ngircd> {
        static SHARED: OnceCell<Ngircd> = OnceCell::const_new();
        SHARED.get_or_try_init(Ngircd::start).await
    }

    /// Starts an ngircd of its own.
    pub async fn start() -> Result<Ngircd> {
        let dir = server_dir("ngircd")?;
        let port = free_port()?;
        let config = dir.join("ngircd.conf");
        let dir_text = dir.display().to_string();
        render_template(
            "ngircd.conf",
            &[("DIR", &dir_text), ("PORT", &port.to_string())],
            &config,
        )?;
        std::fs::create_dir_all(dir.join("ngircd.conf.d"))
            .map_err(crate::Error::io("creating ngircd.conf.d"))?;
        let mut command = Command::new(program("ngircd")?);
        command.arg("-n").arg("-f").arg(&config);
        // ngircd will not keep root and switches to nobody by itself; started as nobody it
        // keeps the parent-death signal that ties it to this test process.
        run_as_system_user(&mut command, "nobody")?;
        let process = ServerProcess::spawn("ngircd", command, &dir.join("ngircd.log"))?;
        process
            .wait_ready(Duration::from_secs(20), || irc_ready(port))
            .await?;
        Ok(Ngircd { process, port })
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A client connected and registered as `nick`.
    pub async fn client(&self, nick: &str) -> Result<IrcClient> {
        IrcClient::connect(self.port, nick).await
    }

    /// The process, for tests that stop or inspect it.
    pub fn process(&self) -> &ServerProcess {
        &self.process
    }
}
