//! Environment overrides read from the real process environment.
//!
//! The environment is process-global and tests run on parallel threads, so this file holds
//! exactly one test: its own test binary has no other thread that could read or change the
//! environment while it is modified.

// `set_var` is unsafe only because another thread might read the environment at the same
// time; this binary runs a single test (see above).
#![allow(unsafe_code)]

use bridge_core::config::{BridgeConfig, BridgeInfo, NetworkConfig, generate_config};
use serde::Deserialize;

const INFO: BridgeInfo = BridgeInfo {
    name: "envtest",
    binary: "bridge-envtest",
    version: "0.0.0",
    default_port: 9998,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

impl NetworkConfig for Empty {
    fn template() -> String {
        "# Nothing to configure.\nenvtest: {}\n".to_owned()
    }
}

#[test]
fn process_environment_overrides_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, generate_config::<Empty>(&INFO)).expect("write config");

    let url = "postgres://bridge:secret@127.0.0.1:5432/bridge";
    // SAFETY: this is the only test in this binary, so no other thread touches the
    // environment concurrently.
    unsafe {
        std::env::set_var("TRESTLE__DATABASE__URL", url);
        std::env::set_var("TRESTLE__LOGGING__FORMAT", "json");
    }
    let config = BridgeConfig::<Empty>::load(&path, INFO);
    // SAFETY: as above.
    unsafe {
        std::env::remove_var("TRESTLE__DATABASE__URL");
        std::env::remove_var("TRESTLE__LOGGING__FORMAT");
    }

    let config = config.expect("valid");
    assert_eq!(config.database.url.expose(), url);
    assert_eq!(config.logging.format, bridge_core::config::LogFormat::Json);
}
