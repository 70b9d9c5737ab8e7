//! Errors at the ports, classified by what the policy should do about them. Each keeps
//! the adapter's error as its source; the message of a variant never repeats it, so
//! the edge prints the chain once (`service_kit::causes::with_causes`).

use std::error::Error as StdError;
use std::sync::Arc;

use thiserror::Error;

/// The adapter's error behind a port error, kept whole for the chain.
pub type Cause = Box<dyn StdError + Send + Sync + 'static>;

/// A failure of the identity provider (ziti-management), by the policy it calls for.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// Worth retrying: the server is down, slow or overloaded.
    #[error("ziti-management is unavailable")]
    Transient(#[source] Cause),
    /// The lease no longer exists (expired or revoked): enroll again.
    #[error("the identity lease is gone")]
    LeaseGone(#[source] Cause),
    /// Retrying will not help (bad request, no permission, broken response).
    #[error("ziti-management refused")]
    Fatal(#[source] Cause),
}

/// The overlay could not take an identity.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum InstallError {
    /// The identity itself is unusable (malformed, or not matching the pins): the same
    /// identity will never work.
    #[error("the overlay could not use the identity")]
    Unusable(#[source] Cause),
    /// Storing the identity or binding the service with it failed.
    #[error("the overlay could not use the identity")]
    Failed(#[source] Cause),
    /// The gateway is shutting down and takes no new binding.
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

/// Why one enrollment attempt failed (reported while enrollment keeps trying).
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttemptFailure {
    /// The provider gave no usable lease.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The leased identity could not be put to use.
    #[error(transparent)]
    Install(#[from] InstallError),
}

/// Errors are equal when they are of the same kind and say the same, causes included
/// (the causes themselves cannot be compared); for events and tests.
fn same_chain(a: &(dyn StdError + 'static), b: &(dyn StdError + 'static)) -> bool {
    let (mut a, mut b) = (Some(a), Some(b));
    loop {
        match (a, b) {
            (None, None) => return true,
            (Some(x), Some(y)) if x.to_string() == y.to_string() => (a, b) = (x.source(), y.source()),
            _ => return false,
        }
    }
}

impl PartialEq for ProviderError {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other) && same_chain(self, other)
    }
}

impl Eq for ProviderError {}

impl PartialEq for InstallError {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other) && same_chain(self, other)
    }
}

impl Eq for InstallError {}

/// A caller could not be resolved to a principal.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// ziti-management knows no such identity.
    #[error("caller identity is unknown to ziti-management")]
    NotFound,
    /// No answer now (down, slow, broken answer); not cached. Shared (`Arc`), as the
    /// resolver's cache clones answers.
    #[error("caller resolution failed")]
    Unavailable(#[source] Arc<dyn StdError + Send + Sync + 'static>),
}

impl PartialEq for ResolveError {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other) && same_chain(self, other)
    }
}

impl Eq for ResolveError {}

/// A bound service stopped handing out connections.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ListenError {
    /// One accept failed (e.g. out of file descriptors); the binding may still work.
    #[error("accepting a connection failed")]
    Accept(#[source] Cause),
    /// The binding is gone (the overlay closed it, or its router connection was lost
    /// for good); no connection will come from this listener again.
    #[error("the service binding is closed")]
    Closed(#[source] Cause),
}
