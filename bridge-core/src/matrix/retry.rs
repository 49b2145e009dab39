//! When and how long to wait before retrying a request: exponential backoff with jitter,
//! overridden by the homeserver's own hint (`retry_after_ms` in a 429 body, or the
//! `Retry-After` header in seconds), and bounded in attempts and total time.

use std::time::Duration;

use http::HeaderMap;
use rand::Rng;

/// How a request is retried after network errors, 429 and 5xx answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most attempts in all, the first one included (at least 1 is made).
    pub max_attempts: u32,
    /// Total time after which no further attempt starts.
    pub max_elapsed: Duration,
    /// The wait before the second attempt; it doubles for each one after.
    pub initial_backoff: Duration,
    /// The longest wait between attempts, the homeserver's hint included.
    pub max_backoff: Duration,
    /// How long one attempt may take, the answer's body included.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    /// 8 attempts within 2 minutes, waits from 500 ms doubling up to 30 s, 60 s per attempt.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            max_elapsed: Duration::from_secs(120),
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based): the homeserver's `hint`
    /// if it gave one, else the exponential backoff with full jitter in its upper half;
    /// never more than [`RetryPolicy::max_backoff`].
    pub fn backoff(&self, attempt: u32, hint: Option<Duration>) -> Duration {
        if let Some(hint) = hint {
            return hint.min(self.max_backoff);
        }
        let exponent = attempt.saturating_sub(1).min(20);
        let ceiling = self
            .initial_backoff
            .saturating_mul(1u32 << exponent)
            .min(self.max_backoff);
        let ceiling_ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        let low = ceiling_ms / 2;
        let jittered = if ceiling_ms > low {
            rand::rng().random_range(low..=ceiling_ms)
        } else {
            ceiling_ms
        };
        Duration::from_millis(jittered)
    }
}

/// The homeserver's hint of when to retry: `retry_after_ms` in the JSON body, else the
/// `Retry-After` header given in seconds (an HTTP-date there is ignored).
pub(crate) fn retry_hint(headers: &HeaderMap, body: &[u8]) -> Option<Duration> {
    let from_body = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("retry_after_ms").and_then(serde_json::Value::as_u64))
        .map(Duration::from_millis);
    from_body.or_else(|| {
        headers
            .get(http::header::RETRY_AFTER)?
            .to_str()
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy::default();
        for attempt in 1..=12 {
            let wait = policy.backoff(attempt, None);
            let ceiling = Duration::from_millis(500)
                .saturating_mul(1 << (attempt - 1))
                .min(policy.max_backoff);
            assert!(
                wait <= ceiling && wait >= ceiling / 2,
                "{attempt}: {wait:?}"
            );
        }
        assert_eq!(
            policy.backoff(1, Some(Duration::from_secs(600))),
            policy.max_backoff
        );
        assert!(policy.backoff(u32::MAX, None) <= policy.max_backoff);
    }

    #[test]
    fn hints_come_from_the_body_then_the_header() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(
            retry_hint(&headers, br#"{"retry_after_ms": 250}"#),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            retry_hint(&headers, b"not json"),
            Some(Duration::from_secs(3))
        );
        assert_eq!(retry_hint(&HeaderMap::new(), b"{}"), None);
    }
}
