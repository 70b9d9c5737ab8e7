//! The overlay seam: load an identity (from its private file, or from memory) and bind a
//! service with it; later, present a rotated credential of the same identity.

use std::path::Path;

use async_trait::async_trait;
use domain::IdentityJson;
use domain::ports::ServiceListener;
use thiserror::Error;
use ziti_sdk::Identity;

/// Why a service could not be bound. Operator-facing; never carries identity content.
#[derive(Debug, Error)]
#[error("cannot bind the service {service:?}")]
pub struct BindError {
    pub service: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Why a rotated credential could not be put to use. Never carries identity content.
#[derive(Debug, Error)]
#[error("cannot present the rotated credential")]
pub struct RotateError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Where the overlay loads an identity from.
#[derive(Debug)]
#[non_exhaustive]
pub enum IdentitySource<'a> {
    /// The private identity file (`GATEWAY_IDENTITY_STORE=file`), loaded from there.
    File(&'a Path),
    /// Held in memory, nothing written: the JSON and the identity the installer
    /// already parsed and checked from it (so it is not parsed again).
    Memory {
        /// The identity JSON.
        json: &'a IdentityJson,
        /// The same, parsed.
        identity: Identity,
    },
}

/// A service bound with one identity: its listener, and the way to hand that identity
/// a rotated credential without binding again.
pub struct BoundService {
    pub listener: Box<dyn ServiceListener>,
    pub credentials: Box<dyn OverlayCredentials>,
}

impl std::fmt::Debug for BoundService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundService").finish_non_exhaustive()
    }
}

/// The credentials of a bound identity.
#[async_trait]
pub trait OverlayCredentials: Send + Sync {
    /// Presents `identity` (the same identity, a new certificate and key) from now on:
    /// the next login and new router connections use it, and the binding and the
    /// connections it accepted carry on. Nothing changes on an error.
    async fn rotate(&self, json: &IdentityJson, identity: Identity) -> Result<(), RotateError>;
}

/// Loads an identity into the overlay and binds a service with it.
#[async_trait]
pub trait OverlayBinder: Send + Sync {
    async fn bind(&self, identity: IdentitySource<'_>, service: &str) -> Result<BoundService, BindError>;
}
