//! The media repository: uploading bytes (`POST /_matrix/media/v3/upload`) to get the
//! `mxc://` URI events refer to, downloading with authenticated media
//! (`GET /_matrix/client/v1/media/download/...`), and the homeserver's upload size limit.

use http::Method;
use ruma::{MxcUri, OwnedMxcUri};
use serde::Deserialize;

use super::client::{ApiRequest, Body, UserHandle};
use super::error::MatrixError;

#[derive(Debug, Deserialize)]
struct Uploaded {
    content_uri: OwnedMxcUri,
}

#[derive(Debug, Deserialize)]
struct MediaConfig {
    #[serde(rename = "m.upload.size")]
    upload_size: Option<u64>,
}

/// Downloaded media: its bytes and the content type the homeserver gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// The bytes.
    pub data: Vec<u8>,
    /// The content type, if the homeserver said.
    pub content_type: Option<String>,
}

impl UserHandle {
    /// Uploads `data` of type `content_type` (`image/png`), named `filename` if given,
    /// and returns its `mxc://` URI.
    pub async fn upload_media(
        &self,
        data: &[u8],
        content_type: &str,
        filename: Option<&str>,
    ) -> Result<OwnedMxcUri, MatrixError> {
        let mut request = ApiRequest::new(Method::POST, vec!["_matrix", "media", "v3", "upload"]);
        request.body = Body::Bytes { data, content_type };
        if let Some(filename) = filename {
            request = request.query("filename", filename);
        }
        let uploaded: Uploaded = self.send(request).await?;
        Ok(uploaded.content_uri)
    }

    /// Downloads the media at `uri` through the authenticated media API.
    pub async fn download_media(&self, uri: &MxcUri) -> Result<Media, MatrixError> {
        let (server, media_id) = uri.parts().map_err(|_| MatrixError::InvalidMxc {
            uri: uri.to_string(),
        })?;
        let request = ApiRequest::new(
            Method::GET,
            vec![
                "_matrix",
                "client",
                "v1",
                "media",
                "download",
                server.as_str(),
                media_id,
            ],
        );
        let (data, content_type) = self.send_for_bytes(request).await?;
        Ok(Media { data, content_type })
    }

    /// The largest upload the homeserver accepts, in bytes, if it says.
    pub async fn upload_size_limit(&self) -> Result<Option<u64>, MatrixError> {
        let request = ApiRequest::new(
            Method::GET,
            vec!["_matrix", "client", "v1", "media", "config"],
        );
        let config: MediaConfig = self.send(request).await?;
        Ok(config.upload_size)
    }
}
