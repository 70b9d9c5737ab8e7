//! The admin listener (see [`service_kit::admin`]): liveness, readiness and metrics
//! for probes and scrapers, on its own address so that it never competes with (or is
//! exposed like) callers. `/readyz` answers 503 `not ready: <every failed condition>`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use service_kit::admin::AdminSource;
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::readiness::Readiness;

/// Open admin requests may finish for this long after shutdown; they are short.
const ADMIN_DRAIN: Duration = Duration::from_secs(1);

/// Serves the admin endpoints on `listener` until `shutdown` resolves, then lets open
/// requests finish (briefly) and returns. Run it for the gateway's whole life and
/// stop it last, so that `/readyz` reports 503 while the gateway drains.
pub async fn serve_admin(
    listener: TcpListener,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    service_kit::admin::serve(listener, Arc::new(Gateway { readiness, metrics }), ADMIN_DRAIN, shutdown).await;
}

struct Gateway {
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
}

impl AdminSource for Gateway {
    async fn readiness(&self) -> Result<(), String> {
        self.readiness.check().map_err(|why| format!("not ready: {why}"))
    }

    fn metrics(&self) -> String {
        self.metrics.encode()
    }
}
