//! Object-safe listeners, so that the server can swap one bound service for another
//! (a re-bind after re-enrollment) whatever transport produced it.

use std::path::Path;

use async_trait::async_trait;
use domain::Caller;
use domain::ports::OverlayListener;
use tokio::io::{AsyncRead, AsyncWrite};

/// An accepted byte stream, whatever the transport.
pub trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

/// A bound service handing out connections with their callers.
#[async_trait]
pub trait ServiceListener: Send {
    async fn accept(&mut self) -> Result<(Box<dyn Connection>, Caller), String>;
}

struct Boxed<L>(L);

#[async_trait]
impl<L> ServiceListener for Boxed<L>
where
    L: OverlayListener,
    L::Connection: Connection,
{
    async fn accept(&mut self) -> Result<(Box<dyn Connection>, Caller), String> {
        let accepted = self.0.accept().await.map_err(|err| err.to_string())?;
        Ok((Box::new(accepted.connection), accepted.caller))
    }
}

/// Wraps any `OverlayListener` whose connections are byte streams.
pub fn boxed<L>(listener: L) -> Box<dyn ServiceListener>
where
    L: OverlayListener + 'static,
    L::Connection: Connection,
{
    Box::new(Boxed(listener))
}

/// Loads an identity file into the overlay and binds a service with it.
#[async_trait]
pub trait OverlayBinder: Send + Sync {
    /// `Err` carries an operator-facing reason (never the identity's content).
    async fn bind(&self, identity_file: &Path, service: &str) -> Result<Box<dyn ServiceListener>, String>;
}

/// The binder of a build without an overlay transport: it refuses with a clear reason,
/// so `ZITI_ENABLED=true` enrolls, then stops cleanly instead of pretending to serve.
#[derive(Debug, Default)]
pub struct OverlayUnavailable;

#[async_trait]
impl OverlayBinder for OverlayUnavailable {
    async fn bind(&self, _identity_file: &Path, service: &str) -> Result<Box<dyn ServiceListener>, String> {
        Err(format!(
            "this build has no OpenZiti overlay transport yet, so the service {service:?} cannot be bound; \
             run with ZITI_ENABLED=false to serve on plain TCP"
        ))
    }
}
