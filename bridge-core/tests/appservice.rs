//! The appservice endpoint over real HTTP: the router served on 127.0.0.1, called with
//! reqwest, with a recording transaction sink and a scripted query handler.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bridge_core::appservice::{
    self, AlwaysReady, EndpointOptions, NoQueries, QueryError, QueryHandler, Readiness,
};
use bridge_core::metrics::Metrics;
use bridge_core::transaction::{
    Accepted, EventEnvelope, IncomingTransaction, SinkError, TransactionSink,
};
use reqwest::{Method, StatusCode};
use ruma::api::appservice::thirdparty::get_protocol::v1::{
    AppserviceProtocol, AppserviceProtocolInstance,
};
use ruma::thirdparty::{FieldType, FieldTypeInit, Location, ProtocolInit, User};
use ruma::{OwnedRoomAliasId, OwnedTransactionId, OwnedUserId, RoomAliasId, UserId};
use serde_json::{Value, json};
use tokio::sync::oneshot;

const HS_TOKEN: &str = "hs-token-for-tests";
const BODY_LIMIT: usize = 4096;

// ---------------------------------------------------------------------------------------
// Test doubles.

/// A sink that records what it is given, recognises repeated ids, and can be told to fail.
#[derive(Default)]
struct RecordingSink {
    accepted: Mutex<Vec<(IncomingTransaction, Vec<EventEnvelope>)>>,
    seen: Mutex<HashSet<OwnedTransactionId>>,
    calls: Mutex<usize>,
    fail: AtomicBool,
}

impl RecordingSink {
    fn accepted(&self) -> Vec<(IncomingTransaction, Vec<EventEnvelope>)> {
        self.accepted.lock().expect("lock").clone()
    }

    fn calls(&self) -> usize {
        *self.calls.lock().expect("lock")
    }
}

#[async_trait::async_trait]
impl TransactionSink for RecordingSink {
    async fn accept(&self, transaction: IncomingTransaction) -> Result<Accepted, SinkError> {
        let envelopes: Vec<EventEnvelope> = transaction
            .body
            .envelopes()
            .into_iter()
            .filter_map(Result::ok)
            .collect();
        *self.calls.lock().expect("lock") += 1;
        if self.fail.load(Ordering::SeqCst) {
            return Err(SinkError::Failed("the disk is on fire".to_owned()));
        }
        if !self
            .seen
            .lock()
            .expect("lock")
            .insert(transaction.txn_id.clone())
        {
            return Ok(Accepted::AlreadySeen);
        }
        self.accepted
            .lock()
            .expect("lock")
            .push((transaction, envelopes));
        Ok(Accepted::Stored)
    }
}

/// A query handler that knows one user, one alias, the `irc` protocol, and fails on
/// `@broken:example.org`.
#[derive(Default)]
struct ScriptedQueries {
    fields_seen: Mutex<Vec<BTreeMap<String, String>>>,
}

fn alice() -> OwnedUserId {
    OwnedUserId::try_from("@irc_alice:example.org").expect("valid")
}

fn channel() -> OwnedRoomAliasId {
    OwnedRoomAliasId::try_from("#irc_#chan:example.org").expect("valid")
}

fn irc_protocol() -> AppserviceProtocol {
    let field_types: BTreeMap<String, FieldType> = [
        ("network", "[a-z.]+", "irc.example.org"),
        ("nickname", "[^\\s#]+", "alice"),
        ("channel", "#[^\\s]+", "#chan"),
    ]
    .into_iter()
    .map(|(name, regexp, placeholder)| {
        (
            name.to_owned(),
            FieldTypeInit {
                regexp: regexp.to_owned(),
                placeholder: placeholder.to_owned(),
            }
            .into(),
        )
    })
    .collect();
    let instance: AppserviceProtocolInstance = serde_json::from_value(json!({
        "desc": "Example IRC",
        "fields": { "network": "irc.example.org" },
        "network_id": "example",
    }))
    .expect("instance");
    ProtocolInit {
        user_fields: vec!["network".to_owned(), "nickname".to_owned()],
        location_fields: vec!["network".to_owned(), "channel".to_owned()],
        icon: "mxc://example.org/icon".to_owned(),
        field_types,
        instances: vec![instance],
    }
    .into()
}

fn irc_fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[async_trait::async_trait]
impl QueryHandler for ScriptedQueries {
    async fn query_user(&self, user_id: &UserId) -> Result<bool, QueryError> {
        if user_id.as_str() == "@broken:example.org" {
            return Err(QueryError("the directory is down".to_owned()));
        }
        Ok(user_id == alice())
    }

