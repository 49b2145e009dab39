//! `deploy/quickstart`'s engine (`testbed quickstart`) brings up the servers and the
//! bridges, and a Matrix client can use them as its printout says.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;
use trestle_tests::Prosody;
use trestle_tests::irc::IrcClient;
use trestle_tests::matrix::MatrixClient;
use trestle_tests::process::free_port;
use trestle_tests::xmpp::XmppClient;

/// The value after `label` on the printout line holding it.
fn field<'a>(printout: &'a str, label: &str) -> &'a str {
    printout
        .lines()
        .find_map(|line| line.split_once(label).map(|(_, rest)| rest))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {label:?} in:\n{printout}"))
}

#[tokio::test]
async fn the_quickstart_bridges_irc_and_xmpp_for_its_account() {
    let binary = trestle_tests::workspace_binary("testbed").unwrap();
    let mut quickstart = Command::new(binary)
        .args(["quickstart", "--synapse-port"])
        .arg(free_port().unwrap().to_string())
        .args(["--user", "quinn", "--password", "quick-pass"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(quickstart.stdout.take().unwrap()).lines();
    let mut printout = String::new();
    let read = tokio::time::timeout(Duration::from_secs(180), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            printout.push_str(&line);
            printout.push('\n');
            if line.contains("Ctrl-C stops everything") {
                return;
            }
        }
        panic!("the quickstart ended:\n{printout}");
    })
    .await;
    assert!(read.is_ok(), "the quickstart did not come up:\n{printout}");
    let homeserver = field(&printout, "homeserver ");
    let irc_port: u16 = field(&printout, "InspIRCd + Atheme services  127.0.0.1:")
        .parse()
        .unwrap();

    let mut irc_user = IrcClient::connect(irc_port, "ircuser").await.unwrap();
    irc_user.join("#trestle").await.unwrap();
    let quinn = MatrixClient::login(homeserver, "quinn", "quick-pass")
        .await
        .unwrap();
    let room = quinn
        .join("#irc_inspircd_#trestle:localhost")
        .await
        .unwrap();
    quinn
        .send_text(&room, "hello from the quickstart")
        .await
        .unwrap();
    irc_user
        .wait_for_privmsg(
            "#trestle",
            "hello from the quickstart",
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    irc_user.privmsg("#trestle", "hello back").await.unwrap();
    quinn
        .wait_for_text(&room, "hello back", Duration::from_secs(30))
        .await
        .unwrap();

    // XMPP: the same account on Prosody, in the group chat the printout names.
    let c2s: u16 = field(&printout, "Prosody c2s 127.0.0.1:").parse().unwrap();
    let muc = format!("trestle@{}", Prosody::MUC_DOMAIN);
    let mut xmpp_user = XmppClient::connect(c2s, Prosody::DOMAIN, "quinn", "quick-pass")
        .await
        .unwrap();
    xmpp_user.join_muc(&muc, "quinn-xmpp").await.unwrap();
    let alias = field(&printout, "join #xmpp_");
    assert_eq!(alias, format!("trestle_{}:localhost", Prosody::MUC_DOMAIN));
    let room = quinn.join(&format!("#xmpp_{alias}")).await.unwrap();
    quinn.send_text(&room, "hello xmpp").await.unwrap();
    xmpp_user
        .wait_for_body("hello xmpp", Duration::from_secs(30))
        .await
        .unwrap();
    xmpp_user
        .send_groupchat(&muc, "hello from xmpp")
        .await
        .unwrap();
    quinn
        .wait_for_text(&room, "hello from xmpp", Duration::from_secs(30))
        .await
        .unwrap();

    // Ctrl-C stops it all.
    let pid = quickstart.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), quickstart.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}
