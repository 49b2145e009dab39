//! bridge-xmpp end to end: the binary as an operator runs it, a real Synapse, a real
//! Prosody, and real clients on both sides (the XMPP ones raw c2s clients).

use std::time::Duration;

use minidom::Element;
use ruma::OwnedRoomId;
use serde_json::{Value, json};
use trestle_tests::bridge_process::BridgeProcess;
use trestle_tests::matrix::MatrixClient;
use trestle_tests::xmpp::{NS_CLIENT, XmppClient, to_string};
use trestle_tests::xmpp_bridge::xmpp_bridge;
use trestle_tests::{Prosody, Synapse};

const WAIT: Duration = Duration::from_secs(30);

fn name(name: &str) -> rxml::NcName {
    rxml::NcName::try_from(name).unwrap()
}

/// Synapse with the bridge registered, the bridge on its own Prosody, an XMPP user
/// `carol` in the group chat `room`, and a Matrix user `alice` in its portal.
struct Bed {
    prosody: Prosody,
    synapse: Synapse,
    bridge: BridgeProcess,
    alice: MatrixClient,
    carol: XmppClient,
    room: OwnedRoomId,
    muc: String,
}

async fn bed(room: &str) -> Bed {
    let prosody = Prosody::start().await.unwrap();
    let muc = format!("{room}@{}", Prosody::MUC_DOMAIN);
    let mut carol = prosody.client("carol", "carol-password").await.unwrap();
    carol.join_muc(&muc, "carol").await.unwrap();
    let (mut bridge, registration) = xmpp_bridge(&prosody).unwrap();
    let synapse = Synapse::start(&[registration]).await.unwrap();
    bridge.start(&synapse.url()).await.unwrap();
    let alice = synapse
        .register_user("alice", "alice-password", false)
        .await
        .unwrap();
    // A dynamic portal: the alias spells the group chat's address.
    let room = alice
        .join(&format!("#xmpp_{room}_{}:localhost", Prosody::MUC_DOMAIN))
        .await
        .unwrap_or_else(|error| panic!("{error}\nbridge log:\n{}", bridge.log()));
    Bed {
        prosody,
        synapse,
        bridge,
        alice,
        carol,
        room,
        muc,
    }
}

impl Bed {
    /// Waits for a Matrix event in the portal that satisfies `matches`.
    async fn matrix_event(&self, matches: impl Fn(&Value) -> bool) -> Value {
        self.alice
            .wait_for_event(&self.room, WAIT, matches)
            .await
            .unwrap_or_else(|error| panic!("{error}\nbridge log:\n{}", self.bridge.log()))
    }

    /// Waits for carol to get a group chat message from `nick` with `body`.
    async fn xmpp_message(&mut self, nick: &str, body: &str) -> Element {
        let from = format!("{}/{nick}", self.muc);
        let result = self
            .carol
            .wait_for(WAIT, |s| {
                s.name() == "message"
                    && s.attr("from") == Some(from.as_str())
                    && s.get_child("body", NS_CLIENT)
                        .is_some_and(|b| b.text() == body)
            })
            .await;
        result.unwrap_or_else(|error| panic!("{error}\nbridge log:\n{}", self.bridge.log()))
    }

