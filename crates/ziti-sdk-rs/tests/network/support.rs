//! Shared pieces of the SDK's network tests: the network, throwaway identities made with
//! the real CLI, Go SDK peers from the real `ziti` binary, and bounded waits.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use workspace_tests::network::ZitiNetwork;

/// Tests that host the shared service (or restart the router) hold this exclusively, so
/// that exactly one host, the one under test, serves it at a time; other tests that use
/// the router share it, so that no router restart pulls it from under them.
static SERVICE_HOSTING: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// For tests that use the router but not the shared service.
pub async fn shared_router() -> tokio::sync::RwLockReadGuard<'static, ()> {
    SERVICE_HOSTING.read().await
}

/// Takes the service for this test: waits for the lock, then until no terminator of an
/// earlier host is left (the router removes them shortly after their host goes; after a
/// router restart the controller drops the old router's terminators only once the new
/// process has validated them, which has taken over 30 s).
pub async fn exclusive_service(network: &ZitiNetwork) -> tokio::sync::RwLockWriteGuard<'static, ()> {
    let guard = SERVICE_HOSTING.write().await;
    let filter = format!("service.name=\"{}\"", network.service_name);
    within("earlier hosts' terminators to go", Duration::from_secs(90), async {
        loop {
            let json = ziti_cli(network, &["edge", "list", "terminators", &filter, "-j"], Path::new(".")).await;
            let listed: serde_json::Value = serde_json::from_str(&json).expect("terminator list is JSON");
            if listed["data"].as_array().is_some_and(Vec::is_empty) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    guard
}

pub fn network() -> ZitiNetwork {
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).try_init();
    ZitiNetwork::from_env()
}

/// The role attribute the service's Bind policy grants (`#gateway-hosts` on the
/// `ziti-up` network; overridable for running against another network).
pub fn host_role() -> String {
    std::env::var("SDK_TEST_HOST_ROLE").unwrap_or_else(|_| "gateway-hosts".to_owned())
}

/// Bounded wait with a readable failure.
pub async fn within<T>(what: &str, limit: Duration, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}

/// Runs a CLI command (bounded), panicking with its output on failure.
pub async fn ziti_cli(network: &ZitiNetwork, args: &[&str], dir: &Path) -> String {
    let mut command = Command::from(network.ziti());
    command.args(args).current_dir(dir).kill_on_drop(true);
    let output = within(&format!("ziti {}", args.join(" ")), Duration::from_secs(60), command.output())
        .await
        .expect("ziti runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "ziti {args:?} failed: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

/// An identity created and enrolled with the CLI for one test, deleted afterwards.
#[derive(Debug)]
pub struct TestIdentity {
    pub name: String,
    pub file: PathBuf,
    network: ZitiNetwork,
    _dir: tempfile::TempDir,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl TestIdentity {
    /// `key_alg`: `None` for the enroller's default (RSA 4096) or `Some("EC")`.
    pub async fn create(network: &ZitiNetwork, role: &str, key_alg: Option<&str>) -> TestIdentity {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("sdk-test-{}-{n}-{}", std::process::id(), role);
        let dir = tempfile::tempdir().expect("temp dir");
        let jwt = dir.path().join("identity.jwt");
        let file = dir.path().join("identity.json");
        let (jwt_arg, file_arg) = (jwt.to_string_lossy().into_owned(), file.to_string_lossy().into_owned());
        ziti_cli(network, &["edge", "create", "identity", &name, "-a", role, "-o", &jwt_arg], dir.path()).await;
        let mut enroll = vec!["edge", "enroll", jwt_arg.as_str(), "-o", file_arg.as_str()];
        if let Some(alg) = key_alg {
            enroll.extend(["--keyAlg", alg]);
        }
        ziti_cli(network, &enroll, dir.path()).await;
        TestIdentity { name, file, network: network.clone(), _dir: dir }
    }

    /// Deletes the identity now (also done, best effort, on drop).
    pub async fn delete(&self) {
        ziti_cli(&self.network, &["edge", "delete", "identity", &self.name], Path::new(".")).await;
    }
}

impl Drop for TestIdentity {
    fn drop(&mut self) {
        let _ = self.network.ziti().args(["edge", "delete", "identity", &self.name]).output();
    }
}

/// Sends `input` through the Go SDK's `ziti demo zcat` and returns what came back.
pub async fn go_zcat(network: &ZitiNetwork, identity: &Path, service: &str, input: Vec<u8>) -> Vec<u8> {
    let mut child = Command::from(network.ziti())
        .args(["demo", "zcat", "-i"])
        .arg(identity)
        .arg(format!("ziti:{service}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("zcat starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = tokio::spawn(async move {
        stdin.write_all(&input).await.expect("zcat takes its input");
        drop(stdin);
    });
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let mut output = Vec::new();
    let mut errors = Vec::new();
    let (read, _) = tokio::join!(stdout.read_to_end(&mut output), stderr.read_to_end(&mut errors));
    read.expect("zcat output");
    writer.await.expect("zcat input written");
    let status = child.wait().await.expect("zcat exits");
    assert!(status.success(), "zcat failed: {}", String::from_utf8_lossy(&errors));
    output
}

/// The Go SDK's `ziti demo echo-server`, stopped on drop.
pub struct GoEchoServer {
    _child: Child,
}

impl GoEchoServer {
    pub fn start(network: &ZitiNetwork, identity: &Path, service: &str) -> GoEchoServer {
        let child = Command::from(network.ziti())
            .args(["demo", "echo-server", "-i"])
            .arg(identity)
            .args(["-s", service])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("echo-server starts");
        GoEchoServer { _child: child }
    }
}

/// Deterministic pseudo-random bytes (xorshift), cheap to make in bulk.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Echoes every accepted connection; the task ends (with the error) if hosting stops.
pub fn echo(mut listener: ziti_sdk::ZitiListener) -> tokio::task::JoinHandle<ziti_sdk::Error> {
    tokio::spawn(async move {
        loop {
            let conn = match listener.accept().await {
                Ok(conn) => conn,
                Err(err) => return err,
            };
            tokio::spawn(async move {
                let (mut reader, mut writer) = tokio::io::split(conn);
                if tokio::io::copy(&mut reader, &mut writer).await.is_ok() {
                    let _ = writer.shutdown().await;
                }
            });
        }
    })
}
