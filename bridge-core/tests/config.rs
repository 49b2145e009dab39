//! The config as an operator meets it: generated, checked, overridden, and turned into a
//! registration. Environment overrides are injected (`load_with_env`), never set on the
//! process, because tests run in parallel; `config_env.rs` covers the real environment.

use std::collections::BTreeSet;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bridge_core::config::{
    BridgeConfig, BridgeInfo, ConfigError, LogFormat, NetworkConfig, Permission, Problem,
    RegistrationError, SecretString, generate_config, generate_registration,
    load_registration_checked, uncommented_keys,
};
use registration::Registration;
use serde::Deserialize;

const INFO: BridgeInfo = BridgeInfo {
    name: "test",
    binary: "bridge-test",
    version: "0.0.0",
    default_port: 9999,
};

/// A network section exercising what real bridges need: a secret, a list of items with
/// secrets, required keys and extra validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestNetwork {
    secret: SecretString,
    #[serde(default)]
    accounts: Vec<Account>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Account {
    name: String,
    password: SecretString,
}

impl NetworkConfig for TestNetwork {
    const SECRET_KEYS: &'static [&'static str] = &["secret", "accounts.*.password"];

    fn template() -> String {
        "# The test network.\ntest:\n  # A shared secret.\n  secret: \"s3cret\"\n  # Accounts.\n  accounts: []\n"
            .to_owned()
    }

    fn validate(&self) -> Vec<Problem> {
        self.accounts
            .iter()
            .enumerate()
            .filter(|(_, account)| account.name.is_empty())
            .map(|(index, _)| Problem::new(format!("accounts[{index}].name"), "must not be empty"))
            .collect()
    }
}

type Config = BridgeConfig<TestNetwork>;

const NO_ENV: [(&str, &str); 0] = [];

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).expect("write test file");
    path
}

fn load(path: &Path) -> Result<Config, ConfigError> {
    Config::load_with_env(path, INFO, NO_ENV)
}

fn problems(result: Result<Config, ConfigError>) -> Vec<Problem> {
    match result {
        Ok(config) => panic!("expected problems, got {config:?}"),
        Err(ConfigError::Invalid { problems, .. }) => problems,
        Err(other) => panic!("expected problems, got {other}"),
    }
}

fn problem_at<'a>(problems: &'a [Problem], path: &str) -> &'a Problem {
    problems
        .iter()
        .find(|problem| problem.path == path)
        .unwrap_or_else(|| panic!("no problem at {path} in {problems:#?}"))
}

/// The generated config with `replacements` applied to its text.
fn generated_with(replacements: &[(&str, &str)]) -> String {
    let mut text = generate_config::<TestNetwork>(&INFO);
    for (from, to) in replacements {
        assert!(text.contains(from), "template lacks {from:?}");
        text = text.replacen(from, to, 1);
    }
    text
}

#[test]
fn generated_config_passes_the_check_with_loopback_defaults() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write(
        dir.path(),
        "config.yaml",
        &generate_config::<TestNetwork>(&INFO),
    );
    let config = load(&path).expect("generated config is valid");

    assert_eq!(config.bridge, INFO);
    assert_eq!(config.homeserver.url.as_str(), "http://127.0.0.1:8008/");
    assert_eq!(config.homeserver.domain.as_str(), "localhost");
    assert_eq!(config.appservice.id, "trestle-test");
    assert_eq!(
        config.appservice.bind,
        "127.0.0.1:9999".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(config.appservice.url.as_str(), "http://127.0.0.1:9999/");
    assert_eq!(config.appservice.bot_localpart, "testbot");
    assert_eq!(config.appservice.ghost_prefix, "test_");
    assert_eq!(config.appservice.alias_prefix, "test_");
    assert_eq!(
        config.appservice.registration,
        Path::new("test-registration.yaml")
    );
    assert!(!config.appservice.receive_ephemeral);
    assert_eq!(config.database.url.expose(), "sqlite://test.db?mode=rwc");
    assert_eq!(config.logging.format, LogFormat::Human);
    assert_eq!(config.network.secret.expose(), "s3cret");

    // A fresh key every time.
    let again = write(
        dir.path(),
        "again.yaml",
        &generate_config::<TestNetwork>(&INFO),
    );
    let again = load(&again).expect("valid");
    assert_ne!(again.encryption.key, config.encryption.key);
}

#[test]
fn every_generated_key_has_a_comment() {
    let text = generate_config::<TestNetwork>(&INFO);
    assert_eq!(uncommented_keys(&text), Vec::<String>::new(), "{text}");
    // The checker itself notices a bare key.
    assert_eq!(uncommented_keys("# ok\na: 1\nb: 2\nc: 3 # ok\n"), ["b: 2"]);
}

