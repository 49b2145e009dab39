//! bridge-core's foundation against a real Synapse: the generated registration loads, the
//! ping API reaches the endpoint, transactions arrive authenticated, and when the bridge
//! is SIGKILLed mid-burst and restarted, Synapse's redelivery leaves every message handled
//! exactly once, in the room's order.
//!
//! Under load this also meets a race in Synapse's appservice scheduler: after a recovery
//! it can leave one transaction unsent for good (seen here: 88 then 90, never 89). After
//! a start, the ingest refuses once a transaction that follows a gap, which restarts
//! Synapse's recoverer and makes it send the missing one first
//! (bridge-core/src/ingest/gap.rs); without that, this test failed about one run in four
//! on a loaded machine.

use std::collections::HashSet;
use std::time::Duration;

use registration::{Namespace, Registration, RegistrationSpec};
use serde_json::json;
use trestle_tests::databases::fresh_sqlite;
use trestle_tests::matrix::urlencode;
use trestle_tests::probe::IngestProbe;
use trestle_tests::process::free_port;
use trestle_tests::{Synapse, run_dir};

const MESSAGES: usize = 120;

#[tokio::test]
async fn synapse_delivers_every_message_once_in_order_across_a_kill() {
    let port = free_port().unwrap();
    let spec = RegistrationSpec {
        id: "probe".into(),
        url: Some(format!("http://127.0.0.1:{port}").parse().unwrap()),
        sender_localpart: "probebot".into(),
        user_namespaces: vec![Namespace::user_prefix("probe_", "localhost")],
        alias_namespaces: vec![Namespace::alias_prefix("probe_", "localhost")],
        receive_ephemeral: true,
        ..RegistrationSpec::default()
    };
    let registration = Registration::generate(spec, None);
    registration.validate_for_bridge().unwrap();
    let registration_file = run_dir().join("probe-registration.yaml");
    registration.save(&registration_file).unwrap();

    let log = run_dir().join("foundation-synapse.log");
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_ingest-probe"));
    let mut probe = IngestProbe::new(
        binary,
        &fresh_sqlite().url,
        port,
        &registration.hs_token,
        &log,
        5,
    );
    probe.start().await.unwrap();
    let synapse = Synapse::start(std::slice::from_ref(&registration_file))
        .await
        .unwrap();
    let http = reqwest::Client::new();

    // Synapse calls our /ping when asked to, with our hs_token.
    let ping = http
        .post(format!(
            "{}/_matrix/client/v1/appservice/probe/ping",
            synapse.url()
        ))
        .bearer_auth(&registration.as_token)
        .json(&json!({"transaction_id": "ping-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ping.status(),
        200,
        "{}",
        ping.text().await.unwrap_or_default()
    );

    let alice = synapse
        .register_user("alice", "alice-pw", false)
        .await
        .unwrap();
    let room = alice
        .create_room(json!({"preset": "public_chat"}))
        .await
        .unwrap();
    let join = http
        .post(format!(
            "{}/_matrix/client/v3/join/{}",
            synapse.url(),
            urlencode(room.as_str())
        ))
        .bearer_auth(&registration.as_token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(join.status(), 200, "the bot joins");

    let mut sent = Vec::new();
    for n in 0..MESSAGES {
        sent.push(
            alice
                .send_text(&room, &format!("message {n}"))
                .await
                .unwrap()
                .to_string(),
        );
        if n == MESSAGES / 3 {
            probe.kill();
        }
        if n == MESSAGES / 3 + 10 {
            probe.start().await.unwrap();
        }
    }

    // Synapse backs off after failed pushes, so redelivery takes a few seconds. The log
    // also holds the bot's join and other events, so it is the sent ids that are awaited.
    probe
        .wait_until_applied(&sent, Duration::from_secs(90))
        .await
        .unwrap();
    // Once stopped, the log is final: whatever would repeat has shown by now.
    probe.stop().await.unwrap();
    let deliveries = probe.deliveries().unwrap();
    let handled = probe.applied().unwrap();
    let handled_messages: Vec<&str> = handled
        .iter()
        .map(|(_, id)| id.as_str())
        .filter(|id| sent.iter().any(|s| s == id))
        .collect();
    let mut unique = handled_messages.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique.len(),
        handled_messages.len(),
        "no message handled twice"
    );
    assert_eq!(handled_messages.len(), MESSAGES, "every message handled");
    // The bot's join and the room's other events too.
    let mut applied_ids = HashSet::new();
    for (_, id) in handled.iter().filter(|(_, id)| !id.is_empty()) {
        assert!(applied_ids.insert(id.as_str()), "{id} applied twice");
    }

    // The handler's skip of a redelivered event would hide the framework handing an event
    // over twice; only a redelivery after a restart may repeat one. Ephemeral events have
    // no id to tell repeats by.
    let mut first_deliveries = HashSet::new();
    for delivery in deliveries
        .iter()
        .filter(|d| !d.redelivered && !d.event_id.is_empty())
    {
        assert!(
            first_deliveries.insert(delivery.event_id.as_str()),
            "{} handed over twice without the redelivered flag",
            delivery.event_id
        );
    }

    // The order handled is the room's order on the homeserver.
    let timeline = alice
        .request(
            reqwest::Method::GET,
            &format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=f&limit=1000",
                urlencode(room.as_str())
            ),
            None,
        )
        .await
        .unwrap();
    let room_order: Vec<&str> = timeline["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .filter(|id| sent.iter().any(|s| s == id))
        .collect();
    assert_eq!(handled_messages, room_order);
}

/// Synapse numbers the transactions of all its appservices from one sequence, so with
/// two appservices in a room each sees gaps in its numbers. Neither stalls on them: each
/// gets every message once, in the room's order, in well under the minute a gap once
/// cost.
#[tokio::test]
async fn two_appservices_in_one_room_each_get_every_message_in_order() {
    const MESSAGES: usize = 10;
    let mut probes = Vec::new();
    let mut files = Vec::new();
    let mut tokens = Vec::new();
    for name in ["first", "second"] {
        let port = free_port().unwrap();
        let spec = RegistrationSpec {
            id: format!("probe-{name}"),
            url: Some(format!("http://127.0.0.1:{port}").parse().unwrap()),
            sender_localpart: format!("{name}bot"),
            user_namespaces: vec![Namespace::user_prefix(format!("{name}_"), "localhost")],
            alias_namespaces: vec![Namespace::alias_prefix(format!("{name}_"), "localhost")],
            ..RegistrationSpec::default()
        };
        let registration = Registration::generate(spec, None);
        let file = run_dir().join(format!("probe-{name}-registration.yaml"));
        registration.save(&file).unwrap();
        let binary = std::path::Path::new(env!("CARGO_BIN_EXE_ingest-probe"));
        let log = run_dir().join(format!("two-appservices-{name}.log"));
        let mut probe = IngestProbe::new(
            binary,
            &fresh_sqlite().url,
            port,
            &registration.hs_token,
            &log,
            0,
        );
        probe.start().await.unwrap();
        probes.push(probe);
        files.push(file);
        tokens.push(registration.as_token.clone());
    }
    let synapse = Synapse::start(&files).await.unwrap();
    let alice = synapse
        .register_user("alice", "alice-pw", false)
        .await
        .unwrap();
    let room = alice
        .create_room(json!({"preset": "public_chat"}))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    for token in &tokens {
        let join = http
            .post(format!(
                "{}/_matrix/client/v3/join/{}",
                synapse.url(),
                urlencode(room.as_str())
            ))
            .bearer_auth(token)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(join.status(), 200, "a bot joins");
    }
    let mut sent = Vec::new();
    for n in 0..MESSAGES {
        let id = alice
            .send_text(&room, &format!("message {n}"))
            .await
            .unwrap();
        sent.push(id.to_string());
    }
    for probe in &mut probes {
        probe
            .wait_until_applied(&sent, Duration::from_secs(45))
            .await
            .unwrap();
        probe.stop().await.unwrap();
        let handled: Vec<String> = probe
            .applied()
            .unwrap()
            .into_iter()
            .map(|(_, id)| id)
            .filter(|id| sent.contains(id))
            .collect();
        assert_eq!(handled, sent, "each message once, in the room's order");
    }
}
