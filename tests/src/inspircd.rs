//! A real InspIRCd 3 with Atheme services linked: NickServ, SASL PLAIN and the IRCv3
//! capabilities the bridge negotiates.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::certificates::TestCertificates;
use crate::irc::{IrcClient, irc_ready, probe_nick};
use crate::paths::{program, render_template, server_dir};
use crate::process::{ServerProcess, free_port};
use crate::{Error, Result};

/// A running InspIRCd with Atheme on 127.0.0.1.
#[derive(Debug)]
pub struct InspIrcd {
    // Services first, so they are killed before the server they are linked to.
    services: ServerProcess,
    ircd: ServerProcess,
    port: u16,
    dir: PathBuf,
    /// The TLS listener's port and certificates, if it has one.
    tls: Option<(u16, TestCertificates)>,
}

impl InspIrcd {
    /// The server name it announces.
    pub const SERVER_NAME: &'static str = "irc.test";

    /// One InspIRCd with services, shared by the tests of this process.
    pub async fn shared() -> Result<&'static InspIrcd> {
        static SHARED: OnceCell<InspIrcd> = OnceCell::const_new();
        SHARED.get_or_try_init(InspIrcd::start).await
    }

    /// Starts an InspIRCd and Atheme of their own, and waits until services have linked.
    pub async fn start() -> Result<InspIrcd> {
        InspIrcd::start_with(false, false).await
    }

    /// [`InspIrcd::start`], with a TLS listener too ([`InspIrcd::tls_port`]), its
    /// certificate for `localhost` signed by a CA of its own ([`InspIrcd::ca_file`]).
    pub async fn start_with_tls() -> Result<InspIrcd> {
        InspIrcd::start_with(true, false).await
    }

    /// [`InspIrcd::start`], asking each new connection's ident server (port 113 of its
    /// address) for its user name.
    pub async fn start_with_ident() -> Result<InspIrcd> {
        InspIrcd::start_with(false, true).await
    }

    async fn start_with(with_tls: bool, with_ident: bool) -> Result<InspIrcd> {
        let dir = server_dir("inspircd")?;
        let port = free_port()?;
        let services_port = free_port()?;
        let dir_text = dir.display().to_string();
        let tls = match with_tls {
            true => Some((free_port()?, TestCertificates::make(&dir, "localhost")?)),
            false => None,
        };
        let mut extra = match &tls {
            Some((tls_port, certificates)) => format!(
                "<module name=\"ssl_gnutls\">\n<module name=\"sslinfo\">\n<sslprofile name=\"tls\" provider=\"gnutls\" certfile=\"{}\" keyfile=\"{}\" hash=\"sha256\" requestclientcert=\"yes\">\n<bind address=\"127.0.0.1\" port=\"{tls_port}\" type=\"clients\" sslprofile=\"tls\">",
                certificates.cert_file.display(),
                certificates.key_file.display()
            ),
            None => String::new(),
        };
        if with_ident {
            extra.push_str("\n<module name=\"ident\">\n<ident timeout=\"5\">");
        }
        let values = [
            ("DIR", dir_text.as_str()),
            ("PORT", &port.to_string()),
            ("SERVICES_PORT", &services_port.to_string()),
            ("EXTRA", &extra),
            ("USEIDENT", if with_ident { "yes" } else { "no" }),
        ];
        render_template("inspircd.conf", &values, &dir.join("inspircd.conf"))?;
        render_template("atheme.conf", &values, &dir.join("atheme.conf"))?;

        let mut command = Command::new(program("inspircd")?);
        command
            .args(["--runasroot", "--nofork", "--nopid"])
            .arg(format!("--config={}", dir.join("inspircd.conf").display()));
        let ircd = ServerProcess::spawn("inspircd", command, &dir.join("inspircd.log"))?;
        ircd.wait_ready(Duration::from_secs(30), || irc_ready(port))
            .await?;

        let services = start_atheme(&dir)?;
        let probe = || async {
            let Ok(mut client) = IrcClient::connect(port, &probe_nick()).await else {
                return false;
            };
            let linked = client.send("ISON NickServ").await.is_ok()
                && client
                    .wait_for(Duration::from_secs(2), |l| l.command == "303")
                    .await
                    .is_ok_and(|l| l.text().eq_ignore_ascii_case("NickServ"));
            let _ = client.quit().await;
            linked
        };
        services.wait_ready(Duration::from_secs(30), probe).await?;
        Ok(InspIrcd {
            services,
            ircd,
            port,
            dir,
            tls,
        })
    }

    /// The TLS client port, if started with TLS.
    pub fn tls_port(&self) -> Option<u16> {
        self.tls.as_ref().map(|(port, _)| *port)
    }

    /// The CA that signed the TLS listener's certificate, if started with TLS.
    pub fn ca_file(&self) -> Option<&Path> {
        self.tls
            .as_ref()
            .map(|(_, certificates)| certificates.ca_file.as_path())
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The instance folder (configs, logs, services database).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A client connected and registered as `nick`.
    pub async fn client(&self, nick: &str) -> Result<IrcClient> {
        IrcClient::connect(self.port, nick).await
    }

    /// Registers `nick` as a NickServ account with `password`, so it can log in with SASL.
    pub async fn register_account(&self, nick: &str, password: &str) -> Result<()> {
        let mut client = self.client(nick).await?;
        client
            .privmsg(
                "NickServ",
                &format!("REGISTER {password} {nick}@example.org"),
            )
            .await?;
        let answer = client
            .wait_for(Duration::from_secs(10), |l| {
                l.command == "NOTICE" && l.source_nick() == Some("NickServ")
            })
            .await?;
        client.quit().await?;
        if answer.text().contains("registered") {
            Ok(())
        } else {
            Err(Error::Protocol(format!(
                "NickServ REGISTER: {}",
                answer.raw
            )))
        }
    }

    /// The IRC server process.
    pub fn ircd_process(&self) -> &ServerProcess {
        &self.ircd
    }

    /// The Atheme services process.
    pub fn services_process(&self) -> &ServerProcess {
        &self.services
    }
}

fn start_atheme(dir: &Path) -> Result<ServerProcess> {
    let mut command = Command::new(program("atheme-services")?);
    command
        .arg("-n")
        .arg("-c")
        .arg(dir.join("atheme.conf"))
        .arg("-D")
        .arg(dir)
        .arg("-l")
        .arg(dir.join("atheme.log"))
        .arg("-p")
        .arg(dir.join("atheme.pid"));
    ServerProcess::spawn("atheme", command, &dir.join("atheme.stdout.log"))
}
