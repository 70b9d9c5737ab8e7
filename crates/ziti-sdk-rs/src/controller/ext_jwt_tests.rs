//! Logging in with an external IdP's JWT, against the scripted stand-in controller.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::Zeroizing;

use super::*;
use crate::fake_controller::{FakeController, Reply};

/// An unsigned IdP-style JWT for `sub`, expiring `exp_in` from now (negative: expired).
pub(crate) fn idp_token(sub: &str, exp_in: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims =
        serde_json::json!({ "iss": "http://127.0.0.1:4444", "sub": sub, "aud": ["openziti"], "exp": now + exp_in });
    format!("eyJhbGciOiJSUzI1NiJ9.{}.c2lnbmF0dXJl", URL_SAFE_NO_PAD.encode(claims.to_string()))
}

/// A throwaway CA certificate (PEM).
pub(crate) fn ca_pem() -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem()
}

/// The token's credential as an identity built from it holds it.
pub(crate) fn ext_jwt(token: &str) -> ExtJwt {
    let api = Url::parse("https://ctrl.example:1280").unwrap();
    let identity = Identity::from_ext_jwt(api, ca_pem().as_bytes(), Zeroizing::new(token.to_owned())).unwrap();
    identity.ext_jwt().unwrap().clone()
}

fn controller(fake: &FakeController, mode: AuthMode, token: &str) -> Controller {
    Controller::for_tests(fake.base(), mode).with_ext_jwt_for_tests(ext_jwt(token))
}

/// Scripts an ext-jwt OIDC login that succeeds with API session `asid`.
pub(crate) fn script_oidc_ext_jwt_login(fake: &FakeController, asid: &str) {
    fake.script("/oidc/authorize", [Reply::redirect("/oidc/login/ext-jwt?authRequestID=ar1")]);
    fake.script("/oidc/login/ext-jwt", [Reply::redirect("/oidc/callback?id=ar1")]);
    fake.script("/oidc/callback", [Reply::redirect("http://localhost:8080/auth/callback?code=c1&state={state}")]);
    fake.script("/oidc/oauth/token", [Reply::tokens(asid)]);
}

#[tokio::test]
async fn the_oidc_login_asks_for_the_ext_jwt_method_and_presents_the_token_as_bearer() {
    let fake = FakeController::start().await;
    script_oidc_ext_jwt_login(&fake, "s1");
    let token = idp_token("gateway-idp", 120);

    let session = controller(&fake, AuthMode::Oidc, &token).login().await.unwrap();

    assert_eq!(session.api_session_id, "s1");
    assert_eq!(session.mode, AuthMode::Oidc);
    let authorize = fake.requests("/oidc/authorize");
    assert!(authorize[0].target.contains("method=ext-jwt"), "{}", authorize[0].target);
    let login = fake.requests("/oidc/login/ext-jwt");
    assert_eq!(login.len(), 1, "{:?}", fake.seen());
    assert_eq!(login[0].target.split(' ').next(), Some("POST"));
    assert_eq!(login[0].header("authorization"), Some(format!("Bearer {token}")));
    assert_eq!(String::from_utf8_lossy(&login[0].body), "id=ar1");
    assert_eq!(fake.count("POST /oidc/login/cert"), 0);
}

#[tokio::test]
async fn the_legacy_login_posts_to_authenticate_with_the_ext_jwt_method() {
    let fake = FakeController::start().await;
    let data = serde_json::json!({ "data": {
        "id": "legacy-1", "token": "zt-session-token", "expirationSeconds": 1800,
        "identity": { "id": "identity-1", "name": "gateway-idp" }
    }});
    fake.script("/edge/client/v1/authenticate", [Reply::json(200, data)]);
    let token = idp_token("gateway-idp", 120);

    let session = controller(&fake, AuthMode::Legacy, &token).login().await.unwrap();

    assert_eq!((session.mode, session.api_session_id.as_str()), (AuthMode::Legacy, "legacy-1"));
    assert_eq!(session.token.as_str(), "zt-session-token");
    assert_eq!(session.identity_name, "gateway-idp");
    let login = fake.requests("/edge/client/v1/authenticate");
    assert_eq!(login.len(), 1, "{:?}", fake.seen());
    assert!(login[0].target.starts_with("POST /edge/client/v1/authenticate?method=ext-jwt"), "{}", login[0].target);
    assert_eq!(login[0].header("authorization"), Some(format!("Bearer {token}")));
    assert_eq!(String::from_utf8_lossy(&login[0].body), "{}");
}

#[tokio::test]
async fn a_refused_token_says_the_controller_refused_it_naming_controller_and_subject_not_the_token() {
    let fake = FakeController::start().await;
    script_oidc_ext_jwt_login(&fake, "s1");
    fake.script("/oidc/login/ext-jwt", [Reply::status(401)]);
    fake.script("/edge/client/v1/authenticate", [Reply::status(401)]);
    let token = idp_token("gateway-idp", -30);

    for mode in [AuthMode::Oidc, AuthMode::Legacy] {
        let err = controller(&fake, mode, &token).login().await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::LoginRejected(_)), "{mode:?}: {err:?}");
        assert!(text.contains("refused the IdP token"), "{mode:?}: {text}");
        assert!(text.contains(fake.base().as_str()), "names the controller: {text}");
        assert!(text.contains("`gateway-idp`") && text.contains("expired"), "{mode:?}: {text}");
        assert!(!text.contains(&token) && !format!("{err:?}").contains(&token), "{mode:?}: the token leaked: {text}");
        let payload = token.split('.').nth(1).unwrap();
        assert!(!text.contains(payload), "{mode:?}: {text}");
    }
}

#[tokio::test]
async fn the_api_session_certificate_is_asked_for_with_a_csr_and_the_sessions_credentials() {
    let fake = FakeController::start().await;
    fake.script(
        "/edge/client/v1/current-api-session/certificates",
        [Reply::session_certificates(Duration::from_secs(600))],
    );
    let controller = controller(&fake, AuthMode::Oidc, &idp_token("gateway-idp", 120));
    let session = crate::fake_controller::logged_in_session();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::default().serialize_request(&key).unwrap().pem().unwrap();

    let certificate = controller.session_certificate(&session, &csr).await.unwrap();

    assert_eq!(certificate.id, "cert-1");
    assert_eq!(certificate.chain.len(), 1);
    assert_eq!(certificate.cas.len(), 1);
    let lifetime = certificate.not_after.duration_since(certificate.not_before).unwrap();
    assert!(lifetime.as_secs().abs_diff(600) <= 1, "{lifetime:?}");
    let request = &fake.requests("/edge/client/v1/current-api-session/certificates")[0];
    assert!(request.target.starts_with("POST "), "{}", request.target);
    assert_eq!(request.header("authorization"), Some(format!("Bearer {}", session.token.as_str())));
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert!(body["csr"].as_str().unwrap().starts_with("-----BEGIN CERTIFICATE REQUEST-----"), "{body}");
}
