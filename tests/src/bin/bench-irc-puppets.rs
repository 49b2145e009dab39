//! `bench-irc-puppets`: the memory an idle puppet costs the IRC bridge.
//!
//! Starts an InspIRCd of the test bed, then opens `--puppets` IRC connections with
//! bridge-irc's own [`Connection`] (the whole per-puppet state: socket, buffers, the task
//! that reads, pings and writes, the registration's view of the server), through the
//! network's connection gate of `--per-second` new connections a second. Once all are
//! registered and have sat idle for `--idle` seconds, it reads the process's resident
//! memory and reports what each connection added. Plain TCP, as on a loopback link; TLS
//! adds rustls's buffers.
//!
//! `target/release/bench-irc-puppets --puppets 10000` (the shell's `ulimit -n` must allow
//! the sockets: 20,000 here).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use bridge_irc::connection::{ConnectOptions, Connection, FloodLimits};
use clap::Parser;
use trestle_tests::InspIrcd;
use trestle_tests::measure::rss_kib;

#[derive(Debug, Parser)]
struct Args {
    /// Puppet connections to open.
    #[arg(long, default_value_t = 1000)]
    puppets: usize,
    /// New connections a second (the network's `connects_per_second`).
    #[arg(long, default_value_t = 500.0)]
    per_second: f64,
    /// Seconds to sit idle before measuring.
    #[arg(long, default_value_t = 5)]
    idle: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let irc = InspIrcd::start().await.context("starting InspIRCd")?;
    let options = |index: usize| ConnectOptions {
        host: "127.0.0.1".to_owned(),
        port: irc.port(),
        tls: None,
        password: None,
        nick: format!("puppet{index}"),
        username: "bench".to_owned(),
        realname: format!("@puppet{index}:example.org"),
        sasl: None,
        flood: FloodLimits {
            burst: 5,
            per_second: 2.0,
        },
        ping_after: Duration::from_secs(120),
        bind: None,
        ident: None,
    };
    // Warm up what every connection shares (the runtime, first allocations), so that
    // the baseline does not count it.
    let (warm, warm_events) = Connection::connect(&options(usize::MAX)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = rss_kib(std::process::id()).context("no VmRSS")?;
    let started = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / args.per_second);
    let mut tasks = Vec::with_capacity(args.puppets);
    for index in 0..args.puppets {
        let options = options(index);
        tasks.push(tokio::spawn(async move {
            let (connection, mut events) = Connection::connect(&options).await?;
            // A puppet's reader: lines arrive and are dropped, as for an idle puppet.
            let drain = tokio::spawn(async move { while events.recv().await.is_some() {} });
            anyhow::Ok((connection, drain))
        }));
        tokio::time::sleep(gap).await;
    }
    let mut connections = Vec::with_capacity(args.puppets);
    for task in tasks {
        connections.push(task.await??);
    }
    let connected = started.elapsed();
    tokio::time::sleep(Duration::from_secs(args.idle)).await;
    let after = rss_kib(std::process::id()).context("no VmRSS")?;
    let per_puppet = (after.saturating_sub(baseline)) as f64 * 1024.0 / args.puppets as f64;
    let open = connections.iter().filter(|(c, _)| c.is_open()).count();
    println!(
        "| puppets | connected in s | open after idle | RSS before MiB | RSS after MiB | per puppet KiB |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    println!(
        "| {} | {:.1} | {} | {:.1} | {:.1} | {:.1} |",
        args.puppets,
        connected.as_secs_f64(),
        open,
        baseline as f64 / 1024.0,
        after as f64 / 1024.0,
        per_puppet / 1024.0
    );
    drop((warm, warm_events));
    Ok(())
}
