//! The gateway binary against the real network's ziti-management: it enrolls a real
//! identity, and whatever way it ends (today: no overlay transport to bind with, so
//! it exits; with one: SIGTERM), no identity it leased stays on the controller and
//! nothing is left in its identity directory.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a failed step should panic

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::entries;
use workspace_tests::network::ZitiNetwork;

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway");

#[test]
fn enrolls_through_the_real_management_and_leaves_no_identity_behind() {
    let network = ZitiNetwork::from_env();
    let identity_dir = tempfile::tempdir().expect("tempdir");
    let log_dir = tempfile::tempdir().expect("log dir");
    let log_path = log_dir.path().join("gateway.log");
    let mut child = Command::new(GATEWAY)
        .env_clear()
        .envs([
            ("ZITI_ENABLED", "true"),
            ("ZITI_MANAGEMENT_GRPC_TARGET", network.management_grpc_target.as_str()),
            ("ZITI_SERVICE_NAME", network.service_name.as_str()),
            ("ZITI_ENROLLMENT_TIMEOUT", "30s"),
            ("GATEWAY_IDENTITY_DIR", &identity_dir.path().to_string_lossy()),
            ("GATEWAY_LISTEN_ADDR", "127.0.0.1:0"),
            ("GATEWAY_ADMIN_ADDR", "127.0.0.1:0"),
            // The gRPC client logs each leased identity's id (never its content) at debug.
            ("RUST_LOG", "info,zitimgmt_grpc=debug"),
        ])
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log file"))
        .spawn()
        .expect("spawn gateway");

    // Without an overlay transport it exits by itself; with one it serves until told to stop.
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
            break wait_exit(&mut child, Duration::from_secs(15));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(!log.contains("panicked"), "the gateway panicked:\n{log}");

    let leased = leased_ids(&log);
    assert!(!leased.is_empty(), "the gateway never obtained an identity (exit {status:?}):\n{log}");
    for id in &leased {
        assert!(
            !identity_exists(&network, id),
            "identity {id} leased by the gateway is still on the controller after it ended:\n{log}"
        );
    }
    assert!(entries(identity_dir.path()).is_empty(), "left behind: {:?}", entries(identity_dir.path()));
    assert!(!log.contains("PRIVATE KEY"), "identity content reached the logs");
    eprintln!("gateway ended with {status:?} after leasing {leased:?}; none remains on the controller");
}

/// The ids of the identities the gateway leased, from its gRPC client's debug log.
fn leased_ids(log: &str) -> Vec<String> {
    log.lines()
        .filter(|line| line.contains("leased an identity"))
        .filter_map(|line| line.split_whitespace().find_map(|word| word.strip_prefix("lease=")))
        .map(|id| id.trim_matches('"').to_owned())
        .collect()
}

/// Asks the controller (through the logged-in `ziti` CLI) whether the identity exists.
fn identity_exists(network: &ZitiNetwork, id: &str) -> bool {
    let output = network
        .ziti()
        .args(["edge", "list", "identities", &format!("id = \"{id}\""), "-j"])
        .output()
        .expect("run ziti edge list identities");
    assert!(output.status.success(), "ziti edge list failed: {}", String::from_utf8_lossy(&output.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON from ziti edge list -j");
    !listed["data"].as_array().expect("data array").is_empty()
}

fn wait_exit(child: &mut std::process::Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "the gateway did not exit within {within:?} of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}
