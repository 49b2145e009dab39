//! The `bridge-xmpp` command line end to end, on the built binary. The shared commands are
//! covered in depth by bridge-irc's tests; these check what is XMPP's own.

use std::path::Path;
use std::process::{Command, Output};

use registration::Registration;

const BIN: &str = env!("CARGO_BIN_EXE_bridge-xmpp");

/// The binary, run in `dir` with an empty environment so that the developer's own
/// `TRESTLE_*` or `RUST_LOG` variables cannot change the outcome.
fn bridge(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command.current_dir(dir).env_clear();
    command
}

fn run(command: &mut Command) -> Output {
    command.output().expect("the binary runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn version_is_printed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = run(bridge(dir.path()).arg("--version"));
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("bridge-xmpp {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn generated_config_checks_and_registers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = run(bridge(dir.path()).args(["generate-config", "-o", "config.yaml"]));
    assert!(output.status.success(), "{}", text(&output));
    let generated = std::fs::read_to_string(dir.path().join("config.yaml")).expect("written");
    assert!(generated.contains("\nxmpp:\n"), "{generated}");
    assert!(generated.contains("component_secret: \""), "{generated}");

    let output = run(bridge(dir.path()).arg("check-config"));
    assert!(output.status.success(), "{}", text(&output));

    let output = run(bridge(dir.path()).arg("generate-registration"));
    assert!(output.status.success(), "{}", text(&output));
    let registration =
        Registration::load(dir.path().join("xmpp-registration.yaml")).expect("written");
    assert_eq!(registration.validate_for_bridge(), Ok(()));
    assert_eq!(registration.protocols(), ["xmpp"]);
}

#[test]
fn broken_xmpp_section_is_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = run(bridge(dir.path()).args(["generate-config", "-o", "config.yaml"]));
    assert!(output.status.success(), "{}", text(&output));
    let generated = std::fs::read_to_string(dir.path().join("config.yaml")).expect("written");
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, "from-a-file\n").expect("write");
    let broken = generated
        .replace(
            "component_domain: \"matrix.localhost\"",
            "component_domain: \"not a domain\"",
        )
        .replace("server_port: 5347", "server_port: 0")
        .replace(
            "  component_secret: \"",
            &format!(
                "  component_secret_file: \"{}\"\n  component_secret: \"",
                secret_file.display()
            ),
        );
    std::fs::write(dir.path().join("broken.yaml"), broken).expect("write");

    let output = run(bridge(dir.path()).args(["-c", "broken.yaml", "check-config"]));
    assert_eq!(output.status.code(), Some(1));
    let message = text(&output);
    for key in [
        "xmpp.component_domain:",
        "xmpp.server_port:",
        "xmpp.component_secret_file:",
    ] {
        assert!(message.contains(key), "{key} not in {message}");
    }
}
