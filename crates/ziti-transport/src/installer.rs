//! The identity's life on this side: write the leased identity privately (or keep it in
//! memory only), load it and bind the service, hand the binding to the server, present
//! each rotated credential; retire both when the lease ends.

use std::sync::Arc;

use async_trait::async_trait;
use domain::ports::{Accepted, BindingEnded, IdentityInstaller, Rotation, ServiceListener};
use domain::{IdentityId, IdentityJson, InstallError, LeasedIdentity, ListenError};
use service_kit::causes::with_causes;
use tokio::sync::watch;
use ziti_sdk::Identity;

use crate::binder::{BoundService, IdentitySource, OverlayBinder, OverlayCredentials};
use crate::identity_file::IdentityFileStore;
use crate::pins::{ControllerPins, PinMismatch};

/// The leased identity was refused by the pins (the cause says which and why).
#[derive(Debug, thiserror::Error)]
#[error("the leased identity does not match the pins")]
struct NotPinned(#[source] PinMismatch);

/// The [`IdentityInstaller`] of the overlay.
pub struct OverlayInstaller {
    /// `None`: identities are loaded from memory and never written (`GATEWAY_IDENTITY_STORE=memory`).
    store: Option<Arc<IdentityFileStore>>,
    binder: Arc<dyn OverlayBinder>,
    service: String,
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
    ) -> Self {
        let ended = Arc::new(watch::Sender::new(None));
        Self {
            store,
            binder,
            service: service.into(),
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

    /// Parses the identity once, with the SDK (every value inline; errors name the
    /// field and never quote it), then checks it against the pins, before anything is
    /// written or loaded.
    fn check(&self, identity: &IdentityJson) -> Result<Identity, InstallError> {
        let parsed =
            Identity::from_inline_json(identity.as_bytes()).map_err(|err| InstallError::Unusable(Box::new(err)))?;
        self.pins.check(&parsed).map_err(|mismatch| InstallError::Unusable(Box::new(NotPinned(mismatch))))?;
        Ok(parsed)
    }
}

#[async_trait]
impl IdentityInstaller for OverlayInstaller {
    async fn install(&self, identity: LeasedIdentity) -> Result<Box<dyn ServiceListener>, InstallError> {
        let parsed = self.check(&identity.identity_json)?;
        let LeasedIdentity { id, identity_json, .. } = identity;
        let mut current = self.current.lock().await;
        let bound = match &self.store {
            Some(store) => {
                // The SDK loads it from the file, as the spec says: `parsed` only checked it.
                drop(parsed);
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
                .bind(IdentitySource::Memory { json: &identity_json, identity: parsed }, &self.service)
                .await
                .map_err(|err| InstallError::Failed(Box::new(err)))?,
        };
        let BoundService { listener, credentials } = bound;
        let listener = Box::new(ReportingEnd { listener, id: id.clone(), ended: self.ended.clone() });
        *current = Some(Installed { id, credential: identity_json, credentials });
        Ok(listener)
    }

    async fn retire(&self, id: &IdentityId) -> bool {
        let mut current = self.current.lock().await;
        if current.as_ref().is_none_or(|installed| installed.id != *id) {
            return false;
        }
        *current = None;
        if let Some(store) = &self.store {
            store.retire(id);
        }
        true
    }

    async fn close(&self) {
        *self.current.lock().await = None;
        if let Some(store) = &self.store {
            store.clear();
            if let Err(err) = store.remove_dir() {
                tracing::warn!(err = with_causes(&err), "could not remove the identity directory");
            }
        }
    }

    async fn rotate(&self, id: &IdentityId, credential: IdentityJson) -> Result<Rotation, InstallError> {
        let mut current = self.current.lock().await;
        let Some(installed) = current.as_mut().filter(|installed| installed.id == *id) else {
            return Err(InstallError::Failed(format!("identity {id} is not in use").into()));
        };
        if installed.credential.as_bytes() == credential.as_bytes() {
            return Ok(Rotation::Unchanged);
        }
        let parsed = self.check(&credential)?;
        // The file first, so that what is on disk is never older than what is in use.
        let staged = match &self.store {
            Some(store) => Some(store.stage(&credential).map_err(|err| InstallError::Failed(Box::new(err)))?),
            None => None,
        };
        installed.credentials.rotate(&credential, parsed).await.map_err(|err| InstallError::Failed(Box::new(err)))?;
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
        async fn rotate(&self, json: &IdentityJson, _identity: Identity) -> Result<(), crate::binder::RotateError> {
            self.0.lock().unwrap().push(json.as_bytes().to_vec());
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

    /// A real identity for `api` whose key is the one named `key` (the same bytes for
    /// the same name in one test process).
    fn identity_for(api: &str, key: &str) -> IdentityJson {
        static MADE: std::sync::Mutex<Vec<(String, Vec<u8>)>> = std::sync::Mutex::new(Vec::new());
        let label = format!("{api} {key}");
        let mut made = MADE.lock().unwrap();
        if let Some((_, bytes)) = made.iter().find(|(name, _)| *name == label) {
            return IdentityJson::new(bytes.clone());
        }
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .signed_by(&leaf_key, &rcgen::Issuer::new(ca_params, ca_key))
            .unwrap();
        let json = serde_json::json!({"ztAPI": api, "id": {
            "cert": format!("pem:{}", leaf.pem()),
            "key": format!("pem:{}", leaf_key.serialize_pem()),
            "ca": format!("pem:{}", ca.pem()),
        }})
        .to_string()
        .into_bytes();
        made.push((label, json.clone()));
        IdentityJson::new(json)
    }

    fn identity_with_key(key: &str) -> IdentityJson {
        identity_for("https://ctrl:1280/edge/client/v1", key)
    }

    #[tokio::test]
    async fn with_the_memory_store_nothing_is_written_and_rotations_reach_the_overlay() {
        let binder = MemoryBinder::default();
        let installer = OverlayInstaller::new(None, Arc::new(binder.clone()), "gateway");
        let lease = IdentityId::new("spiffe://td/gateway");
        let leased = LeasedIdentity { id: lease.clone(), identity_json: identity_with_key("K1"), expires_in: None };
        installer.install(leased).await.unwrap();
        assert!(binder.bound_from_file.lock().unwrap().is_empty(), "bound from a file");

        assert_eq!(installer.rotate(&lease, identity_with_key("K1")).await.unwrap(), Rotation::Unchanged);
        assert_eq!(installer.rotate(&lease, identity_with_key("K2")).await.unwrap(), Rotation::Rotated);
        assert_eq!(installer.rotate(&lease, identity_with_key("K2")).await.unwrap(), Rotation::Unchanged);
        let presented = binder.presented.0.lock().unwrap().clone();
        assert_eq!(presented, [identity_with_key("K2").as_bytes().to_vec()]);

        let other = IdentityId::new("spiffe://td/other");
        assert!(installer.rotate(&other, identity_with_key("K3")).await.is_err(), "rotated an identity not in use");
        assert!(installer.retire(&lease).await, "the identity in use was not retired");
        assert!(!installer.retire(&lease).await, "retired twice");
        assert!(installer.rotate(&lease, identity_with_key("K3")).await.is_err(), "rotated a retired identity");
    }

    #[tokio::test]
    async fn with_the_file_store_a_rotation_replaces_the_file() {
        let parent = tempfile::tempdir().unwrap();
        let store = Arc::new(IdentityFileStore::new_in(parent.path()).unwrap());
        let binder = MemoryBinder::default();
        let installer = OverlayInstaller::new(Some(store.clone()), Arc::new(binder.clone()), "gateway");
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
        let installer = OverlayInstaller::new(Some(store), Arc::new(EndedBinder), "gateway");
        let mut ended = installer.ended_bindings();
        let identity = identity_with_key("K");
        let lease = IdentityId::new("lease-1");
        let mut listener = installer
            .install(LeasedIdentity { id: lease.clone(), identity_json: identity, expires_in: None })
            .await
            .unwrap();
        assert_eq!(*ended.borrow_and_update(), None, "nothing ended yet");

        assert!(matches!(listener.accept().await, Err(ListenError::Closed(_))));
        let reason = "the controller no longer accepts this identity".to_owned();
        assert_eq!(*ended.borrow_and_update(), Some(BindingEnded { id: lease, reason }));
    }

    #[tokio::test]
    async fn an_identity_that_does_not_match_the_pins_is_neither_written_nor_bound() {
        let parent = tempfile::tempdir().unwrap();
        let store = Arc::new(IdentityFileStore::new_in(parent.path()).unwrap());
        let pins = ControllerPins::none().with_controller("https://ctrl:1280").unwrap();
        let installer = OverlayInstaller::new(Some(store.clone()), Arc::new(EndedBinder), "gateway").with_pins(pins);
        let identity = identity_for("https://other:1280/edge/client/v1", "K");
        let lease = IdentityId::new("lease-1");
        let Err(refused) =
            installer.install(LeasedIdentity { id: lease, identity_json: identity, expires_in: None }).await
        else {
            panic!("an identity that does not match the pins was bound");
        };
        assert!(matches!(refused, InstallError::Unusable(_)), "{refused:?}");
        assert_eq!(
            with_causes(&refused),
            "the overlay could not use the identity: the leased identity does not match the pins: its controller \
             https://other:1280 is not the pinned controller https://ctrl:1280"
        );
        assert_eq!(std::fs::read_dir(store.dir()).unwrap().count(), 0, "a file was written");
    }

    #[tokio::test]
    async fn a_handed_out_identity_that_names_a_local_file_is_refused_unread_and_nothing_is_written() {
        let parent = tempfile::tempdir().unwrap();
        let store = Arc::new(IdentityFileStore::new_in(parent.path()).unwrap());
        let installer = OverlayInstaller::new(Some(store.clone()), Arc::new(EndedBinder), "gateway");
        let mut json: serde_json::Value = serde_json::from_slice(identity_with_key("K").as_bytes()).unwrap();
        json["id"]["key"] = serde_json::json!("file:///etc/ssl/private/host.key");
        let identity = IdentityJson::new(json.to_string().into_bytes());
        let Err(refused) = installer
            .install(LeasedIdentity { id: IdentityId::new("lease-1"), identity_json: identity, expires_in: None })
            .await
        else {
            panic!("an identity naming a local key file was bound");
        };
        assert!(matches!(refused, InstallError::Unusable(_)), "{refused:?}");
        assert!(with_causes(&refused).contains("`id.key` names a local file"), "{}", with_causes(&refused));
        assert_eq!(std::fs::read_dir(store.dir()).unwrap().count(), 0, "a file was written");
    }
}
