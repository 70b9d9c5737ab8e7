//! Identities provisioned from identity-provider tokens, against the real controller:
//! the caller's token names the identity's external id, and a claim of it is mapped to
//! role attributes through the policy's allow-list. The IdP is the network's Hydra
//! (its scopes as roles, then a login with the same token), or SPIRE's JWT-SVIDs (extra
//! audiences as roles) where a token with odd claims is needed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a failed step should panic

mod support;

use support::idp::{Provisioning, principal, token};
use support::mint;
use tonic::Code;
use workspace_tests::network::IdpClient;
use workspace_tests::network::ZitiNetwork;

#[tokio::test(flavor = "multi_thread")]
async fn a_new_principal_is_provisioned_with_its_external_id_auth_policy_and_allowed_roles_then_updated() {
    let network = ZitiNetwork::from_env();
    let setup = Provisioning::start(&network, &[]).await;
    let client = setup.client();
    let caller = principal(&network, "new");
    let first = token(&network, &caller, &["gateway-hosts", "not-allowed"]);

    let created = client.provision_identity(&first).await.expect("a brand-new principal is provisioned");

    assert!(created.created, "{created:?}");
    assert_eq!(created.external_id, caller);
    assert_eq!(created.role_attributes, ["gateway-hosts"], "only the allowed value of the roles claim");
    let shown = setup.controller.identity(&created.ziti_identity_id).await.expect("the identity exists");
    assert_eq!(shown["externalId"], caller.as_str(), "{shown}");
    assert_eq!(shown["authPolicyId"], setup.auth_policy_id.as_str(), "{shown}");
    assert_eq!(shown["roleAttributes"], serde_json::json!(["gateway-hosts"]), "{shown}");
    assert_eq!(shown["name"], created.name.as_str(), "{shown}");
    assert_eq!(shown["tags"]["zitiMgmtProvisioned"], true, "{shown}");
    let at = shown["tags"]["zitiMgmtProvisionedAt"].as_str().expect("a provisioning time");
    assert_eq!(at.len(), "2026-11-22T10:00:00.000Z".len(), "fixed width: {at}");

    let second = token(&network, &caller, &["gateway-clients"]);
    let updated = client.provision_identity(&second).await.expect("provisioned again");

    assert!(!updated.created, "{updated:?}");
    assert_eq!(updated.ziti_identity_id, created.ziti_identity_id, "the same identity");
    assert_eq!(updated.role_attributes, ["gateway-clients"]);
    let shown = setup.controller.identity(&created.ziti_identity_id).await.expect("still there");
    assert_eq!(shown["roleAttributes"], serde_json::json!(["gateway-clients"]), "{shown}");
    assert!(shown["tags"]["zitiMgmtProvisionedAt"].as_str() >= Some(at), "{shown}");

    let logs = setup.management.logs();
    let audit = |event: &str| {
        logs.lines()
            .find(|line| line.contains(&format!("event=\"{event}\"")) || line.contains(&format!("event={event} ")))
            .unwrap_or_else(|| panic!("no {event} line:\n{logs}"))
            .to_owned()
    };
    let provisioned = audit("identity.provisioned");
    assert!(provisioned.contains(&caller) && provisioned.contains(&created.ziti_identity_id), "{provisioned}");
    assert!(provisioned.contains("not-allowed"), "the refused role is logged: {provisioned}");
    assert!(audit("identity.provision_updated").contains(&created.ziti_identity_id));
    assert!(!logs.contains(&first) && !logs.contains(&second), "a token reached the log:\n{logs}");
    let metrics = support::http_get(setup.management.admin, "/metrics").expect("metrics").1;
    assert!(metrics.contains(r#"method="ProvisionIdentity",code="OK",principal="jwt""#), "{metrics}");

    setup.cleanup(&[&created.ziti_identity_id]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hand_made_identity_with_the_callers_external_id_is_left_untouched() {
    let network = ZitiNetwork::from_env();
    let setup = Provisioning::start(&network, &[]).await;
    let caller = principal(&network, "hand-made");
    let name = format!("hand-made-{}", caller.rsplit('-').next().unwrap_or_default());
    let id = setup.controller.create_identity(&name, &caller, &["ops"]).await;
    let before = setup.controller.identity(&id).await.expect("exists");

    let refused = setup
        .client()
        .provision_identity(&token(&network, &caller, &["gateway-hosts"]))
        .await
        .expect_err("an identity ziti-management did not provision must not be taken over");

    assert_eq!(refused.status().code(), Code::FailedPrecondition, "{refused}");
    assert!(refused.status().message().contains("did not provision"), "{refused}");
    let after = setup.controller.identity(&id).await.expect("still there");
    for field in ["roleAttributes", "tags", "authPolicyId", "name", "updatedAt"] {
        assert_eq!(after[field], before[field], "{field} changed");
    }
    let logs = setup.management.logs();
    assert!(logs.lines().any(|line| line.contains("identity.provision_refused") && line.contains(&caller)), "{logs}");

    setup.cleanup(&[&id]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn spiffe_and_anonymous_callers_may_not_provision() {
    let network = ZitiNetwork::from_env();
    let settings = [
        ("ZITI_MGMT_AUTH_METHODS", "spiffe,jwt,none"),
        ("ZITI_MGMT_SPIFFE_TRUST_DOMAIN", network.spiffe_trust_domain.as_str()),
        ("ZITI_MGMT_SPIFFE_ENDPOINT_SOCKET", network.spiffe_endpoint_socket.as_str()),
    ];
    let setup = Provisioning::start(&network, &settings).await;
    let svid = mint(&network, "idp-test/spiffe-caller");

    for identity in [Some((svid.chain_pem.as_str(), svid.key_pem.as_str())), None] {
        let mut client = setup.management.connect_as(identity).await.expect("TLS");
        let refused = client
            .provision_identity(zitimgmt_grpc::proto::ProvisionIdentityRequest {})
            .await
            .expect_err("only IdP-token callers may provision");
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        assert!(refused.message().contains("identity provider's bearer token"), "{refused:?}");
    }

    // Other tests provision at the same time: look for what these callers could have made.
    for external_id in [svid.spiffe_id.as_str(), "anonymous"] {
        let made = setup.controller.identities(&format!("externalId = \"{external_id}\"")).await;
        assert!(made.is_empty(), "an identity was provisioned for {external_id}: {made:?}");
    }
    let metrics = support::http_get(setup.management.admin, "/metrics").expect("metrics").1;
    for class in ["spiffe", "anonymous"] {
        let line = format!(r#"method="ProvisionIdentity",code="PERMISSION_DENIED",principal="{class}""#);
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
    setup.cleanup(&[]).await;
}

/// A Hydra client of this test run only, allowed `scopes`.
fn hydra_client(network: &ZitiNetwork, name: &str, scopes: &[&str]) -> IdpClient {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
    network.idp_client(&format!("zm-{name}-{nanos}"), scopes)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hydra_client_gets_the_roles_its_scopes_allow_and_logs_in_with_the_same_token() {
    let network = ZitiNetwork::from_env();
    let setup = Provisioning::start_for_hydra(&network).await;
    let idp = hydra_client(&network, "provisioned", &["gateway-hosts", "not-allowed"]);
    let token = network.idp_token(idp.client_id(), idp.secret(), &["gateway-hosts", "not-allowed"]);

    let provisioned = setup.client().provision_identity(&token).await.expect("a new Hydra client is provisioned");

    assert!(provisioned.created, "{provisioned:?}");
    assert_eq!(provisioned.external_id, idp.client_id(), "Hydra's sub is the client id");
    assert_eq!(provisioned.role_attributes, ["gateway-hosts"], "the allowed granted scope only");
    let shown = setup.controller.identity(&provisioned.ziti_identity_id).await.expect("exists");
    assert_eq!(shown["authPolicyId"], setup.auth_policy_id.as_str(), "the idp-jwt auth policy: {shown}");
    let logged_in = setup.controller.log_in_with_idp_token(&token).await;
    assert_eq!(logged_in, provisioned.ziti_identity_id, "the controller matches the same token to it");
    let shown = setup.controller.identity(&provisioned.ziti_identity_id).await.expect("exists");
    assert_eq!(shown["hasApiSession"], true, "{shown}");
    let logs = setup.management.logs();
    assert!(!logs.contains(&token), "the token reached the log:\n{logs}");

    setup.controller.end_api_sessions(&provisioned.ziti_identity_id).await;
    setup.cleanup(&[&provisioned.ziti_identity_id]).await;
}
