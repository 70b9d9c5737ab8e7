//! The service's life with an identity source, from start to shutdown: obtain an
//! identity and bind at start ([`Lifecycle::start`]); keep it valid while serving (the
//! lease keeper renews, rotates and enrolls again); on stop, in this order: stop
//! accepting and drain in-flight requests, then end the lease (retire, release), then
//! erase what the installer still holds ([`Serving::run`]). Requests in flight at the
//! stop finish on a live identity.

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::enrollment::{EnrollError, Enroller};
use crate::error::ProviderError;
use crate::hosting::Host;
use crate::identity::{IdentityId, ServiceType};
use crate::lease::{LeaseKeeper, LeasePolicy, StopCause, Stopped};
use crate::ports::{IdentityInstaller, IdentityProvider, LeaseObserver};

/// Why the service stopped other than by request.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The identity source refused to keep the identity valid, in a way retrying
    /// cannot fix.
    #[error("the identity source refused to keep the identity valid, stopping")]
    Refused(#[source] ProviderError),
    /// The lease keeper's task failed (a panic).
    #[error("the lease keeper failed: {0}")]
    Keeper(String),
}

/// The parts of one service: where its identity comes from, how it is installed,
/// who hears of it and where it is served.
pub struct Lifecycle {
    provider: Arc<dyn IdentityProvider>,
    enroller: Enroller,
    observer: Arc<dyn LeaseObserver>,
    host: Host,
    policy: LeasePolicy,
}

impl std::fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycle").field("policy", &self.policy).finish_non_exhaustive()
    }
}

impl Lifecycle {
    /// The lifecycle of `service` with identities from `provider`, installed by
    /// `installer` and served by `host`.
    pub fn new(
        provider: Arc<dyn IdentityProvider>,
        installer: Arc<dyn IdentityInstaller>,
        observer: Arc<dyn LeaseObserver>,
        host: Host,
        service: ServiceType,
        policy: LeasePolicy,
    ) -> Self {
        let enroller =
            Enroller::new(provider.clone(), installer, observer.clone(), host.clone(), service, policy.retry.clone());
        Self { provider, enroller, observer, host, policy }
    }

    /// Obtains an identity and binds with it, retrying a source that is unavailable
    /// until `enrollment_timeout`; then keeps it in the background. On failure nothing
    /// is left behind (the installer is closed).
    pub async fn start(self, enrollment_timeout: Duration, cancel: &CancellationToken) -> Result<Serving, EnrollError> {
        let lease = match self.enroller.enroll_at_start(enrollment_timeout, cancel).await {
            Ok(lease) => lease,
            Err(error) => {
                self.enroller.close().await;
                return Err(error);
            }
        };
        let id = lease.id.clone();
        // Not a child of the caller's stop: the lease is ended only after the drain
        // (see `Serving::run`).
        let keeper_stop = CancellationToken::new();
        let keeper = LeaseKeeper::new(self.provider, self.enroller.clone(), self.observer, self.policy);
        let keeper = tokio::spawn(keeper.run(lease, keeper_stop.clone()));
        Ok(Serving { id, keeper, keeper_stop, enroller: self.enroller, host: self.host })
    }
}

/// A service that holds an identity and serves.
#[derive(Debug)]
pub struct Serving {
    id: IdentityId,
    keeper: JoinHandle<Stopped>,
    keeper_stop: CancellationToken,
    enroller: Enroller,
    host: Host,
}

impl Serving {
    /// The identity obtained at start.
    pub fn first_lease(&self) -> &IdentityId {
        &self.id
    }

    /// Serves until `stop` is cancelled, or the source refuses for good; then stops
    /// accepting and waits up to `grace` for in-flight requests, ends the lease and
    /// erases what is left.
    pub async fn run(self, stop: CancellationToken, grace: Duration) -> Result<(), ServiceError> {
        let Self { mut keeper, keeper_stop, enroller, host, .. } = self;
        let stopped_by_itself = tokio::select! {
            () = stop.cancelled() => None,
            stopped = &mut keeper => Some(stopped),
        };
        tracing::info!("shutting down: no new connections, draining in-flight requests");
        host.drain(grace).await;
        keeper_stop.cancel();
        let stopped = match stopped_by_itself {
            Some(stopped) => stopped,
            None => keeper.await,
        };
        enroller.close().await;
        match stopped {
            Ok(Stopped { cause: StopCause::Refused(error), .. }) => Err(ServiceError::Refused(error)),
            Ok(Stopped { cause: StopCause::Cancelled, .. }) => Ok(()),
            Err(err) => Err(ServiceError::Keeper(err.to_string())),
        }
    }
}

#[cfg(test)]
mod tests;
