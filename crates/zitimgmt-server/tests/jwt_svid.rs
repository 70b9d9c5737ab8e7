//! The `jwt` method with real JWT-SVIDs: minted by the network's SPIRE, verified against
//! its bundle as `spire-server bundle show -format spiffe` prints it (X.509 roots and JWT
//! keys side by side).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a failed step should panic

use std::time::Duration;

use workspace_tests::network::ZitiNetwork;
use zitimgmt_server::auth::jwt::{JwksSource, JwtError, JwtSettings, JwtVerifier};

const AUDIENCE: &str = "ziti-management";
const TTL: Duration = Duration::from_secs(300);

/// A verifier of the network SPIRE's bundle, written to a file in `dir`.
fn verifier(network: &ZitiNetwork, dir: &tempfile::TempDir, issuer: &str) -> JwtVerifier {
    let jwks = network.spire_server().bundle_jwks().expect("the SPIRE bundle");
    let path = dir.path().join("bundle.json");
    std::fs::write(&path, jwks).unwrap();
    JwtVerifier::new(JwtSettings {
        issuer: issuer.to_owned(),
        audience: AUDIENCE.to_owned(),
        principal_claim: "sub".to_owned(),
        jwks: JwksSource::File(path),
    })
    .unwrap()
}

#[tokio::test]
async fn a_jwt_svid_for_this_audience_gives_its_spiffe_id() {
    let network = ZitiNetwork::from_env();
    let server = network.spire_server();
    let dir = tempfile::tempdir().unwrap();
    let verifier = verifier(&network, &dir, &server.jwt_issuer());
    let spiffe_id = network.spiffe_id("jwt-svid/caller");
    let token = server.mint_jwt(&spiffe_id, AUDIENCE, TTL).unwrap();
    assert_eq!(verifier.verify(&token).await.unwrap(), spiffe_id);
}

#[tokio::test]
async fn a_jwt_svid_for_another_audience_is_refused() {
    let network = ZitiNetwork::from_env();
    let server = network.spire_server();
    let dir = tempfile::tempdir().unwrap();
    let verifier = verifier(&network, &dir, &server.jwt_issuer());
    let token = server.mint_jwt(&network.spiffe_id("jwt-svid/caller"), "someone-else", TTL).unwrap();
    let err = verifier.verify(&token).await.unwrap_err();
    assert!(matches!(err, JwtError::WrongAudience), "{err:?}");
}

#[tokio::test]
async fn a_jwt_svid_of_another_issuer_is_refused() {
    let network = ZitiNetwork::from_env();
    let server = network.spire_server();
    let dir = tempfile::tempdir().unwrap();
    let verifier = verifier(&network, &dir, "https://idp.elsewhere.test");
    let token = server.mint_jwt(&network.spiffe_id("jwt-svid/caller"), AUDIENCE, TTL).unwrap();
    let err = verifier.verify(&token).await.unwrap_err();
    assert!(matches!(err, JwtError::WrongIssuer), "{err:?}");
}

#[tokio::test]
async fn a_jwt_svid_of_another_trust_domain_is_refused_as_an_unknown_key() {
    let network = ZitiNetwork::from_env();
    let dir = tempfile::tempdir().unwrap();
    let verifier = verifier(&network, &dir, &network.spire_server().jwt_issuer());
    let throwaway = network.start_throwaway_spire("jwt-elsewhere.test");
    let other = throwaway.spire().server();
    let token = other.mint_jwt("spiffe://jwt-elsewhere.test/caller", AUDIENCE, TTL).unwrap();
    let err = verifier.verify(&token).await.unwrap_err();
    assert!(matches!(err, JwtError::UnknownKey { .. }), "{err:?}");
}
