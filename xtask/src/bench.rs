//! `cargo xtask bench [--quick] [--reps N] [--no-gateway]`: the Rust SDK's echo host
//! against the Go tunneler hosting the same service in front of a plain TCP echo (`ziti
//! tunnel host`) and the Go SDK's demo (`ziti demo echo-server`), driven by the same clients
//! (the Go `ziti tunnel proxy` and a Rust dialer, each fed by the plain-TCP load driver of
//! [`load`]), with a Rust TCP echo server as the limit line and the cost of end-to-end
//! encryption alone as the CPU floor; then the gateway hosting its service, behind `ziti
//! tunnel host`, and on plain TCP. Writes BENCHMARKS.md's results section and
//! docs/benchmarks.svg. See BENCHMARKS.md for the method.

mod chart;
mod echo;
mod gateway;
mod load;
mod process;
mod provision;
mod report;
mod stats;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use self::process::Running;
use self::stats::Samples;
use crate::ziti_net::cli::Cli;
use crate::ziti_net::layout::Layout;

/// How much load each measure applies (the defaults take ~10 minutes on 2 cores).
#[derive(Debug, Clone)]
pub struct Sizes {
    pub reps: usize,
    pub bulk1_bytes: usize,
    pub bulk16_bytes: usize,
    pub rtt_per_conn_1: usize,
    pub rtt_per_conn_32: usize,
    pub dials: usize,
    pub dial_parallel: usize,
    pub idle_conns: usize,
    pub http_conns: usize,
    pub http_per_conn: usize,
    pub gateway: bool,
    /// MiB sealed and opened to measure the CPU floor of end-to-end encryption.
    pub crypto_mib: usize,
}

impl Sizes {
    fn full() -> Self {
        const MIB: usize = 1024 * 1024;
        Self {
            reps: 5,
            bulk1_bytes: 64 * MIB,
            bulk16_bytes: 8 * MIB,
            rtt_per_conn_1: 2000,
            rtt_per_conn_32: 150,
            dials: 300,
            dial_parallel: 4,
            idle_conns: 1000,
            http_conns: 8,
            http_per_conn: 500,
            gateway: true,
            crypto_mib: 1024,
        }
    }

    fn quick() -> Self {
        const MIB: usize = 1024 * 1024;
        Self {
            reps: 3,
            bulk1_bytes: 16 * MIB,
            bulk16_bytes: 2 * MIB,
            rtt_per_conn_1: 300,
            rtt_per_conn_32: 30,
            dials: 60,
            dial_parallel: 4,
            idle_conns: 200,
            http_conns: 4,
            http_per_conn: 100,
            gateway: true,
            crypto_mib: 256,
        }
    }
}

fn parse(args: &[&str]) -> Result<(Sizes, String)> {
    let mut sizes = if args.contains(&"--quick") { Sizes::quick() } else { Sizes::full() };
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match *arg {
            "--quick" => {}
            "--no-gateway" => sizes.gateway = false,
            "--reps" => sizes.reps = iter.next().context("--reps needs a number")?.parse()?,
            "--idle" => sizes.idle_conns = iter.next().context("--idle needs a number")?.parse()?,
            "--bulk-mib" => {
                let mib: usize = iter.next().context("--bulk-mib needs a number")?.parse()?;
                sizes.bulk1_bytes = mib << 20;
                sizes.bulk16_bytes = (mib << 20) / 8;
            }
            other => bail!("unknown bench option {other:?} (--quick, --reps N, --idle N, --bulk-mib N, --no-gateway)"),
        }
    }
    if sizes.reps == 0 {
        bail!("--reps must be at least 1");
    }
    let command = std::iter::once("cargo xtask bench").chain(args.iter().copied()).collect::<Vec<_>>().join(" ");
    Ok((sizes, command))
}

/// What every part of the run shares.
#[derive(Debug)]
pub struct Bench {
    pub root: PathBuf,
    /// `target/ziti-net/bench`: identities, logs; `ziti-down` sweeps processes run there.
    pub dir: PathBuf,
    pub ziti: PathBuf,
    pub cli: Cli,
    pub sizes: Sizes,
    pub started: Instant,
}

impl Bench {
    /// Progress line with the elapsed time.
    pub fn say(&self, what: &str) {
        crate::step(&format!("[{:>5.0} s] {what}", self.started.elapsed().as_secs_f64()));
    }
}

