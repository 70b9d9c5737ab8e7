//! The network's ORY Hydra as `cargo xtask ziti-up` sets it up: the controller logs in
//! the gateway's Hydra client as the identity `gateway-idp` with its client-credentials
//! token (`authenticate?method=ext-jwt`), and refuses a token for another audience or of
//! a client that no identity has as its external id.
//!
//! Run with the network up: `cargo test -p workspace-tests --test idp`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a failed step should panic

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use workspace_tests::network::ZitiNetwork;
use ziti_net_kit::hydra::HydraError;

/// `POST /edge/client/v1/authenticate?method=ext-jwt` with `token` as the bearer: the
/// status, and the identity's name when logged in.
async fn jwt_login(network: &ZitiNetwork, token: &str) -> (u16, Option<String>, String) {
    let bundle = std::fs::read(&network.controller_ca_bundle).expect("the controller's CA bundle");
    let mut client = reqwest::Client::builder().use_rustls_tls().tls_built_in_root_certs(false).no_proxy();
    for ca in reqwest::Certificate::from_pem_bundle(&bundle).expect("PEM certificates") {
        client = client.add_root_certificate(ca);
    }
    let response = client
        .build()
        .expect("an HTTPS client")
        .post(format!("{}/edge/client/v1/authenticate?method=ext-jwt", network.controller_url))
        .bearer_auth(token)
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

/// The claims of a JWT (its payload, decoded without checking the signature).
fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON claims")
}

/// A name of this test run's own (tests run concurrently, and runs may overlap).
fn unique(what: &str) -> String {
    format!("idp-test-{what}-{}", std::process::id())
}

#[tokio::test]
async fn the_gateway_client_token_logs_in_to_the_controller_as_gateway_idp() {
    let network = ZitiNetwork::from_env();
    let secret = std::fs::read_to_string(&network.oidc_client_secret_file).expect("the gateway client's secret");
    let token = network.idp_token(&network.oidc_client_id, secret.trim(), &["gateway-hosts", "gateway-clients"]);

    let (status, name, error) = jwt_login(&network, &token).await;
    assert_eq!(status, 200, "ext-jwt login with the gateway's Hydra token: {error}");
    assert_eq!(name.as_deref(), Some("gateway-idp"));
}

#[tokio::test]
async fn hydra_tokens_name_the_client_in_sub_and_the_scopes_asked_for_in_scp() {
    let network = ZitiNetwork::from_env();
    let client = network.idp_client(&unique("claims"), &["gateway-hosts", "gateway-clients"]);

    let scoped = claims(&client.token());
    assert_eq!(scoped["iss"], network.oidc_issuer.as_str());
    assert_eq!(scoped["sub"], client.client_id());
    assert_eq!(scoped["client_id"], client.client_id());
    assert_eq!(scoped["aud"], serde_json::json!([network.oidc_audience]));
    assert_eq!(scoped["scp"], serde_json::json!(["gateway-hosts", "gateway-clients"]));
    let lifetime = scoped["exp"].as_i64().unwrap() - scoped["iat"].as_i64().unwrap();
    let expected = ziti_net_kit::hydra::DEFAULT_ACCESS_TOKEN_TTL.as_secs();
    assert_eq!(lifetime, i64::try_from(expected).unwrap(), "ziti-up's Hydra issues {expected}-second tokens");

    let unscoped = claims(&client.token_for(&network.oidc_audience, &[]));
    assert_eq!(unscoped["scp"], serde_json::json!([]));
    let one = claims(&client.token_for(&network.oidc_audience, &["gateway-hosts"]));
    assert_eq!(one["scp"], serde_json::json!(["gateway-hosts"]));
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let network = ZitiNetwork::from_env();
    let client = network.idp_client_for(&unique("audience"), &[&network.oidc_audience, "not-openziti"], &[]);
    let identity = network.idp_identity(&unique("audience"), client.client_id(), &[]);

    let (status, name, error) = jwt_login(&network, &client.token()).await;
    assert_eq!((status, name.as_deref()), (200, Some(identity.name.as_str())), "the right audience: {error}");

    let (status, name, _) = jwt_login(&network, &client.token_for("not-openziti", &[])).await;
    assert_eq!((status, name), (401, None), "a token for the audience not-openziti");
    let (status, _, _) = jwt_login(&network, &client.token_for("", &[])).await;
    assert_eq!(status, 401, "a token without an audience");
}

#[tokio::test]
async fn a_token_of_a_client_that_no_identity_has_is_refused() {
    let network = ZitiNetwork::from_env();
    let client = network.idp_client(&unique("stranger"), &[]);

    let (status, name, _) = jwt_login(&network, &client.token()).await;
    assert_eq!((status, name), (401, None), "a client no identity has as its external id");

    // The same client's token is good once an identity has it: the refusal was for that.
    let identity = network.idp_identity(&unique("stranger"), client.client_id(), &[]);
    let (status, name, error) = jwt_login(&network, &client.token()).await;
    assert_eq!((status, name.as_deref()), (200, Some(identity.name.as_str())), "{error}");
}

#[tokio::test]
async fn a_test_client_is_gone_from_hydra_once_dropped() {
    let network = ZitiNetwork::from_env();
    let client = network.idp_client(&unique("dropped"), &[]);
    let (client_id, secret) = (client.client_id().to_owned(), client.secret().to_owned());
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(client.secret_file()).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(client.secret_file()).unwrap(), secret);
    network.hydra().token(&client_id, &secret, &network.oidc_audience, &[]).expect("a token while it exists");

    drop(client);
    let refused = network.hydra().token(&client_id, &secret, &network.oidc_audience, &[]).unwrap_err();
    assert!(matches!(&refused, HydraError::Refused { error, .. } if error == "invalid_client"), "{refused}");
}
