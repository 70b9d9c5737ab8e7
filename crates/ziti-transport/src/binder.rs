//! The overlay seam: load an identity file and bind a service with it.

use std::path::Path;

use async_trait::async_trait;
use domain::ports::ServiceListener;
use thiserror::Error;

/// Why a service could not be bound. Operator-facing; never carries identity content.
#[derive(Debug, Error)]
#[error("cannot bind the service {service:?}")]
pub struct BindError {
    pub service: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Loads an identity file into the overlay and binds a service with it.
#[async_trait]
pub trait OverlayBinder: Send + Sync {
    async fn bind(&self, identity_file: &Path, service: &str) -> Result<Box<dyn ServiceListener>, BindError>;
}
