//! The gateway's self-enrollment over real gRPC on loopback: an in-process
//! ziti-management server, the real gRPC client, the gateway's wiring as a library, and
//! a TCP listener standing in for the overlay.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a failed step should panic

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::{CallerIdentity, UnverifiedCallers};
use gateway_bin::app::{self, Dependencies};
use rstest::rstest;
use support::{PythonUpstream, entries, get, overlay_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use workspace_tests::{Behaviour, FakeManagement, identity_json_for, identity_key_for};
use ziti_transport::testing::TcpStandIn;
use zitimgmt_grpc::{ManagementClient, ManagementConfig};

/// The renewal interval of the tests that watch renewals.
const RENEWAL: Duration = Duration::from_millis(200);

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
    let config = overlay_config(&server.target(), RENEWAL, identity_dir.path());
    let mut dependencies = deps(&server.target(), &overlay);
    // The resolver gets a client of its own, so that the provider's is held only by
    // the enrollment and the lease keeper: once it is dropped, nothing can renew.
    dependencies.resolver = deps(&server.target(), &overlay).resolver;
    let provider = Arc::downgrade(dependencies.provider.as_ref().expect("provider"));

    let gateway = app::start(config, dependencies).await.expect("gateway starts");

    // Enrolled once; the overlay loaded exactly the bytes served, from a private file.
    assert_eq!(server.issued(), ["lease-1"]);
    let binding = overlay.last().expect("the overlay was never bound");
    assert_eq!(binding.identity_bytes, identity_json_for("lease-1"));
    assert_eq!(binding.file_mode, 0o600, "identity file mode");
    assert_eq!(binding.dir_mode, 0o700, "identity directory mode");
    assert_eq!(binding.service, "gateway");
    let identity_file = binding.identity_file.clone().expect("bound from a file");
    let file_name = identity_file.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
    assert!(file_name.starts_with("ziti-identity-") && file_name.ends_with(".json"), "{file_name}");
    assert_eq!(gateway.identity_file().as_deref(), Some(identity_file.as_path()));
    assert_eq!(std::fs::read(&identity_file).expect("file on disk"), identity_json_for("lease-1"));

    // Served and ready.
    let (status, body) = get(binding.addr, "/hello").await.expect("request over the stand-in");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"path\":\"/hello\""), "{body}");
    assert_eq!(get(gateway.admin_addr(), "/readyz").await.expect("readyz").0, 200);

    // Renewals at the configured interval: four arrive well within 5 s (at the default
    // 2 minutes they would take 8), and none sooner than the interval after the one
    // before, as the keeper waits the interval after each answer. (The cadence itself
    // is pinned on the paused clock by the domain's `renews_every_interval`.)
    let extensions = server.wait_for_extensions(4, Duration::from_secs(5)).await;
    assert!(extensions.len() >= 4, "{} renewals within 5 s at {RENEWAL:?}", extensions.len());
    assert!(extensions.iter().all(|(id, _)| id == "lease-1"), "{extensions:?}");
    for pair in extensions.windows(2) {
        let gap = pair[1].1 - pair[0].1;
        assert!(gap >= RENEWAL, "renewals {gap:?} apart at an interval of {RENEWAL:?}");
    }

    // Shutdown (the path SIGTERM takes): released, erased, quick.
    let dir = gateway.identity_dir().expect("identity dir");
    let shutdown = tokio::time::timeout(Duration::from_secs(5), gateway.shutdown()).await;
    shutdown.expect("shutdown took over 5 s").expect("clean shutdown");
    // Nothing holds the provider's client any more: the keeper has ended and cannot renew.
    assert!(provider.upgrade().is_none(), "the lease keeper outlived the shutdown");
    assert_eq!(server.releases(), ["lease-1"]);
    let calls = server.renewals_and_releases();
    assert_eq!(calls.last(), Some(&("release", "lease-1".to_owned())), "renewed after the release: {calls:?}");
    assert!(server.live().is_empty(), "leases left on the server: {:?}", server.live());
    assert!(!identity_file.exists(), "identity file left behind");
    assert!(!dir.exists(), "identity directory left behind");
    assert!(entries(identity_dir.path()).is_empty());
    server.stop().await;
}

