//! The bridge binaries as an operator runs them, against a real Synapse:
//! `generate-config`, settings through `TRESTLE__...` environment overrides,
//! `generate-registration`, Synapse loading that registration, `run`, Synapse's ping
//! reaching the bridge, readiness and metrics, and a clean stop on SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use registration::Registration;
use tokio::process::Command;
use trestle_tests::process::free_port;
use trestle_tests::{Synapse, run_dir};

/// A binary of the workspace, built beside this test by `cargo test --workspace`.
fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let binary = dir.join(name);
    assert!(
        binary.exists(),
        "{} is not built: run `cargo build -p {name}` (or tests/run)",
        binary.display()
    );
    binary
}

async fn bridge_runs_against_synapse(name: &str, id: &str) {
    let binary = workspace_binary(name);
    let dir = run_dir().join(format!("{name}-e2e"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    let port = free_port().unwrap();
    // Synapse's port is only known once it runs, and it needs the registration first:
    // the homeserver URL is only used by later issues' Matrix client, so a placeholder
    // is fine here.
    let env = [
        ("TRESTLE__HOMESERVER__URL", "http://127.0.0.1:9".to_owned()),
        ("TRESTLE__HOMESERVER__DOMAIN", "localhost".to_owned()),
        ("TRESTLE__APPSERVICE__BIND", format!("127.0.0.1:{port}")),
        (
            "TRESTLE__APPSERVICE__URL",
            format!("http://127.0.0.1:{port}"),
        ),
        (
            "TRESTLE__APPSERVICE__REGISTRATION",
            dir.join("registration.yaml").display().to_string(),
        ),
        (
            "TRESTLE__DATABASE__URL",
            format!("sqlite://{}?mode=rwc", dir.join("bridge.db").display()),
        ),
    ];
    let run = |args: &[&str]| {
        let mut command = Command::new(&binary);
        command
            .arg("--config")
            .arg(&config)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        command
    };
    let status = run(&["generate-config", "--output", config.to_str().unwrap()])
        .status()
        .await
        .unwrap();
    assert!(status.success(), "{name} generate-config");
    let status = run(&["generate-registration"]).status().await.unwrap();
    assert!(status.success(), "{name} generate-registration");
    let output = run(&["check-config"]).output().await.unwrap();
    assert!(
        output.status.success(),
        "{name} check-config: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let registration_file = dir.join("registration.yaml");
    let registration = Registration::load(&registration_file).unwrap();
    assert_eq!(registration.id, id);
    let synapse = Synapse::start(std::slice::from_ref(&registration_file))
        .await
        .unwrap();

    let mut bridge = run(&["run"])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{port}/health/ready");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(http.get(&ready).send().await, Ok(r) if r.status().is_success()) {
        assert!(Instant::now() < deadline, "{name} never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let ping = http
        .post(format!(
            "{}/_matrix/client/v1/appservice/{id}/ping",
            synapse.url()
        ))
        .bearer_auth(&registration.as_token)
        .json(&serde_json::json!({"transaction_id": "e2e"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ping.status(),
        200,
        "{name}: {}",
        ping.text().await.unwrap_or_default()
    );
    // Without an id, Synapse forwards `"transaction_id": null`: that must work too.
    let ping = http
        .post(format!(
            "{}/_matrix/client/v1/appservice/{id}/ping",
            synapse.url()
        ))
        .bearer_auth(&registration.as_token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ping.status(),
        200,
        "{name}, ping without an id: {}",
        ping.text().await.unwrap_or_default()
    );

    let metrics = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("trestle_http_requests"),
        "{name} metrics:\n{metrics}"
    );

    let pid = bridge.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), bridge.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "{name} stops cleanly on SIGTERM: {status}"
    );
}

#[tokio::test]
async fn bridge_irc_runs_against_synapse() {
    bridge_runs_against_synapse("bridge-irc", "trestle-irc").await;
}

#[tokio::test]
async fn bridge_xmpp_runs_against_synapse() {
    bridge_runs_against_synapse("bridge-xmpp", "trestle-xmpp").await;
}
