//! bridge-core's homeserver client (`bridge_core::matrix`) against a real Synapse:
//! idempotent ghost registration, profiles, rooms, sends with deterministic transaction
//! ids (a repeat lands once), remote timestamps, state, redaction, media and the
//! appservice ping. The retry behaviour (429 with `retry_after_ms` or `Retry-After`,
//! 5xx, network errors) and the typed permanent errors are checked against a small local
//! server that answers as scripted, since a real Synapse cannot be made to fail on demand.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bridge_core::matrix::{HomeserverClient, MatrixError, RetryPolicy, TransientFailure};
use registration::{Namespace, Registration, RegistrationSpec};
use ruma::events::{MessageLikeEventType, StateEventType};
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedRoomAliasId, OwnedTransactionId, RoomOrAliasId, room_id,
    server_name, uint, user_id,
};
use serde_json::{Value, json};
use trestle_tests::databases::fresh_sqlite;
use trestle_tests::matrix::urlencode;
use trestle_tests::probe::IngestProbe;
use trestle_tests::process::free_port;
use trestle_tests::{Synapse, run_dir};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn the_client_drives_a_real_synapse() {
    let port = free_port().unwrap();
    let spec = RegistrationSpec {
        id: "hsclient".into(),
        url: Some(format!("http://127.0.0.1:{port}").parse().unwrap()),
        sender_localpart: "hsbot".into(),
        user_namespaces: vec![Namespace::user_prefix("hs_", "localhost")],
        alias_namespaces: vec![Namespace::alias_prefix("hs_", "localhost")],
        ..RegistrationSpec::default()
    };
    let registration = Registration::generate(spec, None);
    registration.validate_for_bridge().unwrap();
    let registration_file = run_dir().join("hsclient-registration.yaml");
    registration.save(&registration_file).unwrap();
    // The appservice endpoint Synapse pings and pushes to.
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_ingest-probe"));
    let mut probe = IngestProbe::new(
        binary,
        &fresh_sqlite().url,
        port,
        &registration.hs_token,
        &run_dir().join("hsclient-probe.log"),
        0,
    );
    probe.start().await.unwrap();
    let synapse = Synapse::start(std::slice::from_ref(&registration_file))
        .await
        .unwrap();
    let server = ruma::ServerName::parse(synapse.server_name()).unwrap();
    let client = HomeserverClient::new(
        synapse.url().parse().unwrap(),
        &server,
        registration.as_token.clone(),
        "hsbot",
    )
    .unwrap();

    let versions = client.wait_for_homeserver(WAIT).await.unwrap();
    assert!(!versions.is_empty());
    let took = client.ping("hsclient").await.unwrap();
    assert!(took < WAIT, "{took:?}");
    client
        .ping_with_transaction("hsclient", &OwnedTransactionId::from("hsclient-ping-1"))
        .await
        .unwrap();
    let unknown = client.ping("not-ours").await.unwrap_err();
    assert!(
        unknown
            .api_error()
            .is_some_and(|e| e.status.is_client_error()),
        "{unknown}"
    );

    // Registration is idempotent; a bad localpart never reaches the homeserver.
    let ghost_id = client.register("hs_alice").await.unwrap();
    assert_eq!(ghost_id.as_str(), "@hs_alice:localhost");
    assert_eq!(client.register("hs_alice").await.unwrap(), ghost_id);
    assert!(matches!(
        client.register("Not Valid").await,
        Err(MatrixError::InvalidLocalpart { .. })
    ));
    let ghost = client.as_user(&ghost_id);
    ghost.set_display_name(Some("Alice (IRC)")).await.unwrap();

    let bob = synapse
        .register_user("hsbob", "hsbob-pw", false)
        .await
        .unwrap();
    let profile_path = format!(
        "/_matrix/client/v3/profile/{}",
        urlencode(ghost_id.as_str())
    );
    let profile = bob
        .request(reqwest::Method::GET, &profile_path, None)
        .await
        .unwrap();
    assert_eq!(profile["displayname"], "Alice (IRC)");

    // Media: upload as the ghost, download as Bob, use as the avatar.
    let data: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    let mxc = ghost
        .upload_media(&data, "application/octet-stream", Some("blob.bin"))
        .await
        .unwrap();
    let (media_server, media_id) = mxc.parts().unwrap();
    let downloaded = reqwest::Client::new()
        .get(format!(
            "{}/_matrix/client/v1/media/download/{media_server}/{media_id}",
            synapse.url()
        ))
        .bearer_auth(bob.access_token())
        .send()
        .await
        .unwrap();
    assert_eq!(downloaded.status(), 200);
    assert_eq!(downloaded.bytes().await.unwrap().as_ref(), data.as_slice());
    // And through the client's own authenticated download, with the upload limit.
    let media = client.bot().download_media(&mxc).await.unwrap();
    assert_eq!(media.data, data);
    assert_eq!(
        media.content_type.as_deref(),
        Some("application/octet-stream")
    );
    let limit = client.bot().upload_size_limit().await.unwrap();
    assert!(limit.is_some_and(|limit| limit >= 5000), "{limit:?}");
    ghost.set_avatar_url(Some(&mxc)).await.unwrap();
    let profile = bob
        .request(reqwest::Method::GET, &profile_path, None)
        .await
        .unwrap();
    assert_eq!(profile["avatar_url"], mxc.as_str());

    // The bot makes a room with an alias in its namespace; the ghost joins by alias.
    let bot = client.bot();
    let room = bot
        .create_room(&json!({
            "preset": "public_chat",
            "room_alias_name": "hs_lobby",
            "invite": [bob.user_id()],
        }))
        .await
        .unwrap();
    bob.join(room.as_str()).await.unwrap();
    let alias = OwnedRoomAliasId::try_from("#hs_lobby:localhost").unwrap();
    let joined = ghost.join(<&RoomOrAliasId>::from(&*alias)).await.unwrap();
    assert_eq!(joined, room);

    // The same transaction id twice: one event, the same id, seen once.
    let txn = OwnedTransactionId::from("hsclient-msg-1");
    let content = json!({"msgtype": "m.text", "body": "hello once"});
    let message = MessageLikeEventType::RoomMessage;
    let first = ghost
        .send_message_event(&room, &message, &content, &txn, None)
        .await
        .unwrap();
    let again = ghost
        .send_message_event(&room, &message, &content, &txn, None)
        .await
        .unwrap();
    assert_eq!(first, again);
    let seen = bob.wait_for_text(&room, "hello once", WAIT).await.unwrap();
    assert_eq!(seen["event_id"], first.as_str());
    assert_eq!(seen["sender"], ghost_id.as_str());
    bob.send_text(&room, "marker").await.unwrap();
    bob.wait_for_text(&room, "marker", WAIT).await.unwrap();
    assert!(
        bob.wait_for_text(&room, "hello once", Duration::from_secs(1))
            .await
            .is_err(),
        "the repeated send made a second event"
    );

    // `ts` sets origin_server_ts.
    let remote_ts = MilliSecondsSinceUnixEpoch(ruma::UInt::new(1_600_000_000_000).unwrap());
    let old = ghost
        .send_message_event(
            &room,
            &message,
            &json!({"msgtype": "m.text", "body": "from the past"}),
            &OwnedTransactionId::from("hsclient-msg-2"),
            Some(remote_ts),
        )
        .await
        .unwrap();
    let event_path = |event: &str| {
        format!(
            "/_matrix/client/v3/rooms/{}/event/{}",
            urlencode(room.as_str()),
            urlencode(event)
        )
    };
    let fetched = bob
        .request(reqwest::Method::GET, &event_path(old.as_str()), None)
        .await
        .unwrap();
    assert_eq!(fetched["origin_server_ts"], 1_600_000_000_000u64);

    // State (empty state key) and redaction.
    bot.send_state_event(
        &room,
        &StateEventType::RoomTopic,
        "",
        &json!({"topic": "bridged"}),
        None,
    )
    .await
    .unwrap();
    let topic = bob
        .request(
            reqwest::Method::GET,
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.topic",
                urlencode(room.as_str())
            ),
            None,
        )
        .await
        .unwrap();
    assert_eq!(topic["topic"], "bridged");
    let redaction = bot
        .redact(
            &room,
            &first,
            &OwnedTransactionId::from("hsclient-redact-1"),
            Some("test"),
        )
        .await
        .unwrap();
    let redacted = bob
        .request(reqwest::Method::GET, &event_path(first.as_str()), None)
        .await
        .unwrap();
    assert_eq!(redacted["content"], json!({}), "{redacted}");
    assert_eq!(
        redacted["unsigned"]["redacted_because"]["event_id"],
        redaction.as_str()
    );

    // Invite into a private room, join by id, leave; after leaving, a send is refused
    // with a typed error at once.
    let carol_id = client.register("hs_carol").await.unwrap();
    let carol = client.as_user(&carol_id);
    let private = bot
        .create_room(&json!({"preset": "private_chat"}))
        .await
        .unwrap();
    let refused = carol.join(<&RoomOrAliasId>::from(&*private)).await;
    assert!(refused.is_err(), "joined a private room without an invite");
    bot.invite(&private, &carol_id).await.unwrap();
    assert_eq!(
        carol.join(<&RoomOrAliasId>::from(&*private)).await.unwrap(),
        private
    );
    carol.leave(&private).await.unwrap();
    let started = Instant::now();
    let error = carol
        .send_message_event(
            &private,
            &message,
            &json!({"msgtype": "m.text", "body": "not a member"}),
            &OwnedTransactionId::from("hsclient-msg-3"),
            None,
        )
        .await
        .unwrap_err();
    let MatrixError::Api { source, .. } = &error else {
        panic!("expected a permanent error, got {error}");
    };
    assert_eq!(source.status, 403);
    assert_eq!(source.errcode, "M_FORBIDDEN");
    assert!(started.elapsed() < Duration::from_secs(5), "not retried");

    probe.stop().await.unwrap();
}