/// SIGTERM with a request in flight: the request finishes on a live identity, and only
/// then is the lease released (drain first, then release).
#[tokio::test]
async fn the_lease_is_released_only_after_in_flight_requests_drain() {
    let server = FakeManagement::start(Behaviour::default()).await.expect("server");
    let identity_dir = tempfile::tempdir().expect("tempdir");
    let overlay = TcpStandIn::default();
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("upstream");
    let mut config = overlay_config(&server.target(), Duration::from_secs(60), identity_dir.path());
    config.upstream_url = Some(format!("http://{}/", upstream.local_addr().expect("addr")).parse().expect("url"));
    let gateway = app::start(config, deps(&server.target(), &overlay)).await.expect("gateway starts");
    let binding = overlay.last().expect("bound");

    let client = tokio::spawn(get(binding.addr, "/slow"));
    let (mut held, _) = upstream.accept().await.expect("the request reaches the upstream");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        held.read_exact(&mut byte).await.expect("request head");
        head.push(byte[0]);
    }
    let shutdown = tokio::spawn(gateway.shutdown());
    // Hold the answer a while, watching for a release that would come too early.
    let window = Instant::now() + Duration::from_secs(1);
    let mut released_while_in_flight = false;
    while Instant::now() < window && !released_while_in_flight {
        released_while_in_flight = !server.releases().is_empty();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    held.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.expect("answer");
    let (status, body) = client.await.expect("client task").expect("response");
    assert!(!released_while_in_flight, "the lease was released while a request was still in flight");
    assert_eq!((status, body.as_str()), (200, "ok"));
    shutdown.await.expect("shutdown task").expect("clean shutdown");
    assert_eq!(server.releases(), ["lease-1"], "released after the drain");
    server.stop().await;
}

#[tokio::test]
async fn a_lost_lease_is_replaced_and_the_service_bound_again_without_restart() {
    let server = FakeManagement::start(Behaviour::default()).await.expect("server");
    let identity_dir = tempfile::tempdir().expect("tempdir");
    let overlay = TcpStandIn::default();
    let config = overlay_config(&server.target(), RENEWAL, identity_dir.path());
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
    assert!(
        !first.identity_file.as_deref().is_some_and(std::path::Path::exists),
        "the lost identity's file must be erased"
    );
    assert_eq!(gateway.identity_file(), second.identity_file);

    let (status, _) = get(second.addr, "/").await.expect("served on the new binding");
    assert_eq!(status, 200);
    assert!(get(first.addr, "/").await.is_err(), "the old binding must be closed");
    // The keeper bound lease-2 only after lease-1's failed renewal: the next one is lease-2's.
    let seen = server.extensions().len();
    let extensions = server.wait_for_extensions(seen + 1, Duration::from_secs(3)).await;
    assert!(extensions.len() > seen, "lease-2 was not renewed within 3 s");
    assert!(extensions[seen..].iter().all(|(id, _)| id == "lease-2"), "renewals did not move on: {extensions:?}");
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

/// An overlay stand-in whose every caller only claims to be `client-7`, as a dialer on
/// an OpenZiti v1.6 network does.
fn claiming_overlay() -> TcpStandIn {
    TcpStandIn {
        caller: Some(CallerIdentity {
            id: Some("client-7".to_owned()),
            name: Some("client".to_owned()),
            verified: false,
        }),
        ..TcpStandIn::default()
    }
}

/// Starts a gateway with `policy` on the stand-in, proxying to `upstream` when given.
async fn start_with_policy(
    server: &FakeManagement,
    overlay: &TcpStandIn,
    identity_dir: &std::path::Path,
    policy: UnverifiedCallers,
    upstream: Option<&PythonUpstream>,
) -> (app::RunningGateway, std::net::SocketAddr) {
    let mut config = overlay_config(&server.target(), Duration::from_secs(60), identity_dir);
    config.upstream_url = upstream.map(|upstream| format!("http://{}/", upstream.addr).parse().expect("url"));
    if let Some(overlay) = config.overlay.as_mut() {
        overlay.unverified_callers = policy;
    }
    let gateway = app::start(config, deps(&server.target(), overlay)).await.expect("gateway starts");
    let addr = overlay.last().expect("the overlay was never bound").addr;
    (gateway, addr)
}

#[tokio::test]
async fn by_default_an_unverified_caller_is_served_as_anonymous_and_its_claim_never_resolved() {
    let server = FakeManagement::start(Behaviour::default()).await.expect("server");
    let identity_dir = tempfile::tempdir().expect("tempdir");
    let overlay = claiming_overlay();
    let config = overlay_config(&server.target(), Duration::from_secs(60), identity_dir.path());
    let gateway = app::start(config, deps(&server.target(), &overlay)).await.expect("gateway starts");
    let addr = overlay.last().expect("the overlay was never bound").addr;

    let (status, body) = get(addr, "/").await.expect("request");

    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["transport"], "overlay", "{json}");
    assert_eq!(json["caller"]["id"], serde_json::Value::Null, "{json}");
    assert_eq!(json["caller"]["name"], serde_json::Value::Null, "{json}");
    assert_eq!(json["caller"]["verified"], false, "{json}");
    assert_eq!(json["principal"], serde_json::Value::Null, "{json}");
    assert_eq!(server.resolves(), 0, "a claim must not be resolved");
    gateway.shutdown().await.expect("clean shutdown");
    server.stop().await;
}

