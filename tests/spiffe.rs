//! The network's SPIRE as `cargo xtask ziti-up` sets it up: the agent gives this uid the
//! gateway's X.509-SVID, the controller logs it in as the identity with that external
//! id, and refuses an SVID of a trust domain whose root it was not given.
//!
//! Run with the network up: `cargo test -p workspace-tests --test spiffe`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a failed step should panic

use std::time::{Duration, Instant};

use workspace_tests::network::{SVID_TIMEOUT, ZitiNetwork};
use ziti_net_kit::spire::X509Svid;
use ziti_net_kit::third_party_ca;

/// `POST /edge/client/v1/authenticate?method=cert` with `svid`'s chain as the client
/// certificate: the status, and the identity's name when logged in.
async fn cert_login(network: &ZitiNetwork, svid: &X509Svid) -> (u16, Option<String>, String) {
    let ca = std::fs::read(&network.ctrl_ca).expect("the controller's root CA");
    let client_cert = format!("{}{}", svid.chain_pem, svid.key_pem);
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("a PEM CA"))
        .identity(reqwest::Identity::from_pem(client_cert.as_bytes()).expect("the SVID as a client identity"))
        .build()
        .expect("an HTTPS client");
    let response = client
        .post(format!("{}/edge/client/v1/authenticate?method=cert", network.ctrl_url))
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("the controller answers");
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    // The body of a login holds a session token: only the name and the error code leave here.
    let name = body["data"]["identity"]["name"].as_str().map(str::to_owned);
    let error = body["error"]["code"].as_str().unwrap_or_default().to_owned();
    (status, name, error)
}

/// Deletes controller entities a test made, also when it fails.
struct Cleanup<'a> {
    network: &'a ZitiNetwork,
    entities: Vec<(&'static str, String)>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for (kind, name) in self.entities.iter().rev() {
            let _ = self.network.ziti().args(["edge", "delete", kind, name]).output();
        }
    }
}

#[tokio::test]
async fn the_agent_gives_this_uid_the_gateway_svid_and_the_controller_logs_it_in_as_gateway_spiffe() {
    let network = ZitiNetwork::from_env();
    let spiffe_id = network.gateway_spiffe_id();

    let svid = network.workload_api().wait_for_svid(&spiffe_id, SVID_TIMEOUT).expect("the gateway's SVID");
    assert_eq!(svid.chain_pem.matches("BEGIN CERTIFICATE").count(), 2, "the leaf and SPIRE's intermediate");

    let (status, name, error) = cert_login(&network, &svid).await;
    assert_eq!(status, 200, "login with the gateway's SVID: {error}");
    assert_eq!(name.as_deref(), Some("gateway-spiffe"));
}

#[tokio::test]
async fn an_entry_and_identity_made_by_a_test_log_in_and_the_entry_ends_with_its_guard() {
    let network = ZitiNetwork::from_env();
    let spiffe_id = network.spiffe_id(&format!("tests/entry-{}", std::process::id()));
    let name = format!("spiffe-test-entry-{}", std::process::id());
    let _cleanup = Cleanup { network: &network, entities: vec![("identity", name.clone())] };
    network.spiffe_identity(&name, &spiffe_id, &[]);

    let entry = network.create_spiffe_entry(&spiffe_id, Duration::from_secs(60));
    let svid = network.workload_api().wait_for_svid(&spiffe_id, SVID_TIMEOUT).expect("the test entry's SVID");
    let (status, logged_in_as, error) = cert_login(&network, &svid).await;
    assert_eq!((status, logged_in_as.as_deref()), (200, Some(name.as_str())), "{error}");

    drop(entry);
    let deadline = Instant::now() + SVID_TIMEOUT;
    loop {
        let svids = network.workload_api().fetch_x509().unwrap_or_default();
        if !svids.iter().any(|svid| svid.spiffe_id == spiffe_id) {
            break;
        }
        assert!(Instant::now() < deadline, "the agent still issues {spiffe_id} after its entry was dropped");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn an_svid_of_a_trust_domain_the_controller_does_not_trust_is_refused_until_its_root_is_registered() {
    let network = ZitiNetwork::from_env();
    let trust_domain = "untrusted.test";
    // External ids are unique on the controller: one of this run's own.
    let spiffe_id = format!("spiffe://{trust_domain}/tests/untrusted-{}", std::process::id());
    let (ca_name, identity_name) =
        (format!("spire-untrusted-{}", std::process::id()), format!("spiffe-untrusted-{}", std::process::id()));
    let mut cleanup = Cleanup { network: &network, entities: vec![("identity", identity_name.clone())] };
    let other = network.start_throwaway_spire(trust_domain);
    let svid = other.issue_svid(&spiffe_id, Duration::from_secs(120));
    // An identity with that external id exists: only the trust in the issuer is missing.
    network.spiffe_identity(&identity_name, &spiffe_id, &[]);

    let (status, _, error) = cert_login(&network, &svid).await;
    assert_eq!(status, 401, "login with an SVID of an untrusted trust domain ({error})");

    // The same SVID once the controller trusts its root: the refusal was about trust.
    cleanup.entities.push(("ca", ca_name.clone()));
    third_party_ca::register_spiffe_ca(
        || network.ziti(),
        &ca_name,
        &other.spire().root_cert(),
        &other.spire().root_key(),
    )
    .expect("registering the throwaway SPIRE's root");
    let (status, name, error) = cert_login(&network, &svid).await;
    assert_eq!((status, name.as_deref()), (200, Some(identity_name.as_str())), "{error}");
}

#[test]
fn an_entry_a_killed_test_left_behind_is_replaced_and_the_guard_removes_it() {
    let network = ZitiNetwork::from_env();
    let spiffe_id = network.spiffe_id(&format!("tests/leftover-{}", std::process::id()));
    let server = network.spire_server();
    let uid = ziti_net_kit::spire::current_uid().unwrap();
    // What a killed test leaves: an entry whose guard never dropped.
    server.create_entry(&spiffe_id, uid, Duration::from_secs(60)).unwrap();

    let entry = network.create_spiffe_entry(&spiffe_id, Duration::from_secs(60));
    assert_eq!(server.entry_ids(&spiffe_id).unwrap(), vec![entry.id.clone()]);
    drop(entry);
    assert_eq!(server.entry_ids(&spiffe_id).unwrap(), Vec::<String>::new());
}
