//! Prometheus metrics of the gateway, served by the admin listener on `/metrics`.
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `gateway_enrollments_total` | counter | identities enrolled and installed |
//! | `gateway_enrollment_failures_total` | counter | failed enrollment attempts |
//! | `gateway_lease_renewals_total{result="ok"\|"failed"}` | counter | lease extensions |
//! | `gateway_lease_lost_total` | counter | leases lost (expired or revoked) |
//! | `gateway_lease_seconds_remaining` | gauge | time left on the lease |
//! | `gateway_identity_held` | gauge | 1 while a valid identity is held, else 0 |
//! | `gateway_http_requests_total{status="200"}` | counter | responses, by status code |
//! | `gateway_connections_open` | gauge | connections being served |
//! | `gateway_connections_refused_total` | counter | connections closed at once: `GATEWAY_MAX_CONNECTIONS` were open |
//!
//! `gateway_lease_seconds_remaining` is computed at scrape time from the expiry the
//! last lease event reported, so it counts down between renewals (and while renewals
//! fail) instead of showing a stale value. It is 0 once the lease is lost, and absent
//! while the expiry is unknown: before the first enrollment, with the overlay off, or
//! when ziti-management does not report expiries. It follows tokio's clock, so tests
//! that pause time see it move with the lease keeper.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::time::Instant;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RenewalLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: u16,
}

/// The gateway's metrics. Share it behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    enrollments: Counter,
    enrollment_failures: Counter,
    lease_renewals: Family<RenewalLabels, Counter>,
    lease_lost: Counter,
    lease_remaining: LeaseRemaining,
    identity_held: Gauge,
    http_requests: Family<StatusLabels, Counter>,
    connections_open: Gauge,
    connections_refused: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let enrollments = Counter::default();
        let enrollment_failures = Counter::default();
        let lease_renewals = Family::<RenewalLabels, Counter>::default();
        let lease_lost = Counter::default();
        let lease_remaining = LeaseRemaining::default();
        let identity_held = Gauge::default();
        let http_requests = Family::<StatusLabels, Counter>::default();
        let connections_open = Gauge::default();
        let connections_refused = Counter::default();

        // Counters get their `_total` suffix from the encoder.
        registry.register("gateway_enrollments", "Identities enrolled and installed", enrollments.clone());
        registry.register(
            "gateway_enrollment_failures",
            "Failed enrollment attempts (each is retried)",
            enrollment_failures.clone(),
        );
        registry.register("gateway_lease_renewals", "Lease extensions, by result", lease_renewals.clone());
        registry.register("gateway_lease_lost", "Leases lost (expired or revoked)", lease_lost.clone());
        registry.register(
            "gateway_lease_seconds_remaining",
            "Seconds left on the identity lease, computed at scrape time; absent while unknown",
            lease_remaining.clone(),
        );
        registry.register("gateway_identity_held", "1 while a valid overlay identity is held", identity_held.clone());
        registry.register("gateway_http_requests", "HTTP responses served, by status code", http_requests.clone());
        registry.register("gateway_connections_open", "Connections being served", connections_open.clone());
        registry.register(
            "gateway_connections_refused",
            "Connections closed at once because the connection limit was reached",
            connections_refused.clone(),
        );
        // Pre-create the usual series so that rates work from the first scrape.
        for result in ["ok", "failed"] {
            drop(lease_renewals.get_or_create(&RenewalLabels { result }));
        }

        Self {
            registry,
            enrollments,
            enrollment_failures,
            lease_renewals,
            lease_lost,
            lease_remaining,
            identity_held,
            http_requests,
            connections_open,
            connections_refused,
        }
    }

    /// A new identity is in use; `expires_in` is what the server said of its lease.
    pub fn record_enrollment(&self, expires_in: Option<Duration>) {
        self.enrollments.inc();
        self.identity_held.set(1);
        self.lease_remaining.set(expires_in);
    }

    pub fn record_enrollment_failure(&self) {
        self.enrollment_failures.inc();
    }

    /// The lease was extended; `expires_in` is what the server said is left.
    pub fn record_renewal_ok(&self, expires_in: Option<Duration>) {
        self.lease_renewals.get_or_create(&RenewalLabels { result: "ok" }).inc();
        self.lease_remaining.set(expires_in);
    }

    /// An extension failed; the previous expiry keeps counting down.
    pub fn record_renewal_failed(&self) {
        self.lease_renewals.get_or_create(&RenewalLabels { result: "failed" }).inc();
    }

    /// The lease is gone: no identity is held and no time is left.
    pub fn record_lease_lost(&self) {
        self.lease_lost.inc();
        self.identity_held.set(0);
        self.lease_remaining.set(Some(Duration::ZERO));
    }

    /// Counts one HTTP response by its status code.
    pub fn record_response(&self, status: http::StatusCode) {
        self.http_requests.get_or_create(&StatusLabels { status: status.as_u16() }).inc();
    }

    /// A connection is being served.
    pub fn record_connection_opened(&self) {
        self.connections_open.inc();
    }

    /// A connection being served has ended.
    pub fn record_connection_closed(&self) {
        self.connections_open.dec();
    }

    /// A connection was closed at once: the connection limit was reached.
    pub fn record_connection_refused(&self) {
        self.connections_refused.inc();
    }

    pub fn connections_open(&self) -> i64 {
        self.connections_open.get()
    }

    pub fn connections_refused_total(&self) -> u64 {
        self.connections_refused.get()
    }

    pub fn enrollments_total(&self) -> u64 {
        self.enrollments.get()
    }

    pub fn lease_renewals_total(&self, ok: bool) -> u64 {
        let labels = RenewalLabels { result: if ok { "ok" } else { "failed" } };
        self.lease_renewals.get(&labels).map_or(0, |counter| counter.get())
    }

    pub fn lease_lost_total(&self) -> u64 {
        self.lease_lost.get()
    }

    pub fn identity_held(&self) -> bool {
        self.identity_held.get() == 1
    }

    /// Seconds left on the lease now, if known.
    pub fn lease_seconds_remaining(&self) -> Option<f64> {
        self.lease_remaining.seconds()
    }

    /// Responses served with `status` so far.
    pub fn http_requests_total(&self, status: u16) -> u64 {
        self.http_requests.get(&StatusLabels { status }).map_or(0, |counter| counter.get())
    }

    /// The OpenMetrics text exposition (see [`service_kit::admin::OPENMETRICS_CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; a metric's encoder failing would be a bug in
        // it, and a partial exposition is still more useful than none.
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(%err, "encoding the metrics failed");
        }
        out
    }
}

