//! The test bed's error type: what failed, and for a server that did not start, its log.

use std::path::PathBuf;

/// Result of a test bed operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a test bed operation failed.
#[derive(thiserror::Error)]
pub enum Error {
    /// A server did not become ready; carries the tail of its log so the test output says why.
    #[error("{server} did not start: {reason}\n--- last lines of {} ---\n{log_tail}", log.display())]
    ServerStart {
        server: String,
        reason: String,
        log: PathBuf,
        log_tail: String,
    },
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// An HTTP request of a test client failed.
    #[error("{context}: {source}")]
    Http {
        context: String,
        #[source]
        source: reqwest::Error,
    },
    /// A server answered something a test client did not expect.
    #[error("{0}")]
    Protocol(String),
    /// An IRC server refused a SASL login, with its numeric (e.g. 904 for wrong
    /// credentials), so a test can tell that refusal from any other failure.
    #[error("SASL failed with {numeric}: {line}")]
    Sasl { numeric: String, line: String },
    /// Something awaited did not happen in time.
    #[error("timed out after {seconds:.1} s waiting for {what}")]
    Timeout { what: String, seconds: f64 },
    /// The machine lacks something the test bed needs.
    #[error("{0} (run tests/install-deps.sh)")]
    Missing(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    pub(crate) fn http(context: impl Into<String>) -> impl FnOnce(reqwest::Error) -> Error {
        let context = context.into();
        move |source| Error::Http { context, source }
    }
}

/// `unwrap()` in a test prints `Debug`: make that the readable message, so a server that
/// did not start shows its log lines as lines.
impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}
