//! `POST /_matrix/app/v1/ping`: the homeserver checking, on the bridge's request, that it
//! can reach the bridge with the right `hs_token`. Reaching this handler is the whole
//! answer; the token was checked on the way in.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::MatrixError;
use super::extract::read_body;

/// The ping body; every field is optional.
#[derive(Debug, Default, Deserialize)]
struct PingBody {
    /// Copied by the homeserver from the bridge's own ping request.
    transaction_id: Option<String>,
}

/// Answers a ping with `200 {}`.
pub(crate) async fn post_ping(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, MatrixError> {
    let bytes = read_body(&headers, body, state.body_limit).await?;
    let ping = parse(&bytes)?;
    tracing::debug!(transaction_id = ?ping.transaction_id, "pinged by the homeserver");
    Ok(Json(json!({})))
}

/// Parses a ping body. An empty body is an empty ping: the spec's request body is
/// optional.
fn parse(bytes: &[u8]) -> Result<PingBody, MatrixError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(PingBody::default());
    }
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|error| MatrixError::not_json(format!("the body is not JSON: {error}")))?;
    // Checked first because serde would also read a struct from a JSON array.
    if !value.is_object() {
        return Err(MatrixError::bad_json("the body is not a JSON object"));
    }
    // An explicit null is accepted as absent although the spec types the field a string:
    // Synapse sends `"transaction_id": null` when the bridge's own ping had no id.
    serde_json::from_value(value)
        .map_err(|error| MatrixError::bad_json(format!("not a ping: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errcode(bytes: &[u8]) -> Option<&'static str> {
        parse(bytes).err().map(|error| error.errcode.as_str())
    }

    #[test]
    fn ping_bodies() {
        assert_eq!(errcode(b""), None);
        assert_eq!(errcode(b"{}"), None);
        assert_eq!(
            parse(br#"{"transaction_id": "t1"}"#)
                .ok()
                .and_then(|ping| ping.transaction_id)
                .as_deref(),
            Some("t1")
        );
        assert_eq!(errcode(b"{"), Some("M_NOT_JSON"));
        assert_eq!(errcode(br#"["t1"]"#), Some("M_BAD_JSON"));
        assert_eq!(errcode(br#"{"transaction_id": 3}"#), Some("M_BAD_JSON"));
        assert_eq!(errcode(br#"{"transaction_id": null}"#), None);
    }
}
