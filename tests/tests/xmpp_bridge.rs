//! bridge-xmpp end to end: the binary as an operator runs it, a real Synapse, a real
//! Prosody, and real clients on both sides (the XMPP ones raw c2s clients).

use std::time::Duration;

use minidom::Element;
use ruma::OwnedRoomId;
use serde_json::{Value, json};
use trestle_tests::bridge_process::BridgeProcess;
use trestle_tests::matrix::{MatrixClient, urlencode};
use trestle_tests::xmpp::{NS_CLIENT, XmppClient, to_string};
use trestle_tests::xmpp_bridge::xmpp_bridge_with;
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
    bed_with(room, str::to_owned).await
}

/// The bed with the bridge's generated config passed through `edit`.
async fn bed_with(room: &str, edit: impl FnOnce(&str) -> String) -> Bed {
    let prosody = Prosody::start().await.unwrap();
    let muc = format!("{room}@{}", Prosody::MUC_DOMAIN);
    let mut carol = prosody.client("carol", "carol-password").await.unwrap();
    carol.join_muc(&muc, "carol").await.unwrap();
    let (mut bridge, registration) = xmpp_bridge_with(&prosody, None, edit).unwrap();
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

    /// Moves the bed to a room of alice's own (where she is an admin, and the bot has
    /// power level 100), linked to the group chat `name` that carol makes and owns.
    async fn link_own_room(&mut self, name: &str) {
        let bot = "@xmppbot:localhost";
        let owned = format!("{name}@{}", Prosody::MUC_DOMAIN);
        self.carol.join_muc(&owned, "carol").await.unwrap();
        let room = self
            .alice
            .create_room(json!({
                "preset": "private_chat", "invite": [bot],
                "power_level_content_override": { "users": { bot: 100 } },
            }))
            .await
            .unwrap();
        bot_notice(&self.alice, &self.bridge, &room, "link <address>").await;
        self.alice
            .send_text(&room, &format!("!xmpp link {owned}"))
            .await
            .unwrap();
        bot_notice(&self.alice, &self.bridge, &room, "now bridged to").await;
        self.room = room;
        self.muc = owned;
    }

    /// carol, the room's owner, makes the occupant `nick` a moderator.
    async fn make_moderator(&mut self, nick: &str) {
        let admin = Element::builder("query", "http://jabber.org/protocol/muc#admin")
            .append(
                Element::builder("item", "http://jabber.org/protocol/muc#admin")
                    .attr(name("nick"), nick)
                    .attr(name("role"), "moderator")
                    .build(),
            )
            .build();
        let muc = self.muc.clone();
        self.carol.iq("set", &muc, admin).await.unwrap();
    }

    /// Waits until the ghost `ghost` has an avatar, and returns its bytes and type.
    async fn avatar_of(&self, ghost: &str) -> (Vec<u8>, String) {
        let path = format!("/_matrix/client/v3/profile/{}/avatar_url", urlencode(ghost));
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let profile = self.alice.request(reqwest::Method::GET, &path, None).await;
            if let Some(url) = profile
                .ok()
                .and_then(|p| p["avatar_url"].as_str().map(str::to_owned))
            {
                return self.alice.download(&url).await.unwrap();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no avatar for {ghost}\nbridge log:\n{}",
                self.bridge.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
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

    // Matrix formatting goes as message styling (XEP-0393).
    bed.alice
        .send(
            &bed.room,
            "m.room.message",
            &json!({
                "msgtype": "m.text", "body": "bold and code",
                "format": "org.matrix.custom.html",
                "formatted_body": "<b>bold</b> and <code>code</code>",
            }),
        )
        .await
        .unwrap();
    // Matrix formatting goes as message styling (XEP-0393) in the body, and as XHTML-IM
    // (XEP-0071) beside it.
    let styled = bed.xmpp_message("alice", "*bold* and `code`").await;
    let xhtml = styled
        .get_child("html", "http://jabber.org/protocol/xhtml-im")
        .and_then(|html| html.get_child("body", "http://www.w3.org/1999/xhtml"))
        .unwrap_or_else(|| panic!("no XHTML-IM in {}", to_string(&styled)));
    assert_eq!(
        to_string(xhtml),
        "<body xmlns='http://www.w3.org/1999/xhtml'><strong>bold</strong> and \
         <span style='font-family: monospace'>code</span></body>"
    );

    // XMPP formatting comes as Matrix HTML: styling, or XHTML-IM where the client sent it.
    let muc = bed.muc.clone();
    bed.carol
        .send_groupchat(&muc, "*strong* _words_ ~gone~")
        .await
        .unwrap();
    let seen = bed
        .matrix_event(|e| e["content"]["body"] == "*strong* _words_ ~gone~")
        .await;
    assert_eq!(
        seen["content"]["formatted_body"], "<strong>strong</strong> <em>words</em> <del>gone</del>",
        "{seen}"
    );
    let rich: Element = "<html xmlns='http://jabber.org/protocol/xhtml-im'>\
        <body xmlns='http://www.w3.org/1999/xhtml'><p>rich <strong>text</strong> \
        <a href='javascript:x()'>no script</a></p></body></html>"
        .parse()
        .unwrap();
    bed.carol
        .send(&groupchat(
            &muc,
            "x1",
            Some("rich text no script"),
            vec![rich],
        ))
        .await
        .unwrap();
    let seen = bed
        .matrix_event(|e| e["content"]["body"] == "rich text no script")
        .await;
    assert_eq!(
        seen["content"]["formatted_body"], "<p>rich <strong>text</strong> <a>no script</a></p>",
        "{seen}"
    );

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
    assert_eq!(
        bodies,
        [
            "hello from xmpp",
            "waves",
            "*strong* _words_ ~gone~",
            "rich text no script",
            "last"
        ]
    );
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

    // A huge body neither stops the bridge nor holds back what follows.
    // It arrives as its start, with the whole text as a file.
    let huge = "x".repeat(200_000);
    bed.carol.send_groupchat(&bed.muc, &huge).await.unwrap();
    let long = bed
        .matrix_event(|e| {
            e["sender"] == carol_ghost.as_str() && e["content"]["msgtype"] == "m.file"
        })
        .await;
    assert_eq!(long["content"]["filename"], "message.txt", "{long}");
    assert!(
        long["content"]["body"]
            .as_str()
            .is_some_and(|b| b.starts_with("xxxx") && b.len() < 20_000),
        "{long}"
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

    // alice's puppet is in the room when the bridge dies, and nothing happens there
    // until it is back: the room keeps the puppet, and the bridge takes it up again at
    // once (a reply to its message names its nick before it said anything new).
    let puppet_in = bed.alice.send_text(&bed.room, "puppet in").await.unwrap();
    bed.xmpp_message("alice", "puppet in").await;
    bed.bridge.kill();
    bed.bridge.start(&bed.synapse.url()).await.unwrap();
    bed.alice
        .send(
            &bed.room,
            "m.room.message",
            &json!({
                "msgtype": "m.text", "body": "puppet still in",
                "m.relates_to": {"m.in_reply_to": {"event_id": puppet_in}},
            }),
        )
        .await
        .unwrap();
    bed.xmpp_message("alice", "alice: puppet still in").await;
    assert_eq!(bed.ghosts_named("alice").await, Vec::<String>::new());

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

/// A MUC admin query giving the address `jid` the affiliation `affiliation`.
fn affiliation_item(jid: &str, affiliation: &str) -> Element {
    Element::builder("query", "http://jabber.org/protocol/muc#admin")
        .append(
            Element::builder("item", "http://jabber.org/protocol/muc#admin")
                .attr(name("jid"), jid)
                .attr(name("affiliation"), affiliation)
                .build(),
        )
        .build()
}

/// The generated config with `user` a bridge admin.
fn with_admin(config: &str, user: &str) -> String {
    let entries = "    \"localhost\": \"user\"\n";
    assert!(config.contains(entries), "{config}");
    config.replace(entries, &format!("{entries}    \"{user}\": \"admin\"\n"))
}

/// A group chat message from carol with `id`, `body` (if any) and `payloads`.
fn groupchat(muc: &str, id: &str, body: Option<&str>, payloads: Vec<Element>) -> Element {
    let mut message = Element::builder("message", NS_CLIENT)
        .attr(name("to"), muc)
        .attr(name("type"), "groupchat")
        .attr(name("id"), id);
    if let Some(body) = body {
        message = message.append(Element::builder("body", NS_CLIENT).append(body).build());
    }
    message.append_all(payloads).build()
}

/// The id the room gave a message (XEP-0359).
fn room_id_of(message: &Element, muc: &str) -> String {
    message
        .children()
        .find(|c| c.is("stanza-id", "urn:xmpp:sid:0") && c.attr("by") == Some(muc))
        .and_then(|c| c.attr("id"))
        .unwrap_or_else(|| panic!("no stanza id in {}", to_string(message)))
        .to_owned()
}

fn element(name_: &str, namespace: &str, attrs: &[(&str, &str)], text: Option<&str>) -> Element {
    let mut builder = Element::builder(name_, namespace);
    for (key, value) in attrs {
        builder = builder.attr(name(key), *value);
    }
    if let Some(text) = text {
        builder = builder.append(text);
    }
    builder.build()
}

#[tokio::test]
async fn corrections_replies_reactions_and_retractions_cross_both_ways() {
    let mut bed = bed("relations").await;
    let carol_ghost = bed.ghost_named("carol").await;
    let from_carol = |body: &'static str| {
        let ghost = carol_ghost.clone();
        move |e: &Value| e["sender"] == ghost.as_str() && e["content"]["body"] == body
    };

    // XMPP to Matrix. carol says something, with an id; the room's reflection gives her
    // its stanza id.
    let muc = bed.muc.clone();
    bed.carol
        .send(&groupchat(&muc, "c1", Some("helo"), vec![]))
        .await
        .unwrap();
    let reflected = bed.xmpp_message("carol", "helo").await;
    let c1_room_id = room_id_of(&reflected, &muc);
    let c1 = bed.matrix_event(from_carol("helo")).await;
    let c1_event = c1["event_id"].as_str().unwrap().to_owned();

    // A correction (XEP-0308) is an edit.
    let replace = element(
        "replace",
        "urn:xmpp:message-correct:0",
        &[("id", "c1")],
        None,
    );
    bed.carol
        .send(&groupchat(&muc, "c2", Some("hello"), vec![replace]))
        .await
        .unwrap();
    let edit = bed
        .matrix_event(|e| e["content"]["m.relates_to"]["rel_type"] == "m.replace")
        .await;
    assert_eq!(
        edit["content"]["m.relates_to"]["event_id"],
        c1_event.as_str()
    );
    assert_eq!(edit["content"]["m.new_content"]["body"], "hello");

    // A reaction (XEP-0444) names the room's id; a new set without it takes it back.
    let mut reactions = element(
        "reactions",
        "urn:xmpp:reactions:0",
        &[("id", &c1_room_id)],
        None,
    );
    reactions.append_child(element("reaction", "urn:xmpp:reactions:0", &[], Some("👍")));
    bed.carol
        .send(&groupchat(&muc, "c3", None, vec![reactions]))
        .await
        .unwrap();
    let reaction = bed
        .matrix_event(|e| e["type"] == "m.reaction" && e["sender"] == carol_ghost.as_str())
        .await;
    assert_eq!(reaction["content"]["m.relates_to"]["key"], "👍");
    assert_eq!(
        reaction["content"]["m.relates_to"]["event_id"],
        c1_event.as_str()
    );
    let none = element(
        "reactions",
        "urn:xmpp:reactions:0",
        &[("id", &c1_room_id)],
        None,
    );
    bed.carol
        .send(&groupchat(&muc, "c4", None, vec![none]))
        .await
        .unwrap();
    let unreacted = bed
        .matrix_event(|e| e["type"] == "m.room.redaction" && e["sender"] == carol_ghost.as_str())
        .await;
    let redacts = |e: &Value| {
        e["redacts"]
            .as_str()
            .or(e["content"]["redacts"].as_str())
            .map(str::to_owned)
    };
    assert_eq!(
        redacts(&unreacted),
        reaction["event_id"].as_str().map(str::to_owned)
    );

    // Matrix to XMPP. alice's message, then her edit: a correction of the id it went with.
    let a1 = bed.alice.send_text(&bed.room, "tpyo").await.unwrap();
    let a1_room_id = room_id_of(&bed.xmpp_message("alice", "tpyo").await, &muc);
    bed.alice
        .send(
            &bed.room,
            "m.room.message",
            &json!({
                "msgtype": "m.text", "body": "* typo",
                "m.new_content": {"msgtype": "m.text", "body": "typo"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": a1},
            }),
        )
        .await
        .unwrap();
    let corrected = bed.xmpp_message("alice", "typo").await;
    let replace = corrected
        .get_child("replace", "urn:xmpp:message-correct:0")
        .unwrap_or_else(|| panic!("no correction: {}", to_string(&corrected)));
    assert_eq!(replace.attr("id"), Some(a1.as_str()));

    // A reply (XEP-0461) to carol names her message by the room's id, and the `carol: `
    // prefix is marked as the fallback.
    bed.alice
        .send(
            &bed.room,
            "m.room.message",
            &json!({
                "msgtype": "m.text", "body": "my answer",
                "m.relates_to": {"m.in_reply_to": {"event_id": c1_event}},
            }),
        )
        .await
        .unwrap();
    let answer = bed.xmpp_message("alice", "carol: my answer").await;
    let reply = answer
        .get_child("reply", "urn:xmpp:reply:0")
        .unwrap_or_else(|| panic!("no reply: {}", to_string(&answer)));
    assert_eq!(reply.attr("id"), Some(c1_room_id.as_str()));
    assert_eq!(reply.attr("to"), Some(format!("{muc}/carol").as_str()));

    // An XMPP reply to alice's message, with a quote as fallback, is a Matrix reply
    // without the quote.
    let quote = "> alice: typo\n";
    let mut fallback = element(
        "fallback",
        "urn:xmpp:fallback:0",
        &[("for", "urn:xmpp:reply:0")],
        None,
    );
    fallback.append_child(element(
        "body",
        "urn:xmpp:fallback:0",
        &[("start", "0"), ("end", &quote.chars().count().to_string())],
        None,
    ));
    let reply = element(
        "reply",
        "urn:xmpp:reply:0",
        &[("to", &format!("{muc}/alice")), ("id", &a1_room_id)],
        None,
    );
    bed.carol
        .send(&groupchat(
            &muc,
            "c5",
            Some(&format!("{quote}agreed")),
            vec![reply, fallback],
        ))
        .await
        .unwrap();
    let replied = bed
        .matrix_event(|e| {
            e["sender"] == carol_ghost.as_str()
                && e["content"]["m.relates_to"]["m.in_reply_to"].is_object()
        })
        .await;
    assert_eq!(
        replied["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        a1.as_str()
    );
    assert_eq!(replied["content"]["body"], "agreed", "{replied}");

    // alice reacts to carol's message, then takes the reaction back.
    let reaction = bed
        .alice
        .send(
            &bed.room,
            "m.reaction",
            &json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": c1_event, "key": "🎉"}}),
        )
        .await
        .unwrap();
    let from_alice = format!("{muc}/alice");
    let reacted = bed
        .carol
        .wait_for(WAIT, |s| {
            s.attr("from") == Some(from_alice.as_str())
                && s.get_child("reactions", "urn:xmpp:reactions:0").is_some()
        })
        .await
        .unwrap();
    let set = reacted
        .get_child("reactions", "urn:xmpp:reactions:0")
        .unwrap();
    assert_eq!(set.attr("id"), Some(c1_room_id.as_str()));
    assert_eq!(
        set.children().map(Element::text).collect::<Vec<_>>(),
        ["🎉"]
    );
    bed.alice.redact(&bed.room, &reaction).await.unwrap();
    let emptied = bed
        .carol
        .wait_for(WAIT, |s| {
            s.attr("from") == Some(from_alice.as_str())
                && s.get_child("reactions", "urn:xmpp:reactions:0")
                    .is_some_and(|r| r.children().next().is_none())
        })
        .await
        .unwrap();
    assert_eq!(
        emptied
            .get_child("reactions", "urn:xmpp:reactions:0")
            .unwrap()
            .attr("id"),
        Some(c1_room_id.as_str())
    );

    // alice deletes her message: a retraction (XEP-0424) of the room's id for it.
    bed.alice.redact(&bed.room, &a1).await.unwrap();
    let retracted = bed
        .carol
        .wait_for(WAIT, |s| {
            s.get_child("retract", "urn:xmpp:message-retract:1")
                .is_some()
        })
        .await
        .unwrap();
    assert_eq!(
        retracted
            .get_child("retract", "urn:xmpp:message-retract:1")
            .unwrap()
            .attr("id"),
        Some(a1_room_id.as_str())
    );

    // carol retracts her first message: it is redacted on Matrix.
    let retract = element(
        "retract",
        "urn:xmpp:message-retract:1",
        &[("id", &c1_room_id)],
        None,
    );
    bed.carol
        .send(&groupchat(
            &muc,
            "c6",
            Some("/me retracted a message"),
            vec![retract],
        ))
        .await
        .unwrap();
    let redaction = bed
        .matrix_event(|e| {
            e["type"] == "m.room.redaction"
                && e["sender"] == carol_ghost.as_str()
                && redacts(e).as_deref() == Some(c1_event.as_str())
        })
        .await;
    assert_eq!(redaction["type"], "m.room.redaction");
}

/// How many messages the bridge has queued for Matrix so far, by its log.
fn messages_queued(bridge: &BridgeProcess) -> usize {
    bridge
        .full_log()
        .lines()
        .filter(|line| line.contains("queuing a remote event") && line.contains("kind=\"message\""))
        .count()
}

#[tokio::test]
async fn bursts_of_1000_cross_both_ways_in_order_through_a_crash() {
    const BURST: usize = 1000;
    let mut bed = bed("burst").await;
    let carol_ghost = bed.ghost_named("carol").await;
    let expected = |prefix: &str| {
        (0..BURST)
            .map(|i| format!("{prefix}{i}"))
            .collect::<Vec<_>>()
    };

    // XMPP to Matrix: the bridge is killed once it has queued everything, part of it
    // still on its way to Matrix.
    for i in 0..BURST {
        bed.carol
            .send_groupchat(&bed.muc, &format!("X{i}"))
            .await
            .unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while messages_queued(&bed.bridge) < BURST {
        assert!(std::time::Instant::now() < deadline, "{}", bed.bridge.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bed.bridge.kill();
    bed.bridge.start(&bed.synapse.url()).await.unwrap();
    let last = format!("X{}", BURST - 1);
    bed.alice
        .wait_for_event(&bed.room, Duration::from_secs(300), |e| {
            e["content"]["body"] == last.as_str()
        })
        .await
        .unwrap_or_else(|error| panic!("{error}\nbridge log:\n{}", bed.bridge.log()));
    assert_eq!(
        bed.alice
            .bodies_from(&bed.room, &carol_ghost, "X")
            .await
            .unwrap(),
        expected("X"),
        "XMPP to Matrix: lost, doubled or out of order"
    );

    // Matrix to XMPP, from a second session of alice, with a crash a fifth of the way.
    let alice = MatrixClient::login(&bed.synapse.url(), "alice", "alice-password")
        .await
        .unwrap();
    let sending = alice.spawn_texts(bed.room.clone(), "M", BURST);
    let from = format!("{}/alice", bed.muc);
    let mut seen: Vec<String> = Vec::new();
    let next = async |bed: &mut Bed| {
        let message = bed
            .carol
            .wait_for(WAIT, |s| {
                s.name() == "message"
                    && s.attr("from") == Some(from.as_str())
                    && s.get_child("body", NS_CLIENT).is_some()
            })
            .await
            .unwrap_or_else(|error| panic!("{error}\nbridge log:\n{}", bed.bridge.log()));
        message.get_child("body", NS_CLIENT).unwrap().text()
    };
    while seen.len() < BURST / 5 {
        seen.push(next(&mut bed).await);
    }
    bed.bridge.kill();
    bed.bridge.start(&bed.synapse.url()).await.unwrap();
    while seen.last().map(String::as_str) != Some(format!("M{}", BURST - 1).as_str()) {
        seen.push(next(&mut bed).await);
    }
    sending.await.unwrap().unwrap();
    let mut unique = seen.clone();
    unique.dedup();
    assert_eq!(
        unique,
        expected("M"),
        "Matrix to XMPP: lost or out of order"
    );
    assert!(
        seen.len() <= BURST + 1,
        "Matrix to XMPP: more than the one message in hand was repeated"
    );
}

/// Serves `body` as `content_type` to every request on a free loopback port; returns
/// the port.
async fn serve_file(body: &'static [u8], content_type: &'static str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(body).await;
        }
    });
    port
}

/// Direct chats both ways, typing (XEP-0085) both ways, and a file linked out of band
/// (XEP-0066) uploaded to Matrix.
#[tokio::test]
async fn direct_chats_typing_and_files() {
    let mut bed = bed("direct").await;
    let carol_ghost = bed.ghost_named("carol").await;
    let puppet = r"alice\3alocalhost@bridge.localhost";

    // XMPP to Matrix: carol writes to alice's puppet; her ghost (by address) opens a
    // direct chat.
    bed.carol.send_chat(puppet, "psst, private").await.unwrap();
    let dm = bed
        .alice
        .wait_for_invite(WAIT)
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", bed.bridge.log()));
    bed.alice.join(dm.as_str()).await.unwrap();
    let carol_address_ghost = "@xmpp_carol=40localhost:localhost";
    bed.alice
        .wait_for_event(&dm, WAIT, |e| {
            e["sender"] == carol_address_ghost && e["content"]["body"] == "psst, private"
        })
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", bed.bridge.log()));
    bed.alice.send_text(&dm, "hi carol").await.unwrap();
    let answer = bed
        .carol
        .wait_for(WAIT, |s| {
            s.attr("type") == Some("chat")
                && s.get_child("body", NS_CLIENT)
                    .is_some_and(|b| b.text() == "hi carol")
        })
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", bed.bridge.log()));
    assert_eq!(
        answer.attr("from"),
        Some(format!("{puppet}/trestle").as_str())
    );

    // Matrix to XMPP: alice invites dave's ghost to a direct chat.
    let mut dave = bed.prosody.client("dave", "dave-password").await.unwrap();
    let dave_ghost = "@xmpp_dave=40localhost:localhost";
    let chat = bed
        .alice
        .create_room(json!({
            "is_direct": true, "invite": [dave_ghost], "preset": "trusted_private_chat",
        }))
        .await
        .unwrap();
    bed.alice
        .wait_for_event(&chat, WAIT, |e| {
            e["type"] == "m.room.member"
                && e["state_key"] == dave_ghost
                && e["content"]["membership"] == "join"
        })
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", bed.bridge.log()));
    bed.alice.send_text(&chat, "hello dave").await.unwrap();
    dave.wait_for_body("hello dave", WAIT).await.unwrap();
    dave.send_chat(puppet, "hello alice").await.unwrap();
    bed.alice
        .wait_for_event(&chat, WAIT, |e| {
            e["sender"] == dave_ghost && e["content"]["body"] == "hello alice"
        })
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", bed.bridge.log()));

    // Typing in the group chat, XMPP to Matrix...
    let composing = groupchat(
        &bed.muc.clone(),
        "t1",
        None,
        vec![element(
            "composing",
            "http://jabber.org/protocol/chatstates",
            &[],
            None,
        )],
    );
    bed.carol.send(&composing).await.unwrap();
    bed.matrix_event(|e| {
        e["type"] == "m.typing"
            && e["content"]["user_ids"]
                .as_array()
                .is_some_and(|ids| ids.iter().any(|id| *id == carol_ghost.as_str()))
    })
    .await;
    // ...and Matrix to XMPP, once alice's puppet is in the room.
    bed.alice.send_text(&bed.room, "here").await.unwrap();
    bed.xmpp_message("alice", "here").await;
    bed.alice.set_typing(&bed.room).await.unwrap();
    let from_alice = format!("{}/alice", bed.muc);
    bed.carol
        .wait_for(WAIT, |s| {
            s.attr("from") == Some(from_alice.as_str())
                && s.get_child("composing", "http://jabber.org/protocol/chatstates")
                    .is_some()
        })
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", bed.bridge.log()));

    // A file linked out of band is uploaded to Matrix under its name.
    let port = serve_file(b"the notes", "text/plain").await;
    let url = format!("http://127.0.0.1:{port}/files/notes.txt");
    let mut oob = element("x", "jabber:x:oob", &[], None);
    oob.append_child(element("url", "jabber:x:oob", &[], Some(&url)));
    let muc = bed.muc.clone();
    bed.carol
        .send(&groupchat(&muc, "f1", Some(&url), vec![oob]))
        .await
        .unwrap();
    let file = bed
        .matrix_event(|e| {
            e["sender"] == carol_ghost.as_str() && e["content"]["msgtype"] == "m.file"
        })
        .await;
    assert_eq!(file["content"]["body"], "notes.txt", "{file}");
    assert!(
        file["content"]["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("mxc://")),
        "{file}"
    );
}

#[tokio::test]
async fn a_puppet_follows_its_users_display_name() {
    let mut bed = bed("rename").await;
    bed.alice.send_text(&bed.room, "as alice").await.unwrap();
    bed.xmpp_message("alice", "as alice").await;
    bed.alice
        .request(
            reqwest::Method::PUT,
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                bed.alice.user_id()
            ),
            Some(&json!({"displayname": "Alice Liddell"})),
        )
        .await
        .unwrap();
    // The room tells of the nick change (status 303), then the puppet speaks under it.
    let from_old = format!("{}/alice", bed.muc);
    let change = bed
        .carol
        .wait_for(WAIT, |s| {
            s.name() == "presence"
                && s.attr("from") == Some(from_old.as_str())
                && s.attr("type") == Some("unavailable")
        })
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", bed.bridge.log()));
    assert!(to_string(&change).contains("303"), "{}", to_string(&change));
    bed.alice
        .send_text(&bed.room, "as Alice Liddell")
        .await
        .unwrap();
    bed.xmpp_message("Alice Liddell", "as Alice Liddell").await;
    // The puppet's new nick is not taken for an XMPP user.
    assert_eq!(
        bed.ghosts_named("Alice Liddell").await,
        Vec::<String>::new()
    );
}

/// A Matrix user with the `relay` permission gets no puppet: the bot says their messages
/// with their name in front. XMPP presence is the ghosts' Matrix presence.
#[tokio::test]
async fn relay_users_speak_through_the_bot_and_presence_is_mirrored_both_ways() {
    let mut bed = bed_with("relay", |config| {
        let entries = "    \"localhost\": \"user\"\n";
        assert!(config.contains(entries), "{config}");
        config.replace(
            entries,
            &format!("{entries}    \"@rita:localhost\": \"relay\"\n"),
        )
    })
    .await;
    let carol_ghost = bed.ghost_named("carol").await;
    let presence_of = async |bed: &Bed, user: &str| {
        bed.alice
            .request(
                reqwest::Method::GET,
                &format!("/_matrix/client/v3/presence/{}/status", urlencode(user)),
                None,
            )
            .await
            .unwrap()
    };

    let rita = bed
        .synapse
        .register_user("rita", "rita-password", false)
        .await
        .unwrap();
    rita.join(bed.room.as_str()).await.unwrap();
    rita.send_text(&bed.room, "hello via the bot")
        .await
        .unwrap();
    bed.xmpp_message("Matrix", "<rita> hello via the bot").await;
    rita.send(
        &bed.room,
        "m.room.message",
        &json!({"msgtype": "m.emote", "body": "waves"}),
    )
    .await
    .unwrap();
    bed.xmpp_message("Matrix", "* rita waves").await;
    // rita never joined the room herself.
    let joined = bed
        .carol
        .wait_for(Duration::from_secs(1), |s| {
            s.name() == "presence"
                && s.attr("from")
                    .is_some_and(|f| f.to_lowercase().contains("/rita"))
        })
        .await;
    assert!(joined.is_err(), "rita got a puppet: {joined:?}");

    // alice's Matrix presence shows on her puppet: away with her status, then back.
    bed.alice.send_text(&bed.room, "here").await.unwrap();
    bed.xmpp_message("alice", "here").await;
    let set_presence = async |bed: &Bed, presence: &str, status: &str| {
        let path = format!(
            "/_matrix/client/v3/presence/{}/status",
            urlencode(bed.alice.user_id().as_str())
        );
        let body = json!({ "presence": presence, "status_msg": status });
        bed.alice
            .request(reqwest::Method::PUT, &path, Some(&body))
            .await
            .unwrap();
    };
    let occupant = format!("{}/alice", bed.muc);
    set_presence(&bed, "unavailable", "in a meeting").await;
    let away = bed
        .carol
        .wait_for(WAIT, |s| {
            s.name() == "presence"
                && s.attr("from") == Some(occupant.as_str())
                && s.get_child("show", NS_CLIENT)
                    .is_some_and(|show| show.text() == "away")
        })
        .await
        .unwrap_or_else(|error| panic!("{error}\nbridge log:\n{}", bed.bridge.log()));
    assert_eq!(
        away.get_child("status", NS_CLIENT).map(Element::text),
        Some("in a meeting".to_owned()),
        "{}",
        to_string(&away)
    );
    set_presence(&bed, "online", "").await;
    let back = bed
        .carol
        .wait_for(WAIT, |s| {
            s.name() == "presence"
                && s.attr("from") == Some(occupant.as_str())
                && s.attr("type").is_none()
                && s.get_child("show", NS_CLIENT).is_none()
        })
        .await
        .unwrap_or_else(|error| panic!("{error}\nbridge log:\n{}", bed.bridge.log()));
    assert!(
        back.get_child("status", NS_CLIENT).is_none(),
        "{}",
        to_string(&back)
    );

    // carol is online; then away, with a status.
    let seen = presence_of(&bed, &carol_ghost).await;
    assert_eq!(seen["presence"], "online", "{seen}");
    let away = Element::builder("presence", NS_CLIENT)
        .attr(name("to"), format!("{}/carol", bed.muc))
        .append(Element::builder("show", NS_CLIENT).append("away").build())
        .append(
            Element::builder("status", NS_CLIENT)
                .append("at lunch")
                .build(),
        )
        .build();
    bed.carol.send(&away).await.unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let seen = presence_of(&bed, &carol_ghost).await;
        if seen["presence"] == "unavailable" && seen["status_msg"] == "at lunch" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{seen}\n{}",
            bed.bridge.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for a notice from the bot in `room` containing `text`.
async fn bot_notice(user: &MatrixClient, bridge: &BridgeProcess, room: &OwnedRoomId, text: &str) {
    user.wait_for_notice(room, "@xmppbot:localhost", text, WAIT)
        .await
        .unwrap_or_else(|error| {
            panic!("no notice {text:?}: {error}\nbridge log:\n{}", bridge.log())
        });
}

/// Waits until a ghost has joined `room`.
async fn a_ghost_joins(user: &MatrixClient, bridge: &BridgeProcess, room: &OwnedRoomId) {
    user.wait_for_event(room, WAIT, |e| {
        e["type"] == "m.room.member"
            && e["content"]["membership"] == "join"
            && e["state_key"]
                .as_str()
                .is_some_and(|user| user.starts_with("@xmpp_"))
    })
    .await
    .unwrap_or_else(|error| panic!("no ghost joined: {error}\nbridge log:\n{}", bridge.log()));
}

#[tokio::test]
async fn rooms_are_linked_by_their_admins_and_by_the_config_and_unlinked() {
    let prosody = Prosody::start().await.unwrap();
    let lounge = format!("lounge@{}", Prosody::MUC_DOMAIN);
    let mapped = format!("mapped@{}", Prosody::MUC_DOMAIN);
    let mut carol = prosody.client("carol", "carol-password").await.unwrap();
    carol.join_muc(&lounge, "carol").await.unwrap();
    carol.join_muc(&mapped, "carol").await.unwrap();
    let (mut bridge, registration) = xmpp_bridge_with(&prosody, None, |config| {
        let none = "  mappings: []\n";
        assert!(config.contains(none), "{config}");
        config.replace(
            none,
            &format!("  mappings:\n    - room: \"#mapped:localhost\"\n      muc: \"{mapped}\"\n"),
        )
    })
    .unwrap();
    let synapse = Synapse::start(&[registration]).await.unwrap();
    let alice = synapse
        .register_user("alice", "alice-password", false)
        .await
        .unwrap();
    let bob = synapse
        .register_user("bob", "bob-password", false)
        .await
        .unwrap();
    let bot = "@xmppbot:localhost";

    // The operator's room exists before the bridge starts, with the bot invited: the
    // bridge links it to its group chat when it starts.
    let mapped_room = alice
        .create_room(json!({"room_alias_name": "mapped", "invite": [bot]}))
        .await
        .unwrap();
    bridge.start(&synapse.url()).await.unwrap();
    a_ghost_joins(&alice, &bridge, &mapped_room).await;
    carol
        .send_groupchat(&mapped, "to the mapped room")
        .await
        .unwrap();
    alice
        .wait_for_text(&mapped_room, "to the mapped room", WAIT)
        .await
        .unwrap_or_else(|error| panic!("{error}\nbridge log:\n{}", bridge.log()));

    // alice's own room: the bot comes when invited, and says how to link.
    let room = alice
        .create_room(json!({"preset": "public_chat", "invite": [bot]}))
        .await
        .unwrap();
    bot_notice(&alice, &bridge, &room, "link <address>").await;
    bob.join(room.as_str()).await.unwrap();
    let link = format!("!xmpp link {lounge}");
    bob.send_text(&room, &link).await.unwrap();
    bot_notice(&alice, &bridge, &room, "Only a room admin").await;
    alice.send_text(&room, "!xmpp link lounge").await.unwrap();
    bot_notice(&alice, &bridge, &room, "is not a group chat address").await;
    // The group chat's owners agree by making alice's XMPP address an admin of it.
    alice.send_text(&room, &link).await.unwrap();
    bot_notice(&alice, &bridge, &room, "must first make your XMPP address").await;
    for muc in [&lounge, &mapped] {
        carol
            .iq(
                "set",
                muc,
                affiliation_item(r"alice\3alocalhost@bridge.localhost", "admin"),
            )
            .await
            .unwrap();
    }
    alice
        .send_text(&room, &format!("!xmpp link {mapped}"))
        .await
        .unwrap();
    bot_notice(&alice, &bridge, &room, "bridged to another room").await;
    alice.send_text(&room, &link).await.unwrap();
    bot_notice(&alice, &bridge, &room, "now bridged to").await;

    // Linked: both ways, carol's ghost in the room.
    a_ghost_joins(&alice, &bridge, &room).await;
    carol.send_groupchat(&lounge, "hello linked").await.unwrap();
    alice
        .wait_for_text(&room, "hello linked", WAIT)
        .await
        .unwrap_or_else(|error| panic!("{error}\nbridge log:\n{}", bridge.log()));
    alice.send_text(&room, "hello lounge").await.unwrap();
    let from_alice = format!("{lounge}/alice");
    carol
        .wait_for(WAIT, |s| {
            s.attr("from") == Some(from_alice.as_str())
                && s.get_child("body", NS_CLIENT)
                    .is_some_and(|b| b.text() == "hello lounge")
        })
        .await
        .unwrap_or_else(|error| panic!("{error}\nbridge log:\n{}", bridge.log()));

    // Only admins unlink, and not what the config maps.
    bob.send_text(&room, "!xmpp unlink").await.unwrap();
    bot_notice(&alice, &bridge, &room, "Only a room admin").await;
    alice.send_text(&mapped_room, "!xmpp unlink").await.unwrap();
    bot_notice(
        &alice,
        &bridge,
        &mapped_room,
        "configuration maps this room",
    )
    .await;

    // Unlinked: the room is told, the bot and the puppet leave the group chat, the bot and
    // the ghost leave the room, and nothing crosses any more.
    alice.send_text(&room, "!xmpp unlink").await.unwrap();
    bot_notice(&alice, &bridge, &room, "no longer bridged").await;
    for nick in ["alice", "Matrix"] {
        let occupant = format!("{lounge}/{nick}");
        carol
            .wait_for(WAIT, |s| {
                s.name() == "presence"
                    && s.attr("type") == Some("unavailable")
                    && s.attr("from") == Some(occupant.as_str())
            })
            .await
            .unwrap_or_else(|error| panic!("{nick}: {error}\nbridge log:\n{}", bridge.log()));
    }
    alice
        .wait_for_event(&room, WAIT, |e| {
            e["type"] == "m.room.member"
                && e["state_key"] == bot
                && e["content"]["membership"] == "leave"
        })
        .await
        .unwrap();
    let members = alice.joined_members(&room).await.unwrap();
    let joined: Vec<&String> = members["joined"].as_object().unwrap().keys().collect();
    assert_eq!(joined, ["@alice:localhost", "@bob:localhost"], "{members}");
    carol.send_groupchat(&lounge, "after unlink").await.unwrap();
    alice
        .send_text(&room, "after unlink, from matrix")
        .await
        .unwrap();
    // The mapped room still works, and is the marker that carol's message came and went.
    carol.send_groupchat(&mapped, "still mapped").await.unwrap();
    alice
        .wait_for_text(&mapped_room, "still mapped", WAIT)
        .await
        .unwrap();
    let crossed = carol
        .wait_for_body("after unlink, from matrix", Duration::from_secs(2))
        .await;
    assert!(crossed.is_err(), "{crossed:?}");

    // Linked again: it starts afresh, without what was said while it was not bridged.
    alice.invite(&room, bot).await.unwrap();
    bot_notice(&alice, &bridge, &room, "link <address>").await;
    alice.send_text(&room, &link).await.unwrap();
    bot_notice(&alice, &bridge, &room, "now bridged to").await;
    carol.send_groupchat(&lounge, "linked again").await.unwrap();
    alice
        .wait_for_text(&room, "linked again", WAIT)
        .await
        .unwrap_or_else(|error| panic!("{error}\nbridge log:\n{}", bridge.log()));
    let events = alice.room_events(&room).await.unwrap();
    assert!(
        !events
            .iter()
            .any(|e| e["content"]["body"] == "after unlink"),
        "{events:?}"
    );
}

#[tokio::test]
async fn displayed_markers_and_read_receipts_cross_both_ways() {
    let mut bed = bed("markers").await;
    let carol_ghost = bed.ghost_named("carol").await;
    const MARKERS: &str = "urn:xmpp:chat-markers:0";

    // alice speaks first, so that her puppet is in the room; her message is markable.
    let hello = bed.alice.send_text(&bed.room, "hello carol").await.unwrap();
    let said = bed.xmpp_message("alice", "hello carol").await;
    assert!(said.has_child("markable", MARKERS), "{}", to_string(&said));
    let hello_in_room = room_id_of(&said, &bed.muc);

    // XMPP to Matrix: carol's client marks alice's message displayed (by the room's
    // stanza id); her ghost's read receipt moves there.
    let marker = element("displayed", MARKERS, &[("id", &hello_in_room)], None);
    let muc = bed.muc.clone();
    bed.carol
        .send(&groupchat(&muc, "m1", None, vec![marker]))
        .await
        .unwrap();
    bed.matrix_event(|e| {
        e["type"] == "m.receipt"
            && e["content"][hello.as_str()]["m.read"][carol_ghost.as_str()].is_object()
    })
    .await;

    // Matrix to XMPP: alice reads carol's message; her puppet sends a displayed marker
    // naming the room's stanza id of it.
    bed.carol
        .send(&groupchat(&muc, "c1", Some("read me"), vec![]))
        .await
        .unwrap();
    let echo = bed.xmpp_message("carol", "read me").await;
    let read_me_in_room = room_id_of(&echo, &bed.muc);
    let read_me = bed
        .matrix_event(|e| e["content"]["body"] == "read me")
        .await;
    let event_id = read_me["event_id"].as_str().unwrap().to_owned();
    bed.alice
        .request(
            reqwest::Method::POST,
            &format!(
                "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
                bed.room,
                urlencode(&event_id)
            ),
            Some(&json!({})),
        )
        .await
        .unwrap();
    let from_alice = format!("{}/alice", bed.muc);
    let displayed = bed
        .carol
        .wait_for(WAIT, |s| {
            s.attr("from") == Some(from_alice.as_str()) && s.has_child("displayed", MARKERS)
        })
        .await
        .unwrap_or_else(|error| panic!("{error}\nbridge log:\n{}", bed.bridge.log()));
    let marked = displayed.get_child("displayed", MARKERS).unwrap();
    assert_eq!(marked.attr("id"), Some(read_me_in_room.as_str()));
}

#[tokio::test]
async fn a_matrix_topic_change_sets_the_subject_where_the_room_allows() {
    // alice links as a bridge admin, so her puppet gets no rank in the group chat.
    let mut bed = bed_with("subject", |c| with_admin(c, "@alice:localhost")).await;
    bed.link_own_room("owned").await;
    let set_topic = async |bed: &Bed, topic: &str| {
        bed.alice
            .request(
                reqwest::Method::PUT,
                &format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", bed.room),
                Some(&json!({ "topic": topic })),
            )
            .await
            .unwrap();
    };
    bed.alice.send_text(&bed.room, "hi").await.unwrap();
    bed.xmpp_message("alice", "hi").await;

    // Prosody lets moderators alone change the subject: the refusal comes back.
    set_topic(&bed, "not allowed").await;
    bed.matrix_event(|e| {
        e["content"]["msgtype"] == "m.notice"
            && e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.contains("did not take"))
    })
    .await;

    // carol, the room's owner, makes alice's puppet a moderator; then it may.
    bed.make_moderator("alice").await;
    let muc = bed.muc.clone();
    set_topic(&bed, "a moderated topic").await;
    let from_alice = format!("{muc}/alice");
    bed.carol
        .wait_for(WAIT, |s| {
            s.attr("from") == Some(from_alice.as_str())
                && s.get_child("subject", NS_CLIENT)
                    .is_some_and(|subject| subject.text() == "a moderated topic")
        })
        .await
        .unwrap_or_else(|error| panic!("{error}\nbridge log:\n{}", bed.bridge.log()));
}

#[tokio::test]
async fn puppets_say_what_they_understand() {
    let mut bed = bed("caps").await;
    const DISCO: &str = "http://jabber.org/protocol/disco#info";
    let puppet = r"alice\3alocalhost@bridge.localhost";
    bed.alice.send_text(&bed.room, "hi").await.unwrap();
    bed.xmpp_message("alice", "hi").await;

    // The puppet's presence in the room carries its capabilities (XEP-0115)...
    let occupant = format!("{}/alice", bed.muc);
    let presence = bed
        .carol
        .wait_for(WAIT, |s| {
            s.name() == "presence" && s.attr("from") == Some(occupant.as_str())
        })
        .await
        .unwrap();
    let caps = presence
        .get_child("c", "http://jabber.org/protocol/caps")
        .unwrap_or_else(|| panic!("no caps in {}", to_string(&presence)));
    assert_eq!(caps.attr("hash"), Some("sha-1"));
    let node = format!(
        "{}#{}",
        caps.attr("node").unwrap(),
        caps.attr("ver").unwrap()
    );

    // ...which service discovery at that node (and without one) spells out.
    for node in [Some(node.as_str()), None] {
        let mut query = Element::builder("query", DISCO);
        if let Some(node) = node {
            query = query.attr(name("node"), node);
        }
        let info = bed.carol.iq("get", puppet, query.build()).await.unwrap();
        let info = info.get_child("query", DISCO).unwrap();
        assert_eq!(info.attr("node"), node);
        let features: Vec<&str> = info
            .children()
            .filter(|c| c.name() == "feature")
            .filter_map(|c| c.attr("var"))
            .collect();
        for feature in [
            "urn:xmpp:chat-markers:0",
            "urn:xmpp:reactions:0",
            "urn:xmpp:message-correct:0",
            "urn:xmpp:reply:0",
        ] {
            assert!(features.contains(&feature), "{feature} not in {features:?}");
        }
        let identity = info.get_child("identity", DISCO).unwrap();
        assert_eq!(identity.attr("category"), Some("client"));
    }
    // A node the puppet never advertised is not one it has.
    let unknown = Element::builder("query", DISCO)
        .attr(name("node"), "urn:trestle:bridge-xmpp#nonsense")
        .build();
    let refused = bed.carol.iq("get", puppet, unknown).await;
    assert!(refused.is_err(), "{refused:?}");
}

#[tokio::test]
async fn an_occupants_avatar_is_their_ghosts_from_a_vcard_or_a_user_avatar() {
    use base64::Engine as _;
    let mut bed = bed("avatars").await;
    let carol_ghost = bed.ghost_named("carol").await;
    // A tiny PNG, as carol's vCard photo (XEP-0054).
    let photo: Vec<u8> = b"\x89PNG\r\n\x1a\n a picture of carol".to_vec();
    let binval = base64::engine::general_purpose::STANDARD.encode(&photo);
    let vcard = element("vCard", "vcard-temp", &[], None);
    let mut vcard = vcard;
    let mut photo_element = element("PHOTO", "vcard-temp", &[], None);
    photo_element.append_child(element("TYPE", "vcard-temp", &[], Some("image/png")));
    photo_element.append_child(element("BINVAL", "vcard-temp", &[], Some(&binval)));
    vcard.append_child(photo_element);
    let set = Element::builder("iq", NS_CLIENT)
        .attr(name("type"), "set")
        .attr(name("id"), "vcard-1")
        .append(vcard)
        .build();
    bed.carol.send(&set).await.unwrap();
    bed.carol
        .wait_for(WAIT, |s| s.attr("id") == Some("vcard-1"))
        .await
        .unwrap();

    // Her client says the photo changed (XEP-0153); the bridge fetches it through the room.
    let mut update = element("x", "vcard-temp:x:update", &[], None);
    update.append_child(element(
        "photo",
        "vcard-temp:x:update",
        &[],
        Some("0123456789abcdef0123456789abcdef01234567"),
    ));
    let presence = Element::builder("presence", NS_CLIENT)
        .attr(name("to"), format!("{}/carol", bed.muc))
        .append(update)
        .build();
    bed.carol.send(&presence).await.unwrap();
    let (bytes, kind) = bed.avatar_of(&carol_ghost).await;
    assert_eq!(bytes, photo);
    assert_eq!(kind, "image/png");

    // dave's client publishes a user avatar (XEP-0084) and says nothing else: the server
    // puts its hash in his presence and answers for his vCard from it (XEP-0398).
    let mut dave = bed.prosody.client("dave", "dave-password").await.unwrap();
    let picture: Vec<u8> = b"\x89PNG\r\n\x1a\n a picture of dave".to_vec();
    let hash = "fedcba9876543210fedcba9876543210fedcba98";
    let publish = |node: &str, payload: Element| {
        let mut item = element(
            "item",
            "http://jabber.org/protocol/pubsub",
            &[("id", hash)],
            None,
        );
        item.append_child(payload);
        let mut publish = element(
            "publish",
            "http://jabber.org/protocol/pubsub",
            &[("node", node)],
            None,
        );
        publish.append_child(item);
        // Readable by anyone, as clients publish avatars.
        let mut options = element(
            "publish-options",
            "http://jabber.org/protocol/pubsub",
            &[],
            None,
        );
        let mut form = element("x", "jabber:x:data", &[("type", "submit")], None);
        for (var, value) in [
            (
                "FORM_TYPE",
                "http://jabber.org/protocol/pubsub#publish-options",
            ),
            ("pubsub#access_model", "open"),
        ] {
            let mut field = element("field", "jabber:x:data", &[("var", var)], None);
            field.append_child(element("value", "jabber:x:data", &[], Some(value)));
            form.append_child(field);
        }
        options.append_child(form);
        let mut pubsub = element("pubsub", "http://jabber.org/protocol/pubsub", &[], None);
        pubsub.append_child(publish);
        pubsub.append_child(options);
        pubsub
    };
    let data = element(
        "data",
        "urn:xmpp:avatar:data",
        &[],
        Some(&base64::engine::general_purpose::STANDARD.encode(&picture)),
    );
    let dave_jid = "dave@localhost";
    dave.iq("set", dave_jid, publish("urn:xmpp:avatar:data", data))
        .await
        .unwrap();
    let mut metadata = element("metadata", "urn:xmpp:avatar:metadata", &[], None);
    let size = picture.len().to_string();
    metadata.append_child(element(
        "info",
        "urn:xmpp:avatar:metadata",
        &[("bytes", &size), ("id", hash), ("type", "image/png")],
        None,
    ));
    dave.iq(
        "set",
        dave_jid,
        publish("urn:xmpp:avatar:metadata", metadata),
    )
    .await
    .unwrap();
    dave.join_muc(&bed.muc, "dave").await.unwrap();
    let joined = bed
        .matrix_event(|e| {
            e["type"] == "m.room.member"
                && e["content"]["displayname"] == "dave"
                && e["content"]["membership"] == "join"
        })
        .await;
    let dave_ghost = joined["state_key"].as_str().unwrap().to_owned();
    let (bytes, kind) = bed.avatar_of(&dave_ghost).await;
    assert_eq!(bytes, picture);
    assert_eq!(kind, "image/png");
}

#[tokio::test]
async fn moderators_take_back_others_messages_both_ways() {
    // alice links as a bridge admin, so her puppet gets no rank in the group chat.
    let mut bed = bed_with("moderation", |c| with_admin(c, "@alice:localhost")).await;
    // alice's own room, where she may redact others' messages; dave is another occupant.
    bed.link_own_room("moderated").await;
    let owned = bed.muc.clone();
    let mut dave = bed.prosody.client("dave", "dave-password").await.unwrap();
    dave.join_muc(&owned, "dave").await.unwrap();

    // XMPP to Matrix: carol, an owner, moderates dave's message away; the bot redacts it.
    dave.send_groupchat(&owned, "spam from dave").await.unwrap();
    let spam = bed
        .matrix_event(|e| e["content"]["body"] == "spam from dave")
        .await;
    let echo = bed
        .carol
        .wait_for_body("spam from dave", WAIT)
        .await
        .unwrap();
    let spam_in_room = room_id_of(&echo, &owned);
    let apply_to = element(
        "apply-to",
        "urn:xmpp:fasten:0",
        &[("id", &spam_in_room)],
        None,
    );
    let mut apply_to = apply_to;
    let mut moderate = element("moderate", "urn:xmpp:message-moderate:0", &[], None);
    moderate.append_child(element("retract", "urn:xmpp:message-retract:0", &[], None));
    moderate.append_child(element(
        "reason",
        "urn:xmpp:message-moderate:0",
        &[],
        Some("spam"),
    ));
    apply_to.append_child(moderate);
    bed.carol.iq("set", &owned, apply_to).await.unwrap();
    let spam_id = spam["event_id"].as_str().unwrap().to_owned();
    bed.matrix_event(|e| e["type"] == "m.room.redaction" && e["redacts"] == spam_id.as_str())
        .await;

    // Matrix to XMPP: dave speaks again; alice, a Matrix admin there, redacts it. Her
    // puppet is no moderator yet: the room refuses, and she is told.
    dave.send_groupchat(&owned, "more spam").await.unwrap();
    let more = bed
        .matrix_event(|e| e["content"]["body"] == "more spam")
        .await;
    let more_id: ruma::OwnedEventId = more["event_id"].as_str().unwrap().try_into().unwrap();
    bed.alice.send_text(&bed.room, "hello").await.unwrap();
    bed.xmpp_message("alice", "hello").await;
    bed.alice.redact(&bed.room, &more_id).await.unwrap();
    bed.matrix_event(|e| {
        e["content"]["msgtype"] == "m.notice"
            && e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.contains("moderator"))
    })
    .await;
    // carol makes alice's puppet a moderator; the next redaction is a moderation.
    bed.make_moderator("alice").await;
    dave.send_groupchat(&owned, "even more spam").await.unwrap();
    let even_more = bed
        .matrix_event(|e| e["content"]["body"] == "even more spam")
        .await;
    let echo = bed
        .carol
        .wait_for_body("even more spam", WAIT)
        .await
        .unwrap();
    let even_more_in_room = room_id_of(&echo, &owned);
    let even_more_id: ruma::OwnedEventId =
        even_more["event_id"].as_str().unwrap().try_into().unwrap();
    bed.alice.redact(&bed.room, &even_more_id).await.unwrap();
    let announced = bed
        .carol
        .wait_for(WAIT, |s| {
            s.attr("from") == Some(owned.as_str())
                && s.get_child("apply-to", "urn:xmpp:fasten:0")
                    .is_some_and(|a| a.attr("id") == Some(even_more_in_room.as_str()))
        })
        .await
        .unwrap_or_else(|error| panic!("{error}\nbridge log:\n{}", bed.bridge.log()));
    let by = announced
        .get_child("apply-to", "urn:xmpp:fasten:0")
        .unwrap()
        .get_child("moderated", "urn:xmpp:message-moderate:0")
        .and_then(|m| m.attr("by"));
    assert_eq!(by, Some(format!("{owned}/alice").as_str()));
}

#[tokio::test]
async fn a_room_that_forgot_the_bot_is_joined_again_without_loss() {
    let mut bed = bed_with("selfping", |config| {
        let every = "  self_ping_seconds: 300\n";
        assert!(config.contains(every), "{config}");
        config.replace(every, "  self_ping_seconds: 2\n")
    })
    .await;
    bed.carol.send_groupchat(&bed.muc, "before").await.unwrap();
    bed.matrix_event(|e| e["content"]["body"] == "before").await;

    // The room loses the bot without a word (as a room restarted inside a running server
    // would); what is said then reaches nobody on the bridge's side...
    bed.prosody.forget_occupant(&bed.muc, "Matrix").unwrap();
    bed.carol
        .send_groupchat(&bed.muc, "while forgotten")
        .await
        .unwrap();
    // ...until the bot's self-ping (XEP-0410) finds it out, joins again, and the room's
    // history since the last message seen brings the message over.
    bed.matrix_event(|e| e["content"]["body"] == "while forgotten")
        .await;
    bed.carol.send_groupchat(&bed.muc, "after").await.unwrap();
    bed.matrix_event(|e| e["content"]["body"] == "after").await;
    assert!(
        bed.bridge.log().contains("no longer has the bot"),
        "{}",
        bed.bridge.log()
    );
}
