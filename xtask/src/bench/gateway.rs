//! The gateway end to end: HTTP GETs through `ziti tunnel proxy` to the gateway hosting
//! its own service over the overlay (identity leased from ziti-management), and to the
//! same gateway binary on plain TCP behind `ziti tunnel host` (what a user would run
//! without this SDK), against that gateway reached on plain TCP directly. All run for the
//! whole measure; runs rotate.

use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::process::{self, Running};
use super::provision::{self, GATEWAY_SERVICE, GATEWAY_TUNNEL_SERVICE};
use super::stats::{Summary, quantile_us};
use super::{Bench, load};

/// Requests/s and p99 (µs), run by run, for each way of reaching the gateway.
#[derive(Debug, Default)]
pub struct GatewayResults {
    pub overlay_rps: Vec<f64>,
    pub overlay_p99: Vec<f64>,
    pub tunnel_rps: Vec<f64>,
    pub tunnel_p99: Vec<f64>,
    pub tcp_rps: Vec<f64>,
    pub tcp_p99: Vec<f64>,
    pub conns: usize,
}

/// One measure of the gateway, both ways.
#[derive(Debug, Clone, Copy)]
pub struct GatewayRow {
    pub label: &'static str,
    pub unit: &'static str,
    pub higher_is_better: bool,
    pub overlay: Option<Summary>,
    pub tunnel: Option<Summary>,
    pub tcp: Option<Summary>,
}

impl GatewayResults {
    pub fn rows(&self) -> [GatewayRow; 2] {
        [
            GatewayRow {
                label: "gateway HTTP requests/s",
                unit: "req/s",
                higher_is_better: true,
                overlay: Summary::of(&self.overlay_rps),
                tunnel: Summary::of(&self.tunnel_rps),
                tcp: Summary::of(&self.tcp_rps),
            },
            GatewayRow {
                label: "gateway HTTP p99",
                unit: "µs",
                higher_is_better: false,
                overlay: Summary::of(&self.overlay_p99),
                tunnel: Summary::of(&self.tunnel_p99),
                tcp: Summary::of(&self.tcp_p99),
            },
        ]
    }
}

pub fn measure(bench: &Bench, env: &str, client_identity: &Path, host_identity: &Path) -> Result<GatewayResults> {
    let binary = crate::target_dir(&bench.root).join("release/gateway");
    let grpc = super::env_value(env, "ZITI_MANAGEMENT_GRPC_TARGET").context("no ZITI_MANAGEMENT_GRPC_TARGET")?;
    let grpc_ca = super::env_value(env, "ZITI_MANAGEMENT_TLS_CA").context("no ZITI_MANAGEMENT_TLS_CA")?;
    // ziti-management admits the gateway by its X.509-SVID.
    let workload_api = super::env_value(env, "SPIFFE_ENDPOINT_SOCKET").context("no SPIFFE_ENDPOINT_SOCKET")?;
    let spiffe_id = crate::ziti_net::spiffe::gateway_spiffe_id();
    let identity_dir = bench.dir.join("gateway-identity");
    std::fs::create_dir_all(&identity_dir)?;

    bench.say("gateway: starting it on the overlay (bench-gateway) and on plain TCP");
    let overlay_admin = format!("127.0.0.1:{}", process::free_port()?);
    let overlay = start(
        bench,
        "gateway-overlay",
        &binary,
        &[
            ("ZITI_ENABLED", "true"),
            ("ZITI_MANAGEMENT_GRPC_TARGET", &grpc),
            ("ZITI_MANAGEMENT_TLS_CA", &grpc_ca),
            ("SPIFFE_ENDPOINT_SOCKET", &workload_api),
            ("ZITI_SPIFFE_ID", &spiffe_id),
            ("ZITI_SERVICE_NAME", GATEWAY_SERVICE),
            ("GATEWAY_IDENTITY_DIR", &identity_dir.to_string_lossy()),
            ("GATEWAY_ADMIN_ADDR", &overlay_admin),
        ],
    )?;
    let tcp_addr = format!("127.0.0.1:{}", process::free_port()?);
    let tcp_admin = format!("127.0.0.1:{}", process::free_port()?);
    let tcp = start(
        bench,
        "gateway-tcp",
        &binary,
        &[("ZITI_ENABLED", "false"), ("GATEWAY_LISTEN_ADDR", &tcp_addr), ("GATEWAY_ADMIN_ADDR", &tcp_admin)],
    )?;
    let tcp_port = tcp_addr.rsplit_once(':').and_then(|(_, port)| port.parse().ok()).context("gateway TCP port")?;
    provision::host_at(&bench.cli, GATEWAY_TUNNEL_SERVICE, tcp_port)?;
    let mut command = bench.cli.command();
    command.args(["tunnel", "host", "-i"]).arg(host_identity);
    let tunnel_host = Running::spawn("gateway-tunnel-host", command, &bench.dir)?;
    let mut both = [overlay, tcp];
    wait_ready(&mut both[0], &overlay_admin)?;
    wait_ready(&mut both[1], &tcp_admin)?;

    let proxy_addr = format!("127.0.0.1:{}", process::free_port()?);
    let proxy = super::start_proxy(bench, GATEWAY_SERVICE, &proxy_addr, client_identity)?;
    let tunnel_addr = format!("127.0.0.1:{}", process::free_port()?);
    let tunnel_proxy = super::start_proxy(bench, GATEWAY_TUNNEL_SERVICE, &tunnel_addr, client_identity)?;
    let measured = rotate(bench, &proxy_addr, &tunnel_addr, &tcp_addr);
    proxy.stop(Duration::from_secs(5));
    tunnel_proxy.stop(Duration::from_secs(5));
    tunnel_host.stop(Duration::from_secs(5));
    let [overlay, tcp] = both;
    overlay.stop(Duration::from_secs(15));
    tcp.stop(Duration::from_secs(5));
    measured
}

