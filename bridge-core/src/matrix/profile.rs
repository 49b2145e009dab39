//! Ghost users and their profiles: registering a user in the appservice's namespace
//! (idempotently) and setting its display name and avatar.

use http::Method;
use ruma::{MxcUri, OwnedUserId, UserId};
use serde::Deserialize;
use serde_json::json;

use super::client::{ApiRequest, HomeserverClient, UserHandle, user_id_on};
use super::error::MatrixError;

#[derive(Debug, Deserialize)]
struct Registered {
    user_id: OwnedUserId,
}

impl HomeserverClient {
    /// Registers `@localpart:server_name` as an appservice user and returns its id.
    ///
    /// The localpart must follow the spec's grammar for new users (`a-z`, `0-9`,
    /// `._=-/+`), or [`MatrixError::InvalidLocalpart`] is returned without a request.
    /// Idempotent: a user that already exists (`M_USER_IN_USE`) counts as registered.
    pub async fn register(&self, localpart: &str) -> Result<OwnedUserId, MatrixError> {
        let user_id = user_id_on(localpart, self.server_name())?;
        // New users must follow today's grammar; historical ids only ever existed.
        user_id
            .validate_strict()
            .map_err(|source| MatrixError::InvalidLocalpart {
                localpart: localpart.to_owned(),
                source,
            })?;
        let body = json!({
            "type": "m.login.application_service",
            "username": user_id.localpart(),
            "inhibit_login": true,
        });
        let request =
            ApiRequest::new(Method::POST, vec!["_matrix", "client", "v3", "register"]).json(&body);
        match self.send::<Registered>(request, None).await {
            Ok(answer) => Ok(answer.user_id),
            Err(MatrixError::Api { source, .. }) if source.is("M_USER_IN_USE") => Ok(user_id),
            Err(error) => Err(error),
        }
    }
}

impl UserHandle {
    /// Sets this user's display name (`None` removes it).
    pub async fn set_display_name(&self, display_name: Option<&str>) -> Result<(), MatrixError> {
        let body = json!({ "displayname": display_name });
        self.put_profile_field("displayname", &body).await
    }

    /// Sets this user's avatar (`None` removes it).
    pub async fn set_avatar_url(&self, avatar_url: Option<&MxcUri>) -> Result<(), MatrixError> {
        let body = json!({ "avatar_url": avatar_url.map(MxcUri::as_str) });
        self.put_profile_field("avatar_url", &body).await
    }

    async fn put_profile_field(
        &self,
        field: &str,
        body: &serde_json::Value,
    ) -> Result<(), MatrixError> {
        let user: &UserId = self.user_id();
        let request = ApiRequest::new(
            Method::PUT,
            vec!["_matrix", "client", "v3", "profile", user.as_str(), field],
        )
        .json(body);
        self.send::<serde_json::Value>(request).await.map(drop)
    }
}
