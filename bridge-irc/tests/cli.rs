//! The `bridge-irc` command line end to end, on the built binary: what an operator runs to
//! set the bridge up.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use registration::Registration;

const BIN: &str = env!("CARGO_BIN_EXE_bridge-irc");

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

/// Stdout and stderr together, for looking for a message wherever it was written.
fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn generate_config(dir: &Path) {
    let output = run(bridge(dir).args(["generate-config", "--output", "config.yaml"]));
    assert!(output.status.success(), "{}", text(&output));
}

#[test]
fn version_is_printed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = run(bridge(dir.path()).arg("--version"));
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("bridge-irc {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn generated_config_checks_and_registers() {
    let dir = tempfile::tempdir().expect("temp dir");
    generate_config(dir.path());
    let config = dir.path().join("config.yaml");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&config)
            .expect("written")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the config holds secrets");
    }
    let generated = std::fs::read_to_string(&config).expect("readable");
    assert!(generated.contains("\nirc:\n"), "{generated}");

    // Never overwritten by accident.
    let output = run(bridge(dir.path()).args(["generate-config", "-o", "config.yaml"]));
    assert!(!output.status.success());
    assert!(text(&output).contains("--force"), "{}", text(&output));
    assert_eq!(
        std::fs::read_to_string(&config).expect("readable"),
        generated
    );
    let output = run(bridge(dir.path()).args(["generate-config", "-o", "config.yaml", "--force"]));
    assert!(output.status.success(), "{}", text(&output));

    let output = run(bridge(dir.path()).args(["-c", "config.yaml", "check-config"]));
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("generate-registration"),
        "notes the missing registration"
    );

    let output = run(bridge(dir.path()).arg("generate-registration"));
    assert!(output.status.success(), "{}", text(&output));
    let registration_path = dir.path().join("irc-registration.yaml");
    let first = Registration::load(&registration_path).expect("registration written");
    assert_eq!(first.validate_for_bridge(), Ok(()));
    assert_eq!(first.protocols(), ["irc"]);
    assert_eq!(first.sender_localpart, "ircbot");

    let output = run(bridge(dir.path()).arg("generate-registration"));
    assert!(output.status.success(), "{}", text(&output));
    let second = Registration::load(&registration_path).expect("registration written");
    assert_eq!(second.as_token, first.as_token);
    assert_eq!(second.hs_token, first.hs_token);

    let output = run(bridge(dir.path()).arg("check-config"));
    assert!(output.status.success(), "{}", text(&output));

    // A config that drifted from the registration fails the check, naming the way out.
    let drifted = generated.replace("ghost_prefix: \"irc_\"", "ghost_prefix: \"i_\"");
    std::fs::write(dir.path().join("drifted.yaml"), drifted).expect("write");
    let output = run(bridge(dir.path()).args(["-c", "drifted.yaml", "check-config"]));
    assert!(!output.status.success());
    let message = text(&output);
    assert!(message.contains("namespaces.users"), "{message}");
    assert!(message.contains("generate-registration"), "{message}");
}

#[test]
fn broken_config_fails_the_check_naming_every_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    generate_config(dir.path());
    let generated = std::fs::read_to_string(dir.path().join("config.yaml")).expect("readable");
    let broken = generated
        .replace("url: \"http://127.0.0.1:8008\"", "url: \"localhost:8008\"")
        .replace("bind: \"127.0.0.1:9340\"", "bind: \"127.0.0.1\"")
        .replace("format: \"human\"", "format: \"human\"\n  colour: true")
        .replace(
            "networks: []",
            "networks:\n    - name: \"Libera\"\n      host: \"irc.libera.chat\"",
        );
    std::fs::write(dir.path().join("broken.yaml"), broken).expect("write");

    let output = run(bridge(dir.path()).args(["check-config", "--config", "broken.yaml"]));
    assert_eq!(output.status.code(), Some(1));
    let message = text(&output);
    for key in [
        "homeserver.url:",
        "appservice.bind:",
        "logging.colour:",
        "irc.networks[0].name:",
    ] {
        assert!(message.contains(key), "{key} not in {message}");
    }
    assert!(message.contains("4 problems"), "{message}");
}

#[test]
fn environment_overrides_and_config_path_apply() {
    let dir = tempfile::tempdir().expect("temp dir");
    generate_config(dir.path());
    let output = run(bridge(dir.path())
        .arg("check-config")
        .env("TRESTLE_CONFIG", "config.yaml")
        .env("TRESTLE__APPSERVICE__BIND", "nowhere")
        .env("TRESTLE__DATABASE__URL", "mysql://u:p@h/db"));
    assert_eq!(output.status.code(), Some(1));
    let message = text(&output);
    assert!(message.contains("appservice.bind:"), "{message}");
    assert!(message.contains("database.url:"), "{message}");
    assert!(
        !message.contains("u:p@h"),
        "secrets are not echoed: {message}"
    );

    let output = run(bridge(dir.path())
        .arg("check-config")
        .env("TRESTLE_CONFIG", "absent.yaml"));
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("absent.yaml"), "{}", text(&output));
}

#[test]
fn run_starts_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().expect("temp dir");
    generate_config(dir.path());

    // Without a registration, `run` refuses to start and says what to do.
    let output = run(bridge(dir.path()).arg("run"));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).contains("generate-registration"),
        "{}",
        text(&output)
    );

    let output = run(bridge(dir.path()).arg("generate-registration"));
    assert!(output.status.success(), "{}", text(&output));

    // No subcommand means `run`.
    let mut child = bridge(dir.path())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("the binary runs");
    let stderr = child.stderr.take().expect("piped");
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(remaining) {
            Ok(line) if line.contains("starting") => break,
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("no \"starting\" log line; saw {seen:#?}");
            }
        }
    }

    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waitable") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the bridge did not stop on SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}
