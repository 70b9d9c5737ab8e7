//! The ports: what the policy needs from the world, implemented by adapter crates.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::caller::{Caller, CallerIdentity, Principal, Refusal};
use crate::error::{AttemptFailure, InstallError, ListenError, ProviderError, ResolveError};
use crate::identity::{IdentityId, IdentityJson, LeasedIdentity, Renewal, ServiceType};

/// An identity source: hands out identities and keeps them valid over time, by
/// extending a lease (ziti-management) or by rotating the credential (a SPIFFE
/// X.509-SVID). The same lease keeping serves both.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait IdentityProvider: Send + Sync {
    /// Hands out an identity to use now (`RequestServiceIdentity`, or the current SVID).
    async fn request_identity(&self, service: ServiceType) -> Result<LeasedIdentity, ProviderError>;

    /// Keeps the lease (`ExtendIdentityLease`, or a look at the current SVID): what is
    /// left of it when the source says, and the current credential for sources that
    /// rotate it. `ProviderError::LeaseGone` when the lease no longer exists.
    async fn extend_lease(&self, id: &IdentityId) -> Result<Renewal, ProviderError>;

    /// Ends the lease at once (best effort; a server may not support it).
    async fn release(&self, id: &IdentityId) -> Result<(), ProviderError>;
}

/// Puts a leased identity to use and takes it out of use again.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait IdentityInstaller: Send + Sync {
    /// Stores the identity privately (or holds it in memory), loads it into the
    /// overlay and binds the service with it, replacing (and erasing) any previous
    /// identity. Returns the binding, for the host to serve.
    async fn install(&self, identity: LeasedIdentity) -> Result<Box<dyn ServiceListener>, InstallError>;

    /// The lease `id` is over (lost, released or refused): erase its identity at once,
    /// not when a successor arrives. Returns whether it was the one in use (whose
    /// binding the host must then close). Best effort.
    async fn retire(&self, id: &IdentityId) -> bool;

    /// Erases whatever the installer still holds (at shutdown, after the last retire).
    async fn close(&self);

    /// The identity `id` in use now has `credential` (a rotated certificate for the same
    /// identity): present it from now on, keeping the binding. `Unchanged` when it is
    /// the credential in use already. Nothing changes on an error.
    async fn rotate(&self, id: &IdentityId, credential: IdentityJson) -> Result<Rotation, InstallError>;

    /// The latest installed identity whose binding ended for good (the overlay gave up
    /// on it, e.g. the controller no longer accepts it): such a lease is useless even
    /// while it can still be renewed. `None` until one ends; a closed channel means
    /// none ever will.
    fn ended_bindings(&self) -> watch::Receiver<Option<BindingEnded>>;
}

/// What [`IdentityInstaller::rotate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rotation {
    /// The credential was the one in use already.
    Unchanged,
    /// The new credential is in use.
    Rotated,
}

/// An installed identity that can no longer serve, and why (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingEnded {
    pub id: IdentityId,
    pub reason: String,
}

/// What happened to the lease, for readiness, metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEvent {
    /// A new identity is installed and in use.
    Enrolled { id: IdentityId, expires_in: Option<Duration> },
    /// The lease was extended.
    Renewed { id: IdentityId, expires_in: Option<Duration> },
    /// The identity's credential was rotated (a new certificate, same identity).
    Rotated { id: IdentityId, expires_in: Option<Duration> },
    /// A rotated credential could not be put to use; the one in use stays until the
    /// next attempt, after `retry_in`.
    RotationFailed { id: IdentityId, error: Arc<InstallError>, retry_in: Duration },
    /// An extension failed; the next attempt comes after `retry_in`.
    RenewalFailed { id: IdentityId, error: Arc<ProviderError>, retry_in: Duration },
    /// The lease is gone; no valid identity is held until the next `Enrolled`.
    Lost { id: IdentityId, reason: LossReason },
    /// An enrollment attempt failed; the next one comes after `retry_in`.
    EnrollmentFailed { error: Arc<AttemptFailure>, retry_in: Duration },
}

/// Why a lease was lost. Errors are shared (`Arc`) so that events can be cloned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LossReason {
    /// The provider says the lease no longer exists.
    #[error(transparent)]
    Gone(Arc<ProviderError>),
    /// It ran out before it could be renewed.
    #[error("it expired before it could be renewed")]
    Expired,
    /// The identity's binding ended for good (the overlay gave up on it).
    #[error("its binding ended: {0}")]
    BindingEnded(String),
}

/// Receives lease events. Must not block: it is called from the lease keeper.
#[cfg_attr(test, mockall::automock)]
pub trait LeaseObserver: Send + Sync {
    fn observe(&self, event: &LeaseEvent);
}

/// Whether the service is reachable now, and its connections (readiness, metrics).
/// Must not block.
#[cfg_attr(test, mockall::automock)]
pub trait HostObserver: Send + Sync {
    /// The service became reachable (a working binding) or not.
    fn serving(&self, serving: bool);
    /// A connection is being served.
    fn connection_opened(&self);
    /// A connection being served ended.
    fn connection_closed(&self);
    /// A connection was closed at once: the connection limit was reached.
    fn connection_refused(&self);
}

/// Who a connection's requests are served as: the caller as admitted, its principal
/// when resolved, or why it is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    pub caller: Caller,
    /// The caller's principal, when its identity is known and was resolved.
    pub principal: Option<Principal>,
    /// Set when the caller may not be served: each of its requests is refused.
    pub refusal: Option<Refusal>,
}

/// Serves the requests on one connection (HTTP in the gateway).
#[async_trait]
pub trait ConnectionHandler: Send + Sync {
    /// Serves `connection` for `admitted` until it closes. When `drain` is cancelled,
    /// finishes what is in flight and closes (idle connections at once).
    async fn serve(&self, connection: Box<dyn Connection>, admitted: Admitted, drain: CancellationToken);
}

/// Resolves a caller's OpenZiti identity to a principal (`ResolveIdentity`).
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait IdentityResolver: Send + Sync {
    async fn resolve(&self, caller: &CallerIdentity) -> Result<Principal, ResolveError>;
}

/// An accepted byte stream, whatever the transport.
pub trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

/// A connection accepted by a [`ServiceListener`], with what is known of its caller.
pub struct Accepted {
    pub connection: Box<dyn Connection>,
    pub caller: Caller,
}

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepted").field("caller", &self.caller).finish_non_exhaustive()
    }
}

/// A bound service (an overlay service or a plain TCP port) that hands out connections.
/// Object-safe, so a re-bind can swap one listener for another of any transport.
/// Dropping it closes the binding.
#[async_trait]
pub trait ServiceListener: Send {
    async fn accept(&mut self) -> Result<Accepted, ListenError>;

    /// Whether the binding works right now, for transports that lose and regain it by
    /// themselves (the overlay binds again after a router restart). `None`: it works
    /// for as long as the listener exists.
    fn bound(&self) -> Option<watch::Receiver<bool>> {
        None
    }
}
