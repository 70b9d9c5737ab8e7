//! The `gateway` binary as an operator runs it: exit codes, messages, signals, and
//! what is left on disk and on the management server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a failed step should panic

mod support;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rstest::rstest;
use support::{blocking_get, entries};
use workspace_tests::{Behaviour, FakeManagement, identity_key_for};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway");

/// A command with a clean environment: only what the test sets.
fn gateway(env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(GATEWAY);
    command.env_clear().envs(env.iter().copied()).stdin(Stdio::null());
    command
}

fn free_addr() -> String {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
    probe.local_addr().expect("addr").to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[rstest]
#[case(&[("ZITI_ENABLED", "maybe")], "ZITI_ENABLED=\"maybe\"")]
#[case(&[("ZITI_LEASE_RENEWAL_INTERVAL", "abc")], "ZITI_LEASE_RENEWAL_INTERVAL=\"abc\"")]
#[case(&[("ZITI_LEASE_RENEWAL_INTERVAL", "0")], "ZITI_LEASE_RENEWAL_INTERVAL=\"0\"")]
#[case(&[("ZITI_ENABLED", "true"), ("ZITI_LEASE_RENEWAL_INTERVAL", "0")], "ZITI_LEASE_RENEWAL_INTERVAL=\"0\"")]
#[case(&[("GATEWAY_LISTEN_ADDR", "everywhere")], "GATEWAY_LISTEN_ADDR=\"everywhere\"")]
#[case(&[("ZITI_IDENTITY_FILE", "/etc/ziti/gateway.json")], "ZITI_IDENTITY_FILE is set but no longer used")]
fn bad_configuration_exits_2_naming_the_variable(#[case] env: &[(&str, &str)], #[case] named: &str) {
    let output = gateway(env).output().expect("run gateway");
    assert_eq!(output.status.code(), Some(2), "stderr: {}", stderr(&output));
    assert!(stderr(&output).contains(named), "stderr: {}", stderr(&output));
}

#[test]
fn sigterm_on_plain_tcp_exits_0_promptly() {
    let listen = free_addr();
    let admin = free_addr();
    let mut child = gateway(&[("GATEWAY_LISTEN_ADDR", &listen), ("GATEWAY_ADMIN_ADDR", &admin)])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_until_listening(&admin);
    assert!(std::net::TcpStream::connect(&listen).is_ok(), "not serving on {listen}");
    let status = terminate(&mut child);
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn overlay_on_with_an_identity_the_overlay_cannot_load_stops_cleanly_releasing_everything() {
    let server = FakeManagement::start(Behaviour::default()).await.expect("server");
    let identity_dir = tempfile::tempdir().expect("tempdir");
    let dir = identity_dir.path().to_string_lossy().into_owned();
    let target = server.target();
    let output = tokio::task::spawn_blocking(move || {
        gateway(&[
            ("ZITI_ENABLED", "true"),
            ("ZITI_MANAGEMENT_GRPC_TARGET", &target),
            ("GATEWAY_IDENTITY_DIR", &dir),
            ("GATEWAY_ADMIN_ADDR", "127.0.0.1:0"),
            ("RUST_LOG", "debug"),
        ])
        .output()
    })
    .await
    .expect("join")
    .expect("run gateway");

    let stderr = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    // The fake server's identity names a controller that is not there.
    assert!(
        stderr.contains("could not use the identity") && stderr.contains("HTTP request to the controller failed"),
        "stderr: {stderr}"
    );
    assert_eq!(stderr.matches("could not use the identity").count(), 2, "each cause once (log + exit line): {stderr}");
    assert_eq!(server.issued(), ["lease-1"], "it must have enrolled");
    assert_eq!(server.releases(), ["lease-1"], "the unusable lease must be released");
    assert!(entries(identity_dir.path()).is_empty(), "left behind: {:?}", entries(identity_dir.path()));
    let key = identity_key_for("lease-1");
    let key_body = key.lines().nth(1).expect("a PEM body line");
    assert!(!stderr.contains(key_body), "the private key reached the logs");
    assert!(!stderr.contains("BEGIN PRIVATE KEY"), "identity content reached the logs");
    server.stop().await;
}

#[test]
fn overlay_on_with_management_down_exits_1_naming_the_target() {
    let identity_dir = tempfile::tempdir().expect("tempdir");
    let target = free_addr();
    let started = Instant::now();
    let output = gateway(&[
        ("ZITI_ENABLED", "true"),
        ("ZITI_MANAGEMENT_GRPC_TARGET", &target),
        ("ZITI_ENROLLMENT_TIMEOUT", "1s"),
        ("GATEWAY_IDENTITY_DIR", &identity_dir.path().to_string_lossy()),
        ("GATEWAY_ADMIN_ADDR", "127.0.0.1:0"),
    ])
    .output()
    .expect("run gateway");
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    assert!(stderr(&output).contains(&target), "stderr: {}", stderr(&output));
    assert!(started.elapsed() < Duration::from_secs(6), "took {:?}", started.elapsed());
    assert!(entries(identity_dir.path()).is_empty());
}

#[test]
fn a_flood_of_connections_beyond_the_cap_is_closed_at_once_and_the_gateway_keeps_answering() {
    const CAP: usize = 50;
    const FLOOD: usize = 200;
    let listen = free_addr();
    let admin = free_addr();
    let mut child = KillOnDrop(
        gateway(&[
            ("GATEWAY_LISTEN_ADDR", &listen),
            ("GATEWAY_ADMIN_ADDR", &admin),
            ("GATEWAY_MAX_CONNECTIONS", &CAP.to_string()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn"),
    );
    wait_until_listening(&admin);
    assert_eq!(blocking_get(&listen, "/").expect("a first request").0, 200);
    wait_for_metric(&admin, "gateway_connections_open 0");
    let rss_before = vm_rss_kib(child.0.id());

    // Idle connections that never send a byte: the first CAP are held (until the
    // header read timeout), the others must be closed at once.
    let flood: Vec<std::net::TcpStream> = (0..FLOOD)
        .map(|_| {
            let stream = std::net::TcpStream::connect(&listen).expect("connect");
            stream.set_nonblocking(true).expect("nonblocking");
            stream
        })
        .collect();
    let mut closed = [false; FLOOD];
    let deadline = Instant::now() + Duration::from_secs(5);
    while closed.iter().filter(|c| **c).count() < FLOOD - CAP && Instant::now() < deadline {
        for (stream, closed) in flood.iter().zip(closed.iter_mut()).filter(|(_, closed)| !**closed) {
            *closed = match std::io::Read::read(&mut &*stream, &mut [0u8; 16]) {
                Err(err) => err.kind() != std::io::ErrorKind::WouldBlock,
                Ok(_) => true,
            };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let closed = closed.iter().filter(|c| **c).count();
    assert_eq!(closed, FLOOD - CAP, "connections closed at once out of {FLOOD} with a cap of {CAP}");
    let rss_flooded = vm_rss_kib(child.0.id());

    // The gateway keeps answering: its admin listener, and its metrics count the refusals.
    let (status, metrics) = blocking_get(&admin, "/metrics").expect("metrics during the flood");
    assert_eq!(status, 200);
    assert!(metrics.contains(&format!("gateway_connections_refused_total {}", FLOOD - CAP)), "{metrics}");
    assert!(metrics.contains(&format!("gateway_connections_open {CAP}")), "{metrics}");

    // Once the flood goes, other clients are served again.
    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match blocking_get(&listen, "/after-the-flood") {
            Ok((200, body)) => {
                assert!(body.contains("/after-the-flood"), "{body}");
                break;
            }
            other => assert!(Instant::now() < deadline, "not served again after the flood: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let rss_after = vm_rss_kib(child.0.id());
    eprintln!(
        "gateway VmRSS: {rss_before} KiB before, {rss_flooded} KiB with {CAP} held and {} refused, {rss_after} KiB after",
        FLOOD - CAP
    );
    assert!(rss_flooded < rss_before + 16 * 1024, "memory grew from {rss_before} to {rss_flooded} KiB");
    assert_eq!(terminate(&mut child.0).code(), Some(0));
}

/// A child process that a failed assertion must not leave running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// Polls the admin `/metrics` until it contains `line`.
fn wait_for_metric(admin: &str, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = blocking_get(admin, "/metrics").map(|(_, body)| body).unwrap_or_default();
        if metrics.contains(line) {
            return;
        }
        assert!(Instant::now() < deadline, "{line:?} never appeared in: {metrics}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The resident set size of a process, from `/proc/<pid>/status`.
fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

fn wait_until_listening(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listening on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "no exit within 5 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn overlay_on_with_plaintext_to_a_remote_management_exits_2_naming_what_to_set() {
    // The default target, ziti-management:50051, is a name: not loopback.
    let output = gateway(&[("ZITI_ENABLED", "true"), ("GATEWAY_ADMIN_ADDR", "127.0.0.1:0")]).output().expect("run");
    let stderr = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    for named in [
        "ZITI_MANAGEMENT_GRPC_TARGET=\"ziti-management:50051\"",
        "ZITI_MANAGEMENT_TLS_CA",
        "ZITI_MANAGEMENT_INSECURE=true",
    ] {
        assert!(stderr.contains(named), "{named} not named: {stderr}");
    }
}

#[test]
fn overlay_on_with_plaintext_to_a_remote_management_and_the_opt_in_starts_with_a_warning() {
    // `.invalid` never resolves (RFC 6761): accepted, then enrollment fails at run time.
    let identity_dir = tempfile::tempdir().expect("tempdir");
    let output = gateway(&[
        ("ZITI_ENABLED", "true"),
        ("ZITI_MANAGEMENT_GRPC_TARGET", "http://ziti-management.invalid:50051"),
        ("ZITI_MANAGEMENT_INSECURE", "true"),
        ("ZITI_ENROLLMENT_TIMEOUT", "1s"),
        ("GATEWAY_IDENTITY_DIR", &identity_dir.path().to_string_lossy()),
        ("GATEWAY_ADMIN_ADDR", "127.0.0.1:0"),
    ])
    .output()
    .expect("run gateway");
    let stderr = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "accepted, then ziti-management is unreachable: {stderr}");
    assert!(
        stderr.contains("WARN") && stderr.contains("INSECURE: ZITI_MANAGEMENT_INSECURE=true"),
        "no warning: {stderr}"
    );
}