// ---- Fault injection: a local server answering as scripted. ----

/// One scripted answer.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    retry_after: Option<&'static str>,
    body: Value,
}

fn answer(status: u16, body: Value) -> Answer {
    Answer {
        status,
        retry_after: None,
        body,
    }
}

/// What the fake received: the path and query, and the Authorization header.
#[derive(Debug, Clone)]
struct Received {
    path_and_query: String,
    authorization: String,
}

#[derive(Debug, Clone, Default)]
struct Script {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Script {
    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// Answers with the next scripted answer; the last one repeats.
async fn scripted(State(script): State<Script>, request: Request) -> Response {
    script.received.lock().unwrap().push(Received {
        path_and_query: request
            .uri()
            .path_and_query()
            .map(ToString::to_string)
            .unwrap_or_default(),
        authorization: request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
    });
    let next = {
        let mut answers = script.answers.lock().unwrap();
        if answers.len() > 1 {
            answers.pop_front()
        } else {
            answers.front().cloned()
        }
    };
    let Some(next) = next else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut response = (
        StatusCode::from_u16(next.status).unwrap(),
        axum::Json(next.body),
    )
        .into_response();
    if let Some(seconds) = next.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static(seconds));
    }
    response
}

/// A fake homeserver answering `answers` in turn, and a client of it with short backoffs
/// (so a wait of the homeserver's hint shows apart from the backoff).
async fn fake_homeserver(answers: Vec<Answer>, max_attempts: u32) -> (HomeserverClient, Script) {
    let script = Script {
        answers: Arc::new(Mutex::new(answers.into())),
        ..Script::default()
    };
    let app = axum::Router::new()
        .fallback(scripted)
        .with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (
        client_of(&format!("http://{address}"), max_attempts),
        script,
    )
}

