//! The Matrix-shaped error responses of the endpoint: every refusal is a status code and a
//! JSON body `{"errcode": "M_…", "error": "human text"}`, as the spec's "Standard error
//! response" asks, so the homeserver can tell a retryable failure from a permanent one.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The Matrix error codes this endpoint answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorCode {
    /// No token was given (401).
    MissingToken,
    /// A token was given and is not the `hs_token` (403).
    Forbidden,
    /// No such route, or not with this method (404 / 405).
    Unrecognized,
    /// The body is not JSON (400).
    NotJson,
    /// The body is JSON of the wrong shape (400).
    BadJson,
    /// The body is over the configured limit (413).
    TooLarge,
    /// A path or query parameter is malformed (400).
    InvalidParam,
    /// A required query parameter is absent (400).
    MissingParam,
    /// The queried entity does not exist (404).
    NotFound,
    /// Something failed on our side (500), or a request could not be read.
    Unknown,
}

impl ErrorCode {
    /// The code as it appears in the `errcode` field.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MissingToken => "M_MISSING_TOKEN",
            ErrorCode::Forbidden => "M_FORBIDDEN",
            ErrorCode::Unrecognized => "M_UNRECOGNIZED",
            ErrorCode::NotJson => "M_NOT_JSON",
            ErrorCode::BadJson => "M_BAD_JSON",
            ErrorCode::TooLarge => "M_TOO_LARGE",
            ErrorCode::InvalidParam => "M_INVALID_PARAM",
            ErrorCode::MissingParam => "M_MISSING_PARAM",
            ErrorCode::NotFound => "M_NOT_FOUND",
            ErrorCode::Unknown => "M_UNKNOWN",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal of a request, answered as a Matrix error response.
#[derive(Debug, thiserror::Error)]
#[error("{status} {errcode}: {message}")]
pub(crate) struct MatrixError {
    /// The HTTP status.
    pub(crate) status: StatusCode,
    /// The Matrix error code.
    pub(crate) errcode: ErrorCode,
    /// The human-readable text; never contains a token.
    pub(crate) message: String,
}

impl MatrixError {
    /// An error with an explicit status and code.
    pub(crate) fn new(status: StatusCode, errcode: ErrorCode, message: impl Into<String>) -> Self {
        MatrixError {
            status,
            errcode,
            message: message.into(),
        }
    }

    /// 401 `M_MISSING_TOKEN`.
    ///
    /// The appservice spec names no code for a missing token (only `M_FORBIDDEN` for a
    /// wrong one); this is the client-server API's code for exactly that case.
    pub(crate) fn missing_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::MissingToken,
            "no access token was given",
        )
    }

    /// 403 `M_FORBIDDEN`.
    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }

    /// 404 `M_UNRECOGNIZED`: the spec's answer to an unknown route.
    pub(crate) fn unknown_route() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::Unrecognized,
            "unrecognized request",
        )
    }

    /// 405 `M_UNRECOGNIZED`: the spec's answer to a known route with the wrong method.
    pub(crate) fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Unrecognized,
            "method not allowed on this route",
        )
    }

    /// 400 `M_NOT_JSON`.
    pub(crate) fn not_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::NotJson, message)
    }

    /// 400 `M_BAD_JSON`.
    pub(crate) fn bad_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadJson, message)
    }

    /// 413 `M_TOO_LARGE`.
    pub(crate) fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            format!("the request body is over the limit of {limit} bytes"),
        )
    }

    /// 400 `M_INVALID_PARAM`.
    pub(crate) fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidParam, message)
    }

    /// 400 `M_MISSING_PARAM`.
    pub(crate) fn missing_param(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::MissingParam,
            format!("the query parameter `{name}` is required"),
        )
    }

    /// 404 `M_NOT_FOUND`.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }

    /// 500 `M_UNKNOWN`: our failure, so the homeserver retries later.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Unknown,
            message,
        )
    }

    /// 503 `M_UNKNOWN`.
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unknown, message)
    }
}

/// The wire shape of an error body.
#[derive(Serialize)]
struct ErrorBody<'a> {
    errcode: &'static str,
    error: &'a str,
}

impl IntoResponse for MatrixError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            errcode: self.errcode.as_str(),
            error: &self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

/// Answers a route that does not exist.
pub(crate) async fn unknown_route() -> MatrixError {
    MatrixError::unknown_route()
}

/// Answers a known route called with a method it does not have.
pub(crate) async fn method_not_allowed() -> MatrixError {
    MatrixError::method_not_allowed()
}
