//! Readiness for `/readyz`, and the lease observer that keeps it (and the lease
//! metrics) up to date.
//!
//! The gateway is ready when it is serving (its listener accepts, and it is not
//! shutting down) and, with the overlay on, it holds a valid identity lease: without
//! one, overlay callers cannot reach it, so a load balancer or orchestrator should not
//! count it as available.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use domain::ports::{HostObserver, LeaseEvent, LeaseObserver};
use service_kit::causes::with_causes;

use crate::metrics::Metrics;

/// Shared readiness flags; cheap to read from the admin listener on every probe.
#[derive(Debug)]
pub struct Readiness {
    serving: AtomicBool,
    // Fixed at start-up: whether a lease is needed at all.
    overlay_required: bool,
    lease_held: AtomicBool,
}

/// Why the gateway is not ready: every condition that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct NotReady {
    /// The listener is not serving (still starting, or shutting down).
    pub not_serving: bool,
    /// The overlay is on but no valid identity lease is held.
    pub no_lease: bool,
}

impl NotReady {
    fn describe(&self) -> String {
        let mut reasons = Vec::with_capacity(2);
        if self.not_serving {
            reasons.push("not serving (starting up or shutting down)");
        }
        if self.no_lease {
            reasons.push("no overlay identity lease held (not enrolled yet, or the lease was lost)");
        }
        reasons.join("; ")
    }
}

impl Readiness {
    /// Not serving and without a lease; `overlay_required` when the overlay is on.
    pub fn new(overlay_required: bool) -> Self {
        Self { serving: AtomicBool::new(false), overlay_required, lease_held: AtomicBool::new(false) }
    }

    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::SeqCst);
    }

    pub fn set_lease_held(&self, held: bool) {
        self.lease_held.store(held, Ordering::SeqCst);
    }

    pub fn serving(&self) -> bool {
        self.serving.load(Ordering::SeqCst)
    }

    pub fn overlay_required(&self) -> bool {
        self.overlay_required
    }

    pub fn lease_held(&self) -> bool {
        self.lease_held.load(Ordering::SeqCst)
    }

    /// `serving && (!overlay_required || lease_held)`.
    pub fn is_ready(&self) -> bool {
        self.check().is_ok()
    }

    /// Like [`Self::is_ready`], naming what failed.
    pub fn check(&self) -> Result<(), NotReady> {
        let not_ready =
            NotReady { not_serving: !self.serving(), no_lease: self.overlay_required() && !self.lease_held() };
        if not_ready.not_serving || not_ready.no_lease { Err(not_ready) } else { Ok(()) }
    }
}

/// Turns the host's reports (binding working or not, connections) into readiness and
/// metrics; never blocks.
#[derive(Debug)]
pub struct HostTracker {
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
}

impl HostTracker {
    pub fn new(readiness: Arc<Readiness>, metrics: Arc<Metrics>) -> Self {
        Self { readiness, metrics }
    }
}

impl HostObserver for HostTracker {
    fn serving(&self, serving: bool) {
        self.readiness.set_serving(serving);
    }

    fn connection_opened(&self) {
        self.metrics.record_connection_opened();
    }

    fn connection_closed(&self) {
        self.metrics.record_connection_closed();
    }

    fn connection_refused(&self) {
        self.metrics.record_connection_refused();
    }
}

/// Turns lease events into readiness, metrics and logs. It only stores to atomics
/// and logs, so it never blocks the lease keeper.
pub struct LeaseTracker {
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
}

impl fmt::Debug for LeaseTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseTracker").field("readiness", &self.readiness).finish_non_exhaustive()
    }
}

impl LeaseTracker {
    pub fn new(readiness: Arc<Readiness>, metrics: Arc<Metrics>) -> Self {
        Self { readiness, metrics }
    }
}

