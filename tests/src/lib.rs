//! The Trestle test bed: real servers on loopback for end-to-end tests.
//!
//! Each server (Synapse, InspIRCd with Atheme, ngircd, Prosody, PostgreSQL) is started in
//! its own folder under the run folder ([`run_dir`]), on free ports of 127.0.0.1, owned by
//! pid and killed when its handle is dropped or when the test process dies. Readiness is
//! probed (an HTTP endpoint, an IRC registration, an XMPP stream), never slept for.
//!
//! Tests use the `start`/`shared` constructors of each server and the real clients in
//! [`matrix`], [`irc`] and [`xmpp`]. What the servers need installed is put there by
//! `tests/install-deps.sh`, which the README's test command runs first.

pub mod bridge_process;
pub mod certificates;
pub mod error;
pub mod inspircd;
pub mod irc;
pub mod irc_bridge;
pub mod linechat;
mod linechat_client;
pub mod matrix;
pub mod measure;
pub mod ngircd;
pub mod postgres;
pub mod probe;
pub mod process;
pub mod prosody;
pub mod synapse;
pub mod xmpp;
pub mod xmpp_bridge;

mod paths;

pub use error::{Error, Result};

pub use inspircd::InspIrcd;
pub use ngircd::Ngircd;
pub use paths::{run_dir, schemathesis_venv, workspace_root};
pub use postgres::Postgres;
pub use prosody::Prosody;

pub use synapse::Synapse;

pub mod databases;

/// A new numbered folder `<what>-N` in the run folder.
pub(crate) fn next_folder(what: &str) -> Result<std::path::PathBuf> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let dir = run_dir().join(format!("{what}-{}", COUNT.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    Ok(dir)
}

/// A binary of the workspace (`bridge-irc`), built beside the running test or binary by
/// `cargo test --workspace` or `cargo build --workspace`.
pub fn workspace_binary(name: &str) -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe().map_err(Error::io("finding the test binary"))?;
    // A test runs from target/<profile>/deps, a binary of this crate from target/<profile>.
    let beside = exe.parent().map(|dir| dir.join(name));
    let above = exe
        .parent()
        .and_then(std::path::Path::parent)
        .map(|dir| dir.join(name));
    let found = [above, beside].into_iter().flatten().find(|b| b.exists());
    if let Some(binary) = found {
        Ok(binary)
    } else {
        Err(Error::Protocol(format!(
            "{name} is not built beside {}: run `cargo build --workspace` (tests/run does)",
            exe.display()
        )))
    }
}
