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
        forwarded_hosts: Vec::new(),
        max_connections: 1024,
        shutdown_grace: Duration::from_secs(2),
        log_format: LogFormat::Text,
        overlay: Some(OverlayConfig {
            management_target: target.to_owned(),
            management_timeout: Duration::from_secs(2),
            management_tls: None,
            management_insecure: false,
            management_credentials: gateway_bin::config::ManagementCredentials::default(),
            controller_pins: ziti_transport::ControllerPins::none(),
            renewal_interval: renewal,
            service_name: "gateway".to_owned(),
            enrollment_timeout: Duration::from_secs(2),
            resolve_cache_ttl: Duration::from_secs(30),
            resolve_max_concurrent: 32,
            unverified_callers: domain::UnverifiedCallers::Anonymous,
            identity_dir: Some(identity_dir.to_path_buf()),
            identity_source: gateway_bin::config::IdentitySourceConfig::Lease,
            identity_store: gateway_bin::config::IdentityStore::File,
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

/// A Python upstream from the standard library, started by a test on 127.0.0.1:0 and
/// killed when dropped.
pub struct PythonUpstream {
    child: std::process::Child,
    pub addr: SocketAddr,
}

impl PythonUpstream {
    /// Runs `script` (which must print its port on the first line of stdout) with `args`.
    fn start(script: &str, args: &[&Path]) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 must be installed to run this test");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line).expect("read the port");
        let port: u16 = line.trim().parse().unwrap_or_else(|_| panic!("python printed {line:?}, not a port"));
        Self { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) }
    }

    /// A WSGI app on `wsgiref.simple_server` answering every request with its
    /// environ's `HTTP_*` keys as JSON: what a CGI-style stack makes of the headers.
    pub fn wsgi_header_echo() -> Self {
        Self::start(WSGI_HEADER_ECHO, &[])
    }

    /// `http.server` serving the files under `root` (it resolves `..` itself, as plain
    /// file servers do), appending each raw request target to the file `seen`.
    pub fn file_server(root: &Path, seen: &Path) -> Self {
        Self::start(RECORDING_FILE_SERVER, &[root, seen])
    }
}

impl Drop for PythonUpstream {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

const WSGI_HEADER_ECHO: &str = r#"
import json
from wsgiref.simple_server import make_server, WSGIRequestHandler

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

def app(environ, start_response):
    body = json.dumps({k: v for k, v in environ.items() if k.startswith("HTTP_")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]

server = make_server("127.0.0.1", 0, app, handler_class=Quiet)
print(server.server_port, flush=True)
server.serve_forever()
"#;

const RECORDING_FILE_SERVER: &str = r#"
import functools, sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

root, seen = sys.argv[1], sys.argv[2]

class Recording(SimpleHTTPRequestHandler):
    def do_GET(self):
        with open(seen, "a") as log:
            log.write(self.path + "\n")
        super().do_GET()

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Recording, directory=root))
print(server.server_port, flush=True)
server.serve_forever()
"#;