#[test]
fn generated_config_has_every_key() {
    let text = generate_config::<TestNetwork>(&INFO);
    let value: yaml_serde::Value = yaml_serde::from_str(&text).expect("YAML");
    let mut keys = BTreeSet::new();
    let sections = value.as_mapping().expect("mapping");
    for (section, body) in sections {
        let section = section.as_str().expect("string key");
        for (key, _) in body.as_mapping().expect("section mapping") {
            keys.insert(format!("{section}.{}", key.as_str().expect("string key")));
        }
    }
    let expected: BTreeSet<String> = [
        "homeserver.url",
        "homeserver.domain",
        "appservice.id",
        "appservice.bind",
        "appservice.url",
        "appservice.bot_localpart",
        "appservice.ghost_prefix",
        "appservice.alias_prefix",
        "appservice.registration",
        "appservice.body_limit",
        "appservice.receive_ephemeral",
        "bridge.command_prefix",
        "bridge.permissions",
        "database.url",
        "database.max_connections",
        "encryption.key",
        "logging.level",
        "logging.format",
        "test.secret",
        "test.accounts",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(keys, expected);
    assert!(
        text.contains("TRESTLE__DATABASE__URL"),
        "header documents the env prefix"
    );
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key_file = write(dir.path(), "key", "unused\n");
    let text = generated_with(&[
        ("url: \"http://127.0.0.1:8008\"", "url: \"not a url\""),
        ("domain: \"localhost\"", "domain: \"bad domain!\""),
        (
            "bind: \"127.0.0.1:9999\"",
            "bind: \"localhost:http\"\n  bnd: 1",
        ),
        ("body_limit: 33554432", "body_limit: \"lots\""),
        ("max_connections: 10", "max_connections: 0"),
        (
            "  key: \"",
            &format!("  key_file: \"{}\"\n  key: \"", key_file.display()),
        ),
        ("format: \"human\"", "format: \"xml\""),
        ("homeserver:", "homeservr: {}\nhomeserver:"),
    ]);
    let path = write(dir.path(), "config.yaml", &text);
    let problems = problems(load(&path));

    assert!(
        problem_at(&problems, "homeserver.url")
            .message
            .starts_with("not a URL: ")
    );
    assert!(
        problem_at(&problems, "homeserver.domain")
            .message
            .contains("not a valid server name")
    );
    assert!(
        problem_at(&problems, "appservice.bind")
            .message
            .contains("socket address")
    );
    assert!(
        problem_at(&problems, "appservice.bnd")
            .message
            .starts_with("unknown key")
    );
    assert!(
        problem_at(&problems, "appservice.body_limit")
            .message
            .contains("invalid type")
    );
    assert!(
        problem_at(&problems, "database.max_connections")
            .message
            .contains("at least 1")
    );
    let both = &problem_at(&problems, "encryption.key_file").message;
    assert!(
        both.contains("`encryption.key`") && both.contains("`encryption.key_file`"),
        "{both}"
    );
    assert!(
        problem_at(&problems, "logging.format")
            .message
            .contains("xml")
    );
    assert!(
        problem_at(&problems, "homeservr")
            .message
            .starts_with("unknown key")
    );
    assert_eq!(problems.len(), 9, "{problems:#?}");

    let error = load(&path).expect_err("invalid");
    let text = error.to_string();
    assert!(text.contains("has 9 problems"), "{text}");
    assert!(text.contains("\n  homeserver.url: not a URL: "), "{text}");
}

#[test]
fn missing_keys_and_network_problems_are_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write(
        dir.path(),
        "config.yaml",
        "homeserver: {}\nappservice: {}\ntest:\n  accounts:\n    - name: ''\n      password: x\n    - pasword: y\n",
    );
    let problems = problems(load(&path));
    let paths: Vec<&str> = problems
        .iter()
        .map(|problem| problem.path.as_str())
        .collect();
    for expected in [
        "homeserver.url",
        "homeserver.domain",
        "appservice.url",
        "encryption.key",
        "test.accounts[1].pasword",
        "test.accounts[1].name",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} missing from {problems:#?}"
        );
    }
    assert!(
        problem_at(&problems, "homeserver.url")
            .message
            .contains("required")
    );
    assert!(
        problem_at(&problems, "test.accounts[1].pasword")
            .message
            .contains("unknown key")
    );
}

#[test]
fn network_validation_runs_with_paths_under_its_section() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = generated_with(&[(
        "accounts: []",
        "accounts:\n    - name: \"\"\n      password: \"p\"",
    )]);
    let path = write(dir.path(), "config.yaml", &text);
    let problems = problems(load(&path));
    assert_eq!(
        problems,
        [Problem::new("test.accounts[0].name", "must not be empty")]
    );
}

