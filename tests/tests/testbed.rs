//! The test bed's own smoke tests: every server starts, and real clients talk through it.
//! A server that cannot start is reported with its log.

use std::time::Duration;

use trestle_tests::irc::IrcClient;
use trestle_tests::matrix::MatrixClient;
use trestle_tests::{Error, InspIrcd, Ngircd, Postgres, Prosody, Synapse};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn synapse_registers_users_who_log_in_and_talk() {
    let synapse = Synapse::shared().await.unwrap();
    let alice = synapse
        .register_user("smoke_alice", "alice-pw", false)
        .await
        .unwrap();
    assert_eq!(alice.user_id().as_str(), "@smoke_alice:localhost");
    // A password login works too, as a person's Matrix client would do it.
    let alice = MatrixClient::login(&synapse.url(), "smoke_alice", "alice-pw")
        .await
        .unwrap();
    let bob = synapse
        .register_user("smoke_bob", "bob-pw", false)
        .await
        .unwrap();

    let room = alice
        .create_room(serde_json::json!({"preset": "public_chat", "name": "smoke"}))
        .await
        .unwrap();
    bob.join(room.as_str()).await.unwrap();
    alice.send_text(&room, "hello from alice").await.unwrap();
    let seen = bob
        .wait_for_text(&room, "hello from alice", WAIT)
        .await
        .unwrap();
    assert_eq!(seen["sender"], "@smoke_alice:localhost");
}

async fn two_clients_exchange_a_message(port: u16, channel: &str) {
    let mut one = IrcClient::connect(port, "smokeone").await.unwrap();
    let mut two = IrcClient::connect(port, "smoketwo").await.unwrap();
    one.join(channel).await.unwrap();
    two.join(channel).await.unwrap();
    one.privmsg(channel, "hello over irc").await.unwrap();
    let line = two
        .wait_for_privmsg(channel, "hello over irc", WAIT)
        .await
        .unwrap();
    assert_eq!(line.source_nick(), Some("smokeone"));
    one.quit().await.unwrap();
    two.quit().await.unwrap();
}

#[tokio::test]
async fn inspircd_carries_a_channel_message_between_two_clients() {
    let ircd = InspIrcd::shared().await.unwrap();
    two_clients_exchange_a_message(ircd.port(), "#smoke").await;
}

#[tokio::test]
async fn inspircd_services_register_an_account_that_logs_in_with_sasl() {
    let ircd = InspIrcd::shared().await.unwrap();
    ircd.register_account("saslsmoke", "sasl-secret-1")
        .await
        .unwrap();
    let mut client =
        IrcClient::connect_with_sasl(ircd.port(), "saslsmoke", "saslsmoke", "sasl-secret-1")
            .await
            .unwrap();
    client.send("WHOIS saslsmoke").await.unwrap();
    // 330 RPL_WHOISACCOUNT: the connection is logged in to the account.
    let account = client.wait_for(WAIT, |l| l.command == "330").await.unwrap();
    assert_eq!(account.params[2], "saslsmoke");

    let wrong = IrcClient::connect_with_sasl(ircd.port(), "saslbad", "saslsmoke", "wrong").await;
    // 904 ERR_SASLFAIL: refused for the password, not for some other reason.
    match wrong {
        Err(Error::Sasl { numeric, .. }) => assert_eq!(numeric, "904", "a wrong password"),
        Err(other) => panic!("a wrong password must fail SASL with 904, got: {other}"),
        Ok(_) => panic!("a wrong password must not log in"),
    }
}

#[tokio::test]
async fn ngircd_carries_a_channel_message_between_two_clients() {
    let ircd = Ngircd::shared().await.unwrap();
    two_clients_exchange_a_message(ircd.port(), "#smoke").await;
}

#[tokio::test]
async fn prosody_carries_a_muc_message_between_two_clients() {
    let prosody = Prosody::shared().await.unwrap();
    let mut juliet = prosody.client("juliet", "juliet-pw").await.unwrap();
    let mut romeo = prosody.client("romeo", "romeo-pw").await.unwrap();
    assert!(juliet.jid().starts_with("juliet@localhost/"));
    let room = format!("smoke@{}", Prosody::MUC_DOMAIN);
    juliet.join_muc(&room, "Juliet").await.unwrap();
    romeo.join_muc(&room, "Romeo").await.unwrap();
    juliet
        .send_groupchat(&room, "hello over xmpp")
        .await
        .unwrap();
    let message = romeo.wait_for_body("hello over xmpp", WAIT).await.unwrap();
    assert_eq!(
        message.attr("from"),
        Some(format!("{room}/Juliet").as_str())
    );
    juliet.close().await.unwrap();
    romeo.close().await.unwrap();
}

#[tokio::test]
async fn postgres_gives_each_caller_its_own_database() {
    let postgres = Postgres::shared().await.unwrap();
    let first = postgres.create_database().await.unwrap();
    let second = postgres.create_database().await.unwrap();
    assert_ne!(first, second);
    for url in [first, second] {
        let output = tokio::process::Command::new("psql")
            .args([url.as_str(), "-tAc", "SELECT 40 + 2"])
            .output()
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "42",
            "{url}"
        );
    }
}

#[tokio::test]
async fn a_server_that_cannot_start_is_reported_with_its_log() {
    let missing = std::path::PathBuf::from("/nonexistent/trestle-registration.yaml");
    let error = Synapse::start(std::slice::from_ref(&missing))
        .await
        .expect_err("Synapse must refuse a registration file that does not exist");
    match &error {
        Error::ServerStart {
            server, log_tail, ..
        } => {
            assert_eq!(server, "synapse");
            assert!(
                log_tail.contains("trestle-registration.yaml"),
                "the report must show the log that names the cause:\n{error}"
            );
        }
        other => panic!("expected a start failure, got {other}"),
    }
}
