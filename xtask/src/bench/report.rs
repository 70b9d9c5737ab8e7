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

pub fn write(bench: &Bench, command: &str, samples: &Samples, gateway: Option<&GatewayResults>) -> Result<()> {
    let section = section(bench, command, samples, gateway)?;
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

fn section(bench: &Bench, command: &str, samples: &Samples, gateway: Option<&GatewayResults>) -> Result<String> {
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
    writeln!(out, "| Measure | Rust host | Go host | **Rust/Go** | target (now / long run) | plain TCP | Rust/TCP |")?;
    writeln!(out, "|---|---:|---:|---:|---|---:|---:|")?;
    for measure in Measure::ALL {
        let cell = |target| samples.get(measure, target);
        let (rust, go, tcp) = (cell(Target::Rust), cell(Target::Go), cell(Target::Tcp));
        let ratio = |a: Option<Summary>, b: Option<Summary>| match (a, b) {
            (Some(a), Some(b)) if b.median > 0.0 => Some(a.median / b.median),
            _ => None,
        };
        let rust_go = ratio(rust, go);
        writeln!(
            out,
            "| {} ({}) | {} | {} | **{}** | {} | {} | {} |",
            measure.label(sizes.idle_conns),
            measure.unit(),
            value(rust),
            value(go),
            rust_go.map_or("–".to_owned(), |r| format!("{r:.2}x")),
            target(measure, rust_go),
            value(tcp),
            ratio(rust, tcp).map_or("–".to_owned(), |r| format!("{r:.2}x")),
        )?;
    }
    if let Some(gateway) = gateway {
        writeln!(out, "\nThe gateway end to end ({} keep-alive connections, GET /bench):\n", gateway.conns)?;
        writeln!(out, "| Measure | overlay (ziti tunnel proxy → Rust SDK) | plain TCP | overlay/TCP |")?;
        writeln!(out, "|---|---:|---:|---:|")?;
        for row in gateway.rows() {
            let (label, unit, overlay, tcp) = (row.label, row.unit, row.overlay, row.tcp);
            let ratio = match (overlay, tcp) {
                (Some(o), Some(t)) if t.median > 0.0 => format!("{:.2}x", o.median / t.median),
                _ => "–".to_owned(),
            };
            writeln!(out, "| {label} ({unit}) | {} | {} | {ratio} |", value(overlay), value(tcp))?;
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
    writeln!(out, "\n![Rust host relative to the Go host](docs/benchmarks.svg)")?;
    write!(out, "{END}")?;
    Ok(out)
}

fn value(summary: Option<Summary>) -> String {
    let Some(s) = summary else { return "–".to_owned() };
    let fmt = |v: f64| if v >= 100.0 { format!("{v:.0}") } else { format!("{v:.1}") };
    format!("{}<br><sub>[{}–{}]</sub>", fmt(s.median), fmt(s.min), fmt(s.max))
}

/// The issue's targets: ≥ 1.0x (1.2x) the Go host's throughput and dial rate, ≤ 1.0x
/// (0.8x) its p99 latency, ≤ 1.0x (0.5x) its RSS.
fn target(measure: Measure, ratio: Option<f64>) -> String {
    let (now, long) = match measure {
        Measure::Bulk1 | Measure::Bulk16 | Measure::DialRate => (1.0, 1.2),
        Measure::Rtt1P99 | Measure::Rtt32P99 | Measure::DialP99 => (1.0, 0.8),
        Measure::RssIdle | Measure::RssConns => (1.0, 0.5),
        _ => return String::new(),
    };
    let Some(r) = ratio else { return String::new() };
    let met = |goal: f64| if measure.higher_is_better() { r >= goal } else { r <= goal };
    let cmp = if measure.higher_is_better() { "≥" } else { "≤" };
    let mark = |goal: f64| if met(goal) { "✅" } else { "❌" };
    format!("{cmp} {now:.1}x {} / {cmp} {long:.1}x {}", mark(now), mark(long))
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
        "{} cores ({cpu}), {mem} RAM, Linux {}; {}; OpenZiti `ziti` {ziti}; load average at the end {} (a shared machine: other builds and tests ran at the same time).",
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
