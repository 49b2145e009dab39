//! `bench-xmpp`: bridge-xmpp under load, end to end: a test bed Prosody and Synapse on
//! loopback, the `bridge-xmpp` binary built beside this one (logging at `info`), an XMPP
//! user in a group chat and a Matrix user in its portal.
//!
//! It measures, in order:
//! - messages per second each way: `--messages` sent back to back, timed from the first
//!   send until the last one is seen on the other side (XMPP to Matrix: the XMPP client
//!   writes them all at once; Matrix to XMPP: the Matrix client sends one request after
//!   another, as a client does);
//! - latency each way: `--samples` messages one at a time, each timed from its send
//!   until it is seen on the other side (the homeserver's sync and Prosody included);
//! - the bridge's own share of that latency, bounded: the same samples timed between two
//!   XMPP clients in the group chat (Prosody alone) and between two Matrix users in the
//!   room (Synapse alone, for comparison). The end-to-end median less Prosody's is the
//!   bridge's share plus Synapse's, so an upper bound of the bridge's (Synapse's share on
//!   the bridge's path cannot be timed apart from the sync that sees it);
//! - memory per puppet: `--puppets` Matrix users join the portal, each getting a puppet
//!   in the group chat, and the bridge's resident memory (`VmRSS`) is compared before
//!   and after.
//!
//! `cargo build --release -p bridge-xmpp -p trestle-tests --bin bench-xmpp`, then
//! `target/release/bench-xmpp`.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use trestle_tests::matrix::MatrixClient;
use trestle_tests::measure::{percentiles, rss_kib};
use trestle_tests::xmpp_bridge::xmpp_bridge_logging;
use trestle_tests::{Prosody, Synapse};

#[derive(Debug, Parser)]
struct Args {
    /// Messages per throughput run, each way.
    #[arg(long, default_value_t = 1000)]
    messages: usize,
    /// Messages timed one at a time, each way.
    #[arg(long, default_value_t = 50)]
    samples: usize,
    /// Matrix users whose puppets join the group chat for the memory measure.
    #[arg(long, default_value_t = 1000)]
    puppets: usize,
}

