//! The client itself: one shared HTTP client and the appservice token, and the request
//! core every operation goes through (JSON in and out, the bearer token, masquerading,
//! and retries by the [`RetryPolicy`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use ruma::{OwnedServerName, OwnedUserId, ServerName, UserId};
use serde::de::DeserializeOwned;
use url::Url;

use crate::config::SecretString;

use super::error::{MatrixApiError, MatrixError, TransientFailure};
use super::retry::{RetryPolicy, retry_hint};

/// How long to wait for a TCP (and TLS) connection to the homeserver.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of the homeserver's client-server API, authenticated as the appservice.
///
/// Cheap to clone; clones share one connection pool.
#[derive(Debug, Clone)]
pub struct HomeserverClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    base: Url,
    server_name: OwnedServerName,
    /// Redacted in `Debug`.
    as_token: SecretString,
    bot: OwnedUserId,
    retry: RetryPolicy,
}

/// Requests made as one user: the bot itself, or a ghost user the appservice masquerades
/// as with the `user_id` query parameter.
#[derive(Debug, Clone)]
pub struct UserHandle {
    client: HomeserverClient,
    user_id: OwnedUserId,
    masquerade: bool,
}

/// What a request sends as its body.
#[derive(Debug)]
pub(crate) enum Body<'a> {
    /// No body.
    Empty,
    /// A JSON value.
    Json(&'a serde_json::Value),
    /// Raw bytes with their content type.
    Bytes {
        /// The bytes.
        data: &'a [u8],
        /// Their `Content-Type`.
        content_type: &'a str,
    },
}

/// One request to the homeserver, before the token and masquerading are added.
#[derive(Debug)]
pub(crate) struct ApiRequest<'a> {
    pub(crate) method: Method,
    /// Path segments after the base URL, unescaped (`["_matrix", "client", ...]`).
    pub(crate) path: Vec<&'a str>,
    pub(crate) query: Vec<(&'static str, String)>,
    pub(crate) body: Body<'a>,
    /// Error codes that are final even with a 429 or 5xx status (the ping's reports about
    /// our endpoint, say).
    pub(crate) final_errcodes: &'static [&'static str],
}

impl<'a> ApiRequest<'a> {
    /// A request without query or body.
    pub(crate) fn new(method: Method, path: Vec<&'a str>) -> Self {
        ApiRequest {
            method,
            path,
            query: Vec::new(),
            body: Body::Empty,
            final_errcodes: &[],
        }
    }

    /// With a JSON body.
    pub(crate) fn json(mut self, body: &'a serde_json::Value) -> Self {
        self.body = Body::Json(body);
        self
    }

    /// With a query parameter.
    pub(crate) fn query(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.query.push((key, value.into()));
        self
    }
}

impl HomeserverClient {
    /// A client of the homeserver at `base_url` (`http://127.0.0.1:8008`) on
    /// `server_name`, authenticating with the registration's `as_token`, whose bot is
    /// `@bot_localpart:server_name`.
    pub fn new(
        base_url: Url,
        server_name: &ServerName,
        as_token: impl Into<String>,
        bot_localpart: &str,
    ) -> Result<Self, MatrixError> {
        if base_url.cannot_be_a_base() {
            return Err(MatrixError::InvalidBaseUrl(base_url));
        }
        let bot = user_id_on(bot_localpart, server_name)?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("trestle/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(MatrixError::Client)?;
        Ok(HomeserverClient {
            inner: Arc::new(Inner {
                http,
                base: base_url,
                server_name: server_name.to_owned(),
                as_token: SecretString::new(as_token),
                bot,
                retry: RetryPolicy::default(),
            }),
        })
    }

    /// The same client with another retry policy (tests use short waits). Call before
    /// cloning: clones made earlier keep the old one.
    pub fn with_retry_policy(self, retry: RetryPolicy) -> Self {
        let inner = &self.inner;
        HomeserverClient {
            inner: Arc::new(Inner {
                http: inner.http.clone(),
                base: inner.base.clone(),
                server_name: inner.server_name.clone(),
                as_token: inner.as_token.clone(),
                bot: inner.bot.clone(),
                retry,
            }),
        }
    }

    /// The homeserver's server name.
    pub fn server_name(&self) -> &ServerName {
        &self.inner.server_name
    }

    /// The bot's user id.
    pub fn bot_user_id(&self) -> &UserId {
        &self.inner.bot
    }

    /// The retry policy in use.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.retry
    }

    /// Requests as the bot (without the `user_id` parameter).
    pub fn bot(&self) -> UserHandle {
        UserHandle {
            client: self.clone(),
            user_id: self.inner.bot.clone(),
            masquerade: false,
        }
    }

    /// Requests as `user` (a ghost in the appservice's namespace), masquerading with the
    /// `user_id` query parameter; for the bot's own id this is [`HomeserverClient::bot`].
    pub fn as_user(&self, user: &UserId) -> UserHandle {
        if user == self.inner.bot {
            return self.bot();
        }
        UserHandle {
            client: self.clone(),
            user_id: user.to_owned(),
            masquerade: true,
        }
    }