fn client_of(base: &str, max_attempts: u32) -> HomeserverClient {
    HomeserverClient::new(
        base.parse().unwrap(),
        server_name!("example.org"),
        "the-as-token",
        "bot",
    )
    .unwrap()
    .with_retry_policy(RetryPolicy {
        max_attempts,
        max_elapsed: Duration::from_secs(20),
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
    })
}

async fn send_one(client: &HomeserverClient) -> Result<ruma::OwnedEventId, MatrixError> {
    client
        .as_user(user_id!("@irc_x:example.org"))
        .send_message_event(
            room_id!("!room:example.org"),
            &MessageLikeEventType::RoomMessage,
            &json!({"msgtype": "m.text", "body": "hi"}),
            &OwnedTransactionId::from("txn-1"),
            Some(MilliSecondsSinceUnixEpoch(uint!(1234))),
        )
        .await
}

fn sent() -> Answer {
    answer(200, json!({"event_id": "$sent:example.org"}))
}

#[tokio::test]
async fn a_429_is_retried_after_retry_after_ms() {
    let (client, script) = fake_homeserver(
        vec![
            answer(
                429,
                json!({"errcode": "M_LIMIT_EXCEEDED", "error": "slow down", "retry_after_ms": 700}),
            ),
            sent(),
        ],
        8,
    )
    .await;
    let started = Instant::now();
    let event = send_one(&client).await.unwrap();
    assert_eq!(event.as_str(), "$sent:example.org");
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    let received = script.received();
    assert_eq!(received.len(), 2);
    for request in &received {
        assert_eq!(request.authorization, "Bearer the-as-token");
        assert_eq!(
            request.path_and_query,
            "/_matrix/client/v3/rooms/!room:example.org/send/m.room.message/txn-1?ts=1234&user_id=%40irc_x%3Aexample.org"
        );
    }
}