const LONG: Duration = Duration::from_secs(600);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let prosody = Prosody::start().await?;
    let muc = format!("bench@{}", Prosody::MUC_DOMAIN);
    let mut carol = prosody.client("carol", "carol-password").await?;
    carol.join_muc(&muc, "carol").await?;
    let (mut bridge, registration) = xmpp_bridge_logging(&prosody, "info", None, str::to_owned)?;
    let synapse = Synapse::start(&[registration]).await?;
    bridge.start(&synapse.url()).await?;
    let pid = bridge.pid().context("the bridge is not running")?;
    let alice = synapse
        .register_user("alice", "alice-password", false)
        .await?;
    let room = alice
        .join(&format!("#xmpp_bench_{}:localhost", Prosody::MUC_DOMAIN))
        .await?;
    // The baselines' other ends: dave in the group chat, bob in the room.
    let mut dave = prosody.client("dave", "dave-password").await?;
    dave.join_muc(&muc, "dave").await?;
    let bob = synapse.register_user("bob", "bob-password", false).await?;
    bob.join(room.as_str()).await?;
    // Warm up both ways (the puppets join).
    carol.send_groupchat(&muc, "warm").await?;
    alice.wait_for_text(&room, "warm", LONG).await?;
    alice.send_text(&room, "warm too").await?;
    carol.wait_for_body("warm too", LONG).await?;
    bob.send_text(&room, "warm bob").await?;
    carol.wait_for_body("warm bob", LONG).await?;

    let n = args.messages;
    let started = Instant::now();
    for i in 0..n {
        carol.send_groupchat(&muc, &format!("x{i}")).await?;
    }
    let last = format!("x{}", n - 1);
    alice.wait_for_text(&room, &last, LONG).await?;
    let to_matrix = n as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let sender = MatrixClient::login(&synapse.url(), "alice", "alice-password").await?;
    let sending = sender.spawn_texts(room.clone(), "m", n);
    carol.wait_for_body(&format!("m{}", n - 1), LONG).await?;
    let to_xmpp = n as f64 / started.elapsed().as_secs_f64();
    sending.await??;

    let mut xmpp_to_matrix = Vec::new();
    let mut matrix_to_xmpp = Vec::new();
    for k in 0..args.samples {
        let body = format!("lx{k}");
        let sent = Instant::now();
        carol.send_groupchat(&muc, &body).await?;
        alice.wait_for_text(&room, &body, LONG).await?;
        xmpp_to_matrix.push(sent.elapsed());
        let body = format!("lm{k}");
        let sent = Instant::now();
        alice.send_text(&room, &body).await?;
        carol.wait_for_body(&body, LONG).await?;
        matrix_to_xmpp.push(sent.elapsed());
    }
    let (x50, x95) = percentiles(xmpp_to_matrix);
    let (m50, m95) = percentiles(matrix_to_xmpp);
    // The same without the bridge: Prosody alone, then Synapse alone.
    let mut xmpp_alone = Vec::new();
    let mut matrix_alone = Vec::new();
    for k in 0..args.samples {
        let body = format!("bx{k}");
        let sent = Instant::now();
        carol.send_groupchat(&muc, &body).await?;
        dave.wait_for_body(&body, LONG).await?;
        xmpp_alone.push(sent.elapsed());
        let body = format!("bm{k}");
        let sent = Instant::now();
        alice.send_text(&room, &body).await?;
        bob.wait_for_text(&room, &body, LONG).await?;
        matrix_alone.push(sent.elapsed());
    }
    let (xmpp50, _) = percentiles(xmpp_alone);
    let (matrix50, _) = percentiles(matrix_alone);

    // Memory per puppet: users join the portal, and their puppets the group chat.
    let before = rss_kib(pid).context("no VmRSS")?;
    let joined_at = Instant::now();
    for i in 0..args.puppets {
        let user = synapse
            .register_user(&format!("p{i}"), "puppet-password", false)
            .await?;
        user.join(room.as_str()).await?;
    }
    let mut seen = 0;
    while seen < args.puppets {
        carol
            .wait_for(LONG, |s| {
                s.name() == "presence"
                    && s.attr("from").is_some_and(|f| {
                        f.strip_prefix(&format!("{muc}/p"))
                            .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_digit()))
                    })
            })
            .await?;
        seen += 1;
    }
    let joined_in = joined_at.elapsed();
    // Let allocations settle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = rss_kib(pid).context("no VmRSS")?;
    if after < before && args.puppets > 0 {
        bail!("RSS fell from {before} to {after} KiB: measure again");
    }
    let per_puppet = if args.puppets == 0 {
        0.0
    } else {
        (after - before) as f64 / args.puppets as f64
    };

    println!("| measure | value |\n| --- | --- |");
    println!("| XMPP to Matrix, {n} messages back to back | {to_matrix:.0} messages/s |");
    println!(
        "| Matrix to XMPP, {n} messages one request after another | {to_xmpp:.0} messages/s |"
    );
    println!(
        "| XMPP to Matrix latency, median / p95 ({} samples) | {x50:.1} / {x95:.1} ms |",
        args.samples
    );
    println!("| Matrix to XMPP latency, median / p95 | {m50:.1} / {m95:.1} ms |");
    println!(
        "| Prosody alone (client to client through the group chat), median | {xmpp50:.1} ms |"
    );
    println!("| Synapse alone (a send to another user's sync), median | {matrix50:.1} ms |");
    println!(
        "| the bridge's own share at most (median less Prosody's), XMPP to Matrix / Matrix to XMPP | {:.1} / {:.1} ms |",
        x50 - xmpp50,
        m50 - xmpp50
    );
    println!(
        "| {} puppets joined in | {:.1} s |",
        args.puppets,
        joined_in.as_secs_f64()
    );
    println!(
        "| bridge RSS before / after puppets | {:.1} / {:.1} MiB |",
        before as f64 / 1024.0,
        after as f64 / 1024.0
    );
    println!("| memory per puppet | {per_puppet:.1} KiB |");
    bridge.stop().await;
    Ok(())
}
