//! The OpenZiti overlay, through `ziti-sdk-rs`: load the identity (file or memory) and
//! bind the service; each accepted connection carries its dialer as the caller; a
//! rotated credential goes to the same SDK context.

use async_trait::async_trait;
use domain::ports::{Accepted, ServiceListener};
use domain::{Caller, CallerIdentity, IdentityJson, ListenError, Transport};
use tokio::sync::watch;
use ziti_sdk::{DialerIdentity, Identity, ZitiContext, ZitiListener};

use crate::binder::{BindError, BoundService, IdentitySource, OverlayBinder, OverlayCredentials, RotateError};

/// Binds services on the overlay with `ziti-sdk-rs`.
#[derive(Debug, Default)]
pub struct ZitiBinder;

#[async_trait]
impl OverlayBinder for ZitiBinder {
    async fn bind(&self, identity: IdentitySource<'_>, service: &str) -> Result<BoundService, BindError> {
        let error = |source: ziti_sdk::Error| BindError { service: service.to_owned(), source: Box::new(source) };
        let context = match identity {
            IdentitySource::File(path) => ZitiContext::from_file(path).await,
            IdentitySource::Memory { identity, .. } => ZitiContext::new(identity).await,
        }
        .map_err(error)?;
        let listener = context.listen(service).await.map_err(error)?;
        tracing::info!(service, identity = %context.identity_name(), "service bound on the overlay");
        Ok(BoundService {
            listener: Box::new(ZitiServiceListener { listener }),
            credentials: Box::new(ZitiCredentials { context }),
        })
    }
}

/// Whether `error` (or one of its causes) is the controller refusing the identity's
/// certificate at login: for a SPIFFE identity, a trust domain the controller does not
/// trust, or a SPIFFE ID no identity has as its external id.
pub fn refused_login(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if matches!(error.downcast_ref::<ziti_sdk::Error>(), Some(ziti_sdk::Error::LoginRejected(_))) {
            return true;
        }
        next = error.source();
    }
    false
}

/// The logged-in identity behind a binding, which takes rotated credentials.
struct ZitiCredentials {
    context: ZitiContext,
}

#[async_trait]
impl OverlayCredentials for ZitiCredentials {
    async fn rotate(&self, _json: &IdentityJson, identity: Identity) -> Result<(), RotateError> {
        self.context.update_identity(identity).await.map_err(|err| RotateError(Box::new(err)))
    }
}

struct ZitiServiceListener {
    listener: ZitiListener,
}

#[async_trait]
impl ServiceListener for ZitiServiceListener {
    async fn accept(&mut self) -> Result<Accepted, ListenError> {
        // The SDK binds again by itself after a lost router connection; an error here
        // means hosting has stopped for good (the router ended the Bind, or the policy
        // is gone).
        let connection = self.listener.accept().await.map_err(|err| ListenError::Closed(Box::new(err)))?;
        let caller = Caller {
            transport: Transport::Overlay,
            peer: connection.circuit_id().unwrap_or("overlay").to_owned(),
            identity: caller_identity(connection.dialer()),
        };
        Ok(Accepted { connection: Box::new(connection), caller })
    }

    fn bound(&self) -> Option<watch::Receiver<bool>> {
        Some(self.listener.bound())
    }
}

fn caller_identity(dialer: Option<&DialerIdentity>) -> Option<CallerIdentity> {
    match dialer? {
        DialerIdentity::Verified { id, name } => {
            Some(CallerIdentity { id: Some(id.clone()), name: Some(name.clone()), verified: true })
        }
        DialerIdentity::Claimed { name } => {
            Some(CallerIdentity { id: None, name: Some(name.clone()), verified: false })
        }
        DialerIdentity::Unknown => None,
    }
}
