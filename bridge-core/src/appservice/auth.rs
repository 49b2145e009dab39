//! Authentication of the homeserver: every request under `/_matrix/app` and the legacy
//! routes must carry the registration's `hs_token`, as `Authorization: Bearer <token>`
//! or, for homeservers following older spec versions, as the `access_token` query
//! parameter. Checked before anything reads the body.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::AppState;
use super::error::MatrixError;

/// Middleware refusing any request that does not carry the `hs_token`.
pub(crate) async fn require_hs_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    match check(
        state.hs_token.as_bytes(),
        request.headers(),
        request.uri().query(),
    ) {
        Ok(()) => next.run(request).await,
        Err(error) => {
            tracing::warn!(
                path = %request.uri().path(),
                errcode = %error.errcode,
                "refused an unauthenticated appservice request"
            );
            error.into_response()
        }
    }
}

/// Checks that at least one token is given and that every token given is `expected`.
///
/// Requiring every given token to match (rather than any) is what makes a bearer token
/// and a query token that disagree a 403, as the spec asks. Empty tokens count as not
/// given, so an empty `expected` refuses everything.
pub(crate) fn check(
    expected: &[u8],
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(), MatrixError> {
    let mut given: Vec<Vec<u8>> = headers
        .get_all(AUTHORIZATION)
        .iter()
        .filter_map(|value| bearer_token(value.as_bytes()))
        .map(<[u8]>::to_vec)
        .collect();
    if let Some(query) = query {
        given.extend(
            url::form_urlencoded::parse(query.as_bytes())
                .filter(|(key, value)| key == "access_token" && !value.is_empty())
                .map(|(_, value)| value.into_owned().into_bytes()),
        );
    }
    let Some(first) = given.first() else {
        return Err(MatrixError::missing_token());
    };
    // Fold every comparison into one `Choice` so the time taken does not reveal which
    // token failed, nor how many bytes of it were right. Digests are compared, not the
    // tokens: a slice comparison returns early on a length mismatch, which would reveal
    // the secret's length.
    let expected_digest = Sha256::digest(expected);
    let all_match = given.iter().fold(Choice::from(1), |acc, token| {
        acc & Sha256::digest(token)
            .as_slice()
            .ct_eq(expected_digest.as_slice())
    });
    if bool::from(all_match) {
        return Ok(());
    }
    // Telling the two failures apart compares given tokens with each other only, which
    // reveals nothing about the secret.
    if given.iter().any(|token| token != first) {
        Err(MatrixError::forbidden(
            "the access tokens given in the Authorization header and the query do not match",
        ))
    } else {
        Err(MatrixError::forbidden(
            "the access token is not the one this application service knows",
        ))
    }
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive
/// (RFC 9110). Another scheme, or an empty token, is no bearer token.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|&byte| byte == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(authorization: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in authorization {
            map.append(
                AUTHORIZATION,
                HeaderValue::from_str(value).expect("test header"),
            );
        }
        map
    }

    fn errcode(result: Result<(), MatrixError>) -> Option<&'static str> {
        result.err().map(|e| e.errcode.as_str())
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token(b"bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"BEARER  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"Bearer"), None);
    }

    #[test]
    fn token_sources() {
        let secret = b"s3cret";
        assert_eq!(
            errcode(check(secret, &headers(&[]), None)),
            Some("M_MISSING_TOKEN")
        );
        assert_eq!(
            errcode(check(secret, &headers(&["Bearer s3cret"]), None)),
            None
        );
        assert_eq!(
            errcode(check(secret, &headers(&[]), Some("access_token=s3cret"))),
            None
        );
        assert_eq!(
            errcode(check(
                secret,
                &headers(&["Bearer s3cret"]),
                Some("access_token=s3cret")
            )),
            None
        );
        assert_eq!(
            errcode(check(
                secret,
                &headers(&["Bearer s3cret"]),
                Some("access_token=other")
            )),
            Some("M_FORBIDDEN")
        );
        assert_eq!(
            errcode(check(secret, &headers(&["Bearer wrong"]), None)),
            Some("M_FORBIDDEN")
        );
        assert_eq!(
            errcode(check(secret, &headers(&["Basic s3cret"]), Some("x=1"))),
            Some("M_MISSING_TOKEN")
        );
        assert_eq!(
            errcode(check(b"", &headers(&[]), Some("access_token="))),
            Some("M_MISSING_TOKEN")
        );
    }
}
