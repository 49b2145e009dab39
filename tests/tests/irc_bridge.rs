//! bridge-irc end to end: the binary as an operator runs it, a real Synapse, real IRC
//! servers (InspIRCd with Atheme, and ngircd, which offers no IRCv3), real clients on
//! both sides.

use std::time::Duration;

use ruma::OwnedRoomId;
use serde_json::{Value, json};
use trestle_tests::bridge_process::BridgeProcess;
use trestle_tests::irc::{IrcClient, Line};
use trestle_tests::irc_bridge::{NETWORK, irc_bridge_for, irc_bridge_with};
use trestle_tests::matrix::{MatrixClient, urlencode};
use trestle_tests::{InspIrcd, Ngircd, Synapse};

const WAIT: Duration = Duration::from_secs(30);
/// The bridge's bot.
const BOT: &str = "@ircbot:localhost";

/// Synapse with the bridge registered, the bridge running against the IRC server on
/// `irc_port`, a Matrix user `alice` in the portal of `channel`, and an IRC user `carol`
/// in `channel`.
struct Bed {
    synapse: Synapse,
    bridge: BridgeProcess,
    alice: MatrixClient,
    carol: IrcClient,
    room: OwnedRoomId,
    channel: String,
}

/// A channel name no other test uses on a shared IRC server.
fn unique_channel(what: &str) -> String {
    format!("#{what}-{}", std::process::id())
}

async fn bed(irc_port: u16, channel: &str, carol_nick: &str) -> Bed {
    bed_on(irc_port, channel, carol_nick, None).await
}

/// The bed with the bridge's database at `database_url` (SQLite when `None`).
async fn bed_on(
    irc_port: u16,
    channel: &str,
    carol_nick: &str,
    database_url: Option<String>,
) -> Bed {
    bed_with(irc_port, channel, carol_nick, database_url, str::to_owned).await
}

/// The bed with the generated config passed through `edit`.
async fn bed_with(
    irc_port: u16,
    channel: &str,
    carol_nick: &str,
    database_url: Option<String>,
    edit: impl FnOnce(&str) -> String,
) -> Bed {
    let mut carol = IrcClient::connect(irc_port, carol_nick).await.unwrap();
    carol.join(channel).await.unwrap();
    let (mut bridge, registration) = irc_bridge_with(irc_port, database_url, edit).unwrap();
    let synapse = Synapse::start(&[registration]).await.unwrap();
    bridge.start(&synapse.url()).await.unwrap();
    let alice = synapse
        .register_user("alice", "alice-password", false)
        .await
        .unwrap();
    // The alias does not exist until the homeserver asks the bridge: a dynamic portal,
    // and the bridge's bot joins the channel to answer.
    let room = alice
        .join(&format!("#irc_testnet_{channel}:localhost"))
        .await
        .unwrap_or_else(|error| panic!("{error}\nbridge log:\n{}", bridge.log()));
    Bed {
        synapse,
        bridge,
        alice,
        carol,
        room,
        channel: channel.to_owned(),
    }
}

impl Bed {
    /// Waits for a Matrix event in the portal from `sender` that satisfies `matches`.
    async fn matrix_event(&self, sender: &str, matches: impl Fn(&Value) -> bool) -> Value {
        self.alice
            .wait_for_event(&self.room, WAIT, |event| {
                event["sender"] == sender && matches(event)
            })
            .await
            .unwrap_or_else(|error| panic!("{error}\nbridge log:\n{}", self.bridge.log()))
    }

    /// Waits for a line in the channel from `nick` with `command`.
    async fn irc_line(&mut self, command: &str, nick: &str) -> Line {
        let channel = self.channel.to_lowercase();
        let result = self
            .carol
            .wait_for(WAIT, |line| {
                line.command == command
                    && line.source_nick() == Some(nick)
                    && line
                        .params
                        .first()
                        .is_some_and(|t| t.to_lowercase() == channel)
            })
            .await;
        result.unwrap_or_else(|error| panic!("{error}\nbridge log:\n{}", self.bridge.log()))
    }

    /// Waits for the bot to say something containing `text` in `room`.
    async fn bot_answer(&self, room: &ruma::RoomId, text: &str) -> Value {
        self.alice
            .wait_for_event(room, WAIT, |e| {
                e["sender"] == BOT
                    && e["content"]["body"]
                        .as_str()
                        .is_some_and(|b| b.contains(text))
            })
            .await
            .unwrap_or_else(|error| panic!("{text}: {error}\n{}", self.bridge.log()))
    }

    /// A direct chat of alice's with the bridge's bot, once the bot has greeted her.
    async fn management_room(&self) -> OwnedRoomId {
        let room = self
            .alice
            .create_room(
                json!({ "is_direct": true, "invite": [BOT], "preset": "trusted_private_chat" }),
            )
            .await
            .unwrap();
        self.bot_answer(&room, "Say `help`").await;
        room
    }

