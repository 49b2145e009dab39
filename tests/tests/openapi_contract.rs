//! The appservice endpoint against the Matrix spec's own OpenAPI files
//! (`../shared/spec/matrix/data/api/application-service/`), with schemathesis generating
//! valid and invalid requests from them: no request may get a server error, and every
//! answer must have the documented content type and shape.
//!
//! Two of schemathesis's checks are left out on purpose, because the spec files
//! cannot say what the spec's text does:
//! - undocumented status codes: the text requires 401/403 for tokens and 400 `M_NOT_JSON`,
//!   while the files document only the success codes;
//! - rejecting schema-valid requests: an id is typed only as "string", yet a string that is
//!   not a user id or alias is answered 400 `M_INVALID_PARAM`, and an empty body
//!   `M_NOT_JSON`.
//!
//! Accepting schema-violating requests is also left out for two files:
//! - transactions: a malformed event or ephemeral item inside a well-formed transaction is
//!   recorded and the transaction accepted, because the homeserver would retry a refused
//!   transaction forever and deliver nothing after it;
//! - ping: `"transaction_id": null` is accepted, because Synapse sends exactly that when
//!   the bridge's own ping had no id (`bridge_binaries.rs` pings that way through a real
//!   Synapse).

use std::path::{Path, PathBuf};

use trestle_tests::databases::fresh_sqlite;
use trestle_tests::probe::IngestProbe;
use trestle_tests::process::free_port;
use trestle_tests::{run_dir, schemathesis_venv, workspace_root};

const TOKEN: &str = "contract-test-token";

fn spec_dir() -> PathBuf {
    std::env::var_os("TRESTLE_MATRIX_SPEC").map_or_else(
        || workspace_root().join("../shared/spec/matrix/data/api/application-service"),
        PathBuf::from,
    )
}

async fn schemathesis(spec: &Path, base: &str, excluded: &[&str]) -> (bool, String) {
    let st = schemathesis_venv()
        .expect("the schemathesis venv")
        .join("bin/st");
    let output = tokio::process::Command::new(st)
        .arg("run")
        .arg(spec)
        .args([
            "--url",
            base,
            "--header",
            &format!("Authorization: Bearer {TOKEN}"),
        ])
        .args(["--checks", "all", "--exclude-checks", &excluded.join(",")])
        .args([
            "--max-time",
            "8",
            "--generation-deterministic",
            "--output-truncate",
            "false",
        ])
        .current_dir(run_dir())
        .output()
        .await
        .expect("run schemathesis");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), report)
}

#[tokio::test]
async fn the_endpoint_keeps_the_appservice_openapi_contract() {
    let port = free_port().unwrap();
    let log = run_dir().join("openapi-contract.log");
    let binary = Path::new(env!("CARGO_BIN_EXE_ingest-probe"));
    let mut probe = IngestProbe::new(binary, &fresh_sqlite().url, port, TOKEN, &log, 0);
    probe.start().await.unwrap();
    let base = format!("http://127.0.0.1:{port}/_matrix/app/v1");
    let always_excluded = ["status_code_conformance", "positive_data_acceptance"];

    let mut failures = Vec::new();
    for file in [
        "transactions",
        "query_user",
        "query_room",
        "ping",
        "protocols",
    ] {
        let spec = spec_dir().join(format!("{file}.yaml"));
        assert!(spec.exists(), "missing {}", spec.display());
        let mut excluded = always_excluded.to_vec();
        if file == "transactions" || file == "ping" {
            excluded.push("negative_data_rejection");
        }
        let (passed, report) = schemathesis(&spec, &base, &excluded).await;
        if !passed {
            failures.push(format!("==== {file}.yaml\n{report}"));
        }
    }
    probe.stop().await.unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
