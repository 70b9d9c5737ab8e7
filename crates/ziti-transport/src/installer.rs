//! The identity's life on this side: write the leased identity privately, load it and
//! bind the service, hand the binding to the server; retire both when the lease ends.

use std::sync::Arc;

use async_trait::async_trait;
use domain::ports::{IdentityInstaller, ServiceListener};
use domain::{IdentityId, InstallError, LeasedIdentity};
use tokio::sync::mpsc;

use crate::binder::OverlayBinder;
use crate::identity_file::IdentityFileStore;

/// What the server serves from: a new binding (replacing the previous one), or none.
pub enum ListenerUpdate {
    Bound(Box<dyn ServiceListener>),
    /// The lease in use is over: close the binding, accept nothing until the next.
    Retired,
}

impl std::fmt::Debug for ListenerUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Bound(_) => "Bound",
            Self::Retired => "Retired",
        })
    }
}

/// The [`IdentityInstaller`] of the overlay.
pub struct OverlayInstaller {
    store: Arc<IdentityFileStore>,
    binder: Arc<dyn OverlayBinder>,
    service: String,
    updates: mpsc::Sender<ListenerUpdate>,
}

impl std::fmt::Debug for OverlayInstaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverlayInstaller").field("service", &self.service).finish_non_exhaustive()
    }
}

impl OverlayInstaller {
    pub fn new(
        store: Arc<IdentityFileStore>,
        binder: Arc<dyn OverlayBinder>,
        service: impl Into<String>,
        updates: mpsc::Sender<ListenerUpdate>,
    ) -> Self {
        Self { store, binder, service: service.into(), updates }
    }
}

#[async_trait]
impl IdentityInstaller for OverlayInstaller {
    async fn install(&self, identity: LeasedIdentity) -> Result<(), InstallError> {
        let staged = self.store.stage(&identity.identity_json).map_err(|err| InstallError(describe(&err)))?;
        // A staged file that fails to bind is dropped, and with it erased.
        let listener =
            self.binder.bind(staged.path(), &self.service).await.map_err(|err| InstallError(describe(&err)))?;
        self.store.commit(staged, identity.id);
        self.updates
            .send(ListenerUpdate::Bound(listener))
            .await
            .map_err(|_| InstallError("the gateway is shutting down".to_owned()))
    }

    async fn retire(&self, id: &IdentityId) {
        if self.store.retire(id) {
            tracing::info!(lease = %id, "identity retired: binding closed, identity file erased");
            // A server already gone has nothing left to close.
            let _ = self.updates.send(ListenerUpdate::Retired).await;
        }
    }
}

/// An error and its causes on one line, each said once: the root cause (say, a TLS
/// certificate the controller's chain does not verify against) is what an operator
/// needs, and it often sits several sources deep.
fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("TLS setup failed: {0}")]
    struct Outer(#[from] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("error sending request")]
    struct Inner(#[source] std::io::Error);

    #[test]
    fn describes_every_cause_once() {
        let err = Outer(Inner(std::io::Error::other("invalid peer certificate: UnknownIssuer")));
        assert_eq!(describe(&err), "TLS setup failed: error sending request: invalid peer certificate: UnknownIssuer");
    }
}