    /// The Matrix user ids of the ghosts shown as `name` in the portal.
    async fn ghosts_named(&self, name: &str) -> Vec<String> {
        let members = self.alice.joined_members(&self.room).await.unwrap();
        members["joined"]
            .as_object()
            .map(|joined| {
                joined
                    .iter()
                    .filter(|(user, member)| {
                        member["display_name"] == name && user.starts_with("@xmpp_")
                    })
                    .map(|(user, _)| user.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The Matrix user id of the one ghost shown as `name` in the portal.
    async fn ghost_named(&self, name: &str) -> String {
        let ghosts = self.ghosts_named(name).await;
        assert_eq!(ghosts.len(), 1, "ghosts named {name}: {ghosts:?}");
        ghosts[0].clone()
    }
}

#[tokio::test]
async fn a_group_chat_portal_carries_messages_both_ways() {
    let mut bed = bed("portal").await;

    // carol, already in the room, is there as a ghost named by her nick.
    let carol_ghost = bed.ghost_named("carol").await;

    // Matrix to XMPP: alice's puppet joins under her name and speaks; the message id is
    // the event id, and so is its origin id (XEP-0359).
    let event = bed
        .alice
        .send_text(&bed.room, "hello from matrix")
        .await
        .unwrap();
    let message = bed.xmpp_message("alice", "hello from matrix").await;
    assert_eq!(message.attr("type"), Some("groupchat"));
    let origin = message
        .get_child("origin-id", "urn:xmpp:sid:0")
        .unwrap_or_else(|| panic!("no origin id in {}", to_string(&message)));
    assert_eq!(origin.attr("id"), Some(event.as_str()));

    // XMPP to Matrix, as carol's ghost.
    bed.carol
        .send_groupchat(&bed.muc, "hello from xmpp")
        .await
        .unwrap();
    let seen = bed
        .matrix_event(|e| e["sender"] == carol_ghost.as_str() && e["type"] == "m.room.message")
        .await;
    assert_eq!(seen["content"]["body"], "hello from xmpp", "{seen}");
    assert_eq!(seen["content"]["msgtype"], "m.text", "{seen}");

    // `/me` is an emote both ways.
    bed.carol
        .send_groupchat(&bed.muc, "/me waves")
        .await
        .unwrap();
    let seen = bed
        .matrix_event(|e| {
            e["sender"] == carol_ghost.as_str() && e["content"]["msgtype"] == "m.emote"
        })
        .await;
    assert_eq!(seen["content"]["body"], "waves", "{seen}");
    bed.alice
        .send(
            &bed.room,
            "m.room.message",
            &json!({"msgtype": "m.emote", "body": "dances"}),
        )
        .await
        .unwrap();
    bed.xmpp_message("alice", "/me dances").await;

    // Lines stay in one message; XML in a body is text, never markup.
    bed.alice
        .send_text(&bed.room, "two\nlines <b>&amp;</b>")
        .await
        .unwrap();
    bed.xmpp_message("alice", "two\nlines <b>&amp;</b>").await;

    // carol made the room, so she owns it: her ghost has power level 100.
    let levels = bed
        .alice
        .request(
            reqwest::Method::GET,
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.power_levels/",
                bed.room
            ),
            None,
        )
        .await
        .unwrap();
    assert_eq!(levels["users"][carol_ghost.as_str()], 100, "{levels}");

    // A subject is the room's topic.
    let subject = Element::builder("message", NS_CLIENT)
        .attr(name("to"), bed.muc.as_str())
        .attr(name("type"), "groupchat")
        .append(
            Element::builder("subject", NS_CLIENT)
                .append("a new topic")
                .build(),
        )
        .build();
    bed.carol.send(&subject).await.unwrap();
    let topic = bed
        .matrix_event(|e| e["type"] == "m.room.topic" && e["sender"] == carol_ghost.as_str())
        .await;
    assert_eq!(topic["content"]["topic"], "a new topic", "{topic}");

    // The room's reflection of alice's messages is not bridged back.
    bed.carol.send_groupchat(&bed.muc, "last").await.unwrap();
    bed.matrix_event(|e| e["sender"] == carol_ghost.as_str() && e["content"]["body"] == "last")
        .await;
    let bodies: Vec<String> = bed
        .alice
        .room_events(&bed.room)
        .await
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message" && e["sender"] != "@alice:localhost")
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(bodies, ["hello from xmpp", "waves", "last"]);
    // Nor is alice's puppet taken for an XMPP user.
    assert_eq!(bed.ghosts_named("alice").await, Vec::<String>::new());
}

#[tokio::test]
async fn a_taken_nick_is_retried_with_a_suffix_and_names_stay_text() {
    let mut bed = bed("nicks").await;
    // An XMPP user already uses the nick bob's display name gives, and another has a
    // nick full of markup.
    let mut dave = bed.prosody.client("dave", "dave-password").await.unwrap();
    dave.join_muc(&bed.muc, "bob").await.unwrap();
    let mut eve = bed.prosody.client("eve", "eve-password").await.unwrap();
    let hostile = "<b>eve</b> &amp; 'co\"";
    eve.join_muc(&bed.muc, hostile).await.unwrap();

    let bob = bed
        .synapse
        .register_user("bob", "bob-password", false)
        .await
        .unwrap();
    bob.join(bed.room.as_str()).await.unwrap();
    bob.send_text(&bed.room, "still here").await.unwrap();
    bed.xmpp_message("bob (matrix)", "still here").await;

    // The nick with markup is the ghost's name, as text.
    bed.matrix_event(|e| e["type"] == "m.room.member" && e["content"]["displayname"] == hostile)
        .await;
    eve.send_groupchat(&bed.muc, "from eve").await.unwrap();
    let ghost = bed.ghost_named(hostile).await;
    bed.matrix_event(|e| e["sender"] == ghost.as_str() && e["content"]["body"] == "from eve")
        .await;
}

#[tokio::test]
async fn a_stanza_the_bridge_cannot_read_is_answered_with_an_error_and_the_bridge_goes_on() {
    let mut bed = bed("hostile").await;
    let carol_ghost = bed.ghost_named("carol").await;
    let bridge_domain = Prosody::COMPONENT_DOMAIN;

    // A message of a type that does not exist, to the bridge: an error comes back.
    let bogus = Element::builder("message", NS_CLIENT)
        .attr(name("to"), bridge_domain)
        .attr(name("type"), "bogus")
        .attr(name("id"), "bad-1")
        .append(Element::builder("body", NS_CLIENT).append("x").build())
        .build();
    bed.carol.send(&bogus).await.unwrap();
    let answer = bed
        .carol
        .wait_for(WAIT, |s| {
            s.name() == "message" && s.attr("id") == Some("bad-1")
        })
        .await
        .unwrap_or_else(|error| panic!("{error}\nbridge log:\n{}", bed.bridge.log()));
    assert_eq!(answer.attr("type"), Some("error"), "{}", to_string(&answer));
    assert!(
        to_string(&answer).contains("bad-request"),
        "{}",
        to_string(&answer)
    );

    // The component answers service discovery, version and ping.
    let disco = bed
        .carol
        .iq(
            "get",
            bridge_domain,
            Element::builder("query", "http://jabber.org/protocol/disco#info").build(),
        )
        .await
        .unwrap();
    let disco = to_string(&disco);
    assert!(disco.contains("category='gateway'"), "{disco}");
    bed.carol
        .iq(
            "get",
            bridge_domain,
            Element::builder("ping", "urn:xmpp:ping").build(),
        )
        .await
        .unwrap();
    let version = bed
        .carol
        .iq(
            "get",
            bridge_domain,
            Element::builder("query", "jabber:iq:version").build(),
        )
        .await
        .unwrap();
    assert!(
        to_string(&version).contains("Trestle"),
        "{}",
        to_string(&version)
    );

    // And the stream is still up: messages keep coming.
    bed.carol.send_groupchat(&bed.muc, "after").await.unwrap();
    bed.matrix_event(|e| e["sender"] == carol_ghost.as_str() && e["content"]["body"] == "after")
        .await;
}

#[tokio::test]
async fn restarts_of_the_bridge_and_of_prosody_lose_nothing() {
    let mut bed = bed("restart").await;
    let carol_ghost = bed.ghost_named("carol").await;
    bed.carol.send_groupchat(&bed.muc, "before").await.unwrap();
    bed.matrix_event(|e| e["sender"] == carol_ghost.as_str() && e["content"]["body"] == "before")
        .await;

    // The bridge dies; what is said meanwhile comes from the room's history when it is
    // back, once each and in order.
    bed.bridge.kill();
    for i in 1..=3 {
        bed.carol
            .send_groupchat(&bed.muc, &format!("while the bridge was down {i}"))
            .await
            .unwrap();
    }
    bed.bridge.start(&bed.synapse.url()).await.unwrap();
    bed.matrix_event(|e| {
        e["sender"] == carol_ghost.as_str() && e["content"]["body"] == "while the bridge was down 3"
    })
    .await;
    let bodies = bed
        .alice
        .bodies_from(&bed.room, &carol_ghost, "")
        .await
        .unwrap();
    assert_eq!(
        bodies,
        [
            "before",
            "while the bridge was down 1",
            "while the bridge was down 2",
            "while the bridge was down 3"
        ]
    );

    // Prosody dies: a message from Matrix meanwhile waits, and goes once the component
    // is back in the room (the room, not persistent, is made again).
    bed.prosody.restart().await.unwrap();
    bed.alice
        .send_text(&bed.room, "while prosody was down")
        .await
        .unwrap();
    let mut carol = bed.prosody.client("carol", "carol-password").await.unwrap();
    carol
        .join_muc_with_history(&bed.muc, "carol", 20)
        .await
        .unwrap();
    bed.carol = carol;
    bed.xmpp_message("alice", "while prosody was down").await;
    bed.carol
        .send_groupchat(&bed.muc, "after the restart")
        .await
        .unwrap();
    // In the room made again carol has a new occupant id, so a new ghost.
    bed.matrix_event(|e| {
        e["sender"]
            .as_str()
            .is_some_and(|s| s.starts_with("@xmpp_"))
            && e["content"]["body"] == "after the restart"
    })
    .await;
}
