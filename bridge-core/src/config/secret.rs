//! Secrets in the config: the types that keep them out of logs, the encryption key, and
//! reading `x_file: /path` in place of `x: value`.
//!
//! Files are resolved on the merged tree (file and environment) before it is deserialized,
//! so a secret can come from a file whichever source named the file, and the typed config
//! never knows the difference.

use std::fmt;
use std::fs;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use config::{Map, Value, ValueKind};
use serde::Deserialize;

use super::SECRET_FILE_SUFFIX;
use super::problem::{Problems, join_path};

/// A string that must not be logged (a password, a database URL with credentials).
///
/// `Debug` prints `<redacted>`; read the value with [`SecretString::expose`].
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

/// Length in bytes of [`EncryptionKey`].
pub const ENCRYPTION_KEY_LEN: usize = 32;

/// The key that encrypts secrets at rest: [`ENCRYPTION_KEY_LEN`] random bytes, written in
/// the config as standard base64.
///
/// `Debug` prints `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptionKey([u8; ENCRYPTION_KEY_LEN]);

/// Why a string is not an [`EncryptionKey`]. The messages never repeat the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncryptionKeyError {
    /// Not standard base64 (the byte at fault is not named: it is part of a secret).
    #[error("not valid base64 (standard alphabet, with padding)")]
    Base64,
    /// Valid base64, but of the wrong length.
    #[error("decodes to {0} bytes, but the key must be exactly 32 bytes")]
    Length(usize),
}

impl EncryptionKey {
    /// A fresh key from the operating system's CSPRNG (through `rand::rng()`).
    pub fn generate() -> Self {
        Self(rand::random())
    }

    /// Decodes a key from standard base64; surrounding whitespace is ignored.
    pub fn from_base64(text: &str) -> Result<Self, EncryptionKeyError> {
        let bytes = BASE64
            .decode(text.trim())
            .map_err(|_| EncryptionKeyError::Base64)?;
        let len = bytes.len();
        bytes
            .try_into()
            .map(Self)
            .map_err(|_| EncryptionKeyError::Length(len))
    }

    /// The key as standard base64, as written in the config.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; ENCRYPTION_KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey(<redacted>)")
    }
}

/// Replaces every `x_file: PATH` whose `x` matches one of `patterns` (dotted paths from the
/// root, `*` matching any list item or mapping key) by `x: <contents of PATH>`.
///
/// Problems (both keys given, unreadable file, a path that is not a string) are reported at
/// the `_file` key, which is removed in every case so that it is never also reported as an
/// unknown key.
pub(crate) fn resolve_files(
    root: &mut Map<String, Value>,
    patterns: &[String],
    problems: &mut Problems,
) {
    for pattern in patterns {
        let segments: Vec<&str> = pattern.split('.').collect();
        if let Some((leaf, parents)) = segments.split_last() {
            resolve_in_table(root, "", parents, leaf, problems);
        }
    }
}

fn resolve_in_table(
    table: &mut Map<String, Value>,
    path: &str,
    parents: &[&str],
    leaf: &str,
    problems: &mut Problems,
) {
    match parents.split_first() {
        None => resolve_leaf(table, path, leaf, problems),
        Some((&"*", rest)) => {
            for (key, child) in table.iter_mut() {
                resolve_in_value(child, &join_path(path, key), rest, leaf, problems);
            }
        }
        Some((key, rest)) => {
            if let Some(child) = table.get_mut(*key) {
                resolve_in_value(child, &join_path(path, key), rest, leaf, problems);
            }
        }
    }
}

fn resolve_in_value(
    value: &mut Value,
    path: &str,
    parents: &[&str],
    leaf: &str,
    problems: &mut Problems,
) {
    match &mut value.kind {
        ValueKind::Table(table) => resolve_in_table(table, path, parents, leaf, problems),
        // Lists are crossed by `*` only; a named segment cannot select a list item.
        ValueKind::Array(items) => {
            if let Some((&"*", rest)) = parents.split_first() {
                for (index, item) in items.iter_mut().enumerate() {
                    resolve_in_value(item, &format!("{path}[{index}]"), rest, leaf, problems);
                }
            }
        }
        // Anything else is a type error that deserialization reports with its path.
        _ => {}
    }
}

fn resolve_leaf(table: &mut Map<String, Value>, path: &str, leaf: &str, problems: &mut Problems) {
    let file_key = format!("{leaf}{SECRET_FILE_SUFFIX}");
    let Some(file_value) = table.shift_remove(&file_key) else {
        return;
    };
    let key_path = join_path(path, leaf);
    let file_key_path = join_path(path, &file_key);
    let file_path = match file_value.kind {
        // `x_file:` left empty means "not given", like an absent key.
        ValueKind::Nil => return,
        ValueKind::String(file_path) if !file_path.is_empty() => file_path,
        ValueKind::String(_) => return,
        _ => {
            problems.push(
                file_key_path,
                "expected the path of a file holding the secret",
            );
            problems.silence(key_path);
            return;
        }
    };
    if table
        .get(leaf)
        .is_some_and(|value| !matches!(value.kind, ValueKind::Nil))
    {
        let message =
            format!("both `{key_path}` and `{file_key_path}` are set; give only one of them");
        problems.push(file_key_path, message);
        return;
    }
    match fs::read_to_string(&file_path) {
        Ok(contents) => {
            // Files written by `echo` or an editor end with a newline that is never part of
            // the secret.
            let secret = contents.trim_end_matches(['\n', '\r']).to_owned();
            let origin = format!("file {file_path}");
            table.insert(
                leaf.to_owned(),
                Value::new(Some(&origin), ValueKind::String(secret)),
            );
        }
        Err(error) => {
            problems.push(file_key_path, format!("cannot read {file_path}: {error}"));
            // The missing value is a consequence of the unreadable file, not a second problem.
            problems.silence(key_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips_through_base64() {
        let key = EncryptionKey::generate();
        let text = key.to_base64();
        assert_eq!(text.len(), 44);
        assert_eq!(
            EncryptionKey::from_base64(&format!(" {text}\n")),
            Ok(key.clone())
        );
        assert_ne!(EncryptionKey::generate(), key);
    }

    #[test]
    fn bad_keys_are_refused_without_echoing_them() {
        assert_eq!(
            EncryptionKey::from_base64("not base64!"),
            Err(EncryptionKeyError::Base64)
        );
        assert_eq!(
            EncryptionKey::from_base64(&BASE64.encode([0u8; 16])),
            Err(EncryptionKeyError::Length(16))
        );
        assert!(
            !EncryptionKeyError::Base64
                .to_string()
                .contains("not base64!")
        );
    }

    #[test]
    fn debug_redacts() {
        assert_eq!(
            format!("{:?}", SecretString::new("hunter2")),
            "SecretString(<redacted>)"
        );
        let key = EncryptionKey::generate();
        assert!(!format!("{key:?}").contains(&key.to_base64()));
    }
}