#[rstest]
#[case::anonymous(UnverifiedCallers::Anonymous, &[], 0)]
#[case::claim(
    UnverifiedCallers::Claim,
    &[
        ("HTTP_X_ZITI_CALLER_ID", "client-7"),
        ("HTTP_X_ZITI_CALLER_NAME", "client"),
        ("HTTP_X_ZITI_PRINCIPAL", "principal-name-of-client-7"),
        ("HTTP_X_ZITI_PRINCIPAL_ROLES", "gateway-clients"),
    ],
    1
)]
#[tokio::test]
async fn an_unverified_callers_headers_follow_the_policy(
    #[case] policy: UnverifiedCallers,
    #[case] identity_headers: &[(&str, &str)],
    #[case] resolves: usize,
) {
    let server = FakeManagement::start(Behaviour::default()).await.expect("server");
    let identity_dir = tempfile::tempdir().expect("tempdir");
    let overlay = claiming_overlay();
    let upstream = PythonUpstream::wsgi_header_echo();
    let (gateway, addr) = start_with_policy(&server, &overlay, identity_dir.path(), policy, Some(&upstream)).await;

    let (status, body) = get(addr, "/").await.expect("request");

    assert_eq!(status, 200, "{body}");
    let environ: std::collections::BTreeMap<String, String> = serde_json::from_str(&body).expect("json");
    let ziti: std::collections::BTreeMap<&str, &str> = environ
        .iter()
        .filter(|(key, _)| key.starts_with("HTTP_X_ZITI_"))
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    let mut expected: std::collections::BTreeMap<&str, &str> =
        [("HTTP_X_ZITI_CALLER_TRANSPORT", "overlay"), ("HTTP_X_ZITI_CALLER_VERIFIED", "false")].into_iter().collect();
    expected.extend(identity_headers.iter().copied());
    assert_eq!(ziti, expected, "identity headers the upstream received");
    assert_eq!(server.resolves(), resolves, "ResolveIdentity calls");
    gateway.shutdown().await.expect("clean shutdown");
    server.stop().await;
}

#[tokio::test]
async fn under_reject_every_request_of_an_unverified_caller_is_403_with_a_reason() {
    let server = FakeManagement::start(Behaviour::default()).await.expect("server");
    let identity_dir = tempfile::tempdir().expect("tempdir");
    let overlay = claiming_overlay();
    let (gateway, addr) =
        start_with_policy(&server, &overlay, identity_dir.path(), UnverifiedCallers::Reject, None).await;

    // Two requests on one keep-alive connection: each is answered, none resets it.
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(b"GET /first HTTP/1.1\r\nHost: gateway\r\n\r\n").await.expect("write");
    let first = read_response(&mut stream).await;
    stream.write_all(b"GET /second HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n").await.expect("write");
    let second = read_response(&mut stream).await;

    for (status, body) in [first, second] {
        assert_eq!(status, 403, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
        assert_eq!(json["error"], "forbidden", "{json}");
        let reason = json["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("did not verify"), "{json}");
        assert!(!body.contains("client-7"), "the claim is not echoed: {body}");
    }
    assert_eq!(server.resolves(), 0, "a refused claim must not be resolved");
    gateway.shutdown().await.expect("clean shutdown");
    server.stop().await;
}

/// Reads one HTTP/1.1 response with a `content-length` body; returns (status, body).
async fn read_response(stream: &mut tokio::net::TcpStream) -> (u16, String) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|n| n.trim().to_owned()))
                .and_then(|n| n.parse::<usize>().ok())
                .expect("a content-length");
            if body.len() >= length {
                let status = head.get(9..12).and_then(|code| code.parse().ok()).unwrap_or(0);
                return (status, body[..length].to_owned());
            }
        }
        let read =
            tokio::time::timeout(deadline, stream.read(&mut buf)).await.expect("response in time").expect("read");
        assert!(read > 0, "the connection closed before a whole response: {text:?}");
        received.extend_from_slice(&buf[..read]);
    }
}

