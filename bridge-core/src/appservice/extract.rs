//! Reading the parts of a request without axum's own rejections, which are plain text:
//! path parameters, the query string and a size-limited body, each failing with a
//! Matrix error instead.

use axum::body::Body;
use axum::extract::{FromRequestParts, Path};
use axum::http::header::CONTENT_LENGTH;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use futures::StreamExt;

use super::error::{ErrorCode, MatrixError};

/// The one path parameter of a route, percent-decoded.
#[derive(Debug)]
pub(crate) struct PathParam(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = MatrixError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, MatrixError> {
        // Decoding fails on a percent-escape that is not UTF-8.
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| PathParam(value))
            .map_err(|rejection| {
                MatrixError::invalid_param(format!("bad path parameter: {}", rejection.body_text()))
            })
    }
}

/// The decoded `key=value` pairs of a query string, in order. Invalid UTF-8 is replaced
/// rather than refused: the values are then looked up or validated by their users.
pub(crate) fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .map(|query| {
            url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

/// The value of the last `name` parameter of a query string.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query_pairs(query)
        .into_iter()
        .rev()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

/// Reads a whole body, refusing it with 413 `M_TOO_LARGE` once it is over `limit` bytes.
///
/// A declared `Content-Length` over the limit is refused before reading anything, so a
/// large body is not received only to be thrown away; the running count covers chunked
/// bodies and lying lengths.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Vec<u8>, MatrixError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if let Some(declared) = declared
        && declared > u64::try_from(limit).unwrap_or(u64::MAX)
    {
        return Err(MatrixError::too_large(limit));
    }
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| {
            MatrixError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::Unknown,
                format!("the request body could not be read: {error}"),
            )
        })?;
        if bytes.len().saturating_add(chunk.len()) > limit {
            return Err(MatrixError::too_large(limit));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        assert_eq!(
            query_param(Some("a=1&b=%23x%3Ay&a=2"), "a").as_deref(),
            Some("2")
        );
        assert_eq!(
            query_param(Some("a=1&b=%23x%3Ay"), "b").as_deref(),
            Some("#x:y")
        );
        assert_eq!(query_param(Some("a=%FF"), "a").as_deref(), Some("\u{FFFD}"));
        assert_eq!(query_param(None, "a"), None);
    }

    #[tokio::test]
    async fn body_limit() {
        let headers = HeaderMap::new();
        let ok = read_body(&headers, Body::from("12345"), 5).await;
        assert_eq!(ok.ok().as_deref(), Some(&b"12345"[..]));
        let over = read_body(&headers, Body::from("123456"), 5).await;
        assert_eq!(
            over.err().map(|e| e.status),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );

        let mut declared = HeaderMap::new();
        declared.insert(CONTENT_LENGTH, axum::http::HeaderValue::from_static("100"));
        let early = read_body(&declared, Body::from("1"), 5).await;
        assert_eq!(
            early.err().map(|e| e.status),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
    }
}
