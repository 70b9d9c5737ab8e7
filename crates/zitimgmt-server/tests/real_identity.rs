//! An issued identity is real: the Go SDK hosts the overlay service with it, and a
//! Go SDK client's bytes come back through it intact. Also: two concurrent requests
//! get two distinct, enrolled identities, and ResolveIdentity reads the controller.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a failed step should panic

mod support;

use serde_json::Value;
use support::controller::ControllerView;
use support::controller::is_enrolled;
use support::peers::{EchoServer, echo_round_trip};
use support::{Management, private_dir, release, request_gateway, seconds_until, write_private};
use workspace_tests::network::ZitiNetwork;
use zitimgmt_grpc::proto::ResolveIdentityRequest;

#[tokio::test(flavor = "multi_thread")]
async fn an_issued_identity_hosts_the_service_for_a_go_sdk_client() {
    let network = ZitiNetwork::from_env();
    let management = Management::start(&network, "5m", "30s");
    let mut client = management.client().await;
    let controller = ControllerView::login(&network).await;

    let issued = request_gateway(&mut client).await.expect("RequestServiceIdentity");
    let id = issued.ziti_identity_id.clone();
    let expires_in = seconds_until(issued.lease_expires_at.as_ref().expect("lease_expires_at"));
    assert!((290.0..=301.0).contains(&expires_in), "lease expires in {expires_in} s, expected ~300");

    // The standard identity JSON, pointing at this controller, trusting its CA.
    let json: Value = serde_json::from_slice(&issued.identity_json).expect("identity JSON");
    assert_eq!(json["ztAPI"], format!("{}/edge/client/v1", network.ctrl_url.trim_end_matches('/')));
    for field in ["cert", "key", "ca"] {
        assert!(json["id"][field].as_str().is_some_and(|v| v.starts_with("pem:-----BEGIN")), "id.{field}");
    }
    let root_ca = std::fs::read_to_string(&network.ctrl_ca).expect("root CA");
    let root_body: String = root_ca.lines().filter(|l| !l.starts_with("-----")).collect();
    let ca_body: String = json["id"]["ca"].as_str().unwrap().lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(ca_body.contains(&root_body), "id.ca lacks the network's root CA");

    // The controller shows it enrolled, leased and with the configured role attribute.
    let shown = controller.identity(&id).await.expect("identity on the controller");
    assert!(is_enrolled(&shown), "not enrolled: {}", shown["authenticators"]);
    assert_eq!(shown["roleAttributes"], serde_json::json!(["gateway-hosts"]));
    assert_eq!(shown["tags"]["zitiMgmtManaged"], true);
    assert_eq!(shown["tags"]["zitiMgmtServiceType"], "gateway");

    // The Go SDK hosts the service with it; a Go SDK client's bytes come back intact.
    let dir = private_dir();
    let file = write_private(dir.path(), "issued.json", &issued.identity_json);
    let mut host = EchoServer::start(&network, &file, &network.service_name, dir.path());
    let payload: Vec<u8> = (0..4096u32).map(|i| b"overlay-echo:"[i as usize % 13] ^ (i / 13) as u8).collect();
    let attempts = tokio::task::spawn_blocking({
        let (network, client_identity, service) =
            (network.clone(), network.client_identity.clone(), network.service_name.clone());
        move || echo_round_trip(&network, &client_identity, &service, &payload, 15)
    })
    .await
    .expect("join");
    let attempts = attempts.unwrap_or_else(|err| panic!("no echo: {err}\necho-server log:\n{}", host.logs()));
    assert!(host.is_running(), "the echo server died:\n{}", host.logs());
    eprintln!("echo round trip through the issued identity succeeded on attempt {attempts}");

    // ResolveIdentity answers from the controller, by id and by name.
    let by_id = client
        .resolve_identity(ResolveIdentityRequest { ziti_identity_id: id.clone(), ziti_identity_name: String::new() })
        .await
        .expect("resolve by id")
        .into_inner();
    assert_eq!(by_id.name, shown["name"].as_str().unwrap());
    assert!(by_id.name.starts_with("gateway-"), "{}", by_id.name);
    assert_eq!(by_id.principal, by_id.name, "no external id: the principal is the name");
    assert_eq!(by_id.role_attributes, ["gateway-hosts"]);
    let by_name = client
        .resolve_identity(ResolveIdentityRequest {
            ziti_identity_id: String::new(),
            ziti_identity_name: by_id.name.clone(),
        })
        .await
        .expect("resolve by name")
        .into_inner();
    assert_eq!(by_name.ziti_identity_id, id);

    drop(host);
    release(&mut client, &id).await.expect("release");
    assert!(controller.identity(&id).await.is_none(), "released identity still on the controller");

    let logs = management.logs();
    let key = json["id"]["key"].as_str().unwrap().trim_start_matches("pem:");
    let key_line = key.lines().nth(1).expect("key body");
    assert!(!logs.contains(key_line) && !logs.contains("PRIVATE KEY"), "key material in the logs");
    assert!(!logs.contains(&network.admin_password), "the admin password in the logs");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_get_distinct_enrolled_identities() {
    let network = ZitiNetwork::from_env();
    let management = Management::start(&network, "2m", "30s");
    let (mut first, mut second) = (management.client().await, management.client().await);
    let controller = ControllerView::login(&network).await;

    let (a, b) = tokio::join!(request_gateway(&mut first), request_gateway(&mut second));
    let (a, b) = (a.expect("first request"), b.expect("second request"));
    assert_ne!(a.ziti_identity_id, b.ziti_identity_id);

    let cert = |issued: &[u8]| -> String {
        let json: Value = serde_json::from_slice(issued).expect("JSON");
        json["id"]["cert"].as_str().expect("cert").to_owned()
    };
    assert_ne!(cert(&a.identity_json), cert(&b.identity_json), "the two identities share a certificate");
    let (shown_a, shown_b) =
        (controller.identity(&a.ziti_identity_id).await, controller.identity(&b.ziti_identity_id).await);
    let (shown_a, shown_b) = (shown_a.expect("first on the controller"), shown_b.expect("second on the controller"));
    assert!(is_enrolled(&shown_a) && is_enrolled(&shown_b), "not both enrolled");
    assert_ne!(shown_a["authenticators"]["cert"]["fingerprint"], shown_b["authenticators"]["cert"]["fingerprint"]);
    assert_ne!(shown_a["name"], shown_b["name"]);

    release(&mut first, &a.ziti_identity_id).await.expect("release first");
    release(&mut second, &b.ziti_identity_id).await.expect("release second");
}
