//! The media repository: uploading bytes (`POST /_matrix/media/v3/upload`) to get the
//! `mxc://` URI events refer to.

use http::Method;
use ruma::OwnedMxcUri;
use serde::Deserialize;

use super::client::{ApiRequest, Body, UserHandle};
use super::error::MatrixError;

#[derive(Debug, Deserialize)]
struct Uploaded {
    content_uri: OwnedMxcUri,
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
}
