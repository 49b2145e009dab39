//! Fetching media a network refers to by URL (avatars, files), for upload to Matrix:
//! `http(s)` URLs with a size limit, and `data:` URLs.
//!
//! Remote users choose these URLs, so the bridge must not become their way into the
//! operator's network: only public addresses are fetched. Host names are resolved by a
//! resolver that drops every address that is not public, literal addresses are checked,
//! and redirects are checked the same way.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
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
            .dns_resolver(Arc::new(PublicOnly))
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else if names_private_address(attempt.url()) {
                    attempt.error("a redirect to a private address")
                } else {
                    attempt.follow()
                }
            }))
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
    if names_private_address(&parsed) {
        return Err(ConnectorError::Refused(
            "media URL names a private address".to_owned(),
        ));
    }
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ConnectorError::Refused(format!(
            "media URL scheme {:?} is not fetched",
            parsed.scheme()
        )));
    }
    // A name without a public address is refused for good here; the resolver checks
    // again when connecting, in case the answer changes in between.
    if let Some(url::Host::Domain(host)) = parsed.host() {
        let port = parsed.port_or_known_default().unwrap_or(80);
        let public = tokio::net::lookup_host((host, port))
            .await
            .map(|mut addresses| addresses.any(|address| is_public(address.ip())))
            .map_err(|error| ConnectorError::Retry(format!("resolving {host}: {error}")))?;
        if !public {
            return Err(ConnectorError::Refused(format!(
                "{host} has no public address"
            )));
        }
    }
    let response = http()
        .get(parsed)
        .send()
        .await
        .map_err(|error| ConnectorError::Retry(format!("fetching media: {error}")))?;
    read_response(response, limit).await
}

/// Fetches `url` from a host the operator trusts (their own upload service, which may
/// be on a private network): its address is not checked, and redirects are not followed.
pub async fn fetch_trusted(url: &str, limit: u64) -> Result<(Vec<u8>, String), ConnectorError> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .user_agent(concat!("trestle/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default()
    });
    let parsed = url::Url::parse(url)
        .map_err(|error| ConnectorError::Refused(format!("bad media URL: {error}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ConnectorError::Refused(format!(
            "media URL scheme {:?} is not fetched",
            parsed.scheme()
        )));
    }
    let response = client
        .get(parsed)
        .send()
        .await
        .map_err(|error| ConnectorError::Retry(format!("fetching media: {error}")))?;
    read_response(response, limit).await
}

/// The body of a media response, within `limit` bytes, and its content type.
async fn read_response(
    mut response: reqwest::Response,
    limit: u64,
) -> Result<(Vec<u8>, String), ConnectorError> {
    let too_big = || ConnectorError::Refused(format!("media larger than {limit} bytes"));
    let status = response.status();
    if !status.is_success() {
        let message = format!("fetching media: {status}");
        // A client error is for good (gone, forbidden); anything else may pass.
        let passing = status.is_server_error()
            || status == http::StatusCode::REQUEST_TIMEOUT
            || status == http::StatusCode::TOO_MANY_REQUESTS;
        return Err(if passing {
            ConnectorError::Retry(message)
        } else {
            ConnectorError::Refused(message)
        });
    }
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

/// The most redirects followed.
const MAX_REDIRECTS: usize = 5;

/// Resolves host names to their public addresses only.
#[derive(Debug)]
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|address| is_public(address.ip()))
                .collect();
            if addresses.is_empty() {
                return Err(format!("{} has no public address", name.as_str()).into());
            }
            let addresses: reqwest::dns::Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}

/// Whether `url`'s host is a literal address that is not public.
fn names_private_address(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => !is_public(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => !is_public(IpAddr::V6(ip)),
        _ => false,
    }
}

/// Whether `ip` is reachable on the public internet (not loopback, private, link-local,
/// shared, multicast, documentation or unspecified).
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, ..] = ip.octets();
            !(ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_broadcast()
                || ip.is_documentation()
                || ip.is_unspecified()
                || ip.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(ip) => {
            if let Some(v4) = ip.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = ip.segments()[0];
            !(ip.is_loopback()
                || ip.is_unspecified()
                || ip.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && ip.segments()[1] == 0x0db8)
        }
    }
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

    #[tokio::test]
    async fn private_addresses_are_not_fetched() {
        for url in [
            "http://127.0.0.1:1/x",
            "http://[::1]:1/x",
            "http://10.0.0.1/x",
            "http://169.254.169.254/latest/meta-data",
            "http://[::ffff:192.168.0.1]/x",
            "http://localhost:1/x",
        ] {
            assert!(
                matches!(fetch(url, 100).await, Err(ConnectorError::Refused(_))),
                "{url}"
            );
        }
        for public in ["8.8.8.8", "2606:4700::1111", "1.1.1.1"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        for private in ["100.64.0.1", "fd00::1", "fe80::1", "0.1.2.3", "192.0.2.1"] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
    }
}
