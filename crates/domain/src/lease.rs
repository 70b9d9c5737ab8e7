//! Lease keeping: extend the lease on time (or, for a source whose credentials rotate,
//! put each new credential to use), retry failures before it runs out, enroll again
//! when it is gone, and end it (retire, release) when stopped. The keeper owns
//! the whole life of a lease, so a caller's shutdown is: cancel, await.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::enrollment::{EnrollError, Enroller, Lease};
use crate::error::ProviderError;
use crate::identity::{IdentityId, Renewal};
use crate::ports::{BindingEnded, IdentityProvider, LeaseEvent, LeaseObserver, LossReason, Rotation};

/// The shortest wait between attempts, so a lease about to expire is not hammered.
const MIN_WAIT: Duration = Duration::from_millis(10);
/// How long giving a lease back may take: a server that is down must not hold up a
/// shutdown (the lease then expires by itself).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);

/// When to renew and how to retry.
#[derive(Debug, Clone)]
pub struct LeasePolicy {
    /// Renew at least this often (`ZITI_LEASE_RENEWAL_INTERVAL`).
    pub renewal_interval: Duration,
    /// Backoff between failed attempts, before the cap by what is left of the lease.
    pub retry: Backoff,
    /// The most a release may take when the keeper stops.
    pub release_timeout: Duration,
}

impl LeasePolicy {
    /// Retries start at an eighth of the interval (at most 1 s) and grow to half of it
    /// (at most 30 s), so that with the default 2 minutes against a 5-minute lease
    /// about ten attempts fit before the lease runs out.
    pub fn new(renewal_interval: Duration) -> Self {
        let initial = (renewal_interval / 8).min(Duration::from_secs(1)).max(MIN_WAIT);
        let max = (renewal_interval / 2).min(Duration::from_secs(30));
        Self { renewal_interval, retry: Backoff::new(initial, max), release_timeout: RELEASE_TIMEOUT }
    }

    /// Renew after the interval, or at half of what is left of the lease if sooner.
    fn renewal_wait(&self, left: Option<Duration>) -> Duration {
        match left {
            Some(left) => self.renewal_interval.min(left / 2).max(MIN_WAIT),
            None => self.renewal_interval,
        }
    }

    /// Retry after the backoff, but never later than half of what is left.
    fn retry_wait(backoff: Duration, left: Option<Duration>) -> Duration {
        match left {
            Some(left) => backoff.min(left / 2).max(MIN_WAIT),
            None => backoff,
        }
    }
}

/// Why the lease keeper stopped, and the lease it held then (already retired and,
/// best effort, released).
#[derive(Debug)]
pub struct Stopped {
    pub lease: Option<IdentityId>,
    pub cause: StopCause,
}

#[derive(Debug)]
pub enum StopCause {
    /// Shutdown was requested.
    Cancelled,
    /// The provider refused in a way retrying cannot fix.
    Refused(ProviderError),
}

/// Keeps one lease alive for as long as it runs.
pub struct LeaseKeeper {
    provider: Arc<dyn IdentityProvider>,
    enroller: Enroller,
    observer: Arc<dyn LeaseObserver>,
    policy: LeasePolicy,
}

impl std::fmt::Debug for LeaseKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseKeeper").field("policy", &self.policy).finish_non_exhaustive()
    }
}

impl LeaseKeeper {
    pub fn new(
        provider: Arc<dyn IdentityProvider>,
        enroller: Enroller,
        observer: Arc<dyn LeaseObserver>,
        policy: LeasePolicy,
    ) -> Self {
        Self { provider, enroller, observer, policy }
    }