#[rstest]
#[case::empty(b"" as &[u8], "is not valid identity JSON (line 1, column 0)")]
#[case::not_json(b"{\"ztAPI\": secret-key-material", "is not valid identity JSON (line 1, column 11)")]
#[case::no_key(br#"{"ztAPI":"https://c:1280","id":{"cert":"pem:C","ca":"pem:A"}}"#, "has no `id.key`")]
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

/// The error and its causes, as the binaries print them.
fn chain(err: &dyn std::error::Error) -> String {
    service_kit::causes::with_causes(err)
}

/// A self-signed CA certificate (PEM) named `name`.
fn ca_pem(name: &str) -> String {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&rcgen::KeyPair::generate().expect("key")).expect("CA").pem()
}

/// ziti-management (or whoever sits on its path) hands out an identity pointing at
/// another CA or controller than the ones pinned: refused before anything is written
/// or loaded, the lease given back, the cause named, no key material shown.
#[rstest]
#[case::foreign_ca("https://127.0.0.1:1280/edge/client/v1", "not in the pinned controller CA")]
#[case::foreign_controller(
    "https://ctrl.attacker.example:1280/edge/client/v1",
    "its controller https://ctrl.attacker.example:1280 is not the pinned controller https://127.0.0.1:1280"
)]
#[tokio::test]
async fn an_identity_that_does_not_match_the_pins_is_refused_and_its_lease_released(
    #[case] api: &str,
    #[case] named: &str,
) {
    let (pinned_ca, served_ca) = (ca_pem("the operator's controller CA"), ca_pem("someone else's CA"));
    let served_ca = if named.contains("CA") { served_ca } else { pinned_ca.clone() };
    let mut identity: serde_json::Value = serde_json::from_slice(&identity_json_for("pinned-test")).expect("json");
    identity["ztAPI"] = serde_json::json!(api);
    identity["id"]["ca"] = serde_json::json!(format!("pem:{served_ca}"));
    let key = identity_key_for("pinned-test");
    let behaviour = Behaviour { identity_json: Some(identity.to_string().into_bytes()), ..Behaviour::default() };
    let server = FakeManagement::start(behaviour).await.expect("server");
    let identity_dir = tempfile::tempdir().expect("tempdir");
    let overlay = TcpStandIn::default();
    let mut config = overlay_config(&server.target(), Duration::from_secs(60), identity_dir.path());
    if let Some(settings) = config.overlay.as_mut() {
        settings.controller_pins = ziti_transport::ControllerPins::none()
            .with_controller("https://127.0.0.1:1280")
            .and_then(|pins| pins.with_ca_pem(pinned_ca.as_bytes()))
            .expect("pins");
    }

    let error = app::start(config, deps(&server.target(), &overlay)).await.expect_err("the identity must be refused");
    let message = chain(&error);
    assert!(message.contains("does not match the pins") && message.contains(named), "{message}");
    let key_body = key.lines().nth(1).expect("a PEM body line");
    assert!(!message.contains(key_body) && !message.contains("BEGIN"), "key material shown: {message}");
    assert_eq!(server.issued(), ["lease-1"]);
    assert_eq!(server.releases(), ["lease-1"], "the refused lease must be given back");
    assert!(overlay.last().is_none(), "the refused identity was loaded");
    assert!(entries(identity_dir.path()).is_empty(), "left behind: {:?}", entries(identity_dir.path()));
    server.stop().await;
}
