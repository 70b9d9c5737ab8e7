//! Shared by the gateway's integration tests: a configuration for tests, the TCP
//! stand-in for the overlay (from `ziti-transport`'s `testing` feature), and a tiny
//! HTTP client.

#![allow(dead_code)] // each test file uses its own part

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gateway_bin::config::{Config, LogFormat, OverlayConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// One blocking HTTP/1.1 GET to `addr` (`host:port`); returns (status, body).
pub fn blocking_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.get(9..12).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Ok((status, body))
}
