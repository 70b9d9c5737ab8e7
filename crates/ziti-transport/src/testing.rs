//! A test double for the overlay (feature `testing`): it "loads" the identity (reads
//! the file, as an SDK would, or takes it from memory) and binds a loopback TCP port whose callers are
//! reported as a given overlay identity. For tests of the gateway's wiring that do not
//! need a real OpenZiti network.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use domain::ports::{Accepted, ServiceListener};
use domain::{CallerIdentity, IdentityJson, ListenError, Transport};

use crate::binder::{BindError, BoundService, IdentitySource, OverlayBinder, OverlayCredentials, RotateError};
use crate::tcp::TcpServiceListener;

/// What the stand-in saw when asked to bind: what a real overlay SDK would load.
#[derive(Debug, Clone)]
pub struct Binding {
    /// The identity file bound from; `None` when bound from memory.
    pub identity_file: Option<PathBuf>,
    pub identity_bytes: Vec<u8>,
    pub file_mode: u32,
    pub dir_mode: u32,
    pub service: String,
    pub addr: SocketAddr,
    /// The credentials presented since (rotations), in order.
    pub rotations: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// Binds loopback TCP in place of the overlay and records each binding.
#[derive(Debug, Clone, Default)]
pub struct TcpStandIn {
    pub bindings: Arc<Mutex<Vec<Binding>>>,
    /// Reported as every caller's overlay identity when set.
    pub caller: Option<CallerIdentity>,
}

impl TcpStandIn {
    pub fn bindings(&self) -> Vec<Binding> {
        self.bindings.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The latest binding, if any.
    pub fn last(&self) -> Option<Binding> {
        self.bindings().last().cloned()
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0)
}

fn bind_error(service: &str, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> BindError {
    BindError { service: service.to_owned(), source: source.into() }
}

#[async_trait]
impl OverlayBinder for TcpStandIn {
    async fn bind(&self, identity: IdentitySource<'_>, service: &str) -> Result<BoundService, BindError> {
        let (identity_file, identity_bytes) = match identity {
            IdentitySource::File(path) => {
                (Some(path.to_path_buf()), std::fs::read(path).map_err(|err| bind_error(service, err))?)
            }
            IdentitySource::Memory { json, .. } => (None, json.as_bytes().to_vec()),
        };
        let listener = TcpServiceListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(|err| bind_error(service, err))?;
        let addr = listener.local_addr().map_err(|err| bind_error(service, err))?;
        let modes = identity_file.as_deref().map(|file| (mode(file), file.parent().map(mode).unwrap_or(0)));
        self.bindings.lock().unwrap_or_else(PoisonError::into_inner).push(Binding {
            identity_file,
            identity_bytes,
            file_mode: modes.map_or(0, |(file, _)| file),
            dir_mode: modes.map_or(0, |(_, dir)| dir),
            service: service.to_owned(),
            addr,
            rotations: Arc::default(),
        });
        let rotations = self.last().map(|binding| binding.rotations).unwrap_or_default();
        Ok(BoundService {
            listener: Box::new(AsCaller { inner: listener, caller: self.caller.clone() }),
            credentials: Box::new(Rotations(rotations)),
        })
    }
}

/// Records the credentials a binding was handed after it was made.
struct Rotations(Arc<Mutex<Vec<Vec<u8>>>>);

#[async_trait]
impl OverlayCredentials for Rotations {
    async fn rotate(&self, json: &IdentityJson, _identity: ziti_sdk::Identity) -> Result<(), RotateError> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(json.as_bytes().to_vec());
        Ok(())
    }
}

/// Reports every TCP connection as coming from `caller`, as the overlay would.
struct AsCaller {
    inner: TcpServiceListener,
    caller: Option<CallerIdentity>,
}

#[async_trait]
impl ServiceListener for AsCaller {
    async fn accept(&mut self) -> Result<Accepted, ListenError> {
        let mut accepted = self.inner.accept().await?;
        if self.caller.is_some() {
            accepted.caller.transport = Transport::Overlay;
            accepted.caller.identity = self.caller.clone();
        }
        Ok(accepted)
    }
}
