//! The identity's life on this side: write the leased identity privately (or keep it in
//! memory only), load it and bind the service, hand the binding to the server, present
//! each rotated credential; retire both when the lease ends.

use std::sync::Arc;

use async_trait::async_trait;
use domain::ports::{Accepted, BindingEnded, IdentityInstaller, Rotation, ServiceListener};
use domain::{IdentityId, IdentityJson, InstallError, LeasedIdentity, ListenError};
use service_kit::causes::with_causes;
use tokio::sync::{mpsc, watch};

use crate::binder::{BoundService, IdentitySource, OverlayBinder, OverlayCredentials};
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
    /// `None`: identities are loaded from memory and never written (`GATEWAY_IDENTITY_STORE=memory`).
    store: Option<Arc<IdentityFileStore>>,
    binder: Arc<dyn OverlayBinder>,
    service: String,
    updates: mpsc::Sender<ListenerUpdate>,
    pins: ControllerPins,
    ended: Arc<watch::Sender<Option<BindingEnded>>>,
    /// The identity in use: its lease, the credential it presents, and how to rotate it.
    current: tokio::sync::Mutex<Option<Installed>>,
}

struct Installed {
    id: IdentityId,
    credential: IdentityJson,
    credentials: Box<dyn OverlayCredentials>,
}

impl std::fmt::Debug for OverlayInstaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverlayInstaller").field("service", &self.service).finish_non_exhaustive()
    }
}

