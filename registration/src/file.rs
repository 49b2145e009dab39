//! Moving a registration between memory, YAML text and the file system.
//!
//! Saving is atomic (write a temporary sibling, sync, rename) because the
//! homeserver may read the file at any moment, and a half-written
//! registration would make it refuse to start. The file holds both secret
//! tokens, so it is created with mode 0600 before any byte is written.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rand::Rng;
use rand::distr::Alphanumeric;

use crate::error::Error;
use crate::model::Registration;

/// How many random characters make the temporary file's name unique enough
/// that two concurrent saves into one directory do not collide.
const TEMP_SUFFIX_LEN: usize = 12;

impl Registration {
    /// Parses a registration from YAML text.
    pub fn from_yaml_str(yaml: &str) -> Result<Self, Error> {
        yaml_serde::from_str(yaml).map_err(|source| Error::Parse { path: None, source })
    }

    /// Serializes the registration to YAML text; `url: null` is written
    /// explicitly and unknown keys are written after the known ones.
    pub fn to_yaml_string(&self) -> Result<String, Error> {
        yaml_serde::to_string(self).map_err(Error::Serialize)
    }

    /// Reads and parses the registration file at `path`.
    ///
    /// This does not validate; call [`Registration::validate`] afterwards.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        yaml_serde::from_str(&text).map_err(|source| Error::Parse {
            path: Some(path.to_owned()),
            source,
        })
    }

    /// Writes the registration to `path` atomically with mode 0600.
    ///
    /// The YAML goes to a temporary file in the same directory (a rename is
    /// only atomic within one file system), which is synced and then renamed
    /// over `path`. On failure the temporary file is removed and `path` is
    /// left as it was.
    ///
    /// A symlink at `path` is replaced by a regular file rather than
    /// followed, as with any rename-into-place.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let path = path.as_ref();
        let yaml = self.to_yaml_string()?;
        let write_error = |source| Error::Write {
            path: path.to_owned(),
            source,
        };

        let temp_path = temp_sibling(path).map_err(write_error)?;
        if let Err(source) =
            write_private(&temp_path, yaml.as_bytes()).and_then(|()| fs::rename(&temp_path, path))
        {
            // Best effort: the original error is the one worth reporting.
            let _ = fs::remove_file(&temp_path);
            return Err(write_error(source));
        }
        sync_parent_dir(path);
        Ok(())
    }
}

/// A not-yet-existing path next to `path`, hidden and randomly suffixed.
fn temp_sibling(path: &Path) -> io::Result<PathBuf> {
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file")
    })?;
    let suffix: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(TEMP_SUFFIX_LEN)
        .map(char::from)
        .collect();
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(".{suffix}.tmp"));
    Ok(path.with_file_name(temp_name))
}

/// Creates `path` (which must not exist yet) readable by the owner only,
/// writes `contents` and syncs it to disk.
fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Set at creation so the secrets are never readable by others, not
        // even for the moment between create and chmod.
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    // The umask may have stripped bits from the mode above; force exactly
    // 0600 so the result does not depend on the process's umask.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(contents)?;
    file.sync_all()
}

