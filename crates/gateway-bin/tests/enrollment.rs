//! The gateway's self-enrollment over real gRPC on loopback: an in-process
//! ziti-management server, the real gRPC client, the gateway's wiring as a library, and
//! a TCP listener standing in for the overlay.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a failed step should panic

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::CallerIdentity;
use gateway_bin::app::{self, Dependencies};
use rstest::rstest;
use support::{entries, get, overlay_config};
use workspace_tests::{Behaviour, FakeManagement, identity_json_for};
use ziti_transport::testing::TcpStandIn;
use zitimgmt_grpc::{ManagementClient, ManagementConfig};

fn deps(server_target: &str, overlay: &TcpStandIn) -> Dependencies {
    let mut config = ManagementConfig::new(server_target);
    config.connect_timeout = Duration::from_millis(500);
    config.request_timeout = Duration::from_secs(2);
    let client = Arc::new(ManagementClient::new(config).expect("client"));
    Dependencies { provider: Some(client.clone()), resolver: Some(client), overlay: Arc::new(overlay.clone()) }
}

#[tokio::test]
async fn enrolls_stores_privately_renews_serves_and_cleans_up() {
    let server = FakeManagement::start(Behaviour::default()).await.expect("server");
    let identity_dir = tempfile::tempdir().expect("tempdir");
    let overlay = TcpStandIn::default();
    let config = overlay_config(&server.target(), Duration::from_millis(200), identity_dir.path());

    let gateway = app::start(config, deps(&server.target(), &overlay)).await.expect("gateway starts");

    // Enrolled once; the overlay loaded exactly the bytes served, from a private file.
    assert_eq!(server.issued(), ["lease-1"]);
    let binding = overlay.last().expect("the overlay was never bound");
    assert_eq!(binding.identity_bytes, identity_json_for("lease-1"));
    assert_eq!(binding.file_mode, 0o600, "identity file mode");
    assert_eq!(binding.dir_mode, 0o700, "identity directory mode");
    assert_eq!(binding.service, "gateway");
    let file_name = binding.identity_file.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
    assert!(file_name.starts_with("ziti-identity-") && file_name.ends_with(".json"), "{file_name}");
    assert_eq!(gateway.identity_file().as_deref(), Some(binding.identity_file.as_path()));
    assert_eq!(std::fs::read(&binding.identity_file).expect("file on disk"), identity_json_for("lease-1"));

    // Served and ready.
    let (status, body) = get(binding.addr, "/hello").await.expect("request over the stand-in");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"path\":\"/hello\""), "{body}");
    assert_eq!(get(gateway.admin_addr(), "/readyz").await.expect("readyz").0, 200);

    // Renewals every 200 ms.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let extensions = server.extensions();
    assert!((4..=7).contains(&extensions.len()), "{} renewals in 1.1 s at 200 ms", extensions.len());
    assert!(extensions.iter().all(|(id, _)| id == "lease-1"));
    for pair in extensions.windows(2) {
        let gap = pair[1].1 - pair[0].1;
        assert!(gap >= Duration::from_millis(150) && gap <= Duration::from_millis(450), "gap {gap:?}");
    }

    // Shutdown (the path SIGTERM takes): released, erased, quick.
    let dir = gateway.identity_dir().expect("identity dir");
    let started = Instant::now();
    gateway.shutdown().await.expect("clean shutdown");
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown took {:?}", started.elapsed());
    assert_eq!(server.releases(), ["lease-1"]);
    assert!(server.live().is_empty(), "leases left on the server: {:?}", server.live());
    assert!(!binding.identity_file.exists(), "identity file left behind");
    assert!(!dir.exists(), "identity directory left behind");
    assert!(entries(identity_dir.path()).is_empty());
    let renewals_at_stop = server.extensions().len();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(server.extensions().len(), renewals_at_stop, "renewals went on after shutdown");
    server.stop().await;
}

#[tokio::test]
async fn a_lost_lease_is_replaced_and_the_service_bound_again_without_restart() {
    let server = FakeManagement::start(Behaviour::default()).await.expect("server");
    let identity_dir = tempfile::tempdir().expect("tempdir");
    let overlay = TcpStandIn::default();
    let config = overlay_config(&server.target(), Duration::from_millis(200), identity_dir.path());
    let gateway = app::start(config, deps(&server.target(), &overlay)).await.expect("gateway starts");
    let first = overlay.last().expect("the overlay was never bound");

    server.revoke("lease-1");
    let deadline = Instant::now() + Duration::from_secs(3);
    while overlay.bindings().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.issued(), ["lease-1", "lease-2"]);
    let second = overlay.last().expect("the overlay was never bound");
    assert_eq!(second.identity_bytes, identity_json_for("lease-2"));
    assert!(!first.identity_file.exists(), "the lost identity's file must be erased");
    assert_eq!(gateway.identity_file().as_deref(), Some(second.identity_file.as_path()));

    let (status, _) = get(second.addr, "/").await.expect("served on the new binding");
    assert_eq!(status, 200);
    assert!(get(first.addr, "/").await.is_err(), "the old binding must be closed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(server.extensions().iter().any(|(id, _)| id == "lease-2"), "renewals moved to the new lease");
    assert_eq!(get(gateway.admin_addr(), "/readyz").await.expect("readyz").0, 200);

    gateway.shutdown().await.expect("clean shutdown");
    assert_eq!(server.releases(), ["lease-2"]);
    assert!(entries(identity_dir.path()).is_empty());
    server.stop().await;
}