#[test]
fn yaml_syntax_errors_name_the_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write(dir.path(), "config.yaml", "homeserver:\n  url: [unclosed\n");
    match load(&path) {
        Err(error @ ConfigError::Parse { .. }) => {
            let text = error.to_string();
            assert!(text.contains("line"), "{text}");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
    assert!(matches!(
        load(&dir.path().join("absent.yaml")),
        Err(ConfigError::Read { .. })
    ));
}

#[test]
fn environment_overrides_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write(
        dir.path(),
        "config.yaml",
        &generate_config::<TestNetwork>(&INFO),
    );
    let config = Config::load_with_env(
        &path,
        INFO,
        [
            (
                "TRESTLE__DATABASE__URL",
                "postgres://bridge:pw@127.0.0.1/bridge",
            ),
            ("TRESTLE__APPSERVICE__BODY_LIMIT", "1024"),
            ("TRESTLE__APPSERVICE__RECEIVE_EPHEMERAL", "true"),
            ("TRESTLE__TEST__SECRET", "from-env"),
            // Single underscore: the CLI's variable, not an override.
            ("TRESTLE_CONFIG", "elsewhere.yaml"),
        ],
    )
    .expect("valid");
    assert_eq!(
        config.database.url.expose(),
        "postgres://bridge:pw@127.0.0.1/bridge"
    );
    assert_eq!(config.appservice.body_limit, 1024);
    assert!(config.appservice.receive_ephemeral);
    assert_eq!(config.network.secret.expose(), "from-env");

    let problems = problems(Config::load_with_env(
        &path,
        INFO,
        [
            ("TRESTLE__APPSERVICE__BIND", "nowhere"),
            ("TRESTLE__DATABSE__URL", "x"),
        ],
    ));
    assert!(
        problem_at(&problems, "appservice.bind")
            .message
            .contains("socket address")
    );
    assert!(
        problem_at(&problems, "databse")
            .message
            .contains("unknown key")
    );
}

#[test]
fn secrets_are_read_from_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = bridge_core::config::EncryptionKey::generate();
    let key_file = write(dir.path(), "key", &format!("{}\n", key.to_base64()));
    let db_file = write(dir.path(), "db", "postgres://u:p@localhost/db\r\n");
    let secret_file = write(dir.path(), "secret", "component-secret\n");
    let password_file = write(dir.path(), "password", "hunter2\n");
    let text = generated_with(&[
        (
            "  url: \"sqlite://test.db?mode=rwc\"",
            &format!("  url_file: \"{}\"", db_file.display()),
        ),
        (
            "  secret: \"s3cret\"",
            &format!("  secret_file: \"{}\"", secret_file.display()),
        ),
        (
            "accounts: []",
            &format!(
                "accounts:\n    - name: \"a\"\n      password_file: \"{}\"",
                password_file.display()
            ),
        ),
    ]);
    // The generated key line is replaced by a file.
    let text = text
        .lines()
        .map(|line| {
            if line.starts_with("  key: ") {
                format!("  key_file: \"{}\"", key_file.display())
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = write(dir.path(), "config.yaml", &text);

    let config = load(&path).expect("valid");
    assert_eq!(config.encryption.key, key);
    assert_eq!(config.database.url.expose(), "postgres://u:p@localhost/db");
    assert_eq!(config.network.secret.expose(), "component-secret");
    assert_eq!(config.network.accounts[0].password.expose(), "hunter2");

    // The file can also be named by the environment.
    let config = Config::load_with_env(
        &write(
            dir.path(),
            "no-db.yaml",
            &text.replace(&format!("  url_file: \"{}\"", db_file.display()), ""),
        ),
        INFO,
        [(
            "TRESTLE__DATABASE__URL_FILE",
            db_file.to_str().expect("UTF-8 path"),
        )],
    )
    .expect("valid");
    assert_eq!(config.database.url.expose(), "postgres://u:p@localhost/db");

    // An unreadable file is one problem, at the _file key.
    fs::remove_file(&key_file).expect("remove");
    let problems = problems(load(&path));
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].path, "encryption.key_file");
    assert!(
        problems[0].message.starts_with("cannot read "),
        "{}",
        problems[0].message
    );
}

