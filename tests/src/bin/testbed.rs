//! `testbed quickstart`: the engine of `deploy/quickstart`. Starts the test bed's servers
//! for a person (Synapse with a ready account, InspIRCd with Atheme, ngircd, Prosody),
//! the IRC bridge on both IRC servers and the XMPP bridge on Prosody, prints how to reach
//! them, and stops them all on Ctrl-C.

use anyhow::Context;
use clap::Parser;
use trestle_tests::irc_bridge::irc_bridge_for;
use trestle_tests::synapse::SynapseOptions;
use trestle_tests::xmpp_bridge::xmpp_bridge;
use trestle_tests::{InspIrcd, Ngircd, Prosody, Synapse};

/// Runs the Trestle test bed's servers on loopback.
#[derive(Debug, Parser)]
#[command(version)]
enum Command {
    /// Start every server, create a Matrix account, print how to connect, run until Ctrl-C.
    Quickstart {
        /// Port for Synapse's client API (a free one is chosen if it is taken).
        #[arg(long, default_value_t = 8008)]
        synapse_port: u16,
        /// The Matrix account to create.
        #[arg(long, default_value = "alice")]
        user: String,
        /// Its password.
        #[arg(long, default_value = "trestle-quickstart")]
        password: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Command::Quickstart {
        synapse_port,
        user,
        password,
    } = Command::parse();
    eprintln!("starting Synapse, InspIRCd with Atheme, ngircd and Prosody...");
    let (inspircd, ngircd, prosody) =
        tokio::try_join!(InspIrcd::start(), Ngircd::start(), Prosody::start())?;
    // The bridge's registration must exist before Synapse starts, which loads it.
    let (mut irc_bridge, irc_registration) = irc_bridge_for(
        &[("inspircd", inspircd.port()), ("ngircd", ngircd.port())],
        "",
        None,
        str::to_owned,
    )
    .context("configuring bridge-irc")?;
    let (mut xmpp_bridge, xmpp_registration) =
        xmpp_bridge(&prosody).context("configuring bridge-xmpp")?;
    let options = SynapseOptions {
        port: Some(synapse_port),
        appservice_files: vec![irc_registration, xmpp_registration],
    };
    let synapse = Synapse::start_with(options).await?;
    irc_bridge
        .start(&synapse.url())
        .await
        .context("starting bridge-irc")?;
    xmpp_bridge
        .start(&synapse.url())
        .await
        .context("starting bridge-xmpp")?;
    synapse
        .register_user(&user, &password, true)
        .await
        .context("creating the Matrix account")?;
    prosody
        .register_user(&user, &password)
        .context("creating the XMPP account")?;

    println!(
        "\nTrestle quickstart is up. Everything listens on 127.0.0.1 only.\n\n\
         Matrix   homeserver {url}  (server name {server})\n\
         \x20        log in as  @{user}:{server}  password {password}  (an admin)\n\
         IRC      InspIRCd + Atheme services  127.0.0.1:{insp}  (NickServ, SASL)\n\
         \x20        ngircd                      127.0.0.1:{ng}\n\
         XMPP     Prosody c2s 127.0.0.1:{c2s}  account {user}@{domain} password {password}\n\
         \x20        group chats on {muc}\n\n\
         Bridges: bridge-irc (log and config in {irc_dir})\n\
         \x20        join #irc_inspircd_#trestle:{server} or #irc_ngircd_#trestle:{server}\n\
         \x20        (any channel: #irc_<network>_<#channel>); its bot is @ircbot:{server}:\n\
         \x20        a direct chat with it takes `help`.\n\
         \x20        bridge-xmpp (log and config in {xmpp_dir})\n\
         \x20        join #xmpp_trestle_{muc}:{server} for the group chat trestle@{muc}\n\
         \x20        (any group chat: #xmpp_<room>_<service>).\n\
         Data lives in {dir} and is thrown away. Ctrl-C stops everything.",
        url = synapse.url(),
        server = synapse.server_name(),
        insp = inspircd.port(),
        ng = ngircd.port(),
        c2s = prosody.c2s_port(),
        domain = Prosody::DOMAIN,
        muc = Prosody::MUC_DOMAIN,
        dir = trestle_tests::run_dir().display(),
        irc_dir = irc_bridge.dir().display(),
        xmpp_dir = xmpp_bridge.dir().display(),
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    eprintln!("stopping...");
    irc_bridge.stop().await;
    xmpp_bridge.stop().await;
    Ok(())
}
