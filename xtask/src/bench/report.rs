//! The results section of BENCHMARKS.md: the table, the machine, the command and date.
//! Only the text between the markers is replaced; the method and analysis around it stay.

use std::fmt::Write as _;
use std::process::Command;

use anyhow::{Context, Result};

use super::Bench;
use super::gateway::GatewayResults;
use super::stats::{Measure, Samples, Summary, Target};

const BEGIN: &str = "<!-- bench:results:begin (written by `cargo xtask bench`) -->";
const END: &str = "<!-- bench:results:end -->";

pub fn write(
    bench: &Bench,
    command: &str,
    samples: &Samples,
    floor: f64,
    gateway: Option<&GatewayResults>,
) -> Result<()> {
    let section = section(bench, command, samples, floor, gateway)?;
    let path = bench.root.join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let text = match (old.find(BEGIN), old.find(END)) {
        (Some(begin), Some(end)) if begin < end => format!("{}{section}{}", &old[..begin], &old[end + END.len()..]),
        _ => format!("# Benchmarks\n\n{section}\n"),
    };
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    println!("{section}");
    Ok(())
}

fn ratio(a: Option<Summary>, b: Option<Summary>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b.median > 0.0 => Some(a.median / b.median),
        _ => None,
    }
}

fn times(r: Option<f64>) -> String {
    r.map_or("–".to_owned(), |r| format!("{r:.2}x"))
}

fn section(
    bench: &Bench,
    command: &str,
    samples: &Samples,
    floor: f64,
    gateway: Option<&GatewayResults>,
) -> Result<String> {
    let sizes = &bench.sizes;
    let mut out = String::new();
    writeln!(out, "{BEGIN}")?;
    writeln!(
        out,
        "Run `{command}` on {} ({:.0} s).",
        shell("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        bench.started.elapsed().as_secs_f64()
    )?;
    writeln!(out, "Each cell: median of {} runs, [min–max] below it. Ratios are of the medians.\n", sizes.reps)?;
    writeln!(out, "Client: `ziti tunnel proxy` (Go SDK). The reference is `ziti tunnel host` → a plain TCP echo.\n")?;
    writeln!(
        out,
        "| Measure | Rust host | ziti tunnel host | **Rust/tunnel host** | target | demo echo-server (a demo) | plain TCP | Rust/TCP |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---|---:|---:|---:|")?;
    for measure in Measure::ALL {
        let cell = |target| samples.get(measure, target);
        let (rust, tunnel, demo, tcp) =
            (cell(Target::Rust), cell(Target::TunnelHost), cell(Target::Demo), cell(Target::Tcp));
        let rest = [value(demo), value(tcp), times(ratio(rust, tcp))];
        writeln!(out, "{}", against_tunnel_host(measure, sizes.idle_conns, rust, tunnel, &rest))?;
    }
    writeln!(
        out,
        "\nThe same measures with the Rust dialer (`bench_echo proxy`: one `ZitiContext::dial` per TCP connection) as the client instead of `ziti tunnel proxy`:\n"
    )?;
    writeln!(
        out,
        "| Measure | Rust host | ziti tunnel host | **Rust/tunnel host** | target | Rust host: Rust dialer / Go proxy | tunnel host: Rust dialer / Go proxy |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---|---:|---:|")?;
    for measure in Measure::ALL {
        let cell = |target| samples.get(measure, target);
        let (rust, tunnel) = (cell(Target::RustViaRustDial), cell(Target::TunnelHostViaRustDial));
        let rest = [times(ratio(rust, cell(Target::Rust))), times(ratio(tunnel, cell(Target::TunnelHost)))];
        writeln!(out, "{}", against_tunnel_host(measure, sizes.idle_conns, rust, tunnel, &rest))?;
    }
    let per_conn = |target| samples.get(Measure::RssPerConn, target).map(|s| s.median);
    let kib = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.1} KiB"));
    let (rust_kib, via_rust_kib) = (per_conn(Target::Rust), per_conn(Target::RustViaRustDial));
    let met = rust_kib.map_or("–", |v| if v <= IDLE_CONN_KIB { "✅" } else { "❌" });
    writeln!(
        out,
        "\nRSS per idle connection ({} connections, each proven by one echoed byte, then held): the Rust host **{}** through `ziti tunnel proxy` and {} through the Rust dialer (target ≤ {IDLE_CONN_KIB:.0} KiB {met}); `ziti tunnel host` {}, its TCP echo app not counted.",
        sizes.idle_conns,
        kib(rust_kib),
        kib(via_rust_kib),
        kib(per_conn(Target::TunnelHost)),
    )?;
    let per_gib = |target| samples.get(Measure::CpuPerGib, target).map(|s| s.median / floor);
    let (rust_x, tunnel_x) = (per_gib(Target::Rust), per_gib(Target::TunnelHost));
    let met = rust_x.map_or("–", |x| if x <= 3.0 { "✅" } else { "❌" });
    writeln!(
        out,
        "\nCPU per GiB against its floor: sealing and opening 1 GiB with the SDK's secretstream (XChaCha20-Poly1305, dryoc, {} MiB in 32 KiB messages, `bench_echo crypto-floor`) takes **{floor:.2} CPU s**. The Rust host uses **{}** that (target ≤ 3x {met}); `ziti tunnel host` {} (its TCP echo app not counted).",
        sizes.crypto_mib,
        times(rust_x),
        times(tunnel_x),
    )?;
    if let Some(gateway) = gateway {
        writeln!(
            out,
            "\nThe gateway end to end ({} keep-alive connections, GET /bench, through `ziti tunnel proxy`):\n",
            gateway.conns
        )?;
        writeln!(
            out,
            "| Measure | gateway hosting its service (Rust SDK) | gateway on TCP behind ziti tunnel host | **hosting/tunnel host** | plain TCP | hosting/TCP |"
        )?;
        writeln!(out, "|---|---:|---:|---:|---:|---:|")?;
        for row in gateway.rows() {
            let (label, unit, overlay, tunnel, tcp) = (row.label, row.unit, row.overlay, row.tunnel, row.tcp);
            writeln!(
                out,
                "| {label} ({unit}) | {} | {} | **{}** | {} | {} |",
                value(overlay),
                value(tunnel),
                times(ratio(overlay, tunnel)),
                value(tcp),
                times(ratio(overlay, tcp))
            )?;
        }
    }
    writeln!(
        out,
        "\nSizes: bulk {} MiB on 1 stream and {} MiB on each of 16; {} and {} round trips per connection; {} dials, {} at a time; {} idle connections; gateway {}×{} requests.",
        sizes.bulk1_bytes >> 20,
        sizes.bulk16_bytes >> 20,
        sizes.rtt_per_conn_1,
        sizes.rtt_per_conn_32,
        sizes.dials,
        sizes.dial_parallel,
        sizes.idle_conns,
        sizes.http_conns,
        sizes.http_per_conn
    )?;
    writeln!(out, "\nMachine: {}", machine(bench))?;
    writeln!(out, "\n![Rust host relative to ziti tunnel host](docs/benchmarks.svg)")?;
    write!(out, "{END}")?;
    Ok(out)
}

