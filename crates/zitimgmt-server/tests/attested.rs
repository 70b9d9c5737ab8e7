//! Attested callers (the `spiffe` method): ziti-management verifies each caller's
//! X.509-SVID against the real SPIRE's trust bundle (from its Workload API), admits
//! it by SPIFFE ID through the policy, records it on the lease, and keeps other
//! principals off that lease. SVIDs are minted by the network's SPIRE server for any
//! SPIFFE ID; one of another trust domain comes from a throwaway SPIRE.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a failed step should panic

mod support;

use std::time::Duration;

use support::controller::ControllerView;
use support::{
    Client, Management, attested_management, extend, management_with, mint, private_dir, release, request_gateway,
    write_private,
};
use tonic::Code;
use workspace_tests::network::ZitiNetwork;
use ziti_net_kit::spire::X509Svid;
use zitimgmt_grpc::proto::ResolveIdentityRequest;

use support::SVID_TTL;

fn gateway_policy(spiffe_ids: &[&str]) -> String {
    spiffe_ids
        .iter()
        .map(|id| format!("[[allow]]\nspiffe_id = \"{id}\"\nservice_types = [\"gateway\"]\nrole_attributes = [\"attested-test\"]\n\n"))
        .collect()
}

async fn client_as(management: &Management, svid: &X509Svid) -> Client {
    management.connect_as(Some((&svid.chain_pem, &svid.key_pem))).await.expect("connect with the SVID")
}

