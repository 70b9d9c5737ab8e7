//! Shared by the ziti-management tests: the binary run as an operator runs it, a
//! gRPC client, the controller seen through its management API (independently of
//! the server's own client), and the Go SDK peers of the `ziti` executable.

#![allow(dead_code)] // each test file uses its own part

pub mod controller;
pub mod idp;
pub mod peers;

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use workspace_tests::network::ZitiNetwork;
use ziti_net_kit::spire::X509Svid;
use zitimgmt_grpc::proto::ziti_management_service_client::ZitiManagementServiceClient;
use zitimgmt_grpc::proto::{
    ExtendIdentityLeaseRequest, ReleaseServiceIdentityRequest, RequestServiceIdentityRequest,
    RequestServiceIdentityResponse, ServiceType,
};

pub const BINARY: &str = env!("CARGO_BIN_EXE_ziti-management");

pub type Client = ZitiManagementServiceClient<Channel>;

pub fn free_addr() -> SocketAddr {
    let probe = TcpListener::bind("127.0.0.1:0").expect("probe");
    probe.local_addr().expect("addr")
}

/// A private directory (0700) for files that hold secrets.
pub fn private_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    dir
}

/// Writes secret bytes to `dir/name` with mode 0600.
pub fn write_private(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).expect("create");
    file.write_all(bytes).expect("write");
    path
}

