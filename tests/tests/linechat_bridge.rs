//! The example bridge (bridge-core's connector API, end to end) against a real Synapse
//! and a real linechat server: a dynamic portal from an alias query, ghosts with names
//! and avatars, messages, replies, edits, reactions, redactions and membership both ways,
//! no echo, and bursts of 1,000 messages in order, also when the bridge is killed in the
//! middle and restarted.

use std::time::Duration;

use ruma::{OwnedEventId, OwnedRoomId};
use serde_json::{Value, json};
use trestle_tests::Synapse;
use trestle_tests::linechat::{
    LineChatClient, LinechatBridge, LinechatServer, linechat_bridge, linechat_bridge_with,
};
use trestle_tests::matrix::MatrixClient;

const WAIT: Duration = Duration::from_secs(30);
/// A 1x1 PNG, as the avatar a linechat user gives.
const AVATAR: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

/// A linechat server, Synapse with the bridge registered, the bridge running, a Matrix
/// user `alice` in the portal of `#general`, and a linechat user `carol` in `#general`.
struct Bed {
    server: LinechatServer,
    synapse: Synapse,
    bridge: LinechatBridge,
    alice: MatrixClient,
    carol: LineChatClient,
    room: OwnedRoomId,
}

async fn bed() -> Bed {
    bed_on(None).await
}

/// The bed with the bridge's database at `database_url` (SQLite when `None`).
async fn bed_on(database_url: Option<String>) -> Bed {
    bed_with(database_url, str::to_owned).await
}

/// The bed with the generated config passed through `edit`.
async fn bed_with(database_url: Option<String>, edit: impl FnOnce(&str) -> String) -> Bed {
    let server = LinechatServer::start().await.unwrap();
    let mut carol = server.client("carol", "Carol C.").await.unwrap();
    carol.join("#general").await.unwrap();
    carol.profile("Carol C.", Some(AVATAR)).await.unwrap();
    let (mut bridge, registration) =
        linechat_bridge_with(server.addr(), database_url, edit).unwrap();
    let synapse = Synapse::start(&[registration]).await.unwrap();
    bridge.start(&synapse.url()).await.unwrap();
    let alice = synapse
        .register_user("alice", "alice-password", false)
        .await
        .unwrap();
    // The alias does not exist until the homeserver asks the bridge: a dynamic portal.
    let room = alice.join("#linechat_general:localhost").await.unwrap();
    // The puppet joins with the first message; make it join now, so that later waits
    // on carol's side see only what each test expects.
    Bed {
        server,
        synapse,
        bridge,
        alice,
        carol,
        room,
    }
}

/// Waits for a Matrix event in the portal from `sender` that satisfies `matches`.
async fn matrix_event(bed: &Bed, sender: &str, matches: impl Fn(&Value) -> bool) -> Value {
    bed.alice
        .wait_for_event(&bed.room, WAIT, |event| {
            event["sender"] == sender && matches(event)
        })
        .await
        .unwrap_or_else(|error| panic!("{error}\nbridge log:\n{}", bed.bridge.log()))
}

/// Waits for a linechat event of `type` from `sender` in `#general`.
async fn linechat_event(carol: &mut LineChatClient, kind: &str, sender: &str) -> Value {
    carol
        .wait_event(WAIT, |event| {
            event["type"] == kind && event["sender"] == sender
        })
        .await
        .unwrap()
}