async fn resolve(client: &mut Client, id: &str) -> zitimgmt_grpc::proto::ResolveIdentityResponse {
    let request = ResolveIdentityRequest { ziti_identity_id: id.to_owned(), ..Default::default() };
    client.resolve_identity(request).await.expect("resolve").into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admitted_svid_is_issued_an_identity_that_records_its_spiffe_id() {
    let network = ZitiNetwork::from_env();
    let svid = mint(&network, "attested/gateway");
    let (management, _dir) = attested_management(&network, &gateway_policy(&[&svid.spiffe_id]));
    let mut client = client_as(&management, &svid).await;
    let controller = ControllerView::login(&network).await;

    let issued = request_gateway(&mut client).await.expect("the admitted SVID is issued an identity");

    let resolved = resolve(&mut client, &issued.ziti_identity_id).await;
    assert_eq!(resolved.issued_to, svid.spiffe_id, "ResolveIdentity names the principal it was issued to");
    assert_eq!(resolved.role_attributes, ["attested-test"], "the policy's role attributes");
    let shown = controller.identity(&issued.ziti_identity_id).await.expect("the identity exists");
    assert_eq!(shown["tags"]["zitiMgmtHolder"], svid.spiffe_id.as_str(), "{shown}");
    let logs = management.logs();
    let audit = logs.lines().find(|line| line.contains("identity.issued")).unwrap_or_else(|| panic!("{logs}"));
    assert!(audit.contains(&svid.spiffe_id) && audit.contains(&issued.ziti_identity_id), "{audit}");
    assert!(!logs.contains("PRIVATE KEY") && !logs.contains("-----BEGIN"), "key material in the log:\n{logs}");
    release(&mut client, &issued.ziti_identity_id).await.expect("release");
}

#[tokio::test(flavor = "multi_thread")]
async fn another_spiffe_id_is_permission_denied_and_no_credentials_unauthenticated() {
    let network = ZitiNetwork::from_env();
    let admitted = mint(&network, "attested/admitted");
    let other = mint(&network, "attested/someone-else");
    let (management, _dir) = attested_management(&network, &gateway_policy(&[&admitted.spiffe_id]));
    let controller = ControllerView::login(&network).await;
    // Other tests issue leases at the same time: count only what these callers could get.
    let held_by = |holder: &str| format!("tags.zitiMgmtHolder = \"{holder}\"");
    let anonymous_before = controller.identities(&held_by("anonymous")).await.len();

    let mut stranger = client_as(&management, &other).await;
    let refused = request_gateway(&mut stranger).await.expect_err("another SPIFFE ID must be refused");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains(&other.spiffe_id), "the refusal names the caller: {refused:?}");

    let mut anonymous = management.connect_as(None).await.expect("TLS without a client certificate");
    let refused = request_gateway(&mut anonymous).await.expect_err("no credentials must be refused");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let refused = extend(&mut anonymous, "any-id").await.expect_err("no credentials must be refused");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    assert!(controller.identities(&held_by(&other.spiffe_id)).await.is_empty(), "nothing was issued to the stranger");
    assert_eq!(controller.identities(&held_by("anonymous")).await.len(), anonymous_before, "nor to anyone anonymous");
    let metrics = support::http_get(management.admin, "/metrics").expect("metrics").1;
    assert!(
        metrics.contains(r#"method="RequestServiceIdentity",code="PERMISSION_DENIED",principal="spiffe""#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"method="RequestServiceIdentity",code="UNAUTHENTICATED",principal="unauthenticated""#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_svid_of_another_trust_domain_is_refused_at_the_handshake() {
    let network = ZitiNetwork::from_env();
    let (management, _dir) = attested_management(&network, &gateway_policy(&[&network.spiffe_id("attested/x")]));
    let foreign = network.start_throwaway_spire("elsewhere.test");
    let svid = foreign.issue_svid("spiffe://elsewhere.test/gateway", SVID_TTL);

    let outcome = match management.connect_as(Some((&svid.chain_pem, &svid.key_pem))).await {
        Ok(mut client) => request_gateway(&mut client).await.map(drop).map_err(|status| format!("{status:?}")),
        Err(err) => Err(format!("{err:?}")),
    };

    let failure = outcome.expect_err("a certificate of another trust domain must not get through");
    assert!(!failure.contains("PermissionDenied"), "refused at the handshake, not at the call: {failure}");
    // The client may see the refusal before the server has written why.
    management.wait_for_log_line(
        |line| line.contains("TLS handshake refused") && line.contains("elsewhere.test"),
        Duration::from_secs(10),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_principal_that_knows_a_lease_id_cannot_extend_or_release_it() {
    let network = ZitiNetwork::from_env();
    let holder = mint(&network, "attested/holder");
    let thief = mint(&network, "attested/thief");
    let policy = gateway_policy(&[&holder.spiffe_id, &thief.spiffe_id]);
    let (management, _dir) = attested_management(&network, &policy);
    let controller = ControllerView::login(&network).await;
    let mut holder_client = client_as(&management, &holder).await;
    let mut thief_client = client_as(&management, &thief).await;
    let id = request_gateway(&mut holder_client).await.expect("issued").ziti_identity_id;
    let expiry_before = controller.identity(&id).await.expect("exists")["tags"]["zitiMgmtLeaseExpires"].clone();

    let extended = extend(&mut thief_client, &id).await.expect_err("another principal must not extend it");
    let unknown = extend(&mut thief_client, "no-such-lease").await.expect_err("no such lease");
    assert_eq!(extended.code(), Code::NotFound, "{extended:?}");
    assert_eq!(
        extended.message().replace(&id, "ID"),
        unknown.message().replace("no-such-lease", "ID"),
        "a lease held by another looks exactly like a missing one"
    );
    let released = release(&mut thief_client, &id).await.expect_err("another principal must not release it");
    assert_eq!(released.code(), Code::NotFound, "{released:?}");

    let after = controller.identity(&id).await.expect("the lease is untouched: its identity still exists");
    assert_eq!(after["tags"]["zitiMgmtLeaseExpires"], expiry_before, "the lease is untouched: same expiry");
    let logs = management.logs();
    for event in ["lease.extension_refused", "lease.release_refused"] {
        let line = logs.lines().find(|line| line.contains(event)).unwrap_or_else(|| panic!("no {event}:\n{logs}"));
        assert!(line.contains(&thief.spiffe_id) && line.contains(&id) && line.contains("held by another"), "{line}");
    }

    extend(&mut holder_client, &id).await.expect("the holder still extends its lease");
    release(&mut holder_client, &id).await.expect("the holder releases it");
    assert!(management.logs().contains("lease.released"));
}

async fn request_with_token(client: &mut Client, token: &str) -> Result<String, tonic::Status> {
    let message = zitimgmt_grpc::proto::RequestServiceIdentityRequest {
        service_type: zitimgmt_grpc::proto::ServiceType::Gateway as i32,
    };
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ASCII"));
    client.request_service_identity(request).await.map(|answer| answer.into_inner().ziti_identity_id)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_jwt_method_admits_a_real_jwt_svid_and_refuses_a_wrong_audience() {
    let network = ZitiNetwork::from_env();
    let spire = network.spire_server();
    let dir = private_dir();
    let jwks = spire.bundle_jwks().expect("SPIRE's bundle as a JWKS");
    let jwks = write_private(dir.path(), "jwks.json", jwks.as_bytes()).display().to_string();
    let principal = network.spiffe_id("attested/ci-runner");
    let policy = format!(
        "[[allow]]\njwt_claim = \"{principal}\"\nservice_types = [\"gateway\"]\nrole_attributes = [\"attested-test\"]\n"
    );
    let issuer = spire.jwt_issuer();
    let auth = [
        ("ZITI_MGMT_AUTH_METHODS", "jwt"),
        ("ZITI_MGMT_JWT_ISSUER", issuer.as_str()),
        ("ZITI_MGMT_JWT_AUDIENCE", "ziti-management"),
        ("ZITI_MGMT_JWT_JWKS_FILE", jwks.as_str()),
    ];
    let (management, _policy_dir) = management_with(&network, &policy, &auth);
    let mut client = management.connect_as(None).await.expect("TLS");
    let lifetime = Duration::from_secs(300);

    let token = spire.mint_jwt(&principal, "ziti-management", lifetime).expect("a JWT-SVID");
    let id = request_with_token(&mut client, &token).await.expect("a valid JWT-SVID is admitted");
    let mut resolve_request =
        tonic::Request::new(ResolveIdentityRequest { ziti_identity_id: id.clone(), ..Default::default() });
    resolve_request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ASCII"));
    let resolved = client.resolve_identity(resolve_request).await.expect("resolve").into_inner();
    assert_eq!(resolved.issued_to, format!("jwt:{principal}"));

    let elsewhere = spire.mint_jwt(&principal, "another-service", lifetime).expect("a JWT-SVID");
    let refused = request_with_token(&mut client, &elsewhere).await.expect_err("wrong audience");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("audience"), "{refused:?}");
    let refused = request_with_token(&mut client, "not.a.jwt").await.expect_err("garbage");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let logs = management.logs();
    assert!(!logs.contains(&token) && !logs.contains(&elsewhere), "a token reached the log:\n{logs}");

    let mut release_request =
        tonic::Request::new(zitimgmt_grpc::proto::ReleaseServiceIdentityRequest { ziti_identity_id: id });
    release_request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ASCII"));
    client.release_service_identity(release_request).await.expect("the holder releases it");
}
