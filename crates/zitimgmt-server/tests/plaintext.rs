//! Plain-text gRPC, and callers without credentials (the `none` method, the
//! default), only where nothing else can listen: on a non-loopback address the server
//! refuses to start unless `ZITI_MGMT_INSECURE=true` / `ZITI_MGMT_ALLOW_UNAUTHENTICATED=true`,
//! and then it says loudly what that means. Needs no controller.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a failed step should panic

mod support;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{BINARY, free_addr};

/// A configuration whose controller is a closed loopback port (the start goes on
/// without it), serving gRPC on `grpc`. Each case here must end by itself within
/// seconds; one still running is killed, so that it never serves for long.
fn run(grpc: &str, insecure: Option<&str>) -> Output {
    run_with(grpc, insecure, Some("true"))
}

fn run_with(grpc: &str, insecure: Option<&str>, allow_unauthenticated: Option<&str>) -> Output {
    let mut command = Command::new(BINARY);
    command
        .env_clear()
        .env("ZITI_MGMT_CONTROLLER_URL", format!("https://{}", free_addr()))
        .env("ZITI_MGMT_ADMIN_PASSWORD", "not-used-Pa55")
        .env("ZITI_MGMT_GRPC_ADDR", grpc)
        .env("ZITI_MGMT_ADMIN_ADDR", free_addr().to_string());
    if let Some(insecure) = insecure {
        command.env("ZITI_MGMT_INSECURE", insecure);
    }
    if let Some(allow) = allow_unauthenticated {
        command.env("ZITI_MGMT_ALLOW_UNAUTHENTICATED", allow);
    }
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run ziti-management");
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().expect("wait").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Killing one that already exited does nothing; the output tells what happened.
    let _ = child.kill();
    child.wait_with_output().expect("output")
}

#[test]
fn plaintext_on_a_non_loopback_address_exits_2_naming_the_variables() {
    let output = run("0.0.0.0:50051", None);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    for named in
        ["ZITI_MGMT_GRPC_ADDR=0.0.0.0:50051", "ZITI_MGMT_TLS_CERT", "ZITI_MGMT_TLS_KEY", "ZITI_MGMT_INSECURE=true"]
    {
        assert!(stderr.contains(named), "{named} not named: {stderr}");
    }
}

#[test]
fn plaintext_on_a_non_loopback_address_with_the_opt_in_starts_with_a_warning() {
    // 192.0.2.1 (TEST-NET-1) is no address of this machine: the configuration is
    // accepted and the server goes as far as binding, which fails, so nothing here
    // ever listens beyond loopback.
    let output = run("192.0.2.1:50051", Some("true"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "accepted, then the bind fails: {stderr}");
    assert!(stderr.contains("WARN") && stderr.contains("INSECURE: ZITI_MGMT_INSECURE=true"), "no warning: {stderr}");
    assert!(stderr.contains("INSECURE: ZITI_MGMT_ALLOW_UNAUTHENTICATED=true"), "no warning: {stderr}");
    assert!(stderr.contains("cannot listen on 192.0.2.1:50051 (gRPC)"), "stderr: {stderr}");
}

#[test]
fn callers_without_credentials_on_a_non_loopback_address_exit_2_without_the_override() {
    let output = run_with("192.0.2.1:50051", Some("true"), None);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    for named in ["ZITI_MGMT_AUTH_METHODS includes none", "192.0.2.1:50051", "ZITI_MGMT_ALLOW_UNAUTHENTICATED=true"] {
        assert!(stderr.contains(named), "{named} not named: {stderr}");
    }
    assert!(!stderr.contains("serving"), "it must not start: {stderr}");
}