fn event_id(event: &Value) -> OwnedEventId {
    OwnedEventId::try_from(event["event_id"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn a_dynamic_portal_carries_everything_both_ways() {
    let mut bed = bed().await;
    let carol_ghost = "@linechat_carol:localhost";

    // Ghosts: carol's is in the room with her name and her avatar, uploaded to Matrix.
    let profile = bed
        .alice
        .request(
            reqwest::Method::GET,
            &format!("/_matrix/client/v3/profile/{carol_ghost}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(profile["displayname"], "Carol C.");
    assert!(
        profile["avatar_url"]
            .as_str()
            .unwrap()
            .starts_with("mxc://"),
        "{profile}"
    );
    let members = bed.alice.joined_members(&bed.room).await.unwrap();
    assert!(members["joined"][carol_ghost].is_object(), "{members}");

    // Matrix to linechat: alice's puppet joins and speaks.
    let hello = bed
        .alice
        .send_text(&bed.room, "hello from matrix")
        .await
        .unwrap();
    linechat_event(&mut bed.carol, "join", "mx_alice").await;
    let said = linechat_event(&mut bed.carol, "message", "mx_alice").await;
    assert_eq!(said["text"], "hello from matrix");
    assert_eq!(
        said["id"],
        hello.as_str(),
        "the Matrix event id is the message id"
    );

    // Matrix HTML becomes linechat's plain text: markup dropped, a mention pill its name.
    bed.alice
        .send(
            &bed.room,
            "m.room.message",
            &json!({
                "msgtype": "m.text",
                "body": "bold and Carol C.",
                "format": "org.matrix.custom.html",
                "formatted_body": "<b>bold</b> and <a href=\"https://matrix.to/#/@linechat_carol:localhost\">Carol C.</a><script>x</script>",
            }),
        )
        .await
        .unwrap();
    let said = linechat_event(&mut bed.carol, "message", "mx_alice").await;
    assert_eq!(said["text"], "bold and Carol C.");

    // Linechat to Matrix, with the remote timestamp.
    let sent = bed
        .carol
        .send("#general", "c1", "hello from linechat")
        .await
        .unwrap();
    let c1 = matrix_event(&bed, carol_ghost, |e| {
        e["content"]["body"] == "hello from linechat"
    })
    .await;
    assert_eq!(c1["type"], "m.room.message");
    let c1_ts = c1["origin_server_ts"].as_i64().unwrap();
    assert!(sent["seq"].is_number());
    assert!(c1_ts > 0);

    // Replies both ways.
    bed.carol
        .send_reply("#general", "c2", "re: matrix", hello.as_str())
        .await
        .unwrap();
    let c2 = matrix_event(&bed, carol_ghost, |e| e["content"]["body"] == "re: matrix").await;
    assert_eq!(
        c2["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        hello.as_str()
    );
    bed.alice
        .send(
            &bed.room,
            "m.room.message",
            &json!({
                "msgtype": "m.text",
                "body": "> <@linechat_carol:localhost> hello from linechat\n\nre: linechat",
                "m.relates_to": { "m.in_reply_to": { "event_id": event_id(&c1) } },
            }),
        )
        .await
        .unwrap();
    let reply = linechat_event(&mut bed.carol, "message", "mx_alice").await;
    assert_eq!(
        reply["text"], "re: linechat",
        "the reply fallback is stripped"
    );
    assert_eq!(reply["reply_to"], "c1");

    // Edits both ways.
    bed.carol
        .edit("#general", "e1", "c1", "hello, edited")
        .await
        .unwrap();
    let edit = matrix_event(&bed, carol_ghost, |e| {
        e["content"]["m.new_content"]["body"] == "hello, edited"
    })
    .await;
    assert_eq!(edit["content"]["m.relates_to"]["rel_type"], "m.replace");
    assert_eq!(edit["content"]["m.relates_to"]["event_id"], c1["event_id"]);
    bed.alice
        .send(
            &bed.room,
            "m.room.message",
            &json!({
                "msgtype": "m.text",
                "body": "* hello from matrix, edited",
                "m.new_content": { "msgtype": "m.text", "body": "hello from matrix, edited" },
                "m.relates_to": { "rel_type": "m.replace", "event_id": hello },
            }),
        )
        .await
        .unwrap();
    let edited = linechat_event(&mut bed.carol, "edit", "mx_alice").await;
    assert_eq!(edited["target"], hello.as_str());
    assert_eq!(edited["text"], "hello from matrix, edited");

    // Reactions both ways.
    bed.carol
        .react("#general", "r1", hello.as_str(), "👍")
        .await
        .unwrap();
    let reaction = matrix_event(&bed, carol_ghost, |e| e["type"] == "m.reaction").await;
    assert_eq!(reaction["content"]["m.relates_to"]["key"], "👍");
    assert_eq!(
        reaction["content"]["m.relates_to"]["event_id"],
        hello.as_str()
    );
    let alice_reaction = bed
        .alice
        .send(
            &bed.room,
            "m.reaction",
            &json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": event_id(&c1), "key": "🎉" } }),
        )
        .await
        .unwrap();
    let reacted = linechat_event(&mut bed.carol, "react", "mx_alice").await;
    assert_eq!(
        (reacted["target"].as_str(), reacted["emoji"].as_str()),
        (Some("c1"), Some("🎉"))
    );

    // Redactions both ways: carol deletes her reply; alice takes her reaction back.
    bed.carol.delete("#general", "d1", "c2").await.unwrap();
    let redaction = matrix_event(&bed, carol_ghost, |e| e["type"] == "m.room.redaction").await;
    let redacted = redaction["redacts"]
        .as_str()
        .or(redaction["content"]["redacts"].as_str());
    assert_eq!(redacted, c2["event_id"].as_str());
    bed.alice.redact(&bed.room, &alice_reaction).await.unwrap();
    let deleted = linechat_event(&mut bed.carol, "delete", "mx_alice").await;
    assert_eq!(deleted["target"], alice_reaction.as_str());

    // Membership both ways.
    let mut dave = bed.server.client("dave", "Dave").await.unwrap();
    dave.join("#general").await.unwrap();
    matrix_event(&bed, "@linechat_dave:localhost", |e| {
        e["type"] == "m.room.member" && e["content"]["membership"] == "join"
    })
    .await;
    dave.part("#general").await.unwrap();
    matrix_event(&bed, "@linechat_dave:localhost", |e| {
        e["type"] == "m.room.member" && e["content"]["membership"] == "leave"
    })
    .await;

    // No echo: a marker from linechat arrives after everything said before it, so any
    // echo would be in the room by then.
    bed.carol
        .send("#general", "marker", "marker")
        .await
        .unwrap();
    matrix_event(&bed, carol_ghost, |e| e["content"]["body"] == "marker").await;
    let events = bed.alice.room_events(&bed.room).await.unwrap();
    let echoes: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["sender"]
                .as_str()
                .is_some_and(|s| s.starts_with("@linechat_mx_"))
        })
        .collect();
    assert!(
        echoes.is_empty(),
        "puppets' messages came back as ghosts: {echoes:?}"
    );
    let hellos = events
        .iter()
        .filter(|e| e["content"]["body"] == "hello from matrix")
        .count();
    assert_eq!(hellos, 1);
    // Nor did carol's own messages come back to linechat through a puppet.
    let echoed = bed.carol.queued().iter().any(|e| {
        e["type"] == "message" && e["sender"] != "carol" && e["text"] == "hello from linechat"
    });
    assert!(!echoed, "a linechat message came back to linechat");

    // Matrix membership: alice leaves, her puppet parts.
    bed.alice
        .request(
            reqwest::Method::POST,
            &format!("/_matrix/client/v3/rooms/{}/leave", bed.room),
            Some(&json!({})),
        )
        .await
        .unwrap();
    linechat_event(&mut bed.carol, "part", "mx_alice").await;
    bed.bridge.stop().await;
    drop(bed.synapse);
}

/// The bodies of carol's messages starting with `prefix` in the portal, in order.
async fn arrived(bed: &Bed, prefix: &str) -> Vec<String> {
    bed.alice
        .bodies_from(&bed.room, "@linechat_carol:localhost", prefix)
        .await
        .unwrap()
}

/// Bursts of `burst` messages each way; the bridge is killed (SIGKILL) in the middle of
/// each and restarted. Every message arrives exactly once, in order.
async fn bursts_survive_a_crash(database_url: Option<String>, burst: usize) {
    let mut bed = bed_on(database_url).await;
    let expected = |prefix: &str| {
        (0..burst)
            .map(|i| format!("{prefix}{i}"))
            .collect::<Vec<_>>()
    };
    let carol_ghost = "@linechat_carol:localhost";

    // Linechat to Matrix: killed once a tenth has arrived, while the rest is partly
    // queued in the outbox and partly still only in the channel's history.
    for i in 0..burst {
        bed.carol
            .send("#general", &format!("l{i}"), &format!("L{i}"))
            .await
            .unwrap();
    }
    let tenth = format!("L{}", burst / 10);
    matrix_event(&bed, carol_ghost, |e| {
        e["content"]["body"] == tenth.as_str()
    })
    .await;
    bed.bridge.kill();
    bed.bridge.start(&bed.synapse.url()).await.unwrap();
    let last = format!("L{}", burst - 1);
    bed.alice
        .wait_for_event(&bed.room, Duration::from_secs(300), |e| {
            e["content"]["body"] == last.as_str()
        })
        .await
        .unwrap_or_else(|error| panic!("{error}\nbridge log:\n{}", bed.bridge.log()));
    assert_eq!(
        arrived(&bed, "L").await,
        expected("L"),
        "linechat to Matrix: lost, doubled or out of order"
    );

    // Matrix to linechat, sent while the bridge is killed and restarted.
    let alice = std::sync::Arc::new(bed.alice);
    let sender = std::sync::Arc::clone(&alice);
    let room = bed.room.clone();
    let sending = tokio::spawn(async move {
        for i in 0..burst {
            sender.send_text(&room, &format!("M{i}")).await.unwrap();
        }
    });
    let mut seen = Vec::new();
    let from_alice = |e: &Value| e["type"] == "message" && e["sender"] == "mx_alice";
    while seen.len() < burst / 5 {
        let event = bed.carol.wait_event(WAIT, from_alice).await.unwrap();
        seen.push(event["text"].as_str().unwrap().to_owned());
    }
    bed.bridge.kill();
    bed.bridge.start(&bed.synapse.url()).await.unwrap();
    while seen.len() < burst {
        let event = bed
            .carol
            .wait_event(Duration::from_secs(120), from_alice)
            .await
            .unwrap_or_else(|error| panic!("after {} messages: {error}", seen.len()));
        seen.push(event["text"].as_str().unwrap().to_owned());
    }
    sending.await.unwrap();
    assert_eq!(
        seen,
        expected("M"),
        "Matrix to linechat: lost, doubled or out of order"
    );
    // Nothing more trails behind.
    assert!(
        bed.carol
            .wait_event(Duration::from_secs(2), from_alice)
            .await
            .is_err()
    );
    bed.bridge.stop().await;
}

#[tokio::test]
async fn bursts_of_1000_survive_a_crash_on_sqlite() {
    bursts_survive_a_crash(None, 1000).await;
}

/// The same on PostgreSQL, with a shorter burst: what differs is the database.
#[tokio::test]
async fn bursts_survive_a_crash_on_postgresql() {
    let url = trestle_tests::Postgres::shared()
        .await
        .unwrap()
        .create_database()
        .await
        .unwrap();
    bursts_survive_a_crash(Some(url), 200).await;
}

/// The bot: a direct chat becomes a management room with `help` and the connector's
/// commands; permissions keep a user without any out of the bridge and its commands.
#[tokio::test]
async fn the_bot_takes_commands_within_permissions() {
    let mut bed = bed_with(None, |config| {
        let entries = "    \"localhost\": \"user\"\n";
        assert!(config.contains(entries), "{config}");
        config.replace(
            entries,
            &format!(
                "{entries}    \"@mallory:localhost\": \"none\"\n    \"@relay:localhost\": \"relay\"\n"
            ),
        )
    })
    .await;
    let bot = "@linechatbot:localhost";
    let from_bot = |text: &'static str| {
        move |e: &Value| {
            e["sender"] == bot
                && e["content"]["body"]
                    .as_str()
                    .is_some_and(|b| b.contains(text))
        }
    };
    let mallory = bed
        .synapse
        .register_user("mallory", "mallory-password", false)
        .await
        .unwrap();
    let relay = bed
        .synapse
        .register_user("relay", "relay-password", false)
        .await
        .unwrap();

    // alice's direct chat with the bot: a welcome, then help and commands without prefix.
    let dm = bed
        .alice
        .create_room(
            json!({ "is_direct": true, "invite": [bot], "preset": "trusted_private_chat" }),
        )
        .await
        .unwrap();
    bed.alice
        .wait_for_event(&dm, WAIT, from_bot("Say `help`"))
        .await
        .unwrap();
    bed.alice.send_text(&dm, "help").await.unwrap();
    let help = bed
        .alice
        .wait_for_event(&dm, WAIT, from_bot("commands"))
        .await
        .unwrap();
    let help = help["content"]["body"].as_str().unwrap();
    assert!(
        help.contains("join <#channel>") && help.contains("list"),
        "{help}"
    );
    bed.alice.send_text(&dm, "frobnicate").await.unwrap();
    bed.alice
        .wait_for_event(&dm, WAIT, from_bot("Unknown command `frobnicate`"))
        .await
        .unwrap();
    bed.alice.send_text(&dm, "join #random").await.unwrap();
    bed.alice
        .wait_for_event(&dm, WAIT, from_bot("Invited you to #random"))
        .await
        .unwrap();
    let random = bed.alice.wait_for_invite(WAIT).await.unwrap();
    bed.alice.join(random.as_str()).await.unwrap();

    // In a portal the prefix is needed; `relay` may list but not join.
    relay.join(bed.room.as_str()).await.unwrap();
    relay
        .send_text(&bed.room, "!linechat join #elsewhere")
        .await
        .unwrap();
    relay
        .wait_for_event(&bed.room, WAIT, from_bot("needs the user permission"))
        .await
        .unwrap();
    relay.send_text(&bed.room, "!linechat list").await.unwrap();
    relay
        .wait_for_event(&bed.room, WAIT, from_bot("Portals: #general"))
        .await
        .unwrap();

    // mallory: no permission. The bot declines her direct chat; in the portal her
    // messages are not bridged and her commands are ignored.
    let declined = mallory
        .create_room(
            json!({ "is_direct": true, "invite": [bot], "preset": "trusted_private_chat" }),
        )
        .await
        .unwrap();
    mallory.join(bed.room.as_str()).await.unwrap();
    mallory
        .send_text(&bed.room, "mallory was here")
        .await
        .unwrap();
    mallory
        .send_text(&bed.room, "!linechat list")
        .await
        .unwrap();
    bed.alice
        .send_text(&bed.room, "after mallory")
        .await
        .unwrap();
    let next = bed
        .carol
        .wait_event(WAIT, |e| {
            e["type"] == "message" && e["channel"] == "#general" && e["sender"] != "carol"
        })
        .await
        .unwrap();
    assert_eq!(
        next["text"], "after mallory",
        "mallory's message was bridged: {next}"
    );
    // The bot handles a room's events in order: by now it saw mallory's command.
    bed.alice
        .send_text(&bed.room, "!linechat list")
        .await
        .unwrap();
    bed.alice
        .wait_for_event(&bed.room, WAIT, from_bot("Portals: #general"))
        .await
        .unwrap();
    let answers = bed
        .alice
        .room_events(&bed.room)
        .await
        .unwrap()
        .iter()
        .filter(|e| from_bot("Portals:")(e))
        .count();
    assert_eq!(
        answers, 2,
        "the bot answered mallory's command (or missed one)"
    );
    // The invite is handled in its own room's order: wait for the bot to decline it.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let members = mallory
            .request(
                reqwest::Method::GET,
                &format!("/_matrix/client/v3/rooms/{declined}/members"),
                None,
            )
            .await
            .unwrap();
        let bot_membership = members["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["state_key"] == bot)
            .map(|m| m["content"]["membership"].clone());
        if bot_membership == Some(json!("leave")) {
            break;
        }
        assert_ne!(
            bot_membership,
            Some(json!("join")),
            "the bot joined mallory's chat"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the bot never declined: {members}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bed.bridge.stop().await;
}

/// A bridge whose registration the homeserver does not have stops at once with an error
/// that says so, instead of running deaf.
#[tokio::test]
async fn a_registration_the_homeserver_lacks_stops_the_bridge() {
    let server = LinechatServer::start().await.unwrap();
    let (mut bridge, _registration) = linechat_bridge(server.addr(), None).unwrap();
    let synapse = Synapse::start(&[]).await.unwrap();
    let error = bridge.start(&synapse.url()).await.unwrap_err().to_string();
    assert!(
        error.contains("does not accept this bridge") && error.contains("registration file"),
        "{error}"
    );
}