impl LeaseObserver for LeaseTracker {
    fn observe(&self, event: &LeaseEvent) {
        // Lease events carry ids, durations and error texts, never identity JSON.
        match event {
            LeaseEvent::Enrolled { id, expires_in } => {
                self.readiness.set_lease_held(true);
                self.metrics.record_enrollment(*expires_in);
                tracing::info!(lease = %id, expires_in_secs = expires_in.map(|left| left.as_secs()), "identity enrolled");
            }
            LeaseEvent::Renewed { id, expires_in } => {
                self.readiness.set_lease_held(true);
                self.metrics.record_renewal_ok(*expires_in);
                tracing::debug!(lease = %id, expires_in_secs = expires_in.map(|left| left.as_secs()), "lease renewed");
            }
            LeaseEvent::Rotated { id, expires_in } => {
                self.readiness.set_lease_held(true);
                self.metrics.record_renewal_ok(*expires_in);
                tracing::info!(lease = %id, expires_in_secs = expires_in.map(|left| left.as_secs()), "credential rotated; the service stays bound");
            }
            LeaseEvent::RotationFailed { id, error, retry_in } => {
                // The credential in use is still valid: readiness changes only when it is lost.
                self.metrics.record_renewal_failed();
                tracing::warn!(lease = %id, error = with_causes(error.as_ref()), retry_in = ?retry_in, "rotating the credential failed; retrying");
            }
            LeaseEvent::RenewalFailed { id, error, retry_in } => {
                // The lease may still be valid: readiness changes only when it is lost.
                self.metrics.record_renewal_failed();
                tracing::warn!(lease = %id, error = with_causes(error.as_ref()), retry_in = ?retry_in, "lease renewal failed; retrying");
            }
            LeaseEvent::Lost { id, reason } => {
                self.readiness.set_lease_held(false);
                self.metrics.record_lease_lost();
                tracing::warn!(lease = %id, reason = with_causes(reason), "lease lost; not ready until enrolled again");
            }
            LeaseEvent::EnrollmentFailed { error, retry_in } => {
                self.metrics.record_enrollment_failure();
                tracing::warn!(error = with_causes(error.as_ref()), retry_in = ?retry_in, "enrollment failed; retrying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use domain::ports::LossReason;
    use domain::{IdentityId, ProviderError};

    use super::*;

    #[test]
    fn ready_needs_serving_and_with_the_overlay_a_lease() {
        let tcp = Readiness::new(false);
        assert_eq!(tcp.check(), Err(NotReady { not_serving: true, no_lease: false }));
        tcp.set_serving(true);
        assert!(tcp.is_ready());

        let overlay = Readiness::new(true);
        overlay.set_serving(true);
        let err = overlay.check().unwrap_err();
        assert!(err.to_string().contains("no overlay identity lease held"), "{err}");
        overlay.set_lease_held(true);
        assert!(overlay.is_ready());
    }

    #[test]
    fn tracker_follows_the_lease() {
        let readiness = Arc::new(Readiness::new(true));
        readiness.set_serving(true);
        let metrics = Arc::new(Metrics::new());
        let tracker = LeaseTracker::new(readiness.clone(), metrics.clone());
        let id = IdentityId::new("abc");

        tracker.observe(&LeaseEvent::Enrolled { id: id.clone(), expires_in: Some(Duration::from_secs(300)) });
        assert!(readiness.is_ready());
        assert!(metrics.identity_held());

        tracker.observe(&LeaseEvent::RenewalFailed {
            id: id.clone(),
            error: Arc::new(ProviderError::Transient("down".into())),
            retry_in: Duration::from_secs(1),
        });
        assert!(readiness.is_ready(), "a failed renewal does not lose the lease yet");
        assert_eq!(metrics.lease_renewals_total(false), 1);

        tracker.observe(&LeaseEvent::Renewed { id: id.clone(), expires_in: None });
        assert_eq!(metrics.lease_renewals_total(true), 1);

        tracker.observe(&LeaseEvent::Lost { id, reason: LossReason::Expired });
        assert!(!readiness.is_ready());
        assert!(!metrics.identity_held());
        assert_eq!(metrics.lease_lost_total(), 1);

        tracker.observe(&LeaseEvent::EnrollmentFailed {
            error: Arc::new(ProviderError::Transient("down".into()).into()),
            retry_in: Duration::from_secs(2),
        });
        tracker.observe(&LeaseEvent::Enrolled { id: IdentityId::new("def"), expires_in: None });
        assert!(readiness.is_ready());
        assert_eq!(metrics.enrollments_total(), 2);
    }
}