    async fn send_html(&self, body: &str, html: &str) {
        self.alice
            .send(
                &self.room,
                "m.room.message",
                &json!({
                    "msgtype": "m.text", "body": body,
                    "format": "org.matrix.custom.html", "formatted_body": html,
                }),
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_channel_portal_carries_messages_both_ways_on_inspircd() {
    let irc = InspIrcd::start().await.unwrap();
    let channel = unique_channel("portal");
    let mut bed = bed(irc.port(), &channel, "carol").await;
    let carol_ghost = "@irc_testnet_carol:localhost";

    // The ghost of carol, already in the channel, is in the room with her nick.
    let members = bed.alice.joined_members(&bed.room).await.unwrap();
    assert_eq!(
        members["joined"][carol_ghost]["display_name"], "carol",
        "{members}"
    );

    // Matrix to IRC: alice's puppet joins under her name and speaks.
    bed.alice
        .send_text(&bed.room, "hello from matrix")
        .await
        .unwrap();
    bed.irc_line("JOIN", "alice[m]").await;
    let said = bed.irc_line("PRIVMSG", "alice[m]").await;
    assert_eq!(said.text(), "hello from matrix");

    // HTML becomes mIRC formatting; an emote an ACTION; a notice a NOTICE.
    bed.send_html("bold and plain", "<b>bold</b> and plain")
        .await;
    let said = bed.irc_line("PRIVMSG", "alice[m]").await;
    assert_eq!(said.text(), "\x02bold\x02 and plain");
    bed.alice
        .send(
            &bed.room,
            "m.room.message",
            &json!({"msgtype": "m.emote", "body": "waves"}),
        )
        .await
        .unwrap();
    assert_eq!(
        bed.irc_line("PRIVMSG", "alice[m]").await.text(),
        "\x01ACTION waves\x01"
    );
    bed.alice
        .send(
            &bed.room,
            "m.room.message",
            &json!({"msgtype": "m.notice", "body": "a notice"}),
        )
        .await
        .unwrap();
    assert_eq!(bed.irc_line("NOTICE", "alice[m]").await.text(), "a notice");

    // Line breaks are new PRIVMSGs, never new commands: the injected QUIT is text.
    bed.alice
        .send_text(
            &bed.room,
            "first\r\nQUIT :injected\rJOIN #elsewhere\n\0last",
        )
        .await
        .unwrap();
    for expected in ["first", "QUIT :injected", "JOIN #elsewhere", "last"] {
        assert_eq!(bed.irc_line("PRIVMSG", "alice[m]").await.text(), expected);
    }

    // A file goes as a link the bridge serves, signed for that file only.
    let mxc = bed
        .alice
        .upload(b"the notes".to_vec(), "text/plain", "notes.txt")
        .await
        .unwrap();
    bed.alice
        .send(
            &bed.room,
            "m.room.message",
            &json!({"msgtype": "m.file", "body": "notes.txt", "url": mxc}),
        )
        .await
        .unwrap();
    let said = bed.irc_line("PRIVMSG", "alice[m]").await;
    let link = said
        .text()
        .strip_prefix("notes.txt ")
        .unwrap_or_else(|| panic!("{said:?}"))
        .to_owned();
    assert!(
        link.contains("/media/localhost/") && link.contains("/notes.txt?sig="),
        "{link}"
    );
    let fetched = reqwest::get(&link).await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(
        fetched.headers()["content-security-policy"],
        "sandbox; default-src 'none'"
    );
    assert_eq!(fetched.bytes().await.unwrap().as_ref(), b"the notes");
    let forged = link.replace("sig=", "sig=0");
    assert_eq!(reqwest::get(&forged).await.unwrap().status(), 404);

    // A message longer than max_lines (5): its start, then a link to the whole text.
    let long: Vec<String> = (1..=8).map(|i| format!("line {i}")).collect();
    bed.alice
        .send_text(&bed.room, &long.join("\n"))
        .await
        .unwrap();
    for expected in &long[..4] {
        assert_eq!(bed.irc_line("PRIVMSG", "alice[m]").await.text(), expected);
    }
    let note = bed.irc_line("PRIVMSG", "alice[m]").await;
    let link = note
        .text()
        .strip_prefix("(… 4 more lines: ")
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{note:?}"))
        .to_owned();
    let whole = reqwest::get(&link).await.unwrap().text().await.unwrap();
    assert_eq!(whole, long.join("\n"));

    // IRC to Matrix: text with formatting, an action, a notice.
    bed.carol
        .privmsg(&channel, "\x02hello\x02 from irc")
        .await
        .unwrap();
    let c1 = bed
        .matrix_event(carol_ghost, |e| e["content"]["body"] == "hello from irc")
        .await;
    assert_eq!(c1["content"]["msgtype"], "m.text");
    assert_eq!(c1["content"]["formatted_body"], "<b>hello</b> from irc");
    bed.carol
        .privmsg(&channel, "\x01ACTION dances\x01")
        .await
        .unwrap();
    let action = bed
        .matrix_event(carol_ghost, |e| e["content"]["body"] == "dances")
        .await;
    assert_eq!(action["content"]["msgtype"], "m.emote");
    bed.carol
        .send(&format!("NOTICE {channel} :psst"))
        .await
        .unwrap();
    let notice = bed
        .matrix_event(carol_ghost, |e| e["content"]["body"] == "psst")
        .await;
    assert_eq!(notice["content"]["msgtype"], "m.notice");

    // A reply from Matrix names the one replied to; an edit is one short line.
    let c1_id = c1["event_id"].as_str().unwrap();
    bed.alice
        .send(
            &bed.room,
            "m.room.message",
            &json!({
                "msgtype": "m.text",
                "body": "> <@irc_testnet_carol:localhost> hello from irc\n\nwelcome",
                "m.relates_to": { "m.in_reply_to": { "event_id": c1_id } },
            }),
        )
        .await
        .unwrap();
    assert_eq!(
        bed.irc_line("PRIVMSG", "alice[m]").await.text(),
        "carol: welcome"
    );
    let typo = bed.alice.send_text(&bed.room, "teh typo").await.unwrap();
    bed.irc_line("PRIVMSG", "alice[m]").await;
    bed.alice
        .send(
            &bed.room,
            "m.room.message",
            &json!({
                "msgtype": "m.text", "body": "* the typo",
                "m.new_content": { "msgtype": "m.text", "body": "the typo" },
                "m.relates_to": { "rel_type": "m.replace", "event_id": typo },
            }),
        )
        .await
        .unwrap();
    assert_eq!(
        bed.irc_line("PRIVMSG", "alice[m]").await.text(),
        "* the typo"
    );

    // Joins, nick changes and parts from IRC.
    let mut dave = IrcClient::connect(irc.port(), "dave").await.unwrap();
    dave.join(&channel).await.unwrap();
    bed.matrix_event("@irc_testnet_dave:localhost", |e| {
        e["type"] == "m.room.member" && e["content"]["membership"] == "join"
    })
    .await;
    dave.send("NICK dave2").await.unwrap();
    bed.matrix_event("@irc_testnet_dave:localhost", |e| {
        e["type"] == "m.room.member" && e["content"]["membership"] == "leave"
    })
    .await;
    bed.matrix_event("@irc_testnet_dave2:localhost", |e| {
        e["type"] == "m.room.member" && e["content"]["membership"] == "join"
    })
    .await;
    dave.send(&format!("PART {channel} :see you"))
        .await
        .unwrap();
    bed.matrix_event("@irc_testnet_dave2:localhost", |e| {
        e["type"] == "m.room.member" && e["content"]["membership"] == "leave"
    })
    .await;

    // No echo: after a marker from carol, nothing alice said came back from a ghost.
    bed.carol.privmsg(&channel, "marker").await.unwrap();
    bed.matrix_event(carol_ghost, |e| e["content"]["body"] == "marker")
        .await;
    let events = bed.alice.room_events(&bed.room).await.unwrap();
    let echoed: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "m.room.message" && e["sender"] != carol_ghost)
        .filter(|e| e["sender"] != bed.alice.user_id().as_str())
        .collect();
    assert!(echoed.is_empty(), "echoed: {echoed:?}");
}

#[tokio::test]
async fn a_portal_works_on_ngircd_without_ircv3() {
    let irc = Ngircd::shared().await.unwrap();
    let channel = unique_channel("ngircd");
    let mut bed = bed(irc.port(), &channel, "erin").await;
    let erin_ghost = "@irc_testnet_erin:localhost";
    bed.alice
        .send_text(&bed.room, "hello ngircd")
        .await
        .unwrap();
    assert_eq!(
        bed.irc_line("PRIVMSG", "alice[m]").await.text(),
        "hello ngircd"
    );
    bed.carol.privmsg(&channel, "hello matrix").await.unwrap();
    let said = bed
        .matrix_event(erin_ghost, |e| e["content"]["body"] == "hello matrix")
        .await;
    assert_eq!(said["content"]["msgtype"], "m.text");

    // erin made the channel, so she is its operator and may set the topic. Her ghost
    // has no power in the room (channel modes are not mirrored yet), so the bridge's bot
    // sets it for her.
    bed.carol
        .send(&format!("TOPIC {channel} :the new topic"))
        .await
        .unwrap();
    let topic = bed
        .alice
        .wait_for_event(&bed.room, WAIT, |e| {
            e["type"] == "m.room.topic" && e["content"]["topic"] == "the new topic"
        })
        .await;
    assert!(topic.is_ok(), "{topic:?}\n{}", bed.bridge.log());
}

/// Bursts of `burst` messages each way, the bridge killed (SIGKILL) in the middle of
/// each and restarted.
///
/// - IRC to Matrix: every line the bot read arrives once, in order. The kill comes once
///   the bot has queued the whole burst and a tenth has reached Matrix, so most of it is
///   in the outbox. (Lines said on IRC while the bridge is down are not seen by anyone
///   of the bridge: IRC keeps no history for it to catch up from.)
/// - Matrix to IRC: everything arrives in order. The one message being written when
///   the bridge died may be said twice: IRC has no message ids to recognise it by.
async fn bursts_survive_a_crash(database_url: Option<String>, burst: usize) {
    let irc = InspIrcd::start().await.unwrap();
    let channel = unique_channel(&format!("burst{burst}"));
    // Nicks differ per test: tests share the IRC server.
    let nick = format!("sender{burst}");
    let mut bed = bed_on(irc.port(), &channel, &nick, database_url).await;
    let carol_ghost = &format!("@irc_testnet_{nick}:localhost");
    let expected = |prefix: &str| {
        (0..burst)
            .map(|i| format!("{prefix}{i}"))
            .collect::<Vec<_>>()
    };

    for i in 0..burst {
        bed.carol.privmsg(&channel, &format!("I{i}")).await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while bed
        .bridge
        .full_log()
        .matches("queuing a remote event")
        .count()
        < burst
    {
        assert!(std::time::Instant::now() < deadline, "{}", bed.bridge.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tenth = format!("I{}", burst / 10);
    bed.matrix_event(carol_ghost, |e| e["content"]["body"] == tenth.as_str())
        .await;
    bed.bridge.kill();
    bed.bridge.start(&bed.synapse.url()).await.unwrap();
    let last = format!("I{}", burst - 1);
    bed.alice
        .wait_for_event(&bed.room, Duration::from_secs(300), |e| {
            e["content"]["body"] == last.as_str()
        })
        .await
        .unwrap_or_else(|error| panic!("{error}\nbridge log:\n{}", bed.bridge.log()));
    assert_eq!(
        bed.alice
            .bodies_from(&bed.room, carol_ghost, "I")
            .await
            .unwrap(),
        expected("I"),
        "IRC to Matrix: lost, doubled or out of order"
    );

    // A second session of alice's sends, while the test reads IRC.
    let alice = MatrixClient::login(&bed.synapse.url(), "alice", "alice-password")
        .await
        .unwrap();
    let sending = alice.spawn_texts(bed.room.clone(), "M", burst);
    let mut seen: Vec<String> = Vec::new();
    while seen.len() < burst / 5 {
        seen.push(bed.irc_line("PRIVMSG", "alice[m]").await.text().to_owned());
    }
    bed.bridge.kill();
    bed.bridge.start(&bed.synapse.url()).await.unwrap();
    while seen.last().map(String::as_str) != Some(format!("M{}", burst - 1).as_str()) {
        seen.push(bed.irc_line("PRIVMSG", "alice[m]").await.text().to_owned());
    }
    sending.await.unwrap().unwrap();
    let mut unique = seen.clone();
    unique.dedup();
    assert_eq!(unique, expected("M"), "Matrix to IRC: lost or out of order");
    assert!(
        seen.len() <= burst + 1,
        "Matrix to IRC: more than the one message in hand was repeated"
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

/// The bot's commands in a management room, and a puppet logging in to its services
/// account with SASL once its password is stored.
#[tokio::test]
async fn commands_set_the_nick_and_log_in_with_sasl() {
    let irc = InspIrcd::start().await.unwrap();
    irc.register_account("alicesasl", "s3cret-pass")
        .await
        .unwrap();
    let channel = unique_channel("commands");
    let mut bed = bed(irc.port(), &channel, "frank").await;
    let dm = bed.management_room().await;
    bed.alice.send_text(&dm, "help").await.unwrap();
    let help = bed.bot_answer(&dm, "storepass").await;
    assert!(
        help["content"]["body"]
            .as_str()
            .unwrap()
            .contains("reconnect"),
        "{help}"
    );

    // alice joined the portal, so her puppet is connected: a new nick is asked for.
    bed.alice.send_text(&dm, "networks").await.unwrap();
    bed.bot_answer(&dm, "testnet (127.0.0.1").await;
    bed.alice
        .send_text(&dm, "nick testnet 9invalid")
        .await
        .unwrap();
    bed.bot_answer(&dm, "is not a valid nick").await;
    bed.alice.send_text(&dm, "nick alicesasl").await.unwrap();
    bed.bot_answer(&dm, "Asked testnet for the nick alicesasl")
        .await;
    let renamed = bed
        .carol
        .wait_for(WAIT, |l| l.command == "NICK" && l.text() == "alicesasl")
        .await
        .unwrap();
    assert_eq!(renamed.source_nick(), Some("alice[m]"));

    // The password is stored; the puppet reconnects with SASL when alice next speaks.
    bed.alice
        .send_text(&dm, "storepass alicesasl s3cret-pass")
        .await
        .unwrap();
    bed.bot_answer(&dm, "Stored (encrypted) the password of alicesasl")
        .await;
    bed.carol
        .wait_for(WAIT, |l| {
            l.command == "QUIT" && l.source_nick() == Some("alicesasl")
        })
        .await
        .unwrap();
    bed.alice
        .send_text(&bed.room, "logged in now")
        .await
        .unwrap();
    assert_eq!(
        bed.irc_line("PRIVMSG", "alicesasl").await.text(),
        "logged in now"
    );
    bed.carol.send("WHOIS alicesasl").await.unwrap();
    let account = bed
        .carol
        .wait_for(WAIT, |l| l.command == "330" || l.command == "318")
        .await
        .unwrap();
    assert_eq!(
        account.command, "330",
        "alice's puppet is logged in: {account:?}"
    );
    assert_eq!(account.params.get(2).map(String::as_str), Some("alicesasl"));

    // WHOIS through the bot.
    bed.alice.send_text(&dm, "whois frank").await.unwrap();
    bed.bot_answer(&dm, "frank is frank@127.0.0.1").await;
    // raw needs the admin permission.
    bed.alice
        .send_text(&dm, "raw PRIVMSG frank :hi")
        .await
        .unwrap();
    bed.bot_answer(&dm, "needs the admin permission").await;

    // Channel commands in the portal go as alice's IRC user: refused while she is no
    // operator (the server's refusal comes back as a notice), taken once she is.
    bed.alice
        .send_text(&bed.room, "!irc voice frank")
        .await
        .unwrap();
    bed.bot_answer(&bed.room, "IRC refused what you sent to")
        .await;
    bed.carol
        .send(&format!("MODE {channel} +o alicesasl"))
        .await
        .unwrap();
    bed.carol
        .wait_for(WAIT, |l| {
            l.command == "MODE" && l.params.get(2).is_some_and(|n| n == "alicesasl")
        })
        .await
        .unwrap();
    bed.alice
        .send_text(&bed.room, "!irc voice frank")
        .await
        .unwrap();
    let voiced = bed
        .carol
        .wait_for(WAIT, |l| {
            l.command == "MODE" && l.source_nick() == Some("alicesasl")
        })
        .await
        .unwrap();
    assert_eq!(voiced.params[1..], ["+v", "frank"]);
    for (command, expected) in [
        ("ban spammer", ["+b", "spammer!*@*"]),
        ("unban spammer!*@*", ["-b", "spammer!*@*"]),
    ] {
        bed.alice
            .send_text(&bed.room, &format!("!irc {command}"))
            .await
            .unwrap();
        let mode = bed
            .carol
            .wait_for(WAIT, |l| {
                l.command == "MODE" && l.source_nick() == Some("alicesasl")
            })
            .await
            .unwrap();
        assert_eq!(mode.params[1..], expected);
    }
    let mut gina = IrcClient::connect(irc.port(), "gina").await.unwrap();
    bed.alice
        .send_text(&bed.room, "!irc invite gina")
        .await
        .unwrap();
    let invited = gina
        .wait_for(WAIT, |l| l.command == "INVITE")
        .await
        .unwrap();
    assert_eq!(
        (invited.source_nick(), invited.params[1].as_str()),
        (Some("alicesasl"), channel.as_str())
    );

    // Kicked on IRC: alice is told, and her next message joins the channel again.
    bed.carol
        .send(&format!("KICK {channel} alicesasl :out you go"))
        .await
        .unwrap();
    bed.bot_answer(&bed.room, "kicked by frank: out you go")
        .await;
    bed.alice.send_text(&bed.room, "back again").await.unwrap();
    bed.irc_line("JOIN", "alicesasl").await;
    assert_eq!(
        bed.irc_line("PRIVMSG", "alicesasl").await.text(),
        "back again"
    );

    // A channel name with a control character is refused, and nothing is joined.
    bed.alice
        .send_text(&dm, "join testnet #bad\u{7}name")
        .await
        .unwrap();
    bed.bot_answer(&dm, "is not a channel name").await;
}

/// Whether `event` is a membership change of `user` to `membership`.
fn is_membership(event: &Value, user: &str, membership: &str) -> bool {
    event["type"] == "m.room.member"
        && event["state_key"] == user
        && event["content"]["membership"] == membership
}

/// A netsplit (users quitting with a split-style reason) is held back: those who come
/// back in time were never gone for Matrix, the others leave once the grace is over.
/// Typing goes both ways through the IRCv3 `+typing` client tag.
#[tokio::test]
async fn netsplits_are_held_back_and_typing_goes_both_ways() {
    let irc = InspIrcd::start().await.unwrap();
    let channel = unique_channel("split");
    let mut bed = bed_with(irc.port(), &channel, "hana", None, |config| {
        let anchor = "      connects_per_second: 50\n";
        assert!(config.contains(anchor), "{config}");
        config.replace(anchor, &format!("{anchor}      split_grace_seconds: 4\n"))
    })
    .await;
    let (ivan_ghost, jude_ghost) = ("@irc_testnet_ivan:localhost", "@irc_testnet_jude:localhost");
    let mut users = Vec::new();
    for nick in ["ivan", "jude"] {
        let mut user = IrcClient::connect(irc.port(), nick).await.unwrap();
        user.join(&channel).await.unwrap();
        users.push(user);
    }
    for ghost in [ivan_ghost, jude_ghost] {
        bed.matrix_event(ghost, |e| is_membership(e, ghost, "join"))
            .await;
    }

    // Both quit as in a split; ivan comes back within the grace, jude does not.
    for user in users.drain(..) {
        user.quit_with("irc.test hub.test").await.unwrap();
    }
    let mut ivan = IrcClient::connect(irc.port(), "ivan").await.unwrap();
    ivan.join(&channel).await.unwrap();
    let jude_left = bed
        .matrix_event(jude_ghost, |e| is_membership(e, jude_ghost, "leave"))
        .await;
    assert_eq!(jude_left["content"]["reason"], "irc.test hub.test");
    // ivan says something after jude is gone: ivan never left nor joined again.
    ivan.privmsg(&channel, "back").await.unwrap();
    bed.matrix_event(ivan_ghost, |e| e["content"]["body"] == "back")
        .await;
    let events = bed.alice.room_events(&bed.room).await.unwrap();
    let ivan_memberships: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "m.room.member" && e["state_key"] == ivan_ghost)
        .collect();
    assert_eq!(
        ivan_memberships.len(),
        1,
        "only ivan's first join: {ivan_memberships:?}"
    );
    // A plain quit is shown at once.
    ivan.quit_with("Quit: bye").await.unwrap();
    bed.matrix_event(ivan_ghost, |e| is_membership(e, ivan_ghost, "leave"))
        .await;

    // Typing, IRC to Matrix: hana negotiates message-tags and types.
    let hana_ghost = "@irc_testnet_hana:localhost";
    bed.carol.send("CAP REQ :message-tags").await.unwrap();
    bed.carol
        .wait_for(WAIT, |l| {
            l.command == "CAP" && l.params.get(1).is_some_and(|s| s == "ACK")
        })
        .await
        .unwrap();
    bed.carol
        .send(&format!("@+typing=active TAGMSG {channel}"))
        .await
        .unwrap();
    bed.alice
        .wait_for_event(&bed.room, WAIT, |e| {
            e["type"] == "m.typing"
                && e["content"]["user_ids"]
                    .as_array()
                    .is_some_and(|ids| ids.iter().any(|id| id == hana_ghost))
        })
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", bed.bridge.log()));

    // Matrix to IRC: alice's puppet (connected once she joined) shows her typing.
    bed.alice.set_typing(&bed.room).await.unwrap();
    let typing = bed.irc_line("TAGMSG", "alice[m]").await;
    assert_eq!(
        typing.tags.get("+typing").map(String::as_str),
        Some("active")
    );

    // Replies by msgid (IRCv3 +draft/reply) both ways, hana having message-tags.
    let mut yara = IrcClient::connect(irc.port(), "yara").await.unwrap();
    yara.join(&channel).await.unwrap();
    yara.privmsg(&channel, "question?").await.unwrap();
    let question = bed.irc_line("PRIVMSG", "yara").await;
    let msgid = question
        .tags
        .get("msgid")
        .cloned()
        .expect("InspIRCd gives msgids");
    let yara_ghost = "@irc_testnet_yara:localhost";
    let on_matrix = bed
        .matrix_event(yara_ghost, |e| e["content"]["body"] == "question?")
        .await;
    bed.carol
        .send(&format!("@+draft/reply={msgid} PRIVMSG {channel} :answer"))
        .await
        .unwrap();
    let answer = bed
        .matrix_event(hana_ghost, |e| e["content"]["body"] == "answer")
        .await;
    assert_eq!(
        answer["content"]["m.relates_to"]["m.in_reply_to"]["event_id"], on_matrix["event_id"],
        "{answer}"
    );
    bed.alice
        .send(
            &bed.room,
            "m.room.message",
            &json!({
                "msgtype": "m.text", "body": "sure",
                "m.relates_to": { "m.in_reply_to": { "event_id": on_matrix["event_id"] } },
            }),
        )
        .await
        .unwrap();
    let reply = bed.irc_line("PRIVMSG", "alice[m]").await;
    assert_eq!(reply.text(), "yara: sure");
    assert_eq!(reply.tags.get("+draft/reply"), Some(&msgid));

    // away-notify: hana's away message is her ghost's presence, until she is back.
    for (away, expected) in [
        (
            "AWAY :out for lunch",
            ("unavailable", json!("out for lunch")),
        ),
        ("AWAY", ("online", Value::Null)),
    ] {
        bed.carol.send(away).await.unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let presence = bed
                .alice
                .request(
                    reqwest::Method::GET,
                    &format!(
                        "/_matrix/client/v3/presence/{}/status",
                        urlencode(hana_ghost)
                    ),
                    None,
                )
                .await
                .unwrap();
            if presence["presence"] == expected.0 && presence["status_msg"] == expected.1 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{away}: {presence}\n{}",
                bed.bridge.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Regression tests for the reference IRC bridge's advisories: another spelling of a
/// channel cannot make a second room for it; names full of SQL reach the database only
/// as values; a reply to an event of another room leaks nothing of it.
#[tokio::test]
async fn hostile_names_and_replies_stay_in_their_place() {
    let irc = InspIrcd::start().await.unwrap();
    let channel = unique_channel("hostile");
    let mut bed = bed(irc.port(), &channel, "kim").await;

    // The same channel in capitals leads to the same room.
    let shouted = bed
        .alice
        .join(&format!(
            "#irc_testnet_{}:localhost",
            channel.to_uppercase()
        ))
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", bed.bridge.log()));
    assert_eq!(shouted, bed.room, "one channel, one room");

    // A channel named like an SQL injection is just a name.
    let sql = format!("#x');DROP/**/TABLE/**/portals;--{}", std::process::id());
    bed.carol.join(&sql).await.unwrap();
    let sql_room = bed
        .alice
        .join(&format!("#irc_testnet_{sql}:localhost"))
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", bed.bridge.log()));
    assert_ne!(sql_room, bed.room);
    bed.carol
        .privmsg(&sql, "secret in the other room")
        .await
        .unwrap();
    let secret = bed
        .alice
        .wait_for_event(&sql_room, WAIT, |e| {
            e["content"]["body"] == "secret in the other room"
        })
        .await
        .unwrap();

    // mallory is only in the first portal and replies to the other room's message.
    let mallory = bed
        .synapse
        .register_user("mallory", "mallory-password", false)
        .await
        .unwrap();
    mallory.join(bed.room.as_str()).await.unwrap();
    mallory
        .send(
            &bed.room,
            "m.room.message",
            &json!({
                "msgtype": "m.text",
                "body": "what was that?",
                "m.relates_to": { "m.in_reply_to": { "event_id": secret["event_id"] } },
            }),
        )
        .await
        .unwrap();
    let said = bed.irc_line("PRIVMSG", "mallory[m]").await;
    assert_eq!(said.text(), "what was that?", "nothing of the other room");

    // Both portals still work: the portals table is whole.
    bed.carol.privmsg(&channel, "still here").await.unwrap();
    bed.matrix_event("@irc_testnet_kim:localhost", |e| {
        e["content"]["body"] == "still here"
    })
    .await;
}

/// Channel ranks become power levels: the channel's creator (an op) when the portal is
/// made, then ops given and taken with MODE, arguments matched to modes as the server's
/// ISUPPORT says (`-l+o mike` ops mike: `-l` takes no argument).
#[tokio::test]
async fn channel_ranks_become_power_levels() {
    let irc = InspIrcd::start().await.unwrap();
    let channel = unique_channel("ranks");
    let mut bed = bed(irc.port(), &channel, "lena").await;
    let level_is = |user: &'static str, level: Option<i64>| {
        move |e: &Value| {
            e["type"] == "m.room.power_levels" && e["content"]["users"][user].as_i64() == level
        }
    };
    let lena = "@irc_testnet_lena:localhost";
    let mike = "@irc_testnet_mike:localhost";
    let wait = async |bed: &Bed, matches: &dyn Fn(&Value) -> bool| {
        bed.alice
            .wait_for_event(&bed.room, WAIT, matches)
            .await
            .unwrap_or_else(|error| panic!("{error}\n{}", bed.bridge.log()))
    };
    wait(&bed, &level_is(lena, Some(50))).await;

    let mut mike_client = IrcClient::connect(irc.port(), "mike").await.unwrap();
    mike_client.join(&channel).await.unwrap();
    bed.matrix_event(mike, |e| is_membership(e, mike, "join"))
        .await;
    bed.carol
        .send(&format!("MODE {channel} +l 10"))
        .await
        .unwrap();
    bed.carol
        .send(&format!("MODE {channel} -l+o mike"))
        .await
        .unwrap();
    let opped = wait(&bed, &level_is(mike, Some(50))).await;
    assert_eq!(opped["content"]["users"][lena], 50, "{opped}");
    bed.carol
        .send(&format!("MODE {channel} -o+v mike mike"))
        .await
        .unwrap();
    wait(&bed, &level_is(mike, Some(1))).await;
    bed.carol
        .send(&format!("MODE {channel} -v mike"))
        .await
        .unwrap();
    wait(&bed, &level_is(mike, None)).await;
}

/// A Matrix user with the `relay` permission gets no puppet: the bot says their messages
/// with their name in front.
#[tokio::test]
async fn relay_users_speak_through_the_bot() {
    let irc = InspIrcd::start().await.unwrap();
    let channel = unique_channel("relay");
    let mut bed = bed_with(irc.port(), &channel, "nina", None, |config| {
        let entries = "    \"localhost\": \"user\"\n";
        assert!(config.contains(entries), "{config}");
        config.replace(
            entries,
            &format!("{entries}    \"@rita:localhost\": \"relay\"\n"),
        )
    })
    .await;
    let rita = bed
        .synapse
        .register_user("rita", "rita-password", false)
        .await
        .unwrap();
    rita.join(bed.room.as_str()).await.unwrap();
    rita.send_text(&bed.room, "hello via the bot")
        .await
        .unwrap();
    assert_eq!(
        bed.irc_line("PRIVMSG", "trestle").await.text(),
        "<rita> hello via the bot"
    );
    rita.send(
        &bed.room,
        "m.room.message",
        &json!({"msgtype": "m.emote", "body": "waves\nQUIT :x"}),
    )
    .await
    .unwrap();
    assert_eq!(
        bed.irc_line("PRIVMSG", "trestle").await.text(),
        "* rita waves"
    );
    assert_eq!(
        bed.irc_line("PRIVMSG", "trestle").await.text(),
        "* rita QUIT :x"
    );
    // alice (a user) still speaks as herself; rita never got a connection.
    bed.alice.send_text(&bed.room, "and me").await.unwrap();
    assert_eq!(bed.irc_line("PRIVMSG", "alice[m]").await.text(), "and me");
    let rita_joined = bed
        .carol
        .wait_for(Duration::from_secs(1), |l| {
            l.command == "JOIN" && l.source_nick().is_some_and(|n| n.starts_with("rita"))
        })
        .await;
    assert!(rita_joined.is_err(), "rita got a puppet: {rita_joined:?}");
}

/// Private messages: an IRC user writing to a puppet opens a direct chat on Matrix, made
/// by their ghost; a Matrix user inviting a ghost to a direct chat reaches that IRC user.
#[tokio::test]
async fn private_messages_are_direct_chats_both_ways() {
    let irc = InspIrcd::start().await.unwrap();
    let channel = unique_channel("private");
    let mut bed = bed(irc.port(), &channel, "oscar").await;
    let oscar_ghost = "@irc_testnet_oscar:localhost";
    // alice's puppet is connected once she is in the portal: make sure it is there.
    bed.alice.send_text(&bed.room, "here").await.unwrap();
    bed.irc_line("PRIVMSG", "alice[m]").await;

    // IRC to Matrix: oscar's ghost invites alice to a direct chat with the message.
    bed.carol
        .privmsg("alice[m]", "psst, private")
        .await
        .unwrap();
    let dm = bed
        .alice
        .wait_for_invite(WAIT)
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", bed.bridge.log()));
    bed.alice.join(dm.as_str()).await.unwrap();
    bed.alice
        .wait_for_event(&dm, WAIT, |e| {
            e["sender"] == oscar_ghost && e["content"]["body"] == "psst, private"
        })
        .await
        .unwrap();
    bed.alice.send_text(&dm, "hi oscar").await.unwrap();
    let reply = bed
        .carol
        .wait_for(WAIT, |l| {
            l.command == "PRIVMSG" && l.params.first().is_some_and(|t| t == "oscar")
        })
        .await
        .unwrap();
    assert_eq!(
        (reply.source_nick(), reply.text()),
        (Some("alice[m]"), "hi oscar")
    );

    // Matrix to IRC: alice invites pat's ghost to a direct chat.
    let mut pat = IrcClient::connect(irc.port(), "pat").await.unwrap();
    let pat_ghost = "@irc_testnet_pat:localhost";
    let chat = bed
        .alice
        .create_room(json!({
            "is_direct": true, "invite": [pat_ghost], "preset": "trusted_private_chat",
        }))
        .await
        .unwrap();
    bed.alice
        .wait_for_event(&chat, WAIT, |e| is_membership(e, pat_ghost, "join"))
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", bed.bridge.log()));
    bed.alice.send_text(&chat, "hello pat").await.unwrap();
    let said = pat
        .wait_for(WAIT, |l| l.command == "PRIVMSG")
        .await
        .unwrap();
    assert_eq!(
        (said.source_nick(), said.text(), said.params[0].as_str()),
        (Some("alice[m]"), "hello pat", "pat")
    );
    pat.privmsg("alice[m]", "hello alice").await.unwrap();
    bed.alice
        .wait_for_event(&chat, WAIT, |e| {
            e["sender"] == pat_ghost && e["content"]["body"] == "hello alice"
        })
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", bed.bridge.log()));
}

/// Waits for a notice from the bot in `room` containing `text`.
async fn bot_notice(user: &MatrixClient, bridge: &BridgeProcess, room: &OwnedRoomId, text: &str) {
    user.wait_for_notice(room, BOT, text, WAIT)
        .await
        .unwrap_or_else(|error| {
            panic!("no notice {text:?}: {error}\nbridge log:\n{}", bridge.log())
        });
}

#[tokio::test]
async fn rooms_are_linked_with_an_operators_consent_and_by_the_config_and_unlinked() {
    let irc = InspIrcd::start().await.unwrap();
    let channel = unique_channel("linked");
    let refused = unique_channel("refused");
    let mapped = unique_channel("mapped");
    // carol makes the channels, so she is their operator.
    let mut carol = IrcClient::connect(irc.port(), "carol").await.unwrap();
    for name in [&channel, &refused, &mapped] {
        carol.join(name).await.unwrap();
    }
    let extra = format!(
        "      mappings:\n        - room: \"#mapped:localhost\"\n          channel: \"{mapped}\"\n"
    );
    let (mut bridge, registration) =
        irc_bridge_for(&[(NETWORK, irc.port())], &extra, None, str::to_owned).unwrap();
    let synapse = Synapse::start(&[registration]).await.unwrap();
    let alice = synapse
        .register_user("alice", "alice-password", false)
        .await
        .unwrap();
    let bob = synapse
        .register_user("bob", "bob-password", false)
        .await
        .unwrap();

    // The operator's room exists before the bridge starts, with the bot invited.
    let mapped_room = alice
        .create_room(json!({"room_alias_name": "mapped", "invite": [BOT]}))
        .await
        .unwrap();
    bridge.start(&synapse.url()).await.unwrap();
    alice
        .wait_for_event(&mapped_room, WAIT, |e| {
            e["type"] == "m.room.member"
                && e["state_key"] == "@irc_testnet_carol:localhost"
                && e["content"]["membership"] == "join"
        })
        .await
        .unwrap_or_else(|error| panic!("{error}\nbridge log:\n{}", bridge.log()));
    carol.privmsg(&mapped, "to the mapped room").await.unwrap();
    alice
        .wait_for_text(&mapped_room, "to the mapped room", WAIT)
        .await
        .unwrap_or_else(|error| panic!("{error}\nbridge log:\n{}", bridge.log()));

    // alice's room: the bot comes when invited. A room admin may ask, and a channel
    // operator must agree.
    let room = alice
        .create_room(json!({"preset": "public_chat", "invite": [BOT]}))
        .await
        .unwrap();
    bot_notice(&alice, &bridge, &room, "link <address>").await;
    bob.join(room.as_str()).await.unwrap();
    bob.send_text(&room, &format!("!irc link {NETWORK} {channel} carol"))
        .await
        .unwrap();
    bot_notice(&alice, &bridge, &room, "Only a room admin").await;
    alice
        .send_text(&room, &format!("!irc link {NETWORK} {channel}"))
        .await
        .unwrap();
    bot_notice(&alice, &bridge, &room, "must agree").await;
    alice
        .send_text(&room, &format!("!irc link {NETWORK} {refused} carol"))
        .await
        .unwrap();
    let asked = |target: String| {
        move |l: &Line| {
            l.command == "PRIVMSG"
                && l.source_nick() == Some("trestle")
                && l.text()
                    .contains(&format!("to bridge {target} to the Matrix room"))
        }
    };
    // The answer carries the question's code: a bare "yes" answers nothing.
    let code = |question: &Line| {
        let text = question.text();
        let start = text.find("\"yes ").expect("a code to answer with") + 5;
        text[start..start + 4].to_owned()
    };
    let question = carol
        .wait_for(WAIT, asked(refused.clone()))
        .await
        .unwrap_or_else(|error| panic!("{error}\nbridge log:\n{}", bridge.log()));
    carol.privmsg("trestle", "no").await.unwrap();
    carol
        .privmsg("trestle", &format!("no {}", code(&question)))
        .await
        .unwrap();
    bot_notice(&alice, &bridge, &room, "carol refused to bridge").await;
    // The bot looked at the channel, and does not stay.
    carol
        .wait_for(WAIT, |l| {
            l.command == "PART"
                && l.source_nick() == Some("trestle")
                && l.params.first() == Some(&refused)
        })
        .await
        .unwrap_or_else(|error| panic!("{error}\nbridge log:\n{}", bridge.log()));
    alice
        .send_text(&room, &format!("!irc link {NETWORK} {channel} carol"))
        .await
        .unwrap();
    let question = carol.wait_for(WAIT, asked(channel.clone())).await.unwrap();
    carol.privmsg("trestle", "yes 0000x").await.unwrap();
    carol
        .privmsg("trestle", &format!("yes {}", code(&question)))
        .await
        .unwrap();
    bot_notice(&alice, &bridge, &room, "now bridged to").await;

    // Linked: both ways.
    carol.privmsg(&channel, "hello linked").await.unwrap();
    alice
        .wait_for_text(&room, "hello linked", WAIT)
        .await
        .unwrap_or_else(|error| panic!("{error}\nbridge log:\n{}", bridge.log()));
    alice.send_text(&room, "hello channel").await.unwrap();
    carol
        .wait_for_privmsg(&channel, "hello channel", WAIT)
        .await
        .unwrap_or_else(|error| panic!("{error}\nbridge log:\n{}", bridge.log()));

    // alice's Matrix presence marks her puppet away, with her status.
    let path = format!(
        "/_matrix/client/v3/presence/{}/status",
        urlencode(alice.user_id().as_str())
    );
    alice
        .request(
            reqwest::Method::PUT,
            &path,
            Some(&json!({ "presence": "unavailable", "status_msg": "at lunch" })),
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        carol.send("WHOIS alice[m]").await.unwrap();
        let reply = carol
            .wait_for(WAIT, |l| l.command == "301" || l.command == "318")
            .await
            .unwrap();
        if reply.command == "301" {
            assert_eq!(reply.text(), "at lunch");
            carol.wait_for(WAIT, |l| l.command == "318").await.unwrap();
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never away\nbridge log:\n{}",
            bridge.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // A topic change on Matrix is the puppet's TOPIC: refused while alice is no channel
    // operator (the channel is +t), taken once carol ops her.
    let set_topic = async |topic: &str| {
        alice
            .request(
                reqwest::Method::PUT,
                &format!("/_matrix/client/v3/rooms/{room}/state/m.room.topic/"),
                Some(&json!({ "topic": topic })),
            )
            .await
            .unwrap();
    };
    set_topic("not allowed\nyet").await;
    bot_notice(&alice, &bridge, &room, "IRC refused what you sent to").await;
    carol
        .send(&format!("MODE {channel} +o alice[m]"))
        .await
        .unwrap();
    set_topic("an operator's\ntopic").await;
    let topic = carol
        .wait_for(WAIT, |l| {
            l.command == "TOPIC" && l.source_nick() == Some("alice[m]")
        })
        .await
        .unwrap_or_else(|error| panic!("{error}\nbridge log:\n{}", bridge.log()));
    assert_eq!(topic.text(), "an operator's topic");

    // Not what the config maps; then unlinked: the bot and the puppet part.
    alice.send_text(&mapped_room, "!irc unlink").await.unwrap();
    bot_notice(
        &alice,
        &bridge,
        &mapped_room,
        "configuration maps this room",
    )
    .await;
    bob.send_text(&room, "!irc unlink").await.unwrap();
    bot_notice(&alice, &bridge, &room, "Only a room admin").await;
    alice.send_text(&room, "!irc unlink").await.unwrap();
    bot_notice(&alice, &bridge, &room, "no longer bridged").await;
    for nick in ["trestle", "alice[m]"] {
        carol
            .wait_for(WAIT, |l| {
                l.command == "PART"
                    && l.source_nick() == Some(nick)
                    && l.params.first().map(|c| c.to_lowercase()) == Some(channel.to_lowercase())
            })
            .await
            .unwrap_or_else(|error| panic!("{nick}: {error}\nbridge log:\n{}", bridge.log()));
    }
    carol.privmsg(&channel, "after unlink").await.unwrap();
    carol.privmsg(&mapped, "still mapped").await.unwrap();
    alice
        .wait_for_text(&mapped_room, "still mapped", WAIT)
        .await
        .unwrap();
    let events = alice.room_events(&room).await.unwrap();
    assert!(
        !events
            .iter()
            .any(|e| e["content"]["body"] == "after unlink"),
        "{events:?}"
    );
}

/// A local port nothing listens on.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn edits_reactions_mentions_lazy_members_and_a_fallback_server() {
    let irc = InspIrcd::start().await.unwrap();
    let channel = unique_channel("options");
    let (port, dead) = (irc.port(), dead_port());
    // The configured server is down: the bridge moves on to the fallback.
    let mut bed = bed_with(port, &channel, "carol", None, |config| {
        config.replace(
            &format!("      port: {port}\n      tls: false\n"),
            &format!(
                "      port: {dead}\n      tls: false\n      fallback_servers:\n        - host: \"127.0.0.1\"\n          port: {port}\n      edits: \"substitution\"\n      reactions_as_action: true\n      members: \"lazy\"\n"
            ),
        )
    })
    .await;
    let carol_ghost = "@irc_testnet_carol:localhost";
    let alice = bed.alice.user_id().to_string();

    // Lazy members: carol, in the channel, is not in the room until she speaks.
    let members = bed.alice.joined_members(&bed.room).await.unwrap();
    assert!(members["joined"].get(carol_ghost).is_none(), "{members}");
    bed.carol
        .privmsg(&channel, "hi from a lurker")
        .await
        .unwrap();
    let hi = bed
        .matrix_event(carol_ghost, |e| e["content"]["body"] == "hi from a lurker")
        .await;
    let members = bed.alice.joined_members(&bed.room).await.unwrap();
    assert!(members["joined"].get(carol_ghost).is_some(), "{members}");

    // A nick of a Matrix user's puppet becomes a pill, and a mention that notifies.
    bed.alice.send_text(&bed.room, "hello carol").await.unwrap();
    bed.irc_line("PRIVMSG", "alice[m]").await;
    bed.carol
        .privmsg(&channel, "alice[m]: look <here>")
        .await
        .unwrap();
    let mention = bed
        .matrix_event(carol_ghost, |e| {
            e["content"]["body"] == "alice[m]: look <here>"
        })
        .await;
    assert_eq!(
        mention["content"]["formatted_body"],
        "<a href=\"https://matrix.to/#/@alice:localhost\">alice[m]</a>: look &lt;here&gt;",
        "{mention}"
    );
    assert_eq!(mention["content"]["m.mentions"]["user_ids"], json!([alice]));

    // An edit is the substitution of the words changed.
    let typo = bed
        .alice
        .send_text(&bed.room, "I think teh build is green now")
        .await
        .unwrap();
    bed.irc_line("PRIVMSG", "alice[m]").await;
    let edit = |body: &str| {
        json!({
            "msgtype": "m.text", "body": format!("* {body}"),
            "m.new_content": { "msgtype": "m.text", "body": body },
            "m.relates_to": { "rel_type": "m.replace", "event_id": typo },
        })
    };
    bed.alice
        .send(
            &bed.room,
            "m.room.message",
            &edit("I think the build is green now"),
        )
        .await
        .unwrap();
    assert_eq!(
        bed.irc_line("PRIVMSG", "alice[m]").await.text(),
        "s/teh/the/"
    );
    // A second edit is against the first; a rewrite is a correction.
    bed.alice
        .send(&bed.room, "m.room.message", &edit("all red"))
        .await
        .unwrap();
    assert_eq!(
        bed.irc_line("PRIVMSG", "alice[m]").await.text(),
        "* all red"
    );

    // A reaction is an ACTION naming whose message it was.
    bed.alice
        .send(
            &bed.room,
            "m.reaction",
            &json!({ "m.relates_to": {
                "rel_type": "m.annotation", "event_id": hi["event_id"], "key": "👍",
            }}),
        )
        .await
        .unwrap();
    assert_eq!(
        bed.irc_line("PRIVMSG", "alice[m]").await.text(),
        "\x01ACTION reacted 👍 to carol\x01"
    );

    // Silent users come and go unseen; one who spoke is seen leaving.
    let mut dave = IrcClient::connect(port, "dave").await.unwrap();
    dave.join(&channel).await.unwrap();
    dave.send(&format!("PART {channel} :bye")).await.unwrap();
    bed.carol
        .send(&format!("PART {channel} :done"))
        .await
        .unwrap();
    bed.matrix_event(carol_ghost, |e| {
        e["type"] == "m.room.member" && e["content"]["membership"] == "leave"
    })
    .await;
    let events = bed.alice.room_events(&bed.room).await.unwrap();
    let dave_seen: Vec<&Value> = events
        .iter()
        .filter(|e| e["sender"] == "@irc_testnet_dave:localhost")
        .collect();
    assert!(dave_seen.is_empty(), "{dave_seen:?}");

    // The server in use is the fallback.
    let dm = bed.management_room().await;
    bed.alice.send_text(&dm, "networks").await.unwrap();
    bed.bot_answer(&dm, &format!("testnet (127.0.0.1:{port})"))
        .await;
    assert!(
        bed.bridge
            .log()
            .contains("server unreachable; trying the next"),
        "{}",
        bed.bridge.log()
    );
}

#[tokio::test]
async fn commands_list_username_and_quit_idle_puppets_part_and_members_resync() {
    let irc = InspIrcd::start().await.unwrap();
    let channel = unique_channel("quit");
    let port = irc.port();
    let mut bed = bed_with(port, &channel, "carol", None, |config| {
        config.replace(
            "      tls: false\n",
            "      tls: false\n      idle_disconnect_seconds: 8\n      bind_prefix: \"127.0.0.0/8\"\n",
        )
    })
    .await;
    let dm = bed.management_room().await;

    // The puppet connects from its own address of the prefix.
    bed.alice
        .send_text(&bed.room, "from my address")
        .await
        .unwrap();
    bed.irc_line("PRIVMSG", "alice[m]").await;
    let whois = |nick: &str| format!("WHOIS {nick}");
    bed.carol.send(&whois("alice[m]")).await.unwrap();
    let user = bed
        .carol
        .wait_for(WAIT, |l| l.command == "311")
        .await
        .unwrap();
    let expected = bridge_irc::config::BindPrefix::parse("127.0.0.0/8")
        .unwrap()
        .address_for("@alice:localhost");
    assert_eq!(user.params[3], expected.to_string(), "{user:?}");
    assert!(user.params[2].ends_with("alice"), "{user:?}");

    // list: the portals alice is in.
    bed.alice.send_text(&dm, "list").await.unwrap();
    bed.bot_answer(&dm, &format!("{}: {}", channel.to_lowercase(), bed.room))
        .await;

    // username: checked, then used from the next connection.
    bed.alice
        .send_text(&dm, "username bad\u{7}name")
        .await
        .unwrap();
    bed.bot_answer(&dm, "is not a valid user name").await;
    bed.alice.send_text(&dm, "username trestleu").await.unwrap();
    bed.bot_answer(&dm, "You will be trestleu on testnet").await;
    bed.alice.send_text(&bed.room, "renamed").await.unwrap();
    assert_eq!(bed.irc_line("PRIVMSG", "alice[m]").await.text(), "renamed");
    bed.carol.send(&whois("alice[m]")).await.unwrap();
    let user = bed
        .carol
        .wait_for(WAIT, |l| l.command == "311")
        .await
        .unwrap();
    assert!(user.params[2].ends_with("trestleu"), "{user:?}");

    // A quiet puppet is disconnected, and its next message connects it again.
    bed.carol
        .wait_for(WAIT, |l| {
            l.command == "QUIT" && l.source_nick() == Some("alice[m]") && l.text().contains("Idle")
        })
        .await
        .unwrap();
    bed.alice.send_text(&bed.room, "back again").await.unwrap();
    assert_eq!(
        bed.irc_line("PRIVMSG", "alice[m]").await.text(),
        "back again"
    );

    // Members change while the bridge is down: on its return the room follows NAMES.
    bed.bridge.stop().await;
    let mut erin = IrcClient::connect(port, "erin").await.unwrap();
    erin.join(&channel).await.unwrap();
    bed.carol
        .send(&format!("PART {channel} :gone"))
        .await
        .unwrap();
    bed.bridge.start(&bed.synapse.url()).await.unwrap();
    bed.matrix_event("@irc_testnet_erin:localhost", |e| {
        e["type"] == "m.room.member" && e["content"]["membership"] == "join"
    })
    .await;
    bed.matrix_event("@irc_testnet_carol:localhost", |e| {
        e["type"] == "m.room.member" && e["content"]["membership"] == "leave"
    })
    .await;

    // quit: alice is taken out of the portal and her puppet leaves the network.
    bed.alice.send_text(&bed.room, "last words").await.unwrap();
    erin.wait_for_privmsg(&channel, "last words", WAIT)
        .await
        .unwrap();
    bed.alice.send_text(&dm, "quit").await.unwrap();
    bed.bot_answer(&dm, "Disconnected you from testnet").await;
    let kicked = bed
        .matrix_event(BOT, |e| {
            e["type"] == "m.room.member"
                && e["state_key"] == "@alice:localhost"
                && e["content"]["membership"] == "leave"
        })
        .await;
    assert_eq!(kicked["content"]["reason"], "You quit testnet");
    // The puppet parts as alice leaves the room, and quits the network.
    let mut connected = true;
    for _ in 0..50 {
        erin.send("WHOIS alice[m]").await.unwrap();
        let answer = erin
            .wait_for(WAIT, |l| ["311", "401"].contains(&l.command.as_str()))
            .await
            .unwrap();
        if answer.command == "401" {
            connected = false;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!connected, "{}", bed.bridge.log());
}

#[tokio::test]
async fn a_network_over_tls_is_reached_with_its_own_ca_and_client_certificates_log_in() {
    use bridge_irc::connection::{ConnectError, ConnectOptions, Connection, FloodLimits};

    let irc = InspIrcd::start_with_tls().await.unwrap();
    let (plain, tls_port) = (irc.port(), irc.tls_port().unwrap());
    let ca_file = irc.ca_file().unwrap().to_owned();

    // What the bridge checks: the chain to a trusted CA, and the server's name.
    let options = |host: &str, ca: Option<&std::path::Path>| ConnectOptions {
        host: host.to_owned(),
        port: tls_port,
        tls: Some(std::sync::Arc::new(
            bridge_irc::tls::client_config(ca).unwrap(),
        )),
        password: None,
        nick: "tlsprobe".to_owned(),
        username: "probe".to_owned(),
        realname: "probe".to_owned(),
        sasl: None,
        flood: FloodLimits {
            burst: 5,
            per_second: 2.0,
        },
        ping_after: Duration::from_secs(120),
        bind: None,
        ident: None,
    };
    for (host, ca, why) in [
        ("localhost", None, "a CA the system does not know"),
        (
            "127.0.0.1",
            Some(ca_file.as_path()),
            "a name the certificate does not give",
        ),
    ] {
        match Connection::connect(&options(host, ca)).await {
            Err(ConnectError::Unreachable { reason, .. }) => {
                assert!(reason.starts_with("TLS"), "{why}: {reason}");
            }
            Err(other) => panic!("{why}: {other}"),
            Ok(_) => panic!("{why}: connected"),
        }
    }

    // The bridge on the TLS port, trusting the network's CA, named as its certificate.
    let channel = unique_channel("tls");
    let ca = ca_file.display().to_string();
    let mut bed = bed_with(plain, &channel, "carol", None, |config| {
        config.replace(
            &format!("      host: \"127.0.0.1\"\n      port: {plain}\n      tls: false\n"),
            &format!(
                "      host: \"localhost\"\n      port: {tls_port}\n      tls: true\n      ca_file: \"{ca}\"\n"
            ),
        )
    })
    .await;
    bed.alice.send_text(&bed.room, "over tls").await.unwrap();
    assert_eq!(bed.irc_line("PRIVMSG", "alice[m]").await.text(), "over tls");
    bed.carol.privmsg(&channel, "back in clear").await.unwrap();
    bed.matrix_event("@irc_testnet_carol:localhost", |e| {
        e["content"]["body"] == "back in clear"
    })
    .await;
    // Both the bot and the puppet came in over TLS.
    bed.carol.send("WHOIS alice[m]").await.unwrap();
    let secure = bed
        .carol
        .wait_for(WAIT, |l| ["671", "318"].contains(&l.command.as_str()))
        .await
        .unwrap();
    assert_eq!(secure.command, "671", "{secure:?}");
    bed.carol
        .wait_for(WAIT, |l| l.command == "318")
        .await
        .unwrap();

    // SASL EXTERNAL: logged in by password, alice gets a client certificate, which her
    // puppet adds to her account; with the password forgotten, the certificate alone
    // logs her in.
    irc.register_account("alicecert", "cert-pass")
        .await
        .unwrap();
    let dm = bed.management_room().await;
    bed.alice
        .send_text(&dm, "storepass alicecert cert-pass")
        .await
        .unwrap();
    bed.bot_answer(&dm, "Stored (encrypted)").await;
    bed.alice.send_text(&dm, "certfp").await.unwrap();
    let answer = bed.bot_answer(&dm, "fingerprint").await;
    let answer = answer["content"]["body"].as_str().unwrap().to_owned();
    assert!(
        answer.contains("added it to your services account"),
        "{answer}"
    );
    let fingerprint = answer
        .split(|c: char| !c.is_ascii_hexdigit())
        .find(|word| word.len() == 64)
        .unwrap_or_else(|| panic!("no fingerprint in {answer}"))
        .to_owned();
    bed.alice.send_text(&dm, "removepass").await.unwrap();
    bed.bot_answer(&dm, "Forgot your password").await;
    bed.alice.send_text(&dm, "reconnect").await.unwrap();
    bed.bot_answer(&dm, "Disconnected you").await;
    bed.alice
        .send_text(&bed.room, "by certificate")
        .await
        .unwrap();
    assert_eq!(
        bed.irc_line("PRIVMSG", "alice[m]").await.text(),
        "by certificate"
    );
    bed.carol.send("WHOIS alice[m]").await.unwrap();
    let mut account = None;
    let mut presented = None;
    loop {
        let line = bed
            .carol
            .wait_for(WAIT, |l| {
                ["276", "330", "318"].contains(&l.command.as_str())
            })
            .await
            .unwrap();
        match line.command.as_str() {
            "330" => account = line.params.get(2).cloned(),
            "276" => presented = Some(line.text().to_owned()),
            _ => break,
        }
    }
    assert_eq!(
        account.as_deref(),
        Some("alicecert"),
        "{}",
        bed.bridge.log()
    );
    // Logged in by SASL itself, not only by services knowing the certificate later.
    let log = bed.bridge.log();
    let last_connect = log
        .lines()
        .rfind(|line| line.contains("puppet connected"))
        .unwrap_or_default();
    assert!(
        last_connect.contains("sasl=EXTERNAL logged in"),
        "{last_connect}"
    );
    assert!(
        presented
            .as_deref()
            .is_some_and(|text| text.contains(&fingerprint)),
        "{presented:?} {fingerprint}"
    );
}

/// The room's join rule and whether it is listed in the directory under the network, as
/// `user` sees them.
async fn access_of(user: &MatrixClient, room: &OwnedRoomId) -> (String, bool) {
    let rules = user
        .request(
            reqwest::Method::GET,
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.join_rules/"),
            None,
        )
        .await
        .unwrap();
    let listing = user
        .request(
            reqwest::Method::POST,
            "/_matrix/client/v3/publicRooms",
            Some(&json!({ "include_all_networks": true, "limit": 100 })),
        )
        .await
        .unwrap();
    let listed = listing["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .any(|entry| entry["room_id"] == room.as_str());
    (rules["join_rule"].as_str().unwrap().to_owned(), listed)
}

/// Waits until the room's join rule is `rule` and, unless `None`, its listing `listed`.
async fn wait_for_access(bed: &Bed, expected: (&str, Option<bool>)) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (rule, listed) = access_of(&bed.alice, &bed.room).await;
        if rule == expected.0 && expected.1.is_none_or(|wanted| wanted == listed) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "access is ({rule}, {listed}), not {expected:?}\n{}",
            bed.bridge.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn channel_modes_say_who_may_join_the_room_and_whether_it_is_listed() {
    let irc = InspIrcd::start().await.unwrap();
    let channel = unique_channel("modes");
    let mut bed = bed(irc.port(), &channel, "carol").await;
    // carol made the channel, so she is its operator.
    wait_for_access(&bed, ("public", Some(true))).await;
    // +i and +k make the room invite-only; +s (or +p) takes it out of the directory.
    // (Only the join rule is read back after a change: Synapse lists no invite-only room,
    // and in this Synapse a room unlisted through the appservice list was not seen listed
    // again, though the bridge's PUT was answered 200.)
    for (change, expected) in [
        ("+i", "invite"),
        ("-i", "public"),
        ("+k sesame", "invite"),
        ("-k sesame", "public"),
    ] {
        bed.carol
            .send(&format!("MODE {channel} {change}"))
            .await
            .unwrap();
        wait_for_access(&bed, (expected, None)).await;
    }
    // Set while the bridge was away: read from the channel's modes (324) when it is back.
    // (+s: through +i or +k the bot could not join again.)
    bed.bridge.stop().await;
    bed.carol.send(&format!("MODE {channel} +s")).await.unwrap();
    bed.bridge.start(&bed.synapse.url()).await.unwrap();
    wait_for_access(&bed, ("public", Some(false))).await;

    // A key the bot saw is kept: after a restart it joins with it.
    let carol_ghost = "@irc_testnet_carol:localhost";
    bed.carol
        .send(&format!("MODE {channel} +k sesame"))
        .await
        .unwrap();
    wait_for_access(&bed, ("invite", None)).await;
    bed.bridge.stop().await;
    // So that the JOIN waited for next is the new one.
    bed.carol.forget_received().await.unwrap();
    bed.bridge.start(&bed.synapse.url()).await.unwrap();
    bed.irc_line("JOIN", "trestle").await;
    bed.carol
        .privmsg(&channel, "through the key")
        .await
        .unwrap();
    bed.matrix_event(carol_ghost, |e| e["content"]["body"] == "through the key")
        .await;

    // Invite-only while the bridge was away: the room is told, and an invitation lets
    // the bot in again.
    bed.bridge.stop().await;
    bed.carol.forget_received().await.unwrap();
    bed.carol
        .send(&format!("MODE {channel} -k+i sesame"))
        .await
        .unwrap();
    bed.bridge.start(&bed.synapse.url()).await.unwrap();
    let notice = bed.bot_answer(&bed.room, "cannot join").await;
    let text = notice["content"]["body"].as_str().unwrap_or_default();
    assert!(
        text.contains(&format!("/invite trestle {channel}")),
        "{text}"
    );
    bed.carol
        .send(&format!("INVITE trestle {channel}"))
        .await
        .unwrap();
    bed.irc_line("JOIN", "trestle").await;
    bed.carol.privmsg(&channel, "invited back").await.unwrap();
    bed.matrix_event(carol_ghost, |e| e["content"]["body"] == "invited back")
        .await;
}

/// Two networks in one bridge, the second with its own ghost and alias templates: each
/// network's names lead to its own server, and the default spelling does not reach the
/// templated network.
#[tokio::test]
async fn networks_keep_their_own_ghost_and_alias_templates() {
    let inspircd = InspIrcd::shared().await.unwrap();
    let ngircd = Ngircd::shared().await.unwrap();
    let channel = unique_channel("templates");
    let mut carol = inspircd.client("carol").await.unwrap();
    carol.join(&channel).await.unwrap();
    let mut dan = ngircd.client("dan").await.unwrap();
    dan.join(&channel).await.unwrap();
    let templates = "    - name: \"ng\"\n      ghost_template: \"{network}-{nick}\"\n      alias_template: \"{network}.{channel}\"\n";
    let (mut bridge, registration) = irc_bridge_for(
        &[(NETWORK, inspircd.port()), ("ng", ngircd.port())],
        "",
        None,
        |config| config.replace("    - name: \"ng\"\n", templates),
    )
    .unwrap();
    let synapse = Synapse::start(&[registration]).await.unwrap();
    bridge.start(&synapse.url()).await.unwrap();
    let alice = synapse
        .register_user("alice", "alice-password", false)
        .await
        .unwrap();

    let default_room = alice
        .join(&format!("#irc_{NETWORK}_{channel}:localhost"))
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", bridge.log()));
    let templated_room = alice
        .join(&format!("#irc_ng.{channel}:localhost"))
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", bridge.log()));
    assert_ne!(default_room, templated_room);
    // The default spelling is not the templated network's.
    assert!(
        alice
            .join(&format!("#irc_ng_{channel}:localhost"))
            .await
            .is_err()
    );

    carol.privmsg(&channel, "from inspircd").await.unwrap();
    dan.privmsg(&channel, "from ngircd").await.unwrap();
    for (room, ghost, text) in [
        (
            &default_room,
            "@irc_testnet_carol:localhost",
            "from inspircd",
        ),
        (&templated_room, "@irc_ng-dan:localhost", "from ngircd"),
    ] {
        alice
            .wait_for_event(room, WAIT, |e| {
                e["sender"] == ghost && e["content"]["body"] == text
            })
            .await
            .unwrap_or_else(|error| panic!("{text}: {error}\n{}", bridge.log()));
    }
    alice.send_text(&templated_room, "to ngircd").await.unwrap();
    let said = dan
        .wait_for(WAIT, |l| l.command == "PRIVMSG" && l.text() == "to ngircd")
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", bridge.log()));
    assert_eq!(said.source_nick(), Some("alice[m]"));

    // A templated ghost id reads back to its nick: inviting it reaches dan.
    let dan_ghost = "@irc_ng-dan:localhost";
    let chat = alice
        .create_room(json!({
            "is_direct": true, "invite": [dan_ghost], "preset": "trusted_private_chat",
        }))
        .await
        .unwrap();
    alice
        .wait_for_event(&chat, WAIT, |e| is_membership(e, dan_ghost, "join"))
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", bridge.log()));
    alice.send_text(&chat, "hello dan").await.unwrap();
    let private = dan
        .wait_for(WAIT, |l| l.command == "PRIVMSG" && l.params[0] == "dan")
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", bridge.log()));
    assert_eq!(
        (private.source_nick(), private.text()),
        (Some("alice[m]"), "hello dan")
    );
}

/// Matrix messages are confirmed by their echo (IRCv3 echo-message with
/// labeled-response): the msgid the server gave a puppet's line is recorded, so IRC
/// replies to it find the Matrix event, and a line the server refuses comes back to the
/// sender as a notice, never dropped in silence.
#[tokio::test]
async fn matrix_messages_keep_their_echoed_msgids_and_refusals_come_back() {
    let irc = InspIrcd::shared().await.unwrap();
    let channel = unique_channel("echo");
    let mut bed = bed(irc.port(), &channel, "uma").await;
    bed.carol.send("CAP REQ :message-tags").await.unwrap();
    bed.carol
        .wait_for(WAIT, |l| {
            l.command == "CAP" && l.params.get(1).is_some_and(|s| s == "ACK")
        })
        .await
        .unwrap();
    let uma_ghost = "@irc_testnet_uma:localhost";

    let question = bed
        .alice
        .send_text(&bed.room, "anyone there?")
        .await
        .unwrap();
    let said = bed.irc_line("PRIVMSG", "alice[m]").await;
    let msgid = said
        .tags
        .get("msgid")
        .cloned()
        .expect("InspIRCd gives msgids");
    bed.carol
        .send(&format!("@+draft/reply={msgid} PRIVMSG {channel} :I am"))
        .await
        .unwrap();
    let answer = bed
        .matrix_event(uma_ghost, |e| e["content"]["body"] == "I am")
        .await;
    assert_eq!(
        answer["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        question.as_str(),
        "{answer}"
    );
    // alice's own reply to her message names it by that msgid too.
    bed.alice
        .send(
            &bed.room,
            "m.room.message",
            &json!({
                "msgtype": "m.text", "body": "hello?",
                "m.relates_to": { "m.in_reply_to": { "event_id": question } },
            }),
        )
        .await
        .unwrap();
    let again = bed.irc_line("PRIVMSG", "alice[m]").await;
    assert_eq!(again.tags.get("+draft/reply"), Some(&msgid), "{again:?}");

    // A moderated channel refuses alice's line: she is told, and it never arrives.
    bed.carol.send(&format!("MODE {channel} +m")).await.unwrap();
    bed.irc_line("MODE", "uma").await;
    bed.alice.send_text(&bed.room, "muted?").await.unwrap();
    let notice = bed.bot_answer(&bed.room, "was not bridged").await;
    let text = notice["content"]["body"].as_str().unwrap_or_default();
    assert!(
        text.contains("@alice:localhost")
            && text.contains("IRC refused it")
            && text.contains(&channel),
        "{text}"
    );
    bed.carol.send(&format!("MODE {channel} -m")).await.unwrap();
    bed.irc_line("MODE", "uma").await;
    bed.alice.send_text(&bed.room, "heard").await.unwrap();
    assert_eq!(bed.irc_line("PRIVMSG", "alice[m]").await.text(), "heard");
}

/// The bridge's ident server names each puppet's user to a server that asks (InspIRCd's
/// ident module, which asks port 113 of the connection's address), so the user name is
/// shown as given, not as unverified (`~alice`).
#[tokio::test]
async fn the_ident_server_names_puppets_to_the_irc_server() {
    let irc = InspIrcd::start_with_ident().await.unwrap();
    let channel = unique_channel("ident");
    let mut bed = bed_with(irc.port(), &channel, "carol", None, |config| {
        let commented = "  # ident_bind: \"[::]:113\"\n";
        assert!(config.contains(commented), "{config}");
        config.replace(commented, "  ident_bind: \"127.0.0.1:113\"\n")
    })
    .await;
    bed.alice.send_text(&bed.room, "named").await.unwrap();
    bed.irc_line("PRIVMSG", "alice[m]").await;
    let user_of = async |bed: &mut Bed, nick: &str| {
        bed.carol.send(&format!("WHOIS {nick}")).await.unwrap();
        let whois = bed
            .carol
            .wait_for(WAIT, |l| l.command == "311")
            .await
            .unwrap();
        bed.carol
            .wait_for(WAIT, |l| l.command == "318")
            .await
            .unwrap();
        whois.params[2].clone()
    };
    // carol's own client has no ident server: unverified.
    assert_eq!(user_of(&mut bed, "carol").await, "~carol");
    assert_eq!(
        user_of(&mut bed, "alice[m]").await,
        "alice",
        "{}",
        bed.bridge.log()
    );
}

/// A reply to an old message quotes its start on IRC, where the message may have
/// scrolled away; a reply to a recent one does not.
#[tokio::test]
async fn replies_to_old_messages_quote_them() {
    let irc = InspIrcd::shared().await.unwrap();
    let channel = unique_channel("quote");
    let mut bed = bed_with(irc.port(), &channel, "quinn", None, |config| {
        let anchor = "      connects_per_second: 50\n";
        assert!(config.contains(anchor), "{config}");
        config.replace(
            anchor,
            &format!("{anchor}      quote_replies_after_seconds: 3\n"),
        )
    })
    .await;
    bed.carol
        .privmsg(&channel, "the first words of a message that goes on and on")
        .await
        .unwrap();
    let original = bed
        .matrix_event("@irc_testnet_quinn:localhost", |e| {
            e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.starts_with("the first words"))
        })
        .await;
    let reply = async |bed: &mut Bed, text: &str| {
        bed.alice
            .send(
                &bed.room,
                "m.room.message",
                &json!({
                    "msgtype": "m.text", "body": text,
                    "m.relates_to": { "m.in_reply_to": { "event_id": original["event_id"] } },
                }),
            )
            .await
            .unwrap();
        bed.irc_line("PRIVMSG", "alice[m]").await.text().to_owned()
    };
    assert_eq!(reply(&mut bed, "right away").await, "quinn: right away");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        reply(&mut bed, "much later").await,
        "quinn: \"the first words of a message that goes…\" <- much later"
    );
}