impl OverlayInstaller {
    /// An installer that writes each identity to `store` before loading it, or (with
    /// `None`) loads it from memory only.
    pub fn new(
        store: Option<Arc<IdentityFileStore>>,
        binder: Arc<dyn OverlayBinder>,
        service: impl Into<String>,
        updates: mpsc::Sender<ListenerUpdate>,
    ) -> Self {
        let ended = Arc::new(watch::Sender::new(None));
        Self {
            store,
            binder,
            service: service.into(),
            updates,
            pins: ControllerPins::none(),
            ended,
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// The same installer refusing identities that do not match `pins`.
    #[must_use]
    pub fn with_pins(self, pins: ControllerPins) -> Self {
        Self { pins, ..self }
    }

    /// Shape first (its errors are the clearer), then the pins, before anything is
    /// written or loaded.
    fn check(&self, identity: &IdentityJson) -> Result<(), InstallError> {
        let bytes = identity.as_bytes();
        check_identity_json(bytes).map_err(|err| InstallError::Unusable(Box::new(err)))?;
        self.pins.check_json(bytes).map_err(|mismatch| InstallError::Unusable(Box::new(NotPinned(mismatch))))
    }
}

#[async_trait]
impl IdentityInstaller for OverlayInstaller {
    async fn install(&self, identity: LeasedIdentity) -> Result<(), InstallError> {
        self.check(&identity.identity_json)?;
        let LeasedIdentity { id, identity_json, .. } = identity;
        let mut current = self.current.lock().await;
        let bound = match &self.store {
            Some(store) => {
                let staged = store.stage(&identity_json).map_err(|err| InstallError::Failed(Box::new(err)))?;
                // A staged file that fails to bind is dropped, and with it erased.
                let bound = self
                    .binder
                    .bind(IdentitySource::File(staged.path()), &self.service)
                    .await
                    .map_err(|err| InstallError::Failed(Box::new(err)))?;
                store.commit(staged, id.clone());
                bound
            }
            None => self
                .binder
                .bind(IdentitySource::Memory(&identity_json), &self.service)
                .await
                .map_err(|err| InstallError::Failed(Box::new(err)))?,
        };
        let BoundService { listener, credentials } = bound;
        let listener = Box::new(ReportingEnd { listener, id: id.clone(), ended: self.ended.clone() });
        *current = Some(Installed { id, credential: identity_json, credentials });
        self.updates.send(ListenerUpdate::Bound(listener)).await.map_err(|_| InstallError::ShuttingDown)
    }

    async fn retire(&self, id: &IdentityId) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_none_or(|installed| installed.id != *id) {
            return;
        }
        *current = None;
        if let Some(store) = &self.store {
            store.retire(id);
        }
        tracing::info!(lease = %id, "identity retired: binding closed, identity erased");
        // A server already gone has nothing left to close.
        let _ = self.updates.send(ListenerUpdate::Retired).await;
    }

    async fn rotate(&self, id: &IdentityId, credential: IdentityJson) -> Result<Rotation, InstallError> {
        let mut current = self.current.lock().await;
        let Some(installed) = current.as_mut().filter(|installed| installed.id == *id) else {
            return Err(InstallError::Failed(format!("identity {id} is not in use").into()));
        };
        if installed.credential.as_bytes() == credential.as_bytes() {
            return Ok(Rotation::Unchanged);
        }
        self.check(&credential)?;
        // The file first, so that what is on disk is never older than what is in use.
        let staged = match &self.store {
            Some(store) => Some(store.stage(&credential).map_err(|err| InstallError::Failed(Box::new(err)))?),
            None => None,
        };
        installed.credentials.rotate(&credential).await.map_err(|err| InstallError::Failed(Box::new(err)))?;
        if let (Some(store), Some(staged)) = (&self.store, staged) {
            store.commit(staged, id.clone());
        }
        installed.credential = credential;
        Ok(Rotation::Rotated)
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

    /// Records the credentials presented after a rotation.
    #[derive(Default, Clone)]
    struct Presented(Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

    #[async_trait]
    impl OverlayCredentials for Presented {
        async fn rotate(&self, identity: &IdentityJson) -> Result<(), crate::binder::RotateError> {
            self.0.lock().unwrap().push(identity.as_bytes().to_vec());
            Ok(())
        }
    }

    #[async_trait]
    impl OverlayBinder for EndedBinder {
        async fn bind(&self, _identity: IdentitySource<'_>, _service: &str) -> Result<BoundService, crate::BindError> {
            Ok(BoundService { listener: Box::new(Ended), credentials: Box::new(Presented::default()) })
        }
    }

    /// Binds from memory only, recording what each bind and rotation was given.
    #[derive(Default, Clone)]
    struct MemoryBinder {
        bound_from_file: Arc<std::sync::Mutex<Vec<std::path::PathBuf>>>,
        presented: Presented,
    }

    #[async_trait]
    impl OverlayBinder for MemoryBinder {
        async fn bind(&self, identity: IdentitySource<'_>, _service: &str) -> Result<BoundService, crate::BindError> {
            if let IdentitySource::File(path) = identity {
                self.bound_from_file.lock().unwrap().push(path.to_owned());
            }
            Ok(BoundService { listener: Box::new(Ended), credentials: Box::new(self.presented.clone()) })
        }
    }

    fn identity_with_key(key: &str) -> IdentityJson {
        let json = format!(
            r#"{{"ztAPI":"https://ctrl:1280/edge/client/v1","id":{{"cert":"pem:C","key":"pem:{key}","ca":"pem:A"}}}}"#
        );
        IdentityJson::new(json.into_bytes())
    }

    #[tokio::test]
    async fn with_the_memory_store_nothing_is_written_and_rotations_reach_the_overlay() {
        let binder = MemoryBinder::default();
        let (updates, mut served) = mpsc::channel(4);
        let installer = OverlayInstaller::new(None, Arc::new(binder.clone()), "gateway", updates);
        let lease = IdentityId::new("spiffe://td/gateway");
        let leased = LeasedIdentity { id: lease.clone(), identity_json: identity_with_key("K1"), expires_in: None };
        installer.install(leased).await.unwrap();
        assert!(matches!(served.recv().await, Some(ListenerUpdate::Bound(_))));
        assert!(binder.bound_from_file.lock().unwrap().is_empty(), "bound from a file");

        assert_eq!(installer.rotate(&lease, identity_with_key("K1")).await.unwrap(), Rotation::Unchanged);
        assert_eq!(installer.rotate(&lease, identity_with_key("K2")).await.unwrap(), Rotation::Rotated);
        assert_eq!(installer.rotate(&lease, identity_with_key("K2")).await.unwrap(), Rotation::Unchanged);
        let presented = binder.presented.0.lock().unwrap().clone();
        assert_eq!(presented, [identity_with_key("K2").as_bytes().to_vec()]);

        let other = IdentityId::new("spiffe://td/other");
        assert!(installer.rotate(&other, identity_with_key("K3")).await.is_err(), "rotated an identity not in use");
        installer.retire(&lease).await;
        assert!(matches!(served.recv().await, Some(ListenerUpdate::Retired)));
        assert!(installer.rotate(&lease, identity_with_key("K3")).await.is_err(), "rotated a retired identity");
    }

    #[tokio::test]
    async fn with_the_file_store_a_rotation_replaces_the_file() {
        let parent = tempfile::tempdir().unwrap();
        let store = Arc::new(IdentityFileStore::new_in(parent.path()).unwrap());
        let binder = MemoryBinder::default();
        let (updates, _served) = mpsc::channel(4);
        let installer = OverlayInstaller::new(Some(store.clone()), Arc::new(binder.clone()), "gateway", updates);
        let lease = IdentityId::new("lease-1");
        let leased = LeasedIdentity { id: lease.clone(), identity_json: identity_with_key("K1"), expires_in: None };
        installer.install(leased).await.unwrap();
        let first = store.current_path().unwrap();
        assert_eq!(*binder.bound_from_file.lock().unwrap(), std::slice::from_ref(&first));

        assert_eq!(installer.rotate(&lease, identity_with_key("K2")).await.unwrap(), Rotation::Rotated);
        let second = store.current_path().unwrap();
        assert_eq!(std::fs::read(&second).unwrap(), identity_with_key("K2").as_bytes());
        assert!(!first.exists(), "the rotated-out credential's file is left behind");
    }

    #[tokio::test]
    async fn a_binding_that_ends_for_good_is_reported_with_its_lease() {
        let parent = tempfile::tempdir().unwrap();
        let store = Arc::new(IdentityFileStore::new_in(parent.path()).unwrap());
        let (updates, mut served) = mpsc::channel(4);
        let installer = OverlayInstaller::new(Some(store), Arc::new(EndedBinder), "gateway", updates);
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
        let installer =
            OverlayInstaller::new(Some(store.clone()), Arc::new(EndedBinder), "gateway", updates).with_pins(pins);
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
