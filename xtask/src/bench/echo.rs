//! The echo measures: each repetition starts every host afresh, one at a time, in a
//! rotating order (so a noisy minute of the shared machine does not land on one host),
//! and applies the same load to each. The overlay hosts are reached through two clients:
//! the Go `ziti tunnel proxy` and the Rust dialer (`bench_echo proxy`, this SDK's `dial`).

use std::process::Command;
use std::thread::sleep;
use std::time::Duration;

use anyhow::{Context, Result};

use super::process::{self, Running};
use super::provision::{self, ECHO_SERVICE, Provisioned};
use super::stats::{Measure, Samples, Target, quantile_us};
use super::{Bench, load};

const READY_WITHIN: Duration = Duration::from_secs(60);
const GIB: f64 = (1u64 << 30) as f64;

/// The loopback addresses of the two clients, each a TCP port whose connections become dials.
#[derive(Debug, Clone, Copy)]
pub struct Clients<'a> {
    pub go_proxy: &'a str,
    pub rust_dial: &'a str,
}

pub fn measure(bench: &Bench, provisioned: &Provisioned, clients: Clients, samples: &mut Samples) -> Result<()> {
    let echo = crate::target_dir(&bench.root).join("release/examples/bench_echo");
    // The TCP echo `ziti tunnel host` forwards to listens on one port for the whole run.
    let app_port = process::free_port()?;
    provision::host_at(&bench.cli, ECHO_SERVICE, app_port)?;
    let app = format!("127.0.0.1:{app_port}");
    for rep in 0..bench.sizes.reps {
        for turn in 0..Target::ALL.len() {
            let target = Target::ALL[(rep + turn) % Target::ALL.len()];
            bench.say(&format!("run {}/{}: {}", rep + 1, bench.sizes.reps, target.label()));
            let (mut host, app, addr) = start(bench, provisioned, &echo, target, clients, &app)?;
            let measured = one_run(bench, &mut host, &addr, target, samples)
                .with_context(|| format!("run {} of the {}", rep + 1, target.label()));
            host.stop(Duration::from_secs(5));
            if let Some(app) = app {
                app.stop(Duration::from_secs(5));
            }
            measured?;
        }
    }
    Ok(())
}

fn start(
    bench: &Bench,
    provisioned: &Provisioned,
    echo: &std::path::Path,
    target: Target,
    clients: Clients,
    app: &str,
) -> Result<(Running, Option<Running>, String)> {
    let identity = provisioned.host_identity.to_string_lossy().into_owned();
    let client = if target.rust_dial() { clients.rust_dial } else { clients.go_proxy }.to_owned();
    let (mut host, app, addr) = match target {
        Target::Rust | Target::RustViaRustDial => {
            let mut command = Command::new(echo);
            command.args(["overlay", &identity, ECHO_SERVICE]).env("RUST_LOG", "warn");
            (Running::spawn("rust-host", command, &bench.dir)?, None, client)
        }
        Target::TunnelHost | Target::TunnelHostViaRustDial => {
            let mut command = Command::new(echo);
            command.args(["tcp", app]);
            let app = Running::spawn("tunnel-host-app", command, &bench.dir)?;
            let mut command = bench.cli.command();
            command.args(["tunnel", "host", "-i", &identity]);
            (Running::spawn("tunnel-host", command, &bench.dir)?, Some(app), client)
        }
        Target::Demo => {
            let mut command = bench.cli.command();
            command.args(["demo", "echo-server", "-i", &identity, "-s", ECHO_SERVICE]);
            (Running::spawn("demo-echo-server", command, &bench.dir)?, None, client)
        }
        Target::Tcp => {
            let addr = format!("127.0.0.1:{}", process::free_port()?);
            let mut command = Command::new(echo);
            command.args(["tcp", &addr]);
            (Running::spawn("tcp-echo", command, &bench.dir)?, None, addr)
        }
    };
    process::wait_echo(&mut host, &addr, 5, READY_WITHIN)?;
    Ok((host, app, addr))
}