#[tokio::test]
async fn callers_are_resolved_through_resolve_identity_and_cached() {
    let server = FakeManagement::start(Behaviour::default()).await.expect("server");
    let identity_dir = tempfile::tempdir().expect("tempdir");
    let overlay = TcpStandIn {
        caller: Some(CallerIdentity {
            id: Some("client-7".to_owned()),
            name: Some("client".to_owned()),
            verified: true,
        }),
        ..TcpStandIn::default()
    };
    let config = overlay_config(&server.target(), Duration::from_secs(60), identity_dir.path());
    let gateway = app::start(config, deps(&server.target(), &overlay)).await.expect("gateway starts");
    let addr = overlay.last().expect("the overlay was never bound").addr;

    for _ in 0..3 {
        let (status, body) = get(addr, "/").await.expect("request");
        assert_eq!(status, 200);
        let json: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(json["transport"], "overlay", "{json}");
        assert_eq!(json["caller"]["id"], "client-7", "{json}");
        assert_eq!(json["principal"]["name"], "principal-name-of-client-7", "{json}");
    }
    assert_eq!(server.resolves(), 1, "three connections from one caller: one ResolveIdentity");
    gateway.shutdown().await.expect("clean shutdown");
    server.stop().await;
}

#[rstest]
#[case::empty(b"" as &[u8], "malformed: it is empty")]
#[case::not_json(b"{\"ztAPI\": secret-key-material", "not JSON")]
#[case::no_key(br#"{"ztAPI":"https://c:1280","id":{"cert":"pem:C","ca":"pem:A"}}"#, "missing id.key")]
#[tokio::test]
async fn a_malformed_identity_stops_the_start_clearly_and_leaves_nothing(#[case] served: &[u8], #[case] why: &str) {
    let behaviour = Behaviour { identity_json: Some(served.to_vec()), ..Behaviour::default() };
    let server = FakeManagement::start(behaviour).await.expect("server");
    let identity_dir = tempfile::tempdir().expect("tempdir");
    let overlay = TcpStandIn::default();
    let config = overlay_config(&server.target(), Duration::from_secs(60), identity_dir.path());

    let err = app::start(config, deps(&server.target(), &overlay)).await.expect_err("must not start");
    let message = chain(&err);
    assert!(message.contains(why), "{message}");
    assert!(!message.contains("secret"), "the error echoes identity content: {message}");
    assert!(overlay.bindings().is_empty(), "the overlay must never see a malformed identity");
    assert!(entries(identity_dir.path()).is_empty(), "left behind: {:?}", entries(identity_dir.path()));
    assert_eq!(server.issued().len(), 1, "no retry storm on a malformed identity");
    assert_eq!(server.releases(), ["lease-1"], "the unusable lease must be released, not left to expire");
    server.stop().await;
}

#[tokio::test]
async fn a_management_server_that_is_down_stops_the_start_clearly_and_leaves_nothing() {
    // A port that was just free: nobody listens there.
    let target = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
        format!("http://{}", probe.local_addr().expect("addr"))
    };
    let identity_dir = tempfile::tempdir().expect("tempdir");
    let overlay = TcpStandIn::default();
    let mut config = overlay_config(&target, Duration::from_secs(60), identity_dir.path());
    if let Some(overlay) = config.overlay.as_mut() {
        overlay.enrollment_timeout = Duration::from_secs(1);
    }

    let started = Instant::now();
    let err = app::start(config, deps(&target, &overlay)).await.expect_err("must not start");
    let message = chain(&err);
    assert!(started.elapsed() < Duration::from_secs(4), "gave up after {:?}", started.elapsed());
    assert!(message.contains(target.trim_start_matches("http://")), "the target is not named: {message}");
    assert!(message.contains("attempts"), "{message}");
    assert!(overlay.bindings().is_empty());
    assert!(entries(identity_dir.path()).is_empty());
}

/// The error and its causes, as the binary prints them (`{:#}`).
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}
