//! The `gateway` binary as an operator runs it: exit codes, messages, signals, and
//! what is left on disk and on the management server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a failed step should panic

mod support;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rstest::rstest;
use support::entries;
use workspace_tests::{Behaviour, FakeManagement};

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
    // The fake server's identity has no real certificate: the overlay refuses it.
    assert!(stderr.contains("could not use the identity") && stderr.contains("id.cert"), "stderr: {stderr}");
    assert_eq!(stderr.matches("could not use the identity").count(), 2, "each cause once (log + exit line): {stderr}");
    assert_eq!(server.issued(), ["lease-1"], "it must have enrolled");
    assert_eq!(server.releases(), ["lease-1"], "the unusable lease must be released");
    assert!(entries(identity_dir.path()).is_empty(), "left behind: {:?}", entries(identity_dir.path()));
    assert!(!stderr.contains("secret-lease-1"), "the private key reached the logs");
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
