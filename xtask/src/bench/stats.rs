//! What the benchmark measures and how repeated runs are summarised.

use std::collections::BTreeMap;
use std::time::Duration;

/// Who answers, through which client: the overlay hosts take turns on one service, reached
/// through the Go client (`ziti tunnel proxy`) or the Rust one (this SDK's `dial`); TCP is
/// the limit line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Rust,
    TunnelHost,
    Demo,
    Tcp,
    RustViaRustDial,
    TunnelHostViaRustDial,
}

impl Target {
    pub const ALL: [Target; 6] = [
        Target::Rust,
        Target::TunnelHost,
        Target::Demo,
        Target::Tcp,
        Target::RustViaRustDial,
        Target::TunnelHostViaRustDial,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Target::Rust => "Rust host (ziti-sdk-rs) via ziti tunnel proxy",
            Target::TunnelHost => "ziti tunnel host → TCP echo, via ziti tunnel proxy",
            Target::Demo => "ziti demo echo-server (a demo) via ziti tunnel proxy",
            Target::Tcp => "plain TCP (Rust echo, loopback)",
            Target::RustViaRustDial => "Rust host via the Rust dialer",
            Target::TunnelHostViaRustDial => "ziti tunnel host → TCP echo, via the Rust dialer",
        }
    }

    /// Whether the load reaches this host through the Rust dialer rather than the Go proxy.
    pub fn rust_dial(self) -> bool {
        matches!(self, Target::RustViaRustDial | Target::TunnelHostViaRustDial)
    }
}

/// One measure of the echo hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Measure {
    Bulk1,
    Bulk16,
    Rtt1P50,
    Rtt1P99,
    Rtt32P50,
    Rtt32P99,
    DialRate,
    DialP99,
    RssIdle,
    RssConns,
    /// What each idle connection added to the host's RSS (KiB): the RSS just before the
    /// idle connections were opened, subtracted from the RSS with all of them open.
    RssPerConn,
    CpuPerGib,
}

impl Measure {
    pub const ALL: [Measure; 12] = [
        Measure::Bulk1,
        Measure::Bulk16,
        Measure::Rtt1P50,
        Measure::Rtt1P99,
        Measure::Rtt32P50,
        Measure::Rtt32P99,
        Measure::DialRate,
        Measure::DialP99,
        Measure::RssIdle,
        Measure::RssConns,
        Measure::RssPerConn,
        Measure::CpuPerGib,
    ];

    /// The row's name (`idle` is the number of idle connections held open).
    pub fn label(self, idle: usize) -> String {
        match self {
            Measure::Bulk1 => "bulk, 1 stream".to_owned(),
            Measure::Bulk16 => "bulk, 16 streams".to_owned(),
            Measure::Rtt1P50 => "1 KiB echo p50, 1 conn".to_owned(),
            Measure::Rtt1P99 => "1 KiB echo p99, 1 conn".to_owned(),
            Measure::Rtt32P50 => "1 KiB echo p50, 32 conns".to_owned(),
            Measure::Rtt32P99 => "1 KiB echo p99, 32 conns".to_owned(),
            Measure::DialRate => "dial → first byte, rate".to_owned(),
            Measure::DialP99 => "dial → first byte, p99".to_owned(),
            Measure::RssIdle => "host RSS, idle".to_owned(),
            Measure::RssConns => format!("host RSS, {idle} idle conns"),
            Measure::RssPerConn => "host RSS per idle conn".to_owned(),
            Measure::CpuPerGib => "host CPU per GiB echoed".to_owned(),
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Measure::Bulk1 | Measure::Bulk16 => "MB/s",
            Measure::Rtt1P50 | Measure::Rtt1P99 | Measure::Rtt32P50 | Measure::Rtt32P99 => "µs",
            Measure::DialRate => "conn/s",
            Measure::DialP99 => "ms",
            Measure::RssIdle | Measure::RssConns => "MiB",
            Measure::RssPerConn => "KiB",
            Measure::CpuPerGib => "CPU s",
        }
    }

    pub fn higher_is_better(self) -> bool {
        matches!(self, Measure::Bulk1 | Measure::Bulk16 | Measure::DialRate)
    }
}

/// Every run's value of every measure, per target.
#[derive(Debug, Default)]
pub struct Samples {
    values: BTreeMap<(Measure, Target), Vec<f64>>,
}

impl Samples {
    pub fn push(&mut self, measure: Measure, target: Target, value: f64) {
        self.values.entry((measure, target)).or_default().push(value);
    }

    pub fn get(&self, measure: Measure, target: Target) -> Option<Summary> {
        Summary::of(self.values.get(&(measure, target))?)
    }

    /// `a / b` run by run (runs of one repetition pair up), summarised.
    pub fn paired_ratio(&self, measure: Measure, a: Target, b: Target) -> Option<Summary> {
        let (a, b) = (self.values.get(&(measure, a))?, self.values.get(&(measure, b))?);
        let ratios: Vec<f64> = a.iter().zip(b).filter(|(_, b)| **b > 0.0).map(|(a, b)| a / b).collect();
        Summary::of(&ratios)
    }
}

/// Median and range of repeated runs.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        let median = if sorted.len().is_multiple_of(2) { (sorted[mid - 1] + sorted[mid]) / 2.0 } else { sorted[mid] };
        Some(Self { median, min: sorted[0], max: sorted[sorted.len() - 1] })
    }
}

/// The `q` quantile (0..=1) of durations, in microseconds.
pub fn quantile_us(times: &mut [Duration], q: f64) -> f64 {
    if times.is_empty() {
        return f64::NAN;
    }
    times.sort_unstable();
    let index = ((times.len() - 1) as f64 * q).round() as usize;
    times[index].as_secs_f64() * 1e6
}
