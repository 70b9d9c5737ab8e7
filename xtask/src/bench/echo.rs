//! The echo measures: each repetition starts every host afresh, one at a time, in a
//! rotating order (so a noisy minute of the shared machine does not land on one host),
//! and applies the same load to each.

use std::process::Command;
use std::thread::sleep;
use std::time::Duration;

use anyhow::{Context, Result};

use super::process::{self, Running};
use super::provision::{ECHO_SERVICE, Provisioned};
use super::stats::{Measure, Samples, Target, quantile_us};
use super::{Bench, load};

const READY_WITHIN: Duration = Duration::from_secs(60);
const GIB: f64 = (1u64 << 30) as f64;

pub fn measure(bench: &Bench, provisioned: &Provisioned, proxy: &str, samples: &mut Samples) -> Result<()> {
    let echo = crate::target_dir(&bench.root).join("release/examples/bench_echo");
    for rep in 0..bench.sizes.reps {
        for turn in 0..Target::ALL.len() {
            let target = Target::ALL[(rep + turn) % Target::ALL.len()];
            bench.say(&format!("run {}/{}: {}", rep + 1, bench.sizes.reps, target.label()));
            let (mut host, addr) = start(bench, provisioned, &echo, target, proxy)?;
            let measured = one_run(bench, &mut host, &addr, target, samples)
                .with_context(|| format!("run {} of the {}", rep + 1, target.label()));
            host.stop(Duration::from_secs(5));
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
    proxy: &str,
) -> Result<(Running, String)> {
    let identity = provisioned.host_identity.to_string_lossy().into_owned();
    let (mut host, addr) = match target {
        Target::Rust => {
            let mut command = Command::new(echo);
            command.args(["overlay", &identity, ECHO_SERVICE]).env("RUST_LOG", "warn");
            (Running::spawn("rust-host", command, &bench.dir)?, proxy.to_owned())
        }
        Target::Go => {
            let mut command = bench.cli.command();
            command.args(["demo", "echo-server", "-i", &identity, "-s", ECHO_SERVICE]);
            (Running::spawn("go-host", command, &bench.dir)?, proxy.to_owned())
        }
        Target::Tcp => {
            let addr = format!("127.0.0.1:{}", process::free_port()?);
            let mut command = Command::new(echo);
            command.args(["tcp", &addr]);
            (Running::spawn("tcp-echo", command, &bench.dir)?, addr)
        }
    };
    process::wait_echo(&mut host, &addr, 5, READY_WITHIN)?;
    Ok((host, addr))
}

fn one_run(bench: &Bench, host: &mut Running, addr: &str, target: Target, samples: &mut Samples) -> Result<()> {
    let sizes = &bench.sizes;
    // Let the probes' circuits wind down before the idle footprint is read.
    sleep(Duration::from_secs(1));
    samples.push(Measure::RssIdle, target, mib(host.rss()?));

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

    let held = load::idle(addr, sizes.idle_conns, 16)?;
    sleep(Duration::from_secs(1));
    let rss = mib(host.rss()?);
    samples.push(Measure::RssConns, target, rss);
    drop(held);
    bench.say(&format!("  RSS {rss:.1} MiB with {} idle connections", sizes.idle_conns));
    host.check_alive()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn mb_per_s(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}