    async fn query_room_alias(&self, alias: &RoomAliasId) -> Result<bool, QueryError> {
        Ok(alias == channel())
    }

    async fn thirdparty_protocol(
        &self,
        protocol: &str,
    ) -> Result<Option<AppserviceProtocol>, QueryError> {
        Ok((protocol == "irc").then(irc_protocol))
    }

    async fn thirdparty_users(
        &self,
        protocol: &str,
        fields: BTreeMap<String, String>,
    ) -> Result<Vec<User>, QueryError> {
        self.fields_seen.lock().expect("lock").push(fields.clone());
        if protocol == "irc" && fields.get("nickname").map(String::as_str) == Some("alice") {
            return Ok(vec![User::new(alice(), "irc".to_owned(), fields)]);
        }
        Ok(Vec::new())
    }

    async fn thirdparty_locations(
        &self,
        protocol: &str,
        fields: BTreeMap<String, String>,
    ) -> Result<Vec<Location>, QueryError> {
        if protocol == "irc" && fields.get("channel").map(String::as_str) == Some("#chan") {
            return Ok(vec![Location::new(channel(), "irc".to_owned(), fields)]);
        }
        Ok(Vec::new())
    }

    async fn thirdparty_user_by_id(&self, user_id: &UserId) -> Result<Vec<User>, QueryError> {
        if user_id == alice() {
            let fields = irc_fields(&[("network", "irc.example.org"), ("nickname", "alice")]);
            return Ok(vec![User::new(alice(), "irc".to_owned(), fields)]);
        }
        Ok(Vec::new())
    }

    async fn thirdparty_location_by_alias(
        &self,
        alias: &RoomAliasId,
    ) -> Result<Vec<Location>, QueryError> {
        if alias == channel() {
            let fields = irc_fields(&[("network", "irc.example.org"), ("channel", "#chan")]);
            return Ok(vec![Location::new(channel(), "irc".to_owned(), fields)]);
        }
        Ok(Vec::new())
    }
}

/// Readiness that a test can switch.
#[derive(Default)]
struct Switch(AtomicBool);