/// The environment a `ziti-management` needs for `network`, on the given ports.
pub fn base_env(network: &ZitiNetwork, grpc: SocketAddr, admin: SocketAddr) -> Vec<(String, String)> {
    [
        ("ZITI_MGMT_CONTROLLER_URL", network.ctrl_url.clone()),
        ("ZITI_MGMT_CONTROLLER_CA", network.ctrl_ca.display().to_string()),
        ("ZITI_MGMT_ADMIN_USER", network.admin_user.clone()),
        ("ZITI_MGMT_ADMIN_PASSWORD", network.admin_password.clone()),
        ("ZITI_MGMT_GRPC_ADDR", grpc.to_string()),
        ("ZITI_MGMT_ADMIN_ADDR", admin.to_string()),
        ("RUST_LOG", "info,zitimgmt_server=debug".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

/// A `ziti-management` process of the test's own, logging to a file, serving gRPC
/// over TLS with a certificate of its own (as production should) unless the test
/// configures TLS itself.
#[derive(Debug)]
pub struct Management {
    child: Child,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    log: PathBuf,
    /// The CA of the certificate made here, `None` when the test set its own TLS.
    ca_pem: Option<String>,
    _dir: tempfile::TempDir,
}

/// A CA and a server certificate for 127.0.0.1 signed by it: (CA PEM, cert PEM, key PEM).
fn server_pki() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.distinguished_name.push(DnType::CommonName, "test ziti-management CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("server key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("server params")
        .signed_by(&key, &issuer)
        .expect("server certificate");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

impl Management {
    /// Starts one for `network` with the given lease TTL and reaper interval, and
    /// waits until `/readyz` says it is ready.
    pub fn start(network: &ZitiNetwork, ttl: &str, reaper: &str) -> Self {
        // A port found free can be taken by another process before ziti-management binds
        // it: on "Address already in use" try again with new ports.
        for _ in 0..3 {
            let (grpc, admin) = (free_addr(), free_addr());
            let mut env = base_env(network, grpc, admin);
            env.push(("ZITI_MGMT_LEASE_TTL".into(), ttl.into()));
            env.push(("ZITI_MGMT_REAPER_INTERVAL".into(), reaper.into()));
            let mut management = Self::spawn(&env, grpc, admin);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if http_get(management.admin, "/readyz").is_some_and(|(status, _)| status == 200) {
                    return management;
                }
                if let Ok(Some(_)) = management.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !management.logs().contains("Address already in use") {
                management.wait_ready(Duration::ZERO);
            }
        }
        panic!("ziti-management found its ports taken three times");
    }

    /// Starts one with exactly `env` (nothing inherited, but TLS added unless `env`
    /// sets it), without waiting.
    pub fn spawn(env: &[(String, String)], grpc: SocketAddr, admin: SocketAddr) -> Self {
        let dir = private_dir();
        let log = dir.path().join("ziti-management.log");
        let mut env = env.to_vec();
        let mut ca_pem = None;
        if !env.iter().any(|(name, _)| name == "ZITI_MGMT_TLS_CERT") {
            let (ca, cert, key) = server_pki();
            let cert = write_private(dir.path(), "server.pem", cert.as_bytes());
            let key = write_private(dir.path(), "server.key", key.as_bytes());
            env.push(("ZITI_MGMT_TLS_CERT".into(), cert.display().to_string()));
            env.push(("ZITI_MGMT_TLS_KEY".into(), key.display().to_string()));
            ca_pem = Some(ca);
        }
        let child = Command::new(BINARY)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn ziti-management");
        Self { child, grpc, admin, log, ca_pem, _dir: dir }
    }

    pub fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if http_get(self.admin, "/readyz").is_some_and(|(status, _)| status == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "ziti-management not ready within {within:?}; log:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A client over TLS, trusting the CA made for this server.
    ///
    /// # Panics
    /// When the test configured TLS itself (it builds its own client then).
    pub async fn client(&self) -> Client {
        use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
        let ca = self.ca_pem.as_deref().expect("a server with TLS of its own: build the client in the test");
        let target = format!("https://{}", self.grpc);
        let endpoint = Endpoint::from_shared(target.clone())
            .expect("uri")
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
            .expect("TLS settings");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match endpoint.connect().await {
                Ok(channel) => return ZitiManagementServiceClient::new(channel),
                Err(err) => assert!(Instant::now() < deadline, "cannot connect to {target}: {err}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One connection over TLS, trusting the CA made for this server and presenting
    /// `identity` (certificate chain PEM, key PEM) as the client certificate, if given.
    pub async fn connect_as(&self, identity: Option<(&str, &str)>) -> Result<Client, tonic::transport::Error> {
        use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
        let ca = self.ca_pem.as_deref().expect("a server with TLS of its own: build the client in the test");
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        if let Some((chain, key)) = identity {
            tls = tls.identity(Identity::from_pem(chain, key));
        }
        let endpoint = Endpoint::from_shared(format!("https://{}", self.grpc)).expect("uri").tls_config(tls)?;
        Ok(ZitiManagementServiceClient::new(endpoint.connect().await?))
    }

    /// The CA of the certificate made for this server (`None` when the test set its own TLS).
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log once a line of it satisfies `wanted`: for events the server logs after
    /// the client has already seen the outcome (a refused handshake). Panics with the
    /// log when no such line appears `within`.
    pub fn wait_for_log_line(&self, wanted: impl Fn(&str) -> bool, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let logs = self.logs();
            if logs.lines().any(&wanted) {
                return logs;
            }
            assert!(Instant::now() < deadline, "the awaited line is not in the log after {within:?}:\n{logs}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to exit on its own.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "ziti-management still running after {within:?}; log:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        if let Ok(None) = self.child.try_wait() {
            let pid = self.child.id().to_string();
            Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        }
        self.wait_exit(Duration::from_secs(10))
    }
}

impl Drop for Management {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}

/// One HTTP/1.1 GET; `None` when nothing answers.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Some((status, body))
}

pub async fn request_gateway(client: &mut Client) -> Result<RequestServiceIdentityResponse, tonic::Status> {
    let request = RequestServiceIdentityRequest { service_type: ServiceType::Gateway as i32 };
    client.request_service_identity(request).await.map(tonic::Response::into_inner)
}

pub async fn extend(client: &mut Client, id: &str) -> Result<Option<prost_types::Timestamp>, tonic::Status> {
    let request = ExtendIdentityLeaseRequest { ziti_identity_id: id.to_owned() };
    client.extend_identity_lease(request).await.map(|response| response.into_inner().lease_expires_at)
}

pub async fn release(client: &mut Client, id: &str) -> Result<(), tonic::Status> {
    let request = ReleaseServiceIdentityRequest { ziti_identity_id: id.to_owned() };
    client.release_service_identity(request).await.map(drop)
}

/// Seconds from now to `at` (negative when past).
pub fn seconds_until(at: &prost_types::Timestamp) -> f64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
    at.seconds as f64 + f64::from(at.nanos) / 1e9 - now
}

/// How long the SVIDs minted for tests live.
pub const SVID_TTL: Duration = Duration::from_secs(600);

/// A ziti-management of the test's own with `policy` and the settings `auth`.
pub fn management_with(network: &ZitiNetwork, policy: &str, auth: &[(&str, &str)]) -> (Management, tempfile::TempDir) {
    let dir = private_dir();
    let policy = write_private(dir.path(), "policy.toml", policy.as_bytes()).display().to_string();
    let (grpc, admin) = (free_addr(), free_addr());
    let mut env = base_env(network, grpc, admin);
    for (name, value) in auth.iter().copied().chain([("ZITI_MGMT_POLICY_FILE", policy.as_str())]) {
        env.push((name.to_owned(), value.to_owned()));
    }
    let management = Management::spawn(&env, grpc, admin);
    management.wait_ready(Duration::from_secs(30));
    (management, dir)
}

/// One with the `spiffe` method, the trust bundle from the network's Workload API.
pub fn attested_management(network: &ZitiNetwork, policy: &str) -> (Management, tempfile::TempDir) {
    let auth = [
        ("ZITI_MGMT_AUTH_METHODS", "spiffe"),
        ("ZITI_MGMT_SPIFFE_TRUST_DOMAIN", network.spiffe_trust_domain.as_str()),
        ("ZITI_MGMT_SPIFFE_ENDPOINT_SOCKET", network.spiffe_endpoint_socket.as_str()),
    ];
    management_with(network, policy, &auth)
}

/// An X.509-SVID for `spiffe://<trust domain>/<path>`, minted by the network's SPIRE server.
pub fn mint(network: &ZitiNetwork, path: &str) -> X509Svid {
    let spiffe_id = network.spiffe_id(path);
    network.spire_server().mint_x509(&spiffe_id, SVID_TTL).unwrap_or_else(|err| panic!("minting {spiffe_id}: {err}"))
}
