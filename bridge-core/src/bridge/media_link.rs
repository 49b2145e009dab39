//! Media links: Matrix files given to a remote network as plain HTTPS links that the
//! bridge serves, because Matrix media downloads need an access token a remote user does
//! not have. A link names the file's `mxc://` server and id and carries a signature
//! (HMAC-SHA256 keyed from `encryption.key`), so the bridge serves the files it gave out
//! and cannot be used to fetch anything else.
//!
//! `GET /media/{server}/{media_id}/{file name}?sig=...` on the appservice endpoint;
//! `bridge.media_url` is the public base of the links (default `appservice.url`).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hmac::{Hmac, Mac};
use ruma::{MxcUri, OwnedMxcUri};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;
use url::Url;

use super::handle::Shared;

/// Signs and checks media links.
#[derive(Clone)]
pub(crate) struct MediaLinks {
    base: Url,
    key: [u8; 32],
}

impl std::fmt::Debug for MediaLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaLinks")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl MediaLinks {
    /// Links under `base`, signed with a key derived from `secret` (the encryption key).
    pub(crate) fn new(base: Url, secret: &[u8]) -> MediaLinks {
        let mut hash = Sha256::new();
        hash.update(b"trestle media links\0");
        hash.update(secret);
        MediaLinks {
            base,
            key: hash.finalize().into(),
        }
    }

    fn signature(&self, server: &str, media_id: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(server.as_bytes());
        mac.update(b"/");
        mac.update(media_id.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// The public link of `mxc`, ending in `file_name` (so that the link says what it is).
    pub(crate) fn link(&self, mxc: &MxcUri, file_name: Option<&str>) -> Option<String> {
        let (server, media_id) = mxc.parts().ok()?;
        let name = file_name
            .map(|name| name.replace(['/', '\\'], "_"))
            .filter(|name| !name.trim().is_empty())
            .unwrap_or_else(|| "file".to_owned());
        let mut url = self.base.clone();
        url.path_segments_mut().ok()?.pop_if_empty().extend([
            "media",
            server.as_str(),
            media_id,
            &name,
        ]);
        url.query_pairs_mut()
            .append_pair("sig", &self.signature(server.as_str(), media_id));
        Some(url.into())
    }

    fn verify(&self, server: &str, media_id: &str, signature: &str) -> bool {
        let expected = self.signature(server, media_id);
        expected.as_bytes().ct_eq(signature.as_bytes()).into()
    }
}

#[derive(Debug, Deserialize)]
struct Signature {
    sig: Option<String>,
}

/// The media route, served beside the appservice API.
pub(crate) fn routes(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/media/{server}/{media_id}/{name}", get(serve))
        .with_state(shared)
}

async fn serve(
    State(shared): State<Arc<Shared>>,
    Path((server, media_id, _name)): Path<(String, String, String)>,
    Query(query): Query<Signature>,
) -> Response {
    let signed = query
        .sig
        .is_some_and(|sig| shared.media_links.verify(&server, &media_id, &sig));
    if !signed {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    }
    let mxc = OwnedMxcUri::from(format!("mxc://{server}/{media_id}"));
    if !mxc.is_valid() {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    }
    match shared.matrix.bot().download_media(&mxc).await {
        Ok(media) => {
            let content_type = media
                .content_type
                .as_deref()
                .and_then(|t| HeaderValue::from_str(t).ok())
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            let mut response = (StatusCode::OK, media.data).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, content_type);
            // Whatever the file is, it runs nothing on the bridge's origin.
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("sandbox; default-src 'none'"),
            );
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            response
        }
        Err(error) => {
            tracing::info!(%mxc, %error, "a media link could not be served");
            (StatusCode::BAD_GATEWAY, "the file cannot be fetched now").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_signed_for_their_file_only() {
        let links = MediaLinks::new(
            Url::parse("https://bridge.example.org/base/").unwrap(),
            b"k",
        );
        let mxc: OwnedMxcUri = "mxc://example.org/abc123".into();
        let link = links.link(&mxc, Some("a b/c.png")).unwrap();
        assert!(
            link.starts_with(
                "https://bridge.example.org/base/media/example.org/abc123/a%20b_c.png?sig="
            ),
            "{link}"
        );
        let sig = link.rsplit("sig=").next().unwrap();
        assert!(links.verify("example.org", "abc123", sig));
        assert!(!links.verify("example.org", "abc124", sig));
        assert!(!links.verify("example.org", "abc123", "00"));
        let other = MediaLinks::new(Url::parse("https://x.org").unwrap(), b"other key");
        assert!(!other.verify("example.org", "abc123", sig));
    }
}