#[async_trait::async_trait]
impl Readiness for Switch {
    async fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------------------------------
// Harness.

struct Server {
    base: String,
    client: reqwest::Client,
    sink: Arc<RecordingSink>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    async fn start(queries: Arc<dyn QueryHandler>, readiness: Arc<dyn Readiness>) -> Server {
        let sink = Arc::new(RecordingSink::default());
        let options = EndpointOptions {
            hs_token: HS_TOKEN.to_owned(),
            body_limit: BODY_LIMIT,
        };
        let router = appservice::router(options, sink.clone(), queries, readiness, Metrics::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(appservice::serve(listener, router, async move {
            let _ = stopped.await;
        }));
        Server {
            base: format!("http://{address}"),
            client: reqwest::Client::new(),
            sink,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn default() -> Server {
        Server::start(Arc::new(NoQueries), Arc::new(AlwaysReady)).await
    }

    async fn scripted() -> Server {
        Server::start(Arc::new(ScriptedQueries::default()), Arc::new(AlwaysReady)).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request carrying the right bearer token.
    fn authed(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(HS_TOKEN)
    }

    async fn put_txn(&self, path: &str, body: &Value) -> reqwest::Response {
        self.authed(Method::PUT, path)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.authed(Method::GET, path)
            .send()
            .await
            .expect("request")
    }

    /// Stops the server and checks that it shut down cleanly.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("serve");
        }
    }
}

/// Sends a chunked `PUT` of `size` bytes of whitespace-padded JSON over a raw connection
/// (reqwest sets a length on every body it can build here) and returns the raw response.
async fn raw_chunked_put(server: &Server, path: &str, size: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = server.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let mut request = format!(
        "PUT {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {HS_TOKEN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n"
    )
    .into_bytes();
    let mut body = br#"{"events":[]}"#.to_vec();
    body.resize(size, b' ');
    for chunk in body.chunks(1024) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(&request).await.expect("write");
    let mut response = Vec::new();
    // The server may close before reading everything; what arrived is enough.
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

/// Percent-encodes a path segment.
fn enc(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

/// Checks the status and that the body is a Matrix error with this code and some text.
async fn expect_error(response: reqwest::Response, status: StatusCode, errcode: &str) -> Value {
    assert_eq!(response.status(), status, "status");
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "content type {content_type}"
    );
    let body: Value = response.json().await.expect("JSON error body");
    assert_eq!(body["errcode"], errcode, "errcode in {body}");
    assert!(
        body["error"].as_str().is_some_and(|text| !text.is_empty()),
        "error text in {body}"
    );
    body
}

async fn expect_empty_ok(response: reqwest::Response) {
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body, json!({}));
}

fn message_event(event_id: &str) -> Value {
    json!({
        "type": "m.room.message",
        "event_id": event_id,
        "room_id": "!room:example.org",
        "sender": "@bob:example.org",
        "origin_server_ts": 1_700_000_000_000_u64,
        "content": { "msgtype": "m.text", "body": "hello" },
    })
}

fn one_event_txn() -> Value {
    json!({ "events": [message_event("$one:example.org")] })
}

// ---------------------------------------------------------------------------------------
// Authentication.

#[tokio::test]
async fn missing_token_is_401() {
    let server = Server::default().await;
    let response = server
        .client
        .put(server.url("/_matrix/app/v1/transactions/1"))
        .json(&one_event_txn())
        .send()
        .await
        .expect("request");
    expect_error(response, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN").await;
    let response = server
        .client
        .get(server.url("/_matrix/app/v1/users/%40a%3Aexample.org"))
        .header("Authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .expect("request");
    expect_error(response, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN").await;
    assert_eq!(server.sink.calls(), 0);
    server.stop().await;
}

#[tokio::test]
async fn wrong_token_is_403() {
    let server = Server::default().await;
    let response = server
        .client
        .put(server.url("/_matrix/app/v1/transactions/1"))
        .bearer_auth("not-the-token")
        .json(&one_event_txn())
        .send()
        .await
        .expect("request");
    expect_error(response, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    let response = server
        .client
        .get(server.url("/_matrix/app/v1/users/%40a%3Aexample.org?access_token=nope"))
        .send()
        .await
        .expect("request");
    expect_error(response, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    assert_eq!(server.sink.calls(), 0);
    server.stop().await;
}

#[tokio::test]
async fn bearer_and_query_token_must_agree() {
    let server = Server::default().await;
    let response = server
        .client
        .put(server.url("/_matrix/app/v1/transactions/1?access_token=other"))
        .bearer_auth(HS_TOKEN)
        .json(&one_event_txn())
        .send()
        .await
        .expect("request");
    expect_error(response, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    let response = server
        .client
        .put(server.url("/_matrix/app/v1/transactions/1"))
        .query(&[("access_token", HS_TOKEN)])
        .bearer_auth("other")
        .json(&one_event_txn())
        .send()
        .await
        .expect("request");
    expect_error(response, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    // Both right: accepted.
    let response = server
        .client
        .put(server.url("/_matrix/app/v1/transactions/1"))
        .query(&[("access_token", HS_TOKEN)])
        .bearer_auth(HS_TOKEN)
        .json(&one_event_txn())
        .send()
        .await
        .expect("request");
    expect_empty_ok(response).await;
    assert_eq!(server.sink.calls(), 1);
    server.stop().await;
}

#[tokio::test]
async fn query_token_alone_is_accepted() {
    let server = Server::default().await;
    let response = server
        .client
        .put(server.url("/transactions/legacy-1"))
        .query(&[("access_token", HS_TOKEN)])
        .json(&one_event_txn())
        .send()
        .await
        .expect("request");
    expect_empty_ok(response).await;
    assert_eq!(server.sink.accepted().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn auth_is_checked_before_the_body() {
    let server = Server::default().await;
    let response = server
        .client
        .put(server.url("/_matrix/app/v1/transactions/1"))
        .body("this is not JSON")
        .send()
        .await
        .expect("request");
    expect_error(response, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN").await;
    let response = server
        .client
        .put(server.url("/_matrix/app/v1/transactions/1"))
        .bearer_auth("wrong")
        .body(vec![b'x'; BODY_LIMIT * 2])
        .send()
        .await
        .expect("request");
    expect_error(response, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// Routing errors.

#[tokio::test]
async fn unknown_route_is_404_unrecognized() {
    let server = Server::default().await;
    for path in [
        "/_matrix/app/v1/nope",
        "/_matrix/app/v2/transactions/1",
        "/",
        "/_matrix/app/v1/thirdparty/protocol",
    ] {
        let response = server.get(path).await;
        expect_error(response, StatusCode::NOT_FOUND, "M_UNRECOGNIZED").await;
    }
    // Without a token too: the route does not exist either way.
    let response = server
        .client
        .get(server.url("/_matrix/app/v1/nope"))
        .send()
        .await
        .expect("request");
    expect_error(response, StatusCode::NOT_FOUND, "M_UNRECOGNIZED").await;
    server.stop().await;
}

#[tokio::test]
async fn wrong_method_is_405_unrecognized() {
    let server = Server::default().await;
    for (method, path) in [
        (Method::GET, "/_matrix/app/v1/transactions/1"),
        (Method::POST, "/_matrix/app/v1/transactions/1"),
        (Method::PUT, "/_matrix/app/v1/users/%40a%3Aexample.org"),
        (Method::GET, "/_matrix/app/v1/ping"),
        (Method::DELETE, "/transactions/1"),
        (Method::POST, "/metrics"),
    ] {
        let response = server
            .authed(method.clone(), path)
            .send()
            .await
            .expect("request");
        expect_error(response, StatusCode::METHOD_NOT_ALLOWED, "M_UNRECOGNIZED").await;
    }
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// Transaction bodies.

#[tokio::test]
async fn body_that_is_not_json_is_400_not_json() {
    let server = Server::default().await;
    for body in ["", "{", "events: []", "\u{1F980}"] {
        let response = server
            .authed(Method::PUT, "/_matrix/app/v1/transactions/1")
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        expect_error(response, StatusCode::BAD_REQUEST, "M_NOT_JSON").await;
    }
    assert_eq!(server.sink.calls(), 0);
    server.stop().await;
}

#[tokio::test]
async fn body_of_the_wrong_shape_is_400_bad_json() {
    let server = Server::default().await;
    let cases = [
        json!({ "events": 3 }),
        json!({}),
        json!([]),
        json!([[]]),
        json!("events"),
        json!({ "events": [], "ephemeral": {} }),
    ];
    for body in cases {
        let response = server
            .put_txn("/_matrix/app/v1/transactions/1", &body)
            .await;
        expect_error(response, StatusCode::BAD_REQUEST, "M_BAD_JSON").await;
    }
    assert_eq!(server.sink.calls(), 0);
    server.stop().await;
}

/// A malformed event inside a well-formed transaction does not refuse the transaction:
/// the homeserver would retry a refused one forever, holding back everything after it.
/// The sink gets it, and the envelopes mark it malformed.
#[tokio::test]
async fn a_malformed_event_is_accepted_and_marked_malformed() {
    let server = Server::default().await;
    let mut no_event_id = message_event("$x:example.org");
    if let Some(object) = no_event_id.as_object_mut() {
        object.remove("event_id");
    }
    let mut bad_sender = message_event("$y:example.org");
    bad_sender["sender"] = json!("not a user id");
    let as_array = json!([
        "$z:example.org",
        "!r:example.org",
        "@u:example.org",
        "m.room.message"
    ]);
    let body =
        json!({ "events": [no_event_id, message_event("$ok:example.org"), bad_sender, as_array] });
    let response = server
        .put_txn("/_matrix/app/v1/transactions/1", &body)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let accepted = server.sink.accepted();
    assert_eq!(accepted.len(), 1);
    let envelopes = accepted[0].0.body.envelopes();
    let valid: Vec<bool> = envelopes.iter().map(Result::is_ok).collect();
    assert_eq!(valid, vec![false, true, false, false]);
    assert_eq!(accepted[0].1.len(), 1);
    assert_eq!(accepted[0].1[0].event_id.as_str(), "$ok:example.org");
    server.stop().await;
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let server = Server::default().await;
    let big = json!({ "events": [], "padding": "x".repeat(BODY_LIMIT) });
    let response = server.put_txn("/_matrix/app/v1/transactions/1", &big).await;
    expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE").await;

    // A chunked body declares no length: the running count must catch it.
    let raw = raw_chunked_put(&server, "/_matrix/app/v1/transactions/2", BODY_LIMIT + 2).await;
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    assert!(raw.contains(r#""errcode":"M_TOO_LARGE""#), "{raw}");
    let raw = raw_chunked_put(&server, "/_matrix/app/v1/transactions/2", BODY_LIMIT - 10).await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");

    // Exactly at the limit is fine.
    let mut exact = serde_json::to_vec(&json!({ "events": [] })).expect("json");
    exact.resize(BODY_LIMIT, b' ');
    let response = server
        .authed(Method::PUT, "/_matrix/app/v1/transactions/3")
        .body(exact)
        .send()
        .await
        .expect("request");
    expect_empty_ok(response).await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// Transactions reaching the sink.

#[tokio::test]
async fn good_transaction_reaches_the_sink() {
    let server = Server::default().await;
    let custom = json!({
        "type": "org.example.unknown",
        "event_id": "$custom:example.org",
        "room_id": "!room:example.org",
        "sender": "@bob:example.org",
        "origin_server_ts": 1_700_000_000_001_u64,
        "content": { "anything": [1, 2, 3] },
    });
    let typing = json!({
        "type": "m.typing",
        "room_id": "!room:example.org",
        "content": { "user_ids": ["@bob:example.org"] },
    });
    let receipt = json!({
        "type": "m.receipt",
        "room_id": "!room:example.org",
        "content": { "$one:example.org": { "m.read": { "@bob:example.org": { "ts": 1 } } } },
    });
    let body = json!({
        "events": [message_event("$one:example.org"), custom],
        "ephemeral": [typing],
        "de.sorunome.msc2409.ephemeral": [receipt],
    });
    let response = server
        .put_txn("/_matrix/app/v1/transactions/txn%2F1", &body)
        .await;
    expect_empty_ok(response).await;

    let accepted = server.sink.accepted();
    assert_eq!(accepted.len(), 1);
    let (transaction, envelopes) = &accepted[0];
    assert_eq!(
        transaction.txn_id.as_str(),
        "txn/1",
        "the id is percent-decoded"
    );
    assert_eq!(transaction.body.events.len(), 2);
    assert_eq!(transaction.body.ephemeral.len(), 1);
    assert_eq!(transaction.body.unstable_ephemeral.len(), 1);
    assert_eq!(transaction.body.all_ephemeral().count(), 2);
    let types: Vec<&str> = envelopes.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["m.room.message", "org.example.unknown"]);
    assert_eq!(envelopes[1].event_id.as_str(), "$custom:example.org");
    assert_eq!(envelopes[0].room_id.as_str(), "!room:example.org");
    assert_eq!(envelopes[0].sender.as_str(), "@bob:example.org");
    // The unknown event passes through untouched.
    let unknown: Value =
        serde_json::from_str(transaction.body.events[1].json().get()).expect("raw event");
    assert_eq!(unknown["content"], json!({ "anything": [1, 2, 3] }));
    server.stop().await;
}

#[tokio::test]
async fn repeated_transaction_is_200_and_stored_once() {
    let server = Server::default().await;
    for _ in 0..3 {
        let response = server
            .put_txn("/_matrix/app/v1/transactions/same", &one_event_txn())
            .await;
        expect_empty_ok(response).await;
    }
    assert_eq!(server.sink.calls(), 3);
    assert_eq!(server.sink.accepted().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn sink_failure_is_500_unknown_and_retry_succeeds() {
    let server = Server::default().await;
    server.sink.fail.store(true, Ordering::SeqCst);
    let response = server
        .put_txn("/_matrix/app/v1/transactions/7", &one_event_txn())
        .await;
    let body = expect_error(response, StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN").await;
    assert!(
        !body["error"].as_str().unwrap_or_default().contains("fire"),
        "internal detail is logged, not sent"
    );
    assert!(server.sink.accepted().is_empty());
    server.sink.fail.store(false, Ordering::SeqCst);
    let response = server
        .put_txn("/_matrix/app/v1/transactions/7", &one_event_txn())
        .await;
    expect_empty_ok(response).await;
    assert_eq!(server.sink.accepted().len(), 1);
    server.stop().await;
}

/// Resolves the spec examples' `$ref`s: the referenced file, with the local keys over it.
fn resolve_refs(value: Value, dir: &Path) -> Value {
    match value {
        Value::Object(mut object) => {
            let base = match object.remove("$ref") {
                Some(Value::String(reference)) => {
                    let path = dir.join(reference);
                    let text = std::fs::read_to_string(&path)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    let referenced: Value = yaml_serde::from_str(&text).expect("example");
                    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
                    Some(resolve_refs(referenced, &parent))
                }
                _ => None,
            };
            let mut merged = match base {
                Some(Value::Object(base)) => base,
                _ => serde_json::Map::new(),
            };
            for (key, value) in object {
                merged.insert(key, resolve_refs(value, dir));
            }
            Value::Object(merged)
        }
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| resolve_refs(v, dir)).collect())
        }
        other => other,
    }
}

fn spec_dir() -> PathBuf {
    std::env::var_os("TRESTLE_MATRIX_SPEC")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/spec/matrix"))
        .join("data/api/application-service")
}

/// The spec's own example transaction, resolved from `transactions.yaml` and its `$ref`s.
/// Without a spec checkout it uses the inlined copy below, which is that resolution.
fn spec_example() -> Value {
    let dir = spec_dir();
    let Ok(text) = std::fs::read_to_string(dir.join("transactions.yaml")) else {
        eprintln!("no spec at {}: using the inlined example", dir.display());
        return inlined_spec_example();
    };
    let spec: Value = yaml_serde::from_str(&text).expect("transactions.yaml");
    let example =
        spec["paths"]["/transactions/{txnId}"]["put"]["requestBody"]["content"]["application/json"]
            ["schema"]["example"]
            .clone();
    assert!(example.is_object(), "example found in transactions.yaml");
    resolve_refs(example, &dir)
}

fn inlined_spec_example() -> Value {
    let event = |extra: Value| {
        let mut base = json!({
            "event_id": "$143273582443PhrSn:example.org",
            "room_id": "!jEsUZKDJdhlrceRyVU:example.org",
            "sender": "@example:example.org",
            "origin_server_ts": 1_432_735_824_653_u64,
            "unsigned": { "age": 1234, "membership": "join" },
        });
        if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
            base.extend(extra);
        }
        base
    };
    json!({
        "ephemeral": [
            {
                "type": "m.receipt",
                "room_id": "!jEsUZKDJdhlrceRyVU:example.org",
                "content": { "$1435641916114394fHBLK:matrix.org": {
                    "m.read": { "@erikj:jki.re": { "ts": 1_436_451_550_453_u64 } },
                    "m.read.private": { "@self:example.org": { "ts": 1_661_384_801_651_u64 } },
                } },
            },
            {
                "type": "m.presence",
                "sender": "@example:localhost",
                "content": {
                    "avatar_url": "mxc://localhost/wefuiwegh8742w",
                    "last_active_ago": 2_478_593,
                    "presence": "online",
                    "currently_active": false,
                    "status_msg": "Making cupcakes",
                },
            },
        ],
        "events": [
            event(json!({
                "type": "m.room.member",
                "state_key": "@alice:example.org",
                "sender": "@alice:example.org",
                "content": {
                    "membership": "join",
                    "avatar_url": "mxc://example.org/SEsfnsuifSDFSSEF",
                    "displayname": "Alice Margatroid",
                    "reason": "Looking for support",
                },
            })),
            event(json!({
                "type": "m.room.message",
                "content": {
                    "body": "This is an example text message",
                    "msgtype": "m.text",
                    "format": "org.matrix.custom.html",
                    "formatted_body": "<b>This is an example text message</b>",
                },
            })),
        ],
    })
}

#[tokio::test]
async fn spec_example_transaction_is_accepted() {
    let server = Server::default().await;
    for (txn, body) in [
        ("spec", spec_example()),
        ("inlined", inlined_spec_example()),
    ] {
        let response = server
            .put_txn(&format!("/_matrix/app/v1/transactions/{txn}"), &body)
            .await;
        expect_empty_ok(response).await;
    }
    let accepted = server.sink.accepted();
    assert_eq!(accepted.len(), 2);
    for (transaction, envelopes) in &accepted {
        let types: Vec<&str> = envelopes.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(types, ["m.room.member", "m.room.message"]);
        assert_eq!(transaction.body.ephemeral.len(), 2);
    }
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// Queries.

#[tokio::test]
async fn queries_default_to_not_found() {
    let server = Server::default().await;
    for path in [
        "/_matrix/app/v1/users/%40irc_alice%3Aexample.org".to_owned(),
        format!("/_matrix/app/v1/rooms/{}", enc("#irc_#chan:example.org")),
        "/_matrix/app/v1/thirdparty/protocol/irc".to_owned(),
        "/_matrix/app/v1/thirdparty/user/irc?nickname=alice".to_owned(),
        "/_matrix/app/v1/thirdparty/location/irc?channel=%23chan".to_owned(),
        "/_matrix/app/v1/thirdparty/user?userid=%40irc_alice%3Aexample.org".to_owned(),
        "/_matrix/app/v1/thirdparty/location?alias=%23irc_%23chan%3Aexample.org".to_owned(),
    ] {
        let response = server.get(&path).await;
        expect_error(response, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
    }
    server.stop().await;
}

#[tokio::test]
async fn user_and_alias_queries() {
    let server = Server::scripted().await;
    expect_empty_ok(
        server
            .get("/_matrix/app/v1/users/%40irc_alice%3Aexample.org")
            .await,
    )
    .await;
    let response = server
        .get("/_matrix/app/v1/users/%40irc_bob%3Aexample.org")
        .await;
    expect_error(response, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;
    let path = format!("/_matrix/app/v1/rooms/{}", enc("#irc_#chan:example.org"));
    expect_empty_ok(server.get(&path).await).await;
    let path = format!("/_matrix/app/v1/rooms/{}", enc("#irc_#other:example.org"));
    expect_error(
        server.get(&path).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    )
    .await;
    // A handler failure is ours: 500, so the homeserver may retry.
    let response = server
        .get("/_matrix/app/v1/users/%40broken%3Aexample.org")
        .await;
    expect_error(response, StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN").await;
    server.stop().await;
}

#[tokio::test]
async fn invalid_ids_are_400_invalid_param() {
    let server = Server::scripted().await;
    for path in [
        "/_matrix/app/v1/users/alice",
        "/_matrix/app/v1/users/%40alice",
        "/_matrix/app/v1/users/%FF%FE",
        "/_matrix/app/v1/rooms/%21notanalias%3Aexample.org",
        "/_matrix/app/v1/rooms/chan",
        "/users/nope",
        "/rooms/nope",
        "/_matrix/app/v1/thirdparty/user?userid=alice",
        "/_matrix/app/v1/thirdparty/location?alias=chan",
    ] {
        let response = server.get(path).await;
        expect_error(response, StatusCode::BAD_REQUEST, "M_INVALID_PARAM").await;
    }
    for path in [
        "/_matrix/app/v1/thirdparty/user",
        "/_matrix/app/v1/thirdparty/location?userid=%40a%3Ab",
    ] {
        let response = server.get(path).await;
        expect_error(response, StatusCode::BAD_REQUEST, "M_MISSING_PARAM").await;
    }
    server.stop().await;
}

#[tokio::test]
async fn thirdparty_lookups() {
    let queries = Arc::new(ScriptedQueries::default());
    let server = Server::start(queries.clone(), Arc::new(AlwaysReady)).await;

    let response = server.get("/_matrix/app/v1/thirdparty/protocol/irc").await;
    assert_eq!(response.status(), StatusCode::OK);
    let protocol: Value = response.json().await.expect("json");
    assert_eq!(protocol["user_fields"], json!(["network", "nickname"]));
    assert_eq!(protocol["instances"][0]["network_id"], "example");
    assert_eq!(protocol["field_types"]["channel"]["placeholder"], "#chan");
    let response = server.get("/_matrix/app/v1/thirdparty/protocol/xmpp").await;
    expect_error(response, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;

    // The legacy access_token is a credential, not a search field.
    let response = server
        .client
        .get(server.url("/_matrix/app/v1/thirdparty/user/irc"))
        .query(&[
            ("network", "irc.example.org"),
            ("nickname", "alice"),
            ("access_token", HS_TOKEN),
        ])
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let users: Value = response.json().await.expect("json");
    assert_eq!(
        users,
        json!([{
            "userid": "@irc_alice:example.org",
            "protocol": "irc",
            "fields": { "network": "irc.example.org", "nickname": "alice" },
        }])
    );
    assert_eq!(
        queries.fields_seen.lock().expect("lock").last(),
        Some(&irc_fields(&[
            ("network", "irc.example.org"),
            ("nickname", "alice")
        ]))
    );
    let response = server
        .get("/_matrix/app/v1/thirdparty/user/irc?nickname=nobody")
        .await;
    expect_error(response, StatusCode::NOT_FOUND, "M_NOT_FOUND").await;

    let response = server
        .get("/_matrix/app/v1/thirdparty/location/irc?network=irc.example.org&channel=%23chan")
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let locations: Value = response.json().await.expect("json");
    assert_eq!(locations[0]["alias"], "#irc_#chan:example.org");
    assert_eq!(locations[0]["fields"]["channel"], "#chan");

    let response = server
        .get("/_matrix/app/v1/thirdparty/user?userid=%40irc_alice%3Aexample.org")
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let users: Value = response.json().await.expect("json");
    assert_eq!(users[0]["userid"], "@irc_alice:example.org");
    assert_eq!(users[0]["fields"]["nickname"], "alice");

    let response = server
        .get("/_matrix/app/v1/thirdparty/location?alias=%23irc_%23chan%3Aexample.org")
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let locations: Value = response.json().await.expect("json");
    assert_eq!(locations[0]["protocol"], "irc");
    server.stop().await;
}

#[tokio::test]
async fn legacy_routes() {
    let server = Server::scripted().await;
    expect_empty_ok(
        server
            .put_txn("/transactions/legacy", &one_event_txn())
            .await,
    )
    .await;
    assert_eq!(server.sink.accepted().len(), 1);
    expect_empty_ok(server.get("/users/%40irc_alice%3Aexample.org").await).await;
    expect_empty_ok(
        server
            .get(&format!("/rooms/{}", enc("#irc_#chan:example.org")))
            .await,
    )
    .await;
    for path in [
        "/_matrix/app/unstable/thirdparty/protocol/irc",
        "/_matrix/app/unstable/thirdparty/user/irc?nickname=alice",
        "/_matrix/app/unstable/thirdparty/location/irc?channel=%23chan",
        "/_matrix/app/unstable/thirdparty/user?userid=%40irc_alice%3Aexample.org",
        "/_matrix/app/unstable/thirdparty/location?alias=%23irc_%23chan%3Aexample.org",
    ] {
        let response = server.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let _: Value = response.json().await.expect("json");
    }
    // The legacy routes are behind the token too.
    for path in [
        "/users/%40irc_alice%3Aexample.org",
        "/_matrix/app/unstable/thirdparty/protocol/irc",
    ] {
        let response = server
            .client
            .get(server.url(path))
            .send()
            .await
            .expect("request");
        expect_error(response, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN").await;
    }
    let response = server
        .client
        .put(server.url("/transactions/legacy-2"))
        .json(&one_event_txn())
        .send()
        .await
        .expect("request");
    expect_error(response, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN").await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// Ping, health, metrics.

#[tokio::test]
async fn ping() {
    let server = Server::default().await;
    let response = server
        .authed(Method::POST, "/_matrix/app/v1/ping")
        .json(&json!({ "transaction_id": "mautrix-go_1683636478256400935_123" }))
        .send()
        .await
        .expect("request");
    expect_empty_ok(response).await;
    let response = server
        .authed(Method::POST, "/_matrix/app/v1/ping")
        .send()
        .await
        .expect("request");
    expect_empty_ok(response).await;
    let response = server
        .authed(Method::POST, "/_matrix/app/v1/ping")
        .body("ping?")
        .send()
        .await
        .expect("request");
    expect_error(response, StatusCode::BAD_REQUEST, "M_NOT_JSON").await;
    let response = server
        .authed(Method::POST, "/_matrix/app/v1/ping")
        .json(&json!({ "transaction_id": 5 }))
        .send()
        .await
        .expect("request");
    expect_error(response, StatusCode::BAD_REQUEST, "M_BAD_JSON").await;
    let response = server
        .client
        .post(server.url("/_matrix/app/v1/ping"))
        .bearer_auth("wrong")
        .json(&json!({}))
        .send()
        .await
        .expect("request");
    expect_error(response, StatusCode::FORBIDDEN, "M_FORBIDDEN").await;
    server.stop().await;
}

#[tokio::test]
async fn health_needs_no_token() {
    let readiness = Arc::new(Switch::default());
    let server = Server::start(Arc::new(NoQueries), readiness.clone()).await;
    let live = server
        .client
        .get(server.url("/health/live"))
        .send()
        .await
        .expect("request");
    assert_eq!(live.status(), StatusCode::OK);
    let response = server
        .client
        .get(server.url("/health/ready"))
        .send()
        .await
        .expect("request");
    expect_error(response, StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN").await;
    readiness.0.store(true, Ordering::SeqCst);
    let response = server
        .client
        .get(server.url("/health/ready"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_requests_and_transactions() {
    let server = Server::default().await;
    expect_empty_ok(
        server
            .put_txn("/_matrix/app/v1/transactions/m1", &one_event_txn())
            .await,
    )
    .await;
    expect_empty_ok(
        server
            .put_txn("/_matrix/app/v1/transactions/m1", &one_event_txn())
            .await,
    )
    .await;
    let _ = server
        .client
        .get(server.url("/no/such/route"))
        .send()
        .await
        .expect("request");
    let _ = server
        .client
        .get(server.url("/_matrix/app/v1/users/%40a%3Ab"))
        .send()
        .await
        .expect("request");

    let response = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.expect("text");
    // Events are counted by the ingest once stored (tests/tests/ingest.rs), not here.
    for line in [
        r#"trestle_http_requests_total{route="/_matrix/app/v1/transactions/{txnId}",status="200"} 2"#,
        r#"trestle_http_requests_total{route="unmatched",status="404"} 1"#,
        r#"trestle_http_requests_total{route="/_matrix/app/v1/users/{*userId}",status="401"} 1"#,
        r#"trestle_transactions_total{outcome="stored"} 1"#,
        r#"trestle_transactions_total{outcome="duplicate"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    server.stop().await;
}