/// The lease's expiry, turned into seconds remaining when scraped.
#[derive(Debug, Clone, Default)]
struct LeaseRemaining(std::sync::Arc<Mutex<Option<Instant>>>);

impl LeaseRemaining {
    fn set(&self, expires_in: Option<Duration>) {
        let expiry = expires_in.and_then(|left| Instant::now().checked_add(left));
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = expiry;
    }

    fn seconds(&self) -> Option<f64> {
        let expiry = *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        expiry.map(|expiry| expiry.saturating_duration_since(Instant::now()).as_secs_f64())
    }
}

impl EncodeMetric for LeaseRemaining {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.seconds().unwrap_or(0.0))
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }

    fn is_empty(&self) -> bool {
        self.seconds().is_none()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn counters_and_gauges_appear_in_the_exposition() {
        let metrics = Metrics::new();
        metrics.record_enrollment(Some(Duration::from_secs(300)));
        metrics.record_renewal_ok(Some(Duration::from_secs(300)));
        metrics.record_renewal_failed();
        metrics.record_response(http::StatusCode::OK);
        metrics.record_response(http::StatusCode::BAD_GATEWAY);

        let text = metrics.encode();
        assert!(text.contains("gateway_enrollments_total 1"), "{text}");
        assert!(text.contains("gateway_lease_renewals_total{result=\"ok\"} 1"), "{text}");
        assert!(text.contains("gateway_lease_renewals_total{result=\"failed\"} 1"), "{text}");
        assert!(text.contains("gateway_lease_lost_total 0"), "{text}");
        assert!(text.contains("gateway_identity_held 1"), "{text}");
        assert!(text.contains("gateway_http_requests_total{status=\"200\"} 1"), "{text}");
        assert!(text.contains("gateway_http_requests_total{status=\"502\"} 1"), "{text}");
        assert!(text.contains("# TYPE gateway_lease_seconds_remaining gauge"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn lease_remaining_is_absent_while_unknown_and_zero_once_lost() {
        let metrics = Metrics::new();
        assert!(!metrics.encode().contains("gateway_lease_seconds_remaining"));
        metrics.record_enrollment(None);
        assert_eq!(metrics.lease_seconds_remaining(), None);
        metrics.record_lease_lost();
        assert_eq!(metrics.lease_seconds_remaining(), Some(0.0));
        assert!(!metrics.identity_held());
        assert!(metrics.encode().contains("gateway_lease_seconds_remaining 0.0"));
    }

    #[tokio::test(start_paused = true)]
    async fn lease_remaining_counts_down_between_events() {
        let metrics = Metrics::new();
        metrics.record_enrollment(Some(Duration::from_secs(300)));
        tokio::time::advance(Duration::from_secs(100)).await;
        let left = metrics.lease_seconds_remaining().unwrap_or_default();
        assert!((199.0..=200.0).contains(&left), "{left}");
    }
}