    /// Sends `request` with the appservice token (as `as_user` if given), retrying
    /// transient failures, and reads the JSON answer as `T`.
    pub(crate) async fn send<T: DeserializeOwned>(
        &self,
        request: ApiRequest<'_>,
        as_user: Option<&UserId>,
    ) -> Result<T, MatrixError> {
        let described = describe(&request);
        let (body, _) = self.send_raw(&request, as_user, &described).await?;
        serde_json::from_slice(&body).map_err(|source| MatrixError::Decode {
            request: described,
            source,
        })
    }

    /// Sends `request` like [`HomeserverClient::send`] and returns the answer's bytes and
    /// content type, for answers that are not JSON (media).
    pub(crate) async fn send_for_bytes(
        &self,
        request: ApiRequest<'_>,
        as_user: Option<&UserId>,
    ) -> Result<(Vec<u8>, Option<String>), MatrixError> {
        let described = describe(&request);
        self.send_raw(&request, as_user, &described).await
    }

    /// The request core: returns the body of a successful answer and its content type.
    async fn send_raw(
        &self,
        request: &ApiRequest<'_>,
        as_user: Option<&UserId>,
        described: &str,
    ) -> Result<(Vec<u8>, Option<String>), MatrixError> {
        let url = self.url(request, as_user)?;
        let policy = &self.inner.retry;
        let started = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let (failure, hint) = match self.attempt(request, url.clone()).await {
                Ok(Outcome::Success(body, content_type)) => return Ok((body, content_type)),
                Ok(Outcome::Permanent(source)) => {
                    return Err(MatrixError::Api {
                        request: described.to_owned(),
                        source,
                    });
                }
                Ok(Outcome::Transient(source, hint)) => (TransientFailure::Status(source), hint),
                Err(error) => (TransientFailure::Network(error), None),
            };
            let wait = policy.backoff(attempt, hint);
            let elapsed = started.elapsed();
            if attempt >= policy.max_attempts || elapsed + wait > policy.max_elapsed {
                return Err(MatrixError::Exhausted {
                    request: described.to_owned(),
                    attempts: attempt,
                    elapsed,
                    last: failure,
                });
            }
            tracing::warn!(
                request = described,
                attempt,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                error = %failure,
                "homeserver request failed; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt; `Err` is a network failure.
    async fn attempt(&self, request: &ApiRequest<'_>, url: Url) -> Result<Outcome, reqwest::Error> {
        let mut builder = self
            .inner
            .http
            .request(request.method.clone(), url)
            .bearer_auth(self.inner.as_token.expose())
            .timeout(self.inner.retry.request_timeout);
        builder = match &request.body {
            Body::Empty => builder,
            Body::Json(value) => builder.json(value),
            Body::Bytes { data, content_type } => builder
                .header(http::header::CONTENT_TYPE, *content_type)
                .body(data.to_vec()),
        };
        let response = builder.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?.to_vec();
        if status.is_success() {
            let content_type = headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            return Ok(Outcome::Success(body, content_type));
        }
        let error = MatrixApiError::from_body(status, &body);
        let transient = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
        if transient && !request.final_errcodes.contains(&error.errcode.as_str()) {
            Ok(Outcome::Transient(error, retry_hint(&headers, &body)))
        } else {
            Ok(Outcome::Permanent(error))
        }
    }

    /// The full URL: base, escaped path segments, query, and `user_id` if masquerading.
    fn url(&self, request: &ApiRequest<'_>, as_user: Option<&UserId>) -> Result<Url, MatrixError> {
        // URLs cannot carry these segments (they are resolved away, even escaped), and
        // the request would go to another endpoint.
        if let Some(segment) = request.path.iter().find(|s| matches!(**s, "." | "..")) {
            return Err(MatrixError::UnsendablePathSegment {
                segment: (*segment).to_owned(),
            });
        }
        let mut url = self.inner.base.clone();
        url.path_segments_mut()
            .map_err(|()| MatrixError::InvalidBaseUrl(self.inner.base.clone()))?
            .pop_if_empty()
            .extend(&request.path);
        {
            let mut query = url.query_pairs_mut();
            for (key, value) in &request.query {
                query.append_pair(key, value);
            }
            if let Some(user) = as_user {
                query.append_pair("user_id", user.as_str());
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        Ok(url)
    }
}

impl UserHandle {
    /// The user these requests are made as.
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// The client this handle belongs to.
    pub fn client(&self) -> &HomeserverClient {
        &self.client
    }

    /// Sends `request` as this user.
    pub(crate) async fn send<T: DeserializeOwned>(
        &self,
        request: ApiRequest<'_>,
    ) -> Result<T, MatrixError> {
        let as_user = self.masquerade.then_some(&*self.user_id);
        self.client.send(request, as_user).await
    }

    /// [`UserHandle::send`], with `None` for an `M_NOT_FOUND` answer.
    pub(crate) async fn send_if_found<T: DeserializeOwned>(
        &self,
        request: ApiRequest<'_>,
    ) -> Result<Option<T>, MatrixError> {
        match self.send(request).await {
            Ok(found) => Ok(Some(found)),
            Err(MatrixError::Api { source, .. }) if source.is("M_NOT_FOUND") => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Sends `request` as this user and returns the answer's bytes and content type.
    pub(crate) async fn send_for_bytes(
        &self,
        request: ApiRequest<'_>,
    ) -> Result<(Vec<u8>, Option<String>), MatrixError> {
        let as_user = self.masquerade.then_some(&*self.user_id);
        self.client.send_for_bytes(request, as_user).await
    }
}

/// What one attempt came to, short of a network failure.
#[derive(Debug)]
enum Outcome {
    Success(Vec<u8>, Option<String>),
    Permanent(MatrixApiError),
    Transient(MatrixApiError, Option<Duration>),
}

/// `METHOD /path` for errors and logs (no query: it may name users, never tokens, but
/// stays short).
fn describe(request: &ApiRequest<'_>) -> String {
    let mut text = request.method.to_string();
    for segment in &request.path {
        text.push('/');
        text.push_str(segment);
    }
    text.replacen('/', " /", 1)
}

/// `@localpart:server_name`, refusing a localpart that is not valid there (including a
/// full user id, which could name another server). Historical localparts are accepted.
pub(crate) fn user_id_on(
    localpart: &str,
    server_name: &ServerName,
) -> Result<OwnedUserId, MatrixError> {
    let invalid = |source| MatrixError::InvalidLocalpart {
        localpart: localpart.to_owned(),
        source,
    };
    if localpart.starts_with('@') {
        return Err(invalid(ruma::IdParseError::InvalidCharacters));
    }
    let user = UserId::parse_with_server_name(localpart, server_name).map_err(invalid)?;
    user.validate_historical().map_err(invalid)?;
    if user.server_name() != server_name {
        return Err(invalid(ruma::IdParseError::InvalidServerName));
    }
    Ok(user)
}

/// An empty JSON object, the body of requests that take one but need nothing.
pub(crate) fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma::{server_name, user_id};

    fn client(base: &str) -> HomeserverClient {
        HomeserverClient::new(
            base.parse().unwrap(),
            server_name!("example.org"),
            "s3cr3t-value",
            "bot",
        )
        .unwrap()
    }

    #[test]
    fn paths_are_escaped_and_masquerading_adds_user_id() {
        let client = client("http://hs.example:8008/");
        let request = ApiRequest::new(
            Method::PUT,
            vec![
                "_matrix",
                "client",
                "v3",
                "rooms",
                "!a/b:example.org",
                "send",
            ],
        )
        .query("ts", "5");
        let url = client
            .url(&request, Some(user_id!("@irc_x:example.org")))
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://hs.example:8008/_matrix/client/v3/rooms/!a%2Fb:example.org/send?ts=5&user_id=%40irc_x%3Aexample.org"
        );
        let plain = client
            .url(
                &ApiRequest::new(Method::GET, vec!["_matrix", "client", "versions"]),
                None,
            )
            .unwrap();
        assert_eq!(
            plain.as_str(),
            "http://hs.example:8008/_matrix/client/versions"
        );
        assert_eq!(
            describe(&request),
            "PUT /_matrix/client/v3/rooms/!a/b:example.org/send"
        );
    }

    #[test]
    fn dot_segments_are_refused() {
        let client = client("http://hs.example");
        for dots in [".", ".."] {
            let request = ApiRequest::new(Method::PUT, vec!["_matrix", "x", dots, "y"]);
            assert!(matches!(
                client.url(&request, None),
                Err(MatrixError::UnsendablePathSegment { .. })
            ));
        }
        let request = ApiRequest::new(Method::PUT, vec!["_matrix", "...", "%2e%2e"]);
        assert_eq!(
            client.url(&request, None).unwrap().as_str(),
            "http://hs.example/_matrix/.../%252e%252e"
        );
    }

    #[test]
    fn a_base_with_a_path_keeps_it() {
        let client = client("http://hs.example/matrix");
        let url = client
            .url(
                &ApiRequest::new(Method::GET, vec!["_matrix", "client", "versions"]),
                None,
            )
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://hs.example/matrix/_matrix/client/versions"
        );
    }

    #[test]
    fn the_bot_does_not_masquerade() {
        let client = client("http://hs.example");
        assert!(
            !format!("{client:?}").contains("s3cr3t"),
            "the token is not logged"
        );
        assert!(!client.as_user(user_id!("@bot:example.org")).masquerade);
        assert!(client.as_user(user_id!("@irc_a:example.org")).masquerade);
        assert!(
            HomeserverClient::new(
                "mailto:x@y".parse().unwrap(),
                server_name!("e.org"),
                "t",
                "b"
            )
            .is_err()
        );
        for bad in ["a b", "a:b", "@bot:other.org", ""] {
            assert!(
                HomeserverClient::new("http://h".parse().unwrap(), server_name!("e.org"), "t", bad)
                    .is_err(),
                "{bad:?}"
            );
        }
    }
}
