//! Fetching media a network refers to by URL (avatars, files), for upload to Matrix:
//! `http(s)` URLs with a size limit, and `data:` URLs.

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;

use crate::connector::ConnectorError;

/// How long a fetch may take in all.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .user_agent(concat!("trestle/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default()
    })
}

/// Fetches `url` (`http`, `https` or `data`), refusing more than `limit` bytes; returns
/// the bytes and their content type.
pub async fn fetch(url: &str, limit: u64) -> Result<(Vec<u8>, String), ConnectorError> {
    if let Some(data) = url.strip_prefix("data:") {
        return decode_data_url(data, limit);
    }
    let parsed = url::Url::parse(url)
        .map_err(|error| ConnectorError::Refused(format!("bad media URL: {error}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ConnectorError::Refused(format!(
            "media URL scheme {:?} is not fetched",
            parsed.scheme()
        )));
    }
    let too_big = || ConnectorError::Refused(format!("media larger than {limit} bytes"));
    let mut response = http()
        .get(parsed)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|error| ConnectorError::Retry(format!("fetching media: {error}")))?;
    if response
        .content_length()
        .is_some_and(|length| length > limit)
    {
        return Err(too_big());
    }
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let mut data = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| ConnectorError::Retry(format!("fetching media: {error}")))?
    {
        if (data.len() + chunk.len()) as u64 > limit {
            return Err(too_big());
        }
        data.extend_from_slice(&chunk);
    }
    Ok((data, content_type))
}

/// `data:[<type>][;base64],<data>`.
fn decode_data_url(rest: &str, limit: u64) -> Result<(Vec<u8>, String), ConnectorError> {
    let (header, payload) = rest
        .split_once(',')
        .ok_or_else(|| ConnectorError::Refused("a data URL without a comma".into()))?;
    let (content_type, base64) = match header.strip_suffix(";base64") {
        Some(content_type) => (content_type, true),
        None => (header, false),
    };
    let content_type = if content_type.is_empty() {
        "text/plain"
    } else {
        content_type
    };
    let data = if base64 {
        base64::engine::general_purpose::STANDARD
            .decode(payload)
            .map_err(|error| {
                ConnectorError::Refused(format!("bad base64 in a data URL: {error}"))
            })?
    } else {
        payload.as_bytes().to_vec()
    };
    if data.len() as u64 > limit {
        return Err(ConnectorError::Refused(format!(
            "media larger than {limit} bytes"
        )));
    }
    Ok((data, content_type.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn data_urls_decode_within_the_limit() {
        let (data, content_type) = fetch("data:image/png;base64,aGVsbG8=", 10).await.unwrap();
        assert_eq!(
            (data.as_slice(), content_type.as_str()),
            (&b"hello"[..], "image/png")
        );
        let (data, content_type) = fetch("data:,plain", 10).await.unwrap();
        assert_eq!(
            (data.as_slice(), content_type.as_str()),
            (&b"plain"[..], "text/plain")
        );
        assert!(fetch("data:image/png;base64,aGVsbG8=", 4).await.is_err());
        assert!(fetch("file:///etc/passwd", 100).await.is_err());
        assert!(fetch("data:nocomma", 100).await.is_err());
    }
}