/// CPU seconds per GiB that sealing and opening every byte once costs (`bench_echo
/// crypto-floor`): what an echo host with end-to-end encryption cannot go below.
pub fn crypto_floor(bench: &Bench) -> Result<f64> {
    let echo = crate::target_dir(&bench.root).join("release/examples/bench_echo");
    let mib = bench.sizes.crypto_mib.to_string();
    let out = Command::new(&echo).args(["crypto-floor", &mib]).output().context("running bench_echo crypto-floor")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().parse().with_context(|| format!("bench_echo crypto-floor printed {text:?}"))
}

fn one_run(bench: &Bench, host: &mut Running, addr: &str, target: Target, samples: &mut Samples) -> Result<()> {
    let sizes = &bench.sizes;
    // Let the probes' circuits wind down before the idle footprint is read.
    sleep(Duration::from_secs(1));
    let idle = host.rss()?;
    samples.push(Measure::RssIdle, target, mib(idle));

    // The idle connections come first, on a host that has not yet moved bulk data: what
    // they add is their own cost, not memory an earlier measure freed and they reuse.
    let held = load::idle(addr, sizes.idle_conns, 16)?;
    sleep(Duration::from_secs(1));
    let with_idle = host.rss()?;
    let rss = mib(with_idle);
    samples.push(Measure::RssConns, target, rss);
    let per_conn_kib = with_idle.saturating_sub(idle) as f64 / 1024.0 / sizes.idle_conns.max(1) as f64;
    samples.push(Measure::RssPerConn, target, per_conn_kib);
    drop(held);
    bench.say(&format!("  RSS {rss:.1} MiB with {} idle connections ({per_conn_kib:.1} KiB each)", sizes.idle_conns));
    // Let their circuits wind down before the bulk measures.
    sleep(Duration::from_secs(1));

    let cpu_before = host.cpu_seconds()?;
    let took = load::bulk(addr, 1, sizes.bulk1_bytes)?;
    let one = mb_per_s(sizes.bulk1_bytes, took);
    let took16 = load::bulk(addr, 16, sizes.bulk16_bytes)?;
    let sixteen = mb_per_s(16 * sizes.bulk16_bytes, took16);
    let cpu = host.cpu_seconds()? - cpu_before;
    let moved = (sizes.bulk1_bytes + 16 * sizes.bulk16_bytes) as f64 / GIB;
    samples.push(Measure::Bulk1, target, one);
    samples.push(Measure::Bulk16, target, sixteen);
    samples.push(Measure::CpuPerGib, target, cpu / moved);
    bench
        .say(&format!("  bulk {one:.0} MB/s (1 stream), {sixteen:.0} MB/s (16 streams), {:.1} CPU s/GiB", cpu / moved));

    let mut rtt = load::round_trips(addr, 1, sizes.rtt_per_conn_1, 1024)?;
    let (p50, p99) = (quantile_us(&mut rtt, 0.50), quantile_us(&mut rtt, 0.99));
    samples.push(Measure::Rtt1P50, target, p50);
    samples.push(Measure::Rtt1P99, target, p99);
    let mut rtt32 = load::round_trips(addr, 32, sizes.rtt_per_conn_32, 1024)?;
    let (p50_32, p99_32) = (quantile_us(&mut rtt32, 0.50), quantile_us(&mut rtt32, 0.99));
    samples.push(Measure::Rtt32P50, target, p50_32);
    samples.push(Measure::Rtt32P99, target, p99_32);
    bench.say(&format!("  echo p50/p99 {p50:.0}/{p99:.0} µs (1 conn), {p50_32:.0}/{p99_32:.0} µs (32 conns)"));

    let (took, mut dials) = load::dials(addr, sizes.dials, sizes.dial_parallel)?;
    let rate = dials.len() as f64 / took.as_secs_f64();
    let dial_p99 = quantile_us(&mut dials, 0.99) / 1000.0;
    samples.push(Measure::DialRate, target, rate);
    samples.push(Measure::DialP99, target, dial_p99);
    bench.say(&format!("  dials {rate:.0}/s, p99 {dial_p99:.1} ms"));

    host.check_alive()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn mb_per_s(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}