    /// Renews `lease` until `cancel` fires or the provider refuses for good, then ends
    /// the lease it holds.
    pub async fn run(self, mut lease: Lease, cancel: CancellationToken) -> Stopped {
        let mut retry = self.policy.retry.clone();
        let mut wait = self.policy.renewal_wait(left(&lease));
        let mut ended_bindings = self.enroller.ended_bindings();
        loop {
            // Cancellation first: a shutdown that comes with a due renewal wins.
            tokio::select! {
                biased;
                () = cancel.cancelled() => return self.end(lease, StopCause::Cancelled).await,
                reason = binding_ended(&mut ended_bindings, &lease.id) => {
                    lease = match self.replace_useless(lease, reason, &cancel).await {
                        Ok(new_lease) => new_lease,
                        Err(stopped) => return stopped,
                    };
                    retry.reset();
                    wait = self.policy.renewal_wait(left(&lease));
                    continue;
                }
                () = tokio::time::sleep(wait) => {}
            }
            if lease.expires_at.is_some_and(|at| Instant::now() >= at) {
                lease = match self.replace_lost(lease, LossReason::Expired, &cancel).await {
                    Ok(new_lease) => new_lease,
                    Err(stopped) => return stopped,
                };
                retry.reset();
                wait = self.policy.renewal_wait(left(&lease));
                continue;
            }
            let extended = tokio::select! {
                biased;
                () = cancel.cancelled() => return self.end(lease, StopCause::Cancelled).await,
                extended = self.provider.extend_lease(&lease.id).instrument(lease_span(&lease)) => extended,
            };
            match extended {
                Ok(Renewal { expires_in, credential: None, .. }) => {
                    retry.reset();
                    lease.expires_at = expires_in.map(|left| Instant::now() + left);
                    self.observer.observe(&LeaseEvent::Renewed { id: lease.id.clone(), expires_in });
                    wait = self.policy.renewal_wait(expires_in);
                }
                Ok(Renewal { expires_in, credential: Some(credential), .. }) => {
                    let rotated = tokio::select! {
                        biased;
                        () = cancel.cancelled() => return self.end(lease, StopCause::Cancelled).await,
                        rotated = self.enroller.rotate(&lease.id, credential).instrument(lease_span(&lease)) => rotated,
                    };
                    match rotated {
                        Ok(rotation) => {
                            retry.reset();
                            lease.expires_at = expires_in.map(|left| Instant::now() + left);
                            let id = lease.id.clone();
                            self.observer.observe(&match rotation {
                                Rotation::Unchanged => LeaseEvent::Renewed { id, expires_in },
                                _ => LeaseEvent::Rotated { id, expires_in },
                            });
                            wait = self.policy.renewal_wait(expires_in);
                        }
                        Err(error) => {
                            // The credential in use stays valid until its own expiry:
                            // try again before then.
                            wait = LeasePolicy::retry_wait(retry.next_delay(), left(&lease));
                            self.observer.observe(&LeaseEvent::RotationFailed {
                                id: lease.id.clone(),
                                error: Arc::new(error),
                                retry_in: wait,
                            });
                        }
                    }
                }
                Err(error @ ProviderError::Transient(_)) => {
                    wait = LeasePolicy::retry_wait(retry.next_delay(), left(&lease));
                    self.observer.observe(&LeaseEvent::RenewalFailed {
                        id: lease.id.clone(),
                        error: Arc::new(error),
                        retry_in: wait,
                    });
                }
                Err(error @ ProviderError::LeaseGone(_)) => {
                    let reason = LossReason::Gone(Arc::new(error));
                    lease = match self.replace_lost(lease, reason, &cancel).await {
                        Ok(new_lease) => new_lease,
                        Err(stopped) => return stopped,
                    };
                    retry.reset();
                    wait = self.policy.renewal_wait(left(&lease));
                }
                Err(refused @ ProviderError::Fatal(_)) => {
                    return self.end(lease, StopCause::Refused(refused)).await;
                }
            }
        }
    }

    async fn replace_lost(
        &self,
        lost: Lease,
        reason: LossReason,
        cancel: &CancellationToken,
    ) -> Result<Lease, Stopped> {
        // Its identity is worthless now: unbind and erase it before looking for another.
        self.enroller.retire(&lost.id).await;
        self.observer.observe(&LeaseEvent::Lost { id: lost.id, reason });
        self.reenroll(cancel).await
    }

    /// A lease whose identity can no longer serve (its binding ended for good) is as
    /// good as lost, though the provider would still renew it: give it back (best
    /// effort, bounded) rather than keep it, and enroll again.
    async fn replace_useless(
        &self,
        useless: Lease,
        reason: String,
        cancel: &CancellationToken,
    ) -> Result<Lease, Stopped> {
        self.finish(&useless).instrument(lease_span(&useless)).await;
        self.observer.observe(&LeaseEvent::Lost { id: useless.id, reason: LossReason::BindingEnded(reason) });
        self.reenroll(cancel).await
    }

    async fn reenroll(&self, cancel: &CancellationToken) -> Result<Lease, Stopped> {
        match self.enroller.reenroll(cancel).await {
            Ok(lease) => Ok(lease),
            Err(EnrollError::Refused(error)) => Err(Stopped { lease: None, cause: StopCause::Refused(error) }),
            Err(_) => Err(Stopped { lease: None, cause: StopCause::Cancelled }),
        }
    }

    /// Takes the lease out of use, then gives it back (bounded by the policy's release
    /// timeout; a lease not given back expires by itself).
    async fn end(&self, lease: Lease, cause: StopCause) -> Stopped {
        self.finish(&lease).instrument(lease_span(&lease)).await;
        Stopped { lease: Some(lease.id), cause }
    }

    async fn finish(&self, lease: &Lease) {
        self.enroller.retire(&lease.id).await;
        match tokio::time::timeout(self.policy.release_timeout, self.provider.release(&lease.id)).await {
            Ok(Ok(())) => tracing::info!(lease = %lease.id, "lease released"),
            Ok(Err(error)) => {
                let error: &(dyn std::error::Error + 'static) = &error;
                tracing::warn!(lease = %lease.id, error, "could not release the lease; it will expire");
            }
            Err(_) => tracing::warn!(lease = %lease.id, "releasing the lease timed out; it will expire"),
        }
    }
}

/// The context of one lease's calls and log lines.
fn lease_span(lease: &Lease) -> tracing::Span {
    tracing::info_span!("lease", id = %lease.id)
}

/// Resolves, with why, once the binding of lease `id` has ended for good; never when the
/// installer reports no ended bindings (any more).
async fn binding_ended(ended_bindings: &mut watch::Receiver<Option<BindingEnded>>, id: &IdentityId) -> String {
    let ended = ended_bindings.wait_for(|ended| ended.as_ref().is_some_and(|ended| ended.id == *id)).await;
    match ended.ok().and_then(|ended| ended.clone()) {
        Some(ended) => ended.reason,
        None => std::future::pending().await,
    }
}

fn left(lease: &Lease) -> Option<Duration> {
    lease.expires_at.map(|at| at.saturating_duration_since(Instant::now()))
}

#[cfg(test)]
mod tests;