pub fn run(root: &Path, args: &[&str]) -> Result<()> {
    let (sizes, command) = parse(args)?;
    let started = Instant::now();
    crate::step("bench: release build of the echo host and the gateway");
    crate::cargo(root, &["build", "--release", "--locked", "-p", "ziti-sdk-rs", "--example", "bench_echo"])?;
    if sizes.gateway {
        crate::cargo(root, &["build", "--release", "--locked", "-p", "gateway-bin", "--bin", "gateway"])?;
    }
    let layout = Layout::new(root);
    if !serving(&layout) {
        crate::ziti_net::up(root, crate::ziti_net::locate::wanted_version(None)?.as_deref())?;
    }
    let env = std::fs::read_to_string(layout.env_file()).context("reading target/ziti-net/env")?;
    let ziti = PathBuf::from(env_value(&env, "ZITI_BIN").context("no ZITI_BIN in the env file")?);
    let cli = Cli { bin: ziti.clone(), config_dir: layout.cli_config() };
    let dir = layout.home.join("bench");
    std::fs::create_dir_all(&dir)?;
    let provisioned = provision::ensure(&cli, &dir)?;
    let bench = Bench { root: root.to_owned(), dir, ziti, cli, sizes, started };

    bench.say("crypto floor: seal + open with the SDK's secretstream");
    let floor = echo::crypto_floor(&bench)?;
    bench.say(&format!("  {floor:.2} CPU s per GiB"));

    let go_proxy = format!("127.0.0.1:{}", process::free_port()?);
    let proxy = start_proxy(&bench, provision::ECHO_SERVICE, &go_proxy, &provisioned.client_identity)?;
    let rust_dial = format!("127.0.0.1:{}", process::free_port()?);
    let dialer = start_rust_dialer(&bench, provision::ECHO_SERVICE, &rust_dial, &provisioned.client_identity)?;
    let mut samples = Samples::default();
    let clients = echo::Clients { go_proxy: &go_proxy, rust_dial: &rust_dial };
    let echo_result = echo::measure(&bench, &provisioned, clients, &mut samples);
    proxy.stop(std::time::Duration::from_secs(5));
    dialer.stop(std::time::Duration::from_secs(5));
    echo_result?;

    // A gateway that cannot start must not cost the echo results already measured.
    let gateway = if bench.sizes.gateway {
        gateway::measure(&bench, &env, &provisioned.client_identity, &provisioned.host_identity)
            .inspect_err(|err| bench.say(&format!("gateway end to end NOT measured: {err:#}")))
            .ok()
    } else {
        None
    };
    bench.say("writing BENCHMARKS.md and docs/benchmarks.svg");
    chart::draw(&root.join("docs/benchmarks.svg"), &samples, gateway.as_ref(), &bench.sizes)?;
    report::write(&bench, &command, &samples, floor, gateway.as_ref())?;
    bench.say("done");
    Ok(())
}

/// `ziti tunnel proxy SERVICE:PORT`: the Go SDK client (it listens on every interface; the
/// load uses `addr`, on loopback).
pub fn start_proxy(bench: &Bench, service: &str, addr: &str, identity: &Path) -> Result<Running> {
    let port = addr.rsplit_once(':').map_or(addr, |(_, port)| port);
    let mut command = bench.cli.command();
    command.args(["tunnel", "proxy", &format!("{service}:{port}"), "-i"]).arg(identity);
    Running::spawn(&format!("proxy-{service}"), command, &bench.dir)
}

/// `bench_echo proxy`: the Rust client, one `ZitiContext::dial` per TCP connection to `addr`.
fn start_rust_dialer(bench: &Bench, service: &str, addr: &str, identity: &Path) -> Result<Running> {
    let mut command = std::process::Command::new(crate::target_dir(&bench.root).join("release/examples/bench_echo"));
    command.arg("proxy").arg(identity).args([service, addr]).env("RUST_LOG", "warn");
    Running::spawn(&format!("rust-dialer-{service}"), command, &bench.dir)
}

/// Whether a network answers now. Checked here rather than left to `ziti-up`, which
/// replaces a network whose recorded pids changed (a test restarted its router) — one that
/// another test run may be using.
fn serving(layout: &Layout) -> bool {
    let env = std::fs::read_to_string(layout.env_file()).unwrap_or_default();
    env_value(&env, "ZITI_MANAGEMENT_ADMIN_ADDR")
        .is_some_and(|admin| crate::smoke::get(&admin, "/readyz").is_ok_and(|r| r.starts_with("HTTP/1.1 200")))
}

fn env_value(env: &str, name: &str) -> Option<String> {
    env.lines().find_map(|line| {
        let value = line.strip_prefix("export ").unwrap_or(line).strip_prefix(name)?.strip_prefix('=')?;
        Some(value.trim_matches('\'').to_owned())
    })
}
