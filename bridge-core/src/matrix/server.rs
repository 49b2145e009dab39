//! The homeserver as a whole: waiting until it answers (`GET /_matrix/client/versions`)
//! and the appservice ping (`POST /_matrix/client/v1/appservice/{id}/ping`), which has
//! the homeserver call our endpoint back.

use std::time::{Duration, Instant};

use http::Method;
use ruma::{OwnedTransactionId, TransactionId};
use serde::Deserialize;
use serde_json::json;

use super::client::{ApiRequest, HomeserverClient};
use super::error::MatrixError;
use super::retry::RetryPolicy;

/// How often [`HomeserverClient::wait_for_homeserver`] asks.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, Deserialize)]
struct Versions {
    versions: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Ping {
    duration_ms: u64,
}

impl HomeserverClient {
    /// Asks for the spec versions the homeserver supports until it answers, for at most
    /// `timeout`; returns them. Each ask is a single attempt. An answer refusing the
    /// appservice token (`M_UNKNOWN_TOKEN`, `M_MISSING_TOKEN`) is returned at once: the
    /// homeserver is up but does not know this appservice, and waiting will not change it.
    pub async fn wait_for_homeserver(&self, timeout: Duration) -> Result<Vec<String>, MatrixError> {
        let started = Instant::now();
        let single = self.clone().with_retry_policy(RetryPolicy {
            max_attempts: 1,
            request_timeout: Duration::from_secs(5).min(timeout).max(POLL_INTERVAL),
            ..self.retry_policy().clone()
        });
        loop {
            let request = ApiRequest::new(Method::GET, vec!["_matrix", "client", "versions"]);
            let last = match single.send::<Versions>(request, None).await {
                Ok(answer) => return Ok(answer.versions),
                Err(error) if is_token_refused(&error) => return Err(error),
                Err(error) => error,
            };
            let waited = started.elapsed();
            if waited + POLL_INTERVAL > timeout {
                return Err(MatrixError::Unavailable {
                    request: "GET /_matrix/client/versions".to_owned(),
                    waited,
                    last: last.to_string(),
                });
            }
            tracing::debug!(error = %last, "homeserver not answering yet");
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Has the homeserver ping the appservice `appservice_id` (the registration's `id`),
    /// and returns how long the homeserver's call to our endpoint took. A fresh
    /// `transaction_id` is sent (Synapse otherwise passes on `"transaction_id": null`).
    ///
    /// The homeserver's reports that it could not reach our endpoint or got an error
    /// from it (`M_CONNECTION_FAILED`, `M_CONNECTION_TIMEOUT`, `M_BAD_STATUS`, sent with
    /// 502 or 504) are returned at once as [`MatrixError::Api`], not retried.
    pub async fn ping(&self, appservice_id: &str) -> Result<Duration, MatrixError> {
        let txn_id = OwnedTransactionId::from(format!("ping-{:016x}", rand::random::<u64>()));
        self.ping_with_transaction(appservice_id, &txn_id).await
    }

    /// [`HomeserverClient::ping`] with the `transaction_id` our endpoint receives.
    pub async fn ping_with_transaction(
        &self,
        appservice_id: &str,
        transaction_id: &TransactionId,
    ) -> Result<Duration, MatrixError> {
        let body = json!({ "transaction_id": transaction_id });
        let mut request = ApiRequest::new(
            Method::POST,
            vec![
                "_matrix",
                "client",
                "v1",
                "appservice",
                appservice_id,
                "ping",
            ],
        )
        .json(&body);
        request.final_errcodes = &[
            "M_CONNECTION_FAILED",
            "M_CONNECTION_TIMEOUT",
            "M_BAD_STATUS",
        ];
        let answer: Ping = self.send(request, None).await?;
        Ok(Duration::from_millis(answer.duration_ms))
    }
}

/// Whether the homeserver refused the appservice token itself.
pub(crate) fn is_token_refused(error: &MatrixError) -> bool {
    error
        .api_error()
        .is_some_and(|api| api.is("M_UNKNOWN_TOKEN") || api.is("M_MISSING_TOKEN"))
}
