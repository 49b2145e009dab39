//! A throwaway PostgreSQL cluster: `initdb` into a fresh folder, `postgres` in the
//! foreground on a free port, and one new database per caller.
//!
//! PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres`
//! system user (its folder is handed to that user); otherwise as the current user.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::paths::server_dir;
use crate::process::{
    ServerProcess, free_port, is_root, run_as_system_user, run_to_completion, system_user_ids,
};
use crate::{Error, Result};

/// A running PostgreSQL cluster.
#[derive(Debug)]
pub struct Postgres {
    process: ServerProcess,
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
    next_database: AtomicUsize,
}

impl Postgres {
    /// One cluster shared by the tests of this process (each test takes its own database).
    pub async fn shared() -> Result<&'static Postgres> {
        static SHARED: OnceCell<Postgres> = OnceCell::const_new();
        SHARED.get_or_try_init(Postgres::start).await
    }

    /// Starts a cluster of its own.
    pub async fn start() -> Result<Postgres> {
        let bin = postgres_bin()?;
        let dir = server_dir("postgres")?;
        let data = dir.join("data");
        // The cluster's user must own its folder (initdb, the socket, the log).
        if is_root()? {
            let (uid, gid) = system_user_ids("postgres")?;
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(Error::io(format!("handing {} to postgres", dir.display())))?;
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data);
        run_as_system_user(&mut initdb, "postgres")?;
        run_to_completion("initdb", &mut initdb)?;

        let port = free_port()?;
        let mut command = Command::new(bin.join("postgres"));
        command
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(&dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                // The tests kill the bridge, never the machine: fsync proves nothing here.
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ]);
        run_as_system_user(&mut command, "postgres")?;
        let process = ServerProcess::spawn("postgres", command, &dir.join("postgres.log"))?
            .with_stop_signal(libc::SIGINT);
        let pg_isready = bin.join("pg_isready");
        process
            .wait_ready(Duration::from_secs(30), || async {
                tokio::process::Command::new(&pg_isready)
                    .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                    .status()
                    .await
                    .is_ok_and(|s| s.success())
            })
            .await?;
        Ok(Postgres {
            process,
            port,
            dir,
            bin,
            next_database: AtomicUsize::new(1),
        })
    }

    /// Creates a new empty database and returns its URL.
    pub async fn create_database(&self) -> Result<String> {
        let name = format!(
            "test_{}",
            self.next_database.fetch_add(1, Ordering::Relaxed)
        );
        let output = tokio::process::Command::new(self.bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                &name,
            ])
            .output()
            .await
            .map_err(Error::io("running createdb"))?;
        if !output.status.success() {
            return Err(Error::Protocol(format!(
                "createdb {name}: {}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(format!(
            "postgres://postgres@127.0.0.1:{}/{name}",
            self.port
        ))
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The instance folder (data, socket, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process, for tests that stop or inspect it.
    pub fn process(&self) -> &ServerProcess {
        &self.process
    }
}

/// The newest installed PostgreSQL's binaries folder.
fn postgres_bin() -> Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| Error::Missing("PostgreSQL is not installed".into()))?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("postgres").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| Error::Missing("no PostgreSQL server binaries".into()))
}