#[tokio::test]
async fn a_429_is_retried_after_the_retry_after_header() {
    let mut limited = answer(429, json!({"errcode": "M_LIMIT_EXCEEDED"}));
    limited.retry_after = Some("1");
    let (client, script) = fake_homeserver(vec![limited, sent()], 8).await;
    let started = Instant::now();
    send_one(&client).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(script.received().len(), 2);
}

#[tokio::test]
async fn a_502_is_retried() {
    let (client, script) = fake_homeserver(
        vec![answer(502, json!({"error": "bad gateway"})), sent()],
        8,
    )
    .await;
    send_one(&client).await.unwrap();
    assert_eq!(script.received().len(), 2);
}

#[tokio::test]
async fn a_400_is_a_typed_error_at_once() {
    let (client, script) = fake_homeserver(
        vec![
            answer(400, json!({"errcode": "M_BAD_JSON", "error": "no"})),
            sent(),
        ],
        8,
    )
    .await;
    let error = send_one(&client).await.unwrap_err();
    let MatrixError::Api { source, .. } = &error else {
        panic!("expected a permanent error, got {error}");
    };
    assert_eq!(source.status, 400);
    assert_eq!(source.errcode, "M_BAD_JSON");
    assert_eq!(source.error, "no");
    assert_eq!(script.received().len(), 1, "not retried");
}

#[tokio::test]
async fn retries_are_bounded() {
    let (client, script) =
        fake_homeserver(vec![answer(503, json!({"errcode": "M_UNKNOWN"}))], 3).await;
    let error = send_one(&client).await.unwrap_err();
    let MatrixError::Exhausted { attempts, last, .. } = &error else {
        panic!("expected exhaustion, got {error}");
    };
    assert_eq!(*attempts, 3);
    assert!(matches!(last, TransientFailure::Status(e) if e.status == 503));
    assert_eq!(script.received().len(), 3);
}

#[tokio::test]
async fn network_errors_are_retried_then_reported() {
    let port = free_port().unwrap();
    let client = client_of(&format!("http://127.0.0.1:{port}"), 2);
    let error = send_one(&client).await.unwrap_err();
    assert!(
        matches!(
            error,
            MatrixError::Exhausted {
                attempts: 2,
                last: TransientFailure::Network(_),
                ..
            }
        ),
        "{error}"
    );
    let waited = client.wait_for_homeserver(Duration::from_secs(1)).await;
    assert!(matches!(waited, Err(MatrixError::Unavailable { .. })));
}

#[tokio::test]
async fn the_bot_does_not_masquerade_and_user_in_use_is_registered() {
    let (client, script) = fake_homeserver(
        vec![
            answer(400, json!({"errcode": "M_USER_IN_USE", "error": "taken"})),
            answer(200, json!({"room_id": "!new:example.org"})),
        ],
        8,
    )
    .await;
    let user = client.register("irc_bob").await.unwrap();
    assert_eq!(user, user_id!("@irc_bob:example.org"));
    let room = client.bot().create_room(&json!({})).await.unwrap();
    assert_eq!(room, room_id!("!new:example.org"));
    let via = [
        ruma::OwnedServerName::try_from("a.example").unwrap(),
        ruma::OwnedServerName::try_from("b.example").unwrap(),
    ];
    client
        .bot()
        .join_via(<&RoomOrAliasId>::from(room_id!("!new:example.org")), &via)
        .await
        .unwrap();
    let received = script.received();
    assert_eq!(received[0].path_and_query, "/_matrix/client/v3/register");
    assert_eq!(received[1].path_and_query, "/_matrix/client/v3/createRoom");
    assert_eq!(
        received[2].path_and_query,
        "/_matrix/client/v3/join/!new:example.org?via=a.example&via=b.example"
    );
}

#[tokio::test]
async fn a_failed_ping_is_reported_at_once() {
    let (client, script) = fake_homeserver(
        vec![answer(
            502,
            json!({"errcode": "M_BAD_STATUS", "error": "HTTP 400", "status": 400}),
        )],
        8,
    )
    .await;
    let error = client.ping("irc").await.unwrap_err();
    assert!(
        error.api_error().is_some_and(|e| e.is("M_BAD_STATUS")),
        "{error}"
    );
    assert!(matches!(error, MatrixError::Api { .. }), "{error}");
    let received = script.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].path_and_query,
        "/_matrix/client/v1/appservice/irc/ping"
    );
}
