//! Prometheus metrics, served by the admin listener on `/metrics`.
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `zitimgmt_requests_total{method,code,principal}` | counter | gRPC calls answered, by method, gRPC code (`OK`, `NOT_FOUND`, …) and principal class (`spiffe`, `jwt`, `anonymous`, `unauthenticated`) |
//! | `zitimgmt_request_duration_seconds{method}` | histogram | time to answer a gRPC call |
//! | `zitimgmt_leases_held` | gauge | managed identities whose lease still runs (counted on the controller by the reaper) |
//! | `zitimgmt_leases_reaped_total` | counter | identities deleted because their lease ran out |

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tonic::Code;
use zitimgmt_grpc::code_name;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    code: &'static str,
    /// `spiffe`, `jwt`, `anonymous`, or `unauthenticated` (no principal established).
    principal: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

type Histograms = Family<MethodLabels, Histogram, fn() -> Histogram>;

/// The server's metrics. Share it behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Histograms,
    leases_held: Gauge,
    leases_reaped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn latency_histogram() -> Histogram {
    // 2 ms .. ~16 s: enrollments take tens of milliseconds, a stuck controller seconds.
    Histogram::new(exponential_buckets(0.002, 2.0, 14))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations: Histograms = Family::new_with_constructor(latency_histogram);
        let leases_held = Gauge::default();
        let leases_reaped = Counter::default();
        registry.register(
            "zitimgmt_requests",
            "gRPC calls answered, by method, gRPC code and principal class",
            requests.clone(),
        );
        registry.register("zitimgmt_request_duration_seconds", "Time to answer a gRPC call", durations.clone());
        registry.register(
            "zitimgmt_leases_held",
            "Managed identities whose lease still runs, as last counted on the controller",
            leases_held.clone(),
        );
        registry.register(
            "zitimgmt_leases_reaped",
            "Identities deleted because their lease ran out",
            leases_reaped.clone(),
        );
        Self { registry, requests, durations, leases_held, leases_reaped }
    }

    /// Counts one answered gRPC call; `principal` is the caller's class (see
    /// [`crate::auth::Principal::class`]) or `unauthenticated`.
    pub fn record_request(&self, method: &'static str, code: Code, principal: &'static str, took: Duration) {
        self.requests.get_or_create(&RequestLabels { method, code: code_name(code), principal }).inc();
        self.durations.get_or_create(&MethodLabels { method }).observe(took.as_secs_f64());
    }

    pub fn set_leases_held(&self, held: u64) {
        self.leases_held.set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    pub fn record_reaped(&self, count: u64) {
        self.leases_reaped.inc_by(count);
    }

    /// The OpenMetrics text exposition (see [`service_kit::admin::OPENMETRICS_CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(%err, "encoding the metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_method_code_and_principal_class() {
        let metrics = Metrics::new();
        metrics.record_request("ExtendIdentityLease", Code::NotFound, "spiffe", Duration::from_millis(3));
        metrics.record_reaped(2);
        metrics.set_leases_held(5);
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"zitimgmt_requests_total{method="ExtendIdentityLease",code="NOT_FOUND",principal="spiffe"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("zitimgmt_leases_reaped_total 2"), "{text}");
        assert!(text.contains("zitimgmt_leases_held 5"), "{text}");
        assert!(text.contains("zitimgmt_request_duration_seconds_count{method=\"ExtendIdentityLease\"} 1"), "{text}");
    }
}
