//! The admin listener, for probes and scrapers (see [`service_kit::admin`]):
//! `GET /readyz` answers 200 `ready` when the controller answers with a valid admin
//! session (checked live, logging in again if needed), else 503 `not ready: ...`
//! (why is in the log only).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use service_kit::admin::AdminSource;
use tokio::net::TcpListener;

use crate::controller::Controller;
use crate::metrics::Metrics;

/// A readiness probe gives the controller this long to answer.
const READINESS_TIMEOUT: Duration = Duration::from_secs(3);

/// `/readyz` when the controller cannot be used, whatever the reason.
pub const NOT_READY: &str = "not ready: the controller cannot be reached or used (details in the log)";

/// Serves the admin endpoints on `listener` until `shutdown` resolves.
pub async fn serve_admin(
    listener: TcpListener,
    controller: Arc<Controller>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    // No drain: what is still open is closed, admin requests are short.
    service_kit::admin::serve(listener, Arc::new(Management { controller, metrics }), Duration::ZERO, shutdown).await;
}

struct Management {
    controller: Arc<Controller>,
    metrics: Arc<Metrics>,
}

impl AdminSource for Management {
    async fn readiness(&self) -> Result<(), String> {
        match tokio::time::timeout(READINESS_TIMEOUT, self.controller.check()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => {
                // The details (admin user, TLS, the controller's messages) are for the log only.
                tracing::warn!(%err, "not ready");
                Err(NOT_READY.into())
            }
            Err(_) => Err("not ready: the controller did not answer in time".into()),
        }
    }

    fn metrics(&self) -> String {
        self.metrics.encode()
    }
}
