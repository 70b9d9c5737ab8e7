//! Errors at the ports, classified by what the policy should do about them.

use thiserror::Error;

/// A failure of the identity provider (ziti-management), by the policy it calls for.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProviderError {
    /// Worth retrying: the server is down, slow or overloaded.
    #[error("ziti-management is unavailable: {0}")]
    Transient(String),
    /// The lease no longer exists (expired or revoked): enroll again.
    #[error("the identity lease is gone: {0}")]
    LeaseGone(String),
    /// Retrying will not help (bad request, no permission, broken response).
    #[error("ziti-management refused: {0}")]
    Fatal(String),
}

/// The overlay could not take an identity (it would not load, or the bind failed).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("the overlay could not use the identity: {0}")]
pub struct InstallError(pub String);

/// A caller could not be resolved to a principal.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResolveError {
    #[error("caller identity is unknown to ziti-management")]
    NotFound,
    #[error("caller resolution failed: {0}")]
    Unavailable(String),
}

/// A bound service stopped handing out connections.
#[derive(Debug, Error)]
pub enum ListenError {
    /// One accept failed (e.g. out of file descriptors); the binding may still work.
    #[error("accepting a connection failed: {0}")]
    Accept(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The binding is gone (the overlay closed it, or its router connection was lost
    /// for good); no connection will come from this listener again.
    #[error("the service binding is closed: {0}")]
    Closed(#[source] Box<dyn std::error::Error + Send + Sync>),
}