/// One table row: the measure, the Rust host, `ziti tunnel host`, their ratio and its
/// target, then `rest`.
fn against_tunnel_host(
    measure: Measure,
    idle_conns: usize,
    rust: Option<Summary>,
    tunnel: Option<Summary>,
    rest: &[String],
) -> String {
    let rust_tunnel = ratio(rust, tunnel);
    format!(
        "| {} ({}) | {} | {} | **{}** | {} | {} |",
        measure.label(idle_conns),
        measure.unit(),
        value(rust),
        value(tunnel),
        times(rust_tunnel),
        target(measure, rust_tunnel),
        rest.join(" | "),
    )
}

fn value(summary: Option<Summary>) -> String {
    let Some(s) = summary else { return "–".to_owned() };
    let fmt = |v: f64| if v >= 100.0 { format!("{v:.0}") } else { format!("{v:.1}") };
    format!("{}<br><sub>[{}–{}]</sub>", fmt(s.median), fmt(s.min), fmt(s.max))
}

/// The targets against `ziti tunnel host` (issue #15): ≥ 1.2x its bulk throughput, ≤ 0.8x
/// its 1 KiB echo p99, ≤ 0.5x its RSS (and ≤ 16 KiB per idle connection, see
/// [`IDLE_CONN_KIB`]).
/// What an idle overlay connection may add to the host's RSS (issue #15).
const IDLE_CONN_KIB: f64 = 16.0;

fn target(measure: Measure, ratio: Option<f64>) -> String {
    let goal = match measure {
        Measure::Bulk1 | Measure::Bulk16 => 1.2,
        Measure::Rtt1P99 | Measure::Rtt32P99 => 0.8,
        Measure::RssIdle | Measure::RssConns | Measure::RssPerConn => 0.5,
        _ => return String::new(),
    };
    let Some(r) = ratio else { return String::new() };
    let met = if measure.higher_is_better() { r >= goal } else { r <= goal };
    let cmp = if measure.higher_is_better() { "≥" } else { "≤" };
    format!("{cmp} {goal:.1}x {}", if met { "✅" } else { "❌" })
}

fn machine(bench: &Bench) -> String {
    let cpu = shell("sh", &["-c", "lscpu | sed -n 's/^Model name: *//p' | head -1"]);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .map_or("?".to_owned(), |kib| format!("{:.0} GiB", kib as f64 / 1048576.0));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let ziti = shell(&bench.ziti.to_string_lossy(), &["version"]);
    format!(
        "{} cores ({cpu}), {mem} RAM, Linux {}; {}; OpenZiti `ziti` {ziti}; load average at the end {} (the bench's own processes count in it: router, controller, hosts, clients).",
        std::thread::available_parallelism().map_or(0, usize::from),
        shell("uname", &["-r"]),
        shell("rustc", &["-V"]),
        load.join(" "),
    )
}

fn shell(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "?".to_owned())
}