/// Syncs the directory holding `path` so the rename itself survives a crash.
///
/// Failure is ignored: the file is already in place and some file systems
/// do not support syncing a directory.
fn sync_parent_dir(path: &Path) {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use yaml_serde::Value;

    use super::*;
    use crate::model::Namespaces;

    const FULL: &str = include_str!("../tests/fixtures/full.yaml");
    const SPEC_EXAMPLE: &str = include_str!("../tests/fixtures/spec_example.yaml");

    fn parse_value(yaml: &str) -> Value {
        yaml_serde::from_str(yaml).expect("test YAML parses as a value")
    }

    fn key(name: &str) -> Value {
        Value::String(name.to_owned())
    }

    #[test]
    fn full_file_round_trips_with_unknown_and_unstable_keys() {
        let registration = Registration::from_yaml_str(FULL).expect("fixture parses");

        assert_eq!(registration.id, "trestle-irc");
        assert_eq!(registration.url.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(registration.sender_localpart, "_irc_bot");
        assert_eq!(registration.rate_limited, Some(false));
        assert_eq!(registration.protocols(), ["irc".to_owned()]);
        assert_eq!(registration.receive_ephemeral, Some(true));
        assert_eq!(registration.msc2409_push_ephemeral, Some(true));
        assert_eq!(registration.msc3202, Some(true));
        assert_eq!(registration.msc4190, Some(false));
        assert_eq!(registration.namespaces.users.len(), 2);
        assert_eq!(
            registration.namespaces.users[0].regex,
            r"@_irc_.*:example\.org"
        );
        assert!(registration.namespaces.users[0].exclusive);
        assert!(!registration.namespaces.users[1].exclusive);
        assert!(
            registration.namespaces.users[0]
                .extra
                .contains_key("org.example.comment")
        );
        assert!(
            registration
                .namespaces
                .extra
                .contains_key("org.example.namespace_note")
        );
        for unknown in [
            "ip_range_whitelist",
            "io.element.msc4502.scopes",
            "org.example.nested",
        ] {
            assert!(registration.extra.contains_key(unknown), "{unknown} kept");
        }
        // Known keys are typed fields, not duplicated into the extras.
        assert_eq!(registration.extra.len(), 3);

        let written = registration.to_yaml_string().expect("serializes");
        assert_eq!(parse_value(&written), parse_value(FULL));
        let reparsed = Registration::from_yaml_str(&written).expect("output parses");
        assert_eq!(reparsed, registration);
    }

    #[test]
    fn spec_example_parses_and_round_trips() {
        let registration = Registration::from_yaml_str(SPEC_EXAMPLE).expect("example parses");
        assert_eq!(registration.id, "IRC Bridge");
        assert!(registration.namespaces.rooms.is_empty());
        assert_eq!(registration.rate_limited, None);
        assert!(registration.is_rate_limited(), "Synapse's default");
        assert!(!registration.receives_ephemeral());
        let written = registration.to_yaml_string().expect("serializes");
        assert_eq!(parse_value(&written), parse_value(SPEC_EXAMPLE));
    }

    #[test]
    fn null_url_round_trips_as_explicit_null() {
        let yaml = SPEC_EXAMPLE.replace("url: \"http://127.0.0.1:1234\"", "url: null");
        let registration = Registration::from_yaml_str(&yaml).expect("null url parses");
        assert_eq!(registration.url, None);

        let written = registration.to_yaml_string().expect("serializes");
        assert!(
            written.contains("url: null"),
            "explicit null in:\n{written}"
        );
        let value = parse_value(&written);
        assert_eq!(value.get("url"), Some(&Value::Null));
        assert_eq!(value, parse_value(&yaml));
    }

    #[test]
    fn missing_url_is_a_parse_error() {
        let yaml = SPEC_EXAMPLE.replace("url: \"http://127.0.0.1:1234\"\n", "");
        let error = Registration::from_yaml_str(&yaml).expect_err("url is required");
        assert!(matches!(error, Error::Parse { path: None, .. }));
        assert!(error.to_string().contains("url"), "{error}");
    }

    #[test]
    fn missing_namespace_lists_default_to_empty() {
        let yaml = "id: a\nurl: null\nas_token: x\nhs_token: y\nsender_localpart: bot\n\
                    namespaces: {}\n";
        let registration = Registration::from_yaml_str(yaml).expect("parses");
        assert_eq!(registration.namespaces, Namespaces::default());
        let written = parse_value(&registration.to_yaml_string().expect("serializes"));
        let namespaces = written.get("namespaces").expect("namespaces written");
        assert_eq!(namespaces.get("users"), Some(&Value::Sequence(Vec::new())));
    }

    #[test]
    fn wrong_types_are_parse_errors() {
        let yaml = SPEC_EXAMPLE.replace("exclusive: true", "exclusive: \"yes\"");
        assert!(Registration::from_yaml_str(&yaml).is_err());
        assert!(Registration::from_yaml_str("- not\n- a map\n").is_err());
        assert!(Registration::from_yaml_str("").is_err());
    }

    #[test]
    fn debug_redacts_tokens() {
        let registration = Registration::from_yaml_str(FULL).expect("fixture parses");
        let debug = format!("{registration:?}");
        assert!(!debug.contains(&registration.as_token));
        assert!(!debug.contains(&registration.hs_token));
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn save_then_load_gives_the_same_registration() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("registration.yaml");
        let registration = Registration::from_yaml_str(FULL).expect("fixture parses");

        registration.save(&path).expect("saves");
        assert_eq!(Registration::load(&path).expect("loads"), registration);
        let saved = fs::read_to_string(&path).expect("readable");
        assert_eq!(parse_value(&saved), parse_value(FULL));
    }

    #[cfg(unix)]
    #[test]
    fn save_writes_mode_0600_even_over_a_looser_file() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("registration.yaml");
        fs::write(&path, "old").expect("pre-existing file");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");

        let registration = Registration::from_yaml_str(SPEC_EXAMPLE).expect("parses");
        registration.save(&path).expect("saves");

        let mode = fs::metadata(&path).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(Registration::load(&path).expect("loads"), registration);
    }

    #[test]
    fn save_leaves_no_temporary_file_behind() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("registration.yaml");
        let registration = Registration::from_yaml_str(SPEC_EXAMPLE).expect("parses");
        registration.save(&path).expect("first save");
        registration.save(&path).expect("second save replaces");

        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list dir")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["registration.yaml"]);
    }

    #[test]
    fn save_into_a_missing_directory_fails_cleanly() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("missing").join("registration.yaml");
        let registration = Registration::from_yaml_str(SPEC_EXAMPLE).expect("parses");
        let error = registration.save(&path).expect_err("no directory");
        assert!(matches!(error, Error::Write { .. }));
        assert!(error.to_string().contains("registration.yaml"), "{error}");
    }

    #[test]
    fn load_reports_the_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("absent.yaml");
        let error = Registration::load(&missing).expect_err("absent");
        assert!(matches!(error, Error::Read { .. }));
        assert!(error.to_string().contains("absent.yaml"), "{error}");

        let broken = dir.path().join("broken.yaml");
        fs::write(&broken, "id: [unclosed").expect("write");
        let error = Registration::load(&broken).expect_err("not YAML");
        assert!(matches!(error, Error::Parse { path: Some(_), .. }));
        assert!(error.to_string().contains("broken.yaml"), "{error}");
    }

    #[test]
    fn unknown_key_values_of_every_kind_survive() {
        let registration = Registration::from_yaml_str(FULL).expect("fixture parses");
        let nested = registration
            .extra
            .get("org.example.nested")
            .expect("nested kept");
        assert_eq!(nested.get("level"), Some(&Value::Number(2.into())));
        assert_eq!(nested.get("ratio"), Some(&Value::Number(0.5.into())));
        assert_eq!(nested.get("enabled"), Some(&Value::Bool(true)));
        assert_eq!(
            nested.get("list"),
            Some(&Value::Sequence(vec![
                key("a"),
                Value::Number(1.into()),
                Value::Null
            ]))
        );
    }
}
