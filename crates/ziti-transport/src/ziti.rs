//! The OpenZiti overlay, through `ziti-sdk-rs`: load the leased identity file and bind
//! the service; each accepted connection carries its dialer as the caller.

use std::path::Path;

use async_trait::async_trait;
use domain::ports::{Accepted, ServiceListener};
use domain::{Caller, CallerIdentity, ListenError, Transport};
use tokio::sync::watch;
use ziti_sdk::{DialerIdentity, ZitiContext, ZitiListener};

use crate::binder::{BindError, OverlayBinder};

/// Binds services on the overlay with `ziti-sdk-rs`.
#[derive(Debug, Default)]
pub struct ZitiBinder;

#[async_trait]
impl OverlayBinder for ZitiBinder {
    async fn bind(&self, identity_file: &Path, service: &str) -> Result<Box<dyn ServiceListener>, BindError> {
        let error = |source: ziti_sdk::Error| BindError { service: service.to_owned(), source: Box::new(source) };
        let context = ZitiContext::from_file(identity_file).await.map_err(error)?;
        let listener = context.listen(service).await.map_err(error)?;
        tracing::info!(service, identity = %context.identity_name(), "service bound on the overlay");
        Ok(Box::new(ZitiServiceListener { listener }))
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
