//! Obtaining a leased identity and putting it to use, at start-up and after a lease
//! is lost.

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::error::{AttemptFailure, InstallError, ProviderError};
use crate::hosting::Host;
use crate::identity::{IdentityId, IdentityJson, ServiceType};
use crate::ports::{BindingEnded, IdentityInstaller, IdentityProvider, LeaseEvent, LeaseObserver, Rotation};

/// A lease in use: its identity and, when the server said, when it runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub id: IdentityId,
    pub expires_at: Option<Instant>,
}

/// Why no identity could be obtained. Causes are sources, shown by whoever prints the
/// chain (not repeated here).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EnrollError {
    /// The provider stayed unavailable until the start-up deadline.
    #[error("no identity after {attempts} attempts in {waited:?}; last error")]
    TimedOut {
        attempts: u32,
        waited: Duration,
        #[source]
        last: ProviderError,
    },
    /// The provider refused in a way retrying cannot fix.
    #[error(transparent)]
    Refused(ProviderError),
    /// The identity could not be put to use; its lease was given back.
    #[error("identity {id} could not be used (its lease was given back)")]
    Install { id: IdentityId, source: InstallError },
    /// Enrollment was cancelled (shutdown).
    #[error("enrollment cancelled")]
    Cancelled,
}

/// Asks the provider for identities, hands them to the installer, and the binding it
/// makes to the host: the one path of an identity from its source to serving.
#[derive(Clone)]
pub struct Enroller {
    provider: Arc<dyn IdentityProvider>,
    installer: Arc<dyn IdentityInstaller>,
    observer: Arc<dyn LeaseObserver>,
    host: Host,
    service: ServiceType,
    retry: Backoff,
}

impl std::fmt::Debug for Enroller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enroller").field("service", &self.service).finish_non_exhaustive()
    }
}

impl Enroller {
    pub fn new(
        provider: Arc<dyn IdentityProvider>,
        installer: Arc<dyn IdentityInstaller>,
        observer: Arc<dyn LeaseObserver>,
        host: Host,
        service: ServiceType,
        retry: Backoff,
    ) -> Self {
        Self { provider, installer, observer, host, service, retry }
    }

    /// Start-up enrollment: retries a provider that is down or slow until `timeout`,
    /// and fails at once when the provider refuses or the identity cannot be used, so
    /// that a broken set-up stops the start with a clear error.
    pub async fn enroll_at_start(&self, timeout: Duration, cancel: &CancellationToken) -> Result<Lease, EnrollError> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut retry = self.retry.clone();
        loop {
            match self.attempt(cancel).await? {
                Ok(lease) => return Ok(lease),
                Err(AttemptError::Provider(error @ ProviderError::Transient(_))) => {
                    // The last wait is cut short so that one attempt comes at the
                    // deadline, rather than giving up as soon as a full backoff step
                    // would pass it (at 15 s of 30 s with the default backoff).
                    let left = deadline.saturating_duration_since(Instant::now());
                    let retry_in = retry.next_delay().min(left);
                    if left.is_zero() {
                        return Err(EnrollError::TimedOut {
                            attempts: retry.failures(),
                            waited: started.elapsed(),
                            last: error,
                        });
                    }
                    let error = Arc::new(AttemptFailure::Provider(error));
                    self.observer.observe(&LeaseEvent::EnrollmentFailed { error, retry_in });
                    sleep_or_cancel(retry_in, cancel).await?;
                }
                Err(AttemptError::Provider(refused)) => return Err(EnrollError::Refused(refused)),
                Err(AttemptError::Install { id, source }) => return Err(EnrollError::Install { id, source }),
            }
        }
    }

    /// Enrollment after a lost lease: keeps trying with backoff (the gateway is not
    /// ready meanwhile) until it succeeds, is cancelled, or the provider refuses.
    pub async fn reenroll(&self, cancel: &CancellationToken) -> Result<Lease, EnrollError> {
        let mut retry = self.retry.clone();
        loop {
            let error = match self.attempt(cancel).await? {
                Ok(lease) => return Ok(lease),
                Err(AttemptError::Provider(error @ ProviderError::Transient(_))) => AttemptFailure::Provider(error),
                // A lease that vanishes before we used it, or an identity the overlay
                // rejects, may be a passing server fault: try again, slowly.
                Err(AttemptError::Provider(error @ ProviderError::LeaseGone(_))) => AttemptFailure::Provider(error),
                Err(AttemptError::Install { source, .. }) => AttemptFailure::Install(source),
                Err(AttemptError::Provider(refused)) => return Err(EnrollError::Refused(refused)),
            };
            let error = Arc::new(error);
            let retry_in = retry.next_delay();
            self.observer.observe(&LeaseEvent::EnrollmentFailed { error, retry_in });
            sleep_or_cancel(retry_in, cancel).await?;
        }
    }

    /// The context of an enrollment's log lines (and of whatever the adapters log).
    fn span(&self) -> tracing::Span {
        tracing::info_span!("enrollment", service = %self.service)
    }

    /// Takes a lease's identity out of use (see [`IdentityInstaller::retire`]) and,
    /// when it was the one in use, closes its binding.
    pub async fn retire(&self, id: &IdentityId) {
        if self.installer.retire(id).await {
            self.host.close_binding();
            tracing::info!(lease = %id, "identity retired: binding closed, identity erased");
        }
    }

    /// Erases whatever the installer still holds (at shutdown).
    pub async fn close(&self) {
        self.installer.close().await;
    }

    /// Puts a rotated credential of the identity `id` to use (see
    /// [`IdentityInstaller::rotate`]).
    pub async fn rotate(&self, id: &IdentityId, credential: IdentityJson) -> Result<Rotation, InstallError> {
        self.installer.rotate(id, credential).await
    }

    /// Follows the installed identities whose binding ended for good (see
    /// [`IdentityInstaller::ended_bindings`]).
    pub fn ended_bindings(&self) -> watch::Receiver<Option<BindingEnded>> {
        self.installer.ended_bindings()
    }

    async fn attempt(&self, cancel: &CancellationToken) -> Result<Result<Lease, AttemptError>, EnrollError> {
        let leased = tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(EnrollError::Cancelled),
            leased = self.provider.request_identity(self.service).instrument(self.span()) => leased,
        };
        let identity = match leased {
            Ok(identity) => identity,
            Err(error) => return Ok(Err(AttemptError::Provider(error))),
        };
        let received = Instant::now();
        let id = identity.id.clone();
        let expires_in = identity.expires_in;
        match self.installer.install(identity).instrument(self.span()).await {
            Ok(listener) => self.host.serve(listener),
            Err(source) => {
                // Nothing lost: a lease we cannot use goes back at once.
                if let Err(error) = self.provider.release(&id).await {
                    let error: &(dyn std::error::Error + 'static) = &error;
                    tracing::warn!(lease = %id, error, "could not release an unusable lease; it will expire");
                }
                return Ok(Err(AttemptError::Install { id, source }));
            }
        }
        self.observer.observe(&LeaseEvent::Enrolled { id: id.clone(), expires_in });
        Ok(Ok(Lease { id, expires_at: expires_in.map(|left| received + left) }))
    }
}

enum AttemptError {
    Provider(ProviderError),
    Install { id: IdentityId, source: InstallError },
}

async fn sleep_or_cancel(delay: Duration, cancel: &CancellationToken) -> Result<(), EnrollError> {
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(EnrollError::Cancelled),
        () = tokio::time::sleep(delay) => Ok(()),
    }
}

#[cfg(test)]
mod tests;