#[test]
fn registration_is_generated_from_the_config_and_keeps_its_tokens() {
    let dir = tempfile::tempdir().expect("temp dir");
    let registration_path = dir.path().join("registration.yaml");
    let text = generated_with(&[(
        "registration: \"test-registration.yaml\"",
        &format!("registration: \"{}\"", registration_path.display()),
    )]);
    let path = write(dir.path(), "config.yaml", &text);
    let config = load(&path).expect("valid");

    assert!(matches!(
        load_registration_checked(&config),
        Err(RegistrationError::Missing { .. })
    ));

    let first = generate_registration(&config).expect("written");
    assert!(!first.kept_tokens);
    let on_disk = Registration::load(&registration_path).expect("readable");
    assert_eq!(on_disk.validate_for_bridge(), Ok(()));
    assert_eq!(on_disk.id, "trestle-test");
    assert_eq!(on_disk.url.as_deref(), Some("http://127.0.0.1:9999"));
    assert_eq!(on_disk.sender_localpart, "testbot");
    assert_eq!(on_disk.namespaces.users[0].regex, r"@test_.*:localhost");
    assert!(on_disk.namespaces.users[0].exclusive);
    assert_eq!(on_disk.namespaces.aliases[0].regex, r"#test_.*:localhost");
    assert_eq!(on_disk.protocols(), ["test"]);
    assert!(!on_disk.is_rate_limited());

    let second = generate_registration(&config).expect("rewritten");
    assert!(second.kept_tokens);
    assert_eq!(second.registration.as_token, first.registration.as_token);
    assert_eq!(second.registration.hs_token, first.registration.hs_token);

    let checked = load_registration_checked(&config).expect("matches");
    assert_eq!(checked.as_token, first.registration.as_token);
}

#[test]
fn checked_load_refuses_a_registration_the_config_no_longer_matches() {
    let dir = tempfile::tempdir().expect("temp dir");
    let registration_path = dir.path().join("registration.yaml");
    let registration_line = format!("registration: \"{}\"", registration_path.display());
    let original = generated_with(&[(
        "registration: \"test-registration.yaml\"",
        &registration_line,
    )]);
    let path = write(dir.path(), "config.yaml", &original);
    generate_registration(&load(&path).expect("valid")).expect("written");

    let changed = original
        .replace("ghost_prefix: \"test_\"", "ghost_prefix: \"t_\"")
        .replace(
            "url: \"http://127.0.0.1:9999\"",
            "url: \"http://127.0.0.1:9998\"",
        );
    let path = write(dir.path(), "changed.yaml", &changed);
    let config = load(&path).expect("valid");
    match load_registration_checked(&config) {
        Err(error @ RegistrationError::Mismatch { .. }) => {
            let RegistrationError::Mismatch { differences, .. } = &error else {
                unreachable!()
            };
            let fields: Vec<&str> = differences
                .iter()
                .map(|difference| difference.field)
                .collect();
            assert_eq!(fields, ["url", "namespaces.users"]);
            let text = error.to_string();
            assert!(text.contains("bridge-test generate-registration"), "{text}");
            assert!(text.contains(r"@t_.*:localhost"), "{text}");
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }

    // Regenerating brings them back in line, with the same tokens.
    let before = Registration::load(&registration_path).expect("readable");
    let regenerated = generate_registration(&config).expect("rewritten");
    assert!(regenerated.kept_tokens);
    assert_eq!(regenerated.registration.as_token, before.as_token);
    load_registration_checked(&config).expect("matches again");
}

#[test]
fn permissions_name_users_servers_and_everyone() {
    let dir = tempfile::tempdir().unwrap();
    let text = generated_with(&[(
        "    \"*\": \"none\"\n    \"localhost\": \"user\"\n",
        "    \"*\": \"relay\"\n    \"example.org\": \"user\"\n    \"@boss:example.org\": \"admin\"\n",
    )]);
    let config = load(&write(dir.path(), "ok.yaml", &text)).unwrap();
    let permissions = &config.bridge_settings.permissions;
    let level = |user: &str| permissions.of(&ruma::UserId::parse(user).unwrap());
    assert_eq!(level("@boss:example.org"), Permission::Admin);
    assert_eq!(level("@someone:example.org"), Permission::User);
    assert_eq!(level("@someone:elsewhere.net"), Permission::Relay);
    assert_eq!(config.bridge_settings.command_prefix, "!test");

    let text = generated_with(&[
        ("\"*\": \"none\"", "\"*\": \"superuser\""),
        ("\"localhost\": \"user\"", "\"not a server\": \"user\""),
        ("command_prefix: \"!test\"", "command_prefix: \"! test\""),
    ]);
    let found = problems(load(&write(dir.path(), "bad.yaml", &text)));
    assert!(
        problem_at(&found, "bridge.permissions.*")
            .message
            .contains("superuser")
    );
    problem_at(&found, "bridge.permissions.not a server");
    problem_at(&found, "bridge.command_prefix");
}
