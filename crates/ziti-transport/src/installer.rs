//! The identity's life on this side: write the leased identity privately, load it and
//! bind the service, hand the binding to the server; retire both when the lease ends.

use std::sync::Arc;

use async_trait::async_trait;
use domain::ports::{Accepted, BindingEnded, IdentityInstaller, ServiceListener};
use domain::{IdentityId, InstallError, LeasedIdentity, ListenError};
use service_kit::causes::with_causes;
use tokio::sync::{mpsc, watch};

use crate::binder::OverlayBinder;
use crate::identity_file::{IdentityFileStore, check_identity_json};
use crate::pins::{ControllerPins, PinMismatch};

/// The leased identity was refused by the pins (the cause says which and why).
#[derive(Debug, thiserror::Error)]
#[error("the leased identity does not match the pins")]
struct NotPinned(#[source] PinMismatch);

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
    pins: ControllerPins,
    ended: Arc<watch::Sender<Option<BindingEnded>>>,
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
        let ended = Arc::new(watch::Sender::new(None));
        Self { store, binder, service: service.into(), updates, pins: ControllerPins::none(), ended }
    }

    /// The same installer refusing identities that do not match `pins`.
    #[must_use]
    pub fn with_pins(self, pins: ControllerPins) -> Self {
        Self { pins, ..self }
    }
}

#[async_trait]
impl IdentityInstaller for OverlayInstaller {
    async fn install(&self, identity: LeasedIdentity) -> Result<(), InstallError> {
        // Shape first (its errors are the clearer), then the pins, before anything is
        // written or loaded.
        let bytes = identity.identity_json.as_bytes();
        check_identity_json(bytes).map_err(|err| InstallError::Unusable(Box::new(err)))?;
        self.pins.check_json(bytes).map_err(|mismatch| InstallError::Unusable(Box::new(NotPinned(mismatch))))?;
        let staged = self.store.stage(&identity.identity_json).map_err(|err| InstallError::Failed(Box::new(err)))?;
        // A staged file that fails to bind is dropped, and with it erased.
        let listener =
            self.binder.bind(staged.path(), &self.service).await.map_err(|err| InstallError::Failed(Box::new(err)))?;
        let listener = Box::new(ReportingEnd { listener, id: identity.id.clone(), ended: self.ended.clone() });
        self.store.commit(staged, identity.id);
        self.updates.send(ListenerUpdate::Bound(listener)).await.map_err(|_| InstallError::ShuttingDown)
    }

    async fn retire(&self, id: &IdentityId) {
        if self.store.retire(id) {
            tracing::info!(lease = %id, "identity retired: binding closed, identity file erased");
            // A server already gone has nothing left to close.
            let _ = self.updates.send(ListenerUpdate::Retired).await;
        }
    }

    fn ended_bindings(&self) -> watch::Receiver<Option<BindingEnded>> {
        self.ended.subscribe()
    }
}

/// A binding that tells the lease keeper (through `ended`) when it ends for good, so
/// that a useless identity is replaced rather than kept while its lease is renewed.
struct ReportingEnd {
    listener: Box<dyn ServiceListener>,
    id: IdentityId,
    ended: Arc<watch::Sender<Option<BindingEnded>>>,
}

#[async_trait]
impl ServiceListener for ReportingEnd {
    async fn accept(&mut self) -> Result<Accepted, ListenError> {
        let accepted = self.listener.accept().await;
        if let Err(ListenError::Closed(err)) = &accepted {
            let reason = with_causes(err.as_ref());
            self.ended.send_replace(Some(BindingEnded { id: self.id.clone(), reason }));
        }
        accepted
    }

    fn bound(&self) -> Option<watch::Receiver<bool>> {
        self.listener.bound()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Binds listeners whose binding has ended for good.
    struct EndedBinder;

    struct Ended;

    #[async_trait]
    impl ServiceListener for Ended {
        async fn accept(&mut self) -> Result<Accepted, ListenError> {
            Err(ListenError::Closed("the controller no longer accepts this identity".into()))
        }
    }

    #[async_trait]
    impl OverlayBinder for EndedBinder {
        async fn bind(
            &self,
            _identity_file: &std::path::Path,
            _service: &str,
        ) -> Result<Box<dyn ServiceListener>, crate::BindError> {
            Ok(Box::new(Ended))
        }
    }

    #[tokio::test]
    async fn a_binding_that_ends_for_good_is_reported_with_its_lease() {
        let parent = tempfile::tempdir().unwrap();
        let store = Arc::new(IdentityFileStore::new_in(parent.path()).unwrap());
        let (updates, mut served) = mpsc::channel(4);
        let installer = OverlayInstaller::new(store, Arc::new(EndedBinder), "gateway", updates);
        let mut ended = installer.ended_bindings();
        let json = r#"{"ztAPI":"https://ctrl:1280/edge/client/v1","id":{"cert":"pem:C","key":"pem:K","ca":"pem:A"}}"#;
        let identity = domain::IdentityJson::new(json.as_bytes().to_vec());
        let lease = IdentityId::new("lease-1");
        installer
            .install(LeasedIdentity { id: lease.clone(), identity_json: identity, expires_in: None })
            .await
            .unwrap();
        let Some(ListenerUpdate::Bound(mut listener)) = served.recv().await else { panic!("no binding served") };
        assert_eq!(*ended.borrow_and_update(), None, "nothing ended yet");

        assert!(matches!(listener.accept().await, Err(ListenError::Closed(_))));
        let reason = "the controller no longer accepts this identity".to_owned();
        assert_eq!(*ended.borrow_and_update(), Some(BindingEnded { id: lease, reason }));
    }

    #[tokio::test]
    async fn an_identity_that_does_not_match_the_pins_is_neither_written_nor_bound() {
        let parent = tempfile::tempdir().unwrap();
        let store = Arc::new(IdentityFileStore::new_in(parent.path()).unwrap());
        let (updates, mut served) = mpsc::channel(4);
        let pins = ControllerPins::none().with_controller("https://ctrl:1280").unwrap();
        let installer = OverlayInstaller::new(store.clone(), Arc::new(EndedBinder), "gateway", updates).with_pins(pins);
        let json =
            r#"{"ztAPI":"https://other:1280/edge/client/v1","id":{"cert":"pem:C","key":"pem:SECRETKEY","ca":"pem:A"}}"#;
        let identity = domain::IdentityJson::new(json.as_bytes().to_vec());
        let lease = IdentityId::new("lease-1");
        let refused = installer
            .install(LeasedIdentity { id: lease, identity_json: identity, expires_in: None })
            .await
            .expect_err("refused");
        assert!(matches!(refused, InstallError::Unusable(_)), "{refused:?}");
        assert_eq!(
            with_causes(&refused),
            "the overlay could not use the identity: the leased identity does not match the pins: its controller \
             https://other:1280 is not the pinned controller https://ctrl:1280"
        );
        assert!(served.try_recv().is_err(), "a binding was served");
        assert_eq!(std::fs::read_dir(store.dir()).unwrap().count(), 0, "a file was written");
    }
}
