//! Shared by the gateway's integration tests: a configuration for tests, the TCP
//! stand-in for the overlay, and a tiny HTTP client.

#![allow(dead_code)] // each test file uses its own part

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use domain::CallerIdentity;
use domain::ports::{Accepted, OverlayListener};
use gateway_bin::app::{OverlayBinder, ServiceListener, boxed};
use gateway_bin::config::{Config, LogFormat, OverlayConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ziti_transport::TcpOverlayListener;

pub fn overlay_config(target: &str, renewal: Duration, identity_dir: &Path) -> Config {
    Config {
        listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        upstream_url: None,
        upstream_timeout: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(2),
        log_format: LogFormat::Text,
        overlay: Some(OverlayConfig {
            management_target: target.to_owned(),
            management_timeout: Duration::from_secs(2),
            management_tls: None,
            renewal_interval: renewal,
            service_name: "gateway".to_owned(),
            enrollment_timeout: Duration::from_secs(2),
            resolve_cache_ttl: Duration::from_secs(30),
            identity_dir: Some(identity_dir.to_path_buf()),
        }),
        ignored_identity_file: false,
    }
}

/// What the stand-in saw when asked to bind: what a real overlay SDK would load.
#[derive(Debug, Clone)]
pub struct Binding {
    pub identity_file: PathBuf,
    pub identity_bytes: Vec<u8>,
    pub file_mode: u32,
    pub dir_mode: u32,
    pub service: String,
    pub addr: SocketAddr,
}

/// Stands in for the overlay: "loads" the identity file (reads it, as an SDK would)
/// and binds a loopback TCP port whose callers are reported as the given identity.
#[derive(Debug, Clone, Default)]
pub struct TcpStandIn {
    pub bindings: Arc<Mutex<Vec<Binding>>>,
    pub caller: Option<CallerIdentity>,
}

impl TcpStandIn {
    pub fn bindings(&self) -> Vec<Binding> {
        self.bindings.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn last(&self) -> Binding {
        self.bindings().last().cloned().expect("the overlay was never bound")
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0)
}

#[async_trait]
impl OverlayBinder for TcpStandIn {
    async fn bind(&self, identity_file: &Path, service: &str) -> Result<Box<dyn ServiceListener>, String> {
        let identity_bytes = std::fs::read(identity_file).map_err(|err| err.to_string())?;
        let listener =
            TcpOverlayListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.map_err(|err| err.to_string())?;
        let addr = listener.local_addr().map_err(|err| err.to_string())?;
        self.bindings.lock().unwrap_or_else(PoisonError::into_inner).push(Binding {
            identity_file: identity_file.to_path_buf(),
            identity_bytes,
            file_mode: mode(identity_file),
            dir_mode: identity_file.parent().map(mode).unwrap_or(0),
            service: service.to_owned(),
            addr,
        });
        Ok(boxed(AsCaller { inner: listener, caller: self.caller.clone() }))
    }
}

/// Reports every TCP connection as coming from `caller`, as the overlay would.
struct AsCaller {
    inner: TcpOverlayListener,
    caller: Option<CallerIdentity>,
}

#[async_trait]
impl OverlayListener for AsCaller {
    type Connection = tokio::net::TcpStream;
    type Error = ziti_transport::TcpError;

    async fn accept(&mut self) -> Result<Accepted<Self::Connection>, Self::Error> {
        let mut accepted = self.inner.accept().await?;
        if self.caller.is_some() {
            accepted.caller.transport = domain::Transport::Overlay;
            accepted.caller.identity = self.caller.clone();
        }
        Ok(accepted)
    }
}

/// One HTTP/1.1 GET over a fresh connection; returns (status, body).
pub async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response)).await??;
    let status = response.get(9..12).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// Entries left in a directory.
pub fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default()
}
