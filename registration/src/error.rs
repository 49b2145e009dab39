//! Errors of reading, parsing, serializing and writing a registration.
//!
//! Validation problems are not here: they live in [`crate::validate`]
//! because they are collected, not returned one at a time.

use std::io;
use std::path::PathBuf;

/// Failure to load, parse, serialize or save a registration file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read registration file {}: {source}", path.display())]
    Read {
        /// The file that was being read.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// The text is not YAML of the registration's shape (for example a
    /// required key such as `url` is missing or a value has the wrong type).
    #[error("{}is not a valid registration: {source}", origin(path))]
    Parse {
        /// The file the text came from, if it came from a file.
        path: Option<PathBuf>,
        /// The YAML error, which carries the line and column.
        source: yaml_serde::Error,
    },
    /// The registration could not be turned into YAML.
    #[error("cannot serialize registration: {0}")]
    Serialize(#[source] yaml_serde::Error),
    /// The file (or its temporary sibling) could not be written, synced,
    /// given its permissions or renamed into place.
    #[error("cannot write registration file {}: {source}", path.display())]
    Write {
        /// The destination file.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
}

/// Prefix naming the file a parse error came from, if any, so that the
/// message reads well with and without a path.
fn origin(path: &Option<PathBuf>) -> String {
    match path {
        Some(path) => format!("registration file {} ", path.display()),
        None => "registration YAML ".to_owned(),
    }
}