/// How the GETs reach the gateway.
#[derive(Debug, Clone, Copy)]
enum Way {
    Overlay,
    Tunnel,
    Tcp,
}

fn rotate(bench: &Bench, proxy: &str, tunnel: &str, tcp: &str) -> Result<GatewayResults> {
    let sizes = &bench.sizes;
    for (addr, what) in [(proxy, "hosting its service"), (tunnel, "behind ziti tunnel host")] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while load::http_gets(addr, "/bench", 1, 1).is_err() {
            if Instant::now() > deadline {
                bail!("the gateway {what} did not answer through the overlay within 60 s");
            }
            sleep(Duration::from_millis(250));
        }
    }
    let mut results = GatewayResults { conns: sizes.http_conns, ..GatewayResults::default() };
    let ways = [Way::Overlay, Way::Tunnel, Way::Tcp];
    for rep in 0..sizes.reps {
        for turn in 0..ways.len() {
            let way = ways[(rep + turn) % ways.len()];
            let addr = match way {
                Way::Overlay => proxy,
                Way::Tunnel => tunnel,
                Way::Tcp => tcp,
            };
            let (took, mut times) = load::http_gets(addr, "/bench", sizes.http_conns, sizes.http_per_conn)?;
            let rps = times.len() as f64 / took.as_secs_f64();
            let p99 = quantile_us(&mut times, 0.99);
            let (rps_all, p99_all, how) = match way {
                Way::Overlay => (&mut results.overlay_rps, &mut results.overlay_p99, "hosting its service"),
                Way::Tunnel => (&mut results.tunnel_rps, &mut results.tunnel_p99, "behind ziti tunnel host"),
                Way::Tcp => (&mut results.tcp_rps, &mut results.tcp_p99, "plain TCP"),
            };
            rps_all.push(rps);
            p99_all.push(p99);
            bench.say(&format!("gateway run {}/{} ({how}): {rps:.0} req/s, p99 {p99:.0} µs", rep + 1, sizes.reps));
        }
    }
    Ok(results)
}

fn start(bench: &Bench, name: &str, binary: &Path, vars: &[(&str, &str)]) -> Result<Running> {
    let mut command = Command::new(binary);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .envs(vars.iter().copied());
    Running::spawn(name, command, &bench.dir)
}

fn wait_ready(gateway: &mut Running, admin: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        gateway.check_alive()?;
        if crate::smoke::get(admin, "/readyz").is_ok_and(|r| r.starts_with("HTTP/1.1 200")) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} not ready within 60 s", gateway.name);
        }
        sleep(Duration::from_millis(200));
    }
}
