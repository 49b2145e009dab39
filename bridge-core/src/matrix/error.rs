//! Why a request to the homeserver failed: a permanent answer of the homeserver
//! ([`MatrixApiError`]), a transient failure that outlasted the retries, or a problem on
//! our side (a bad base URL, an answer we cannot read).

use std::time::Duration;

use http::StatusCode;

/// An error answer of the homeserver: its HTTP status and the spec's `errcode` and
/// `error` fields (empty strings when the body had none).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {errcode}: {error}")]
pub struct MatrixApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The Matrix error code, such as `M_FORBIDDEN` (empty if the body had none).
    pub errcode: String,
    /// The human-readable message (empty if the body had none).
    pub error: String,
}

impl MatrixApiError {
    /// Reads an error answer; a body that is not a Matrix error still gives the status.
    pub(crate) fn from_body(status: StatusCode, body: &[u8]) -> Self {
        let parsed: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let text = |key: &str| {
            parsed
                .get(key)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let mut error = text("error");
        if error.is_empty() && parsed.is_null() {
            error = String::from_utf8_lossy(body).chars().take(200).collect();
        }
        MatrixApiError {
            status,
            errcode: text("errcode"),
            error,
        }
    }

    /// Whether the homeserver answered with the error code `errcode` (`M_USER_IN_USE`).
    pub fn is(&self, errcode: &str) -> bool {
        self.errcode == errcode
    }
}

/// A failure worth retrying: the homeserver could not be reached or read, or it answered
/// 429 or 5xx.
#[derive(Debug, thiserror::Error)]
pub enum TransientFailure {
    /// Connecting, sending or reading the answer failed (or timed out).
    #[error("network: {0}")]
    Network(#[source] reqwest::Error),
    /// The homeserver answered 429 or a 5xx status.
    #[error("homeserver answered {0}")]
    Status(#[source] MatrixApiError),
}

/// Why a request to the homeserver failed.
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    /// The homeserver refused the request (a 4xx other than 429); not retried.
    #[error("{request}: {source}")]
    Api {
        /// The request, as `METHOD /path`.
        request: String,
        /// The homeserver's answer.
        source: MatrixApiError,
    },
    /// Every attempt failed transiently until the retry policy gave up.
    #[error("{request}: gave up after {attempts} attempts in {elapsed:?}; last: {last}")]
    Exhausted {
        /// The request, as `METHOD /path`.
        request: String,
        /// How many attempts were made.
        attempts: u32,
        /// How long they took in all.
        elapsed: Duration,
        /// The last failure.
        last: TransientFailure,
    },
    /// The homeserver answered success with a body that is not what the spec says.
    #[error("{request}: unexpected answer: {source}")]
    Decode {
        /// The request, as `METHOD /path`.
        request: String,
        /// Why it could not be read.
        source: serde_json::Error,
    },
    /// The homeserver base URL cannot have paths appended (e.g. `mailto:`).
    #[error("homeserver URL {0} cannot be a base URL")]
    InvalidBaseUrl(url::Url),
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// A localpart that makes no valid user id on this server.
    #[error("invalid localpart {localpart:?}: {source}")]
    InvalidLocalpart {
        /// The localpart given.
        localpart: String,
        /// Why it is invalid.
        source: ruma::IdParseError,
    },
    /// An `mxc://` URI without a server name and media id.
    #[error("invalid mxc URI {uri:?}")]
    InvalidMxc {
        /// The URI given.
        uri: String,
    },
    /// An id or key that is `.` or `..` (a transaction id, a state key, an event type),
    /// which no URL can carry as a path segment; nothing was sent.
    #[error("{segment:?} cannot be sent as a URL path segment")]
    UnsendablePathSegment {
        /// The segment.
        segment: String,
    },
    /// The homeserver did not answer in time.
    #[error("the homeserver did not answer {request} within {waited:?}; last: {last}")]
    Unavailable {
        /// The request, as `METHOD /path`.
        request: String,
        /// How long was waited.
        waited: Duration,
        /// The last failure, as text.
        last: String,
    },
}

impl MatrixError {
    /// The homeserver's error answer, if that is what this is (including the last answer
    /// of an exhausted retry).
    pub fn api_error(&self) -> Option<&MatrixApiError> {
        match self {
            MatrixError::Api { source, .. } => Some(source),
            MatrixError::Exhausted {
                last: TransientFailure::Status(source),
                ..
            } => Some(source),
            _ => None,
        }
    }
}
