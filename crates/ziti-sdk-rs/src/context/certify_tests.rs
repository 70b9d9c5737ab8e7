//! Ext-jwt contexts against the scripted stand-in controller: the API-session
//! certificate and its renewal, a refused refresh, and new IdP tokens.

use zeroize::Zeroizing;

use super::*;
use crate::context::{ContextOptions, ZitiContext};
use crate::controller::ext_jwt_tests::{ca_pem, idp_token, script_oidc_ext_jwt_login};
use crate::controller::{AuthMode, Controller};
use crate::fake_controller::{FakeController, Reply, logged_in_session};
use crate::identity::Identity;

const CONTROLLER: &str = "https://ctrl.example:1280/";
const CERTIFICATES: &str = "/edge/client/v1/current-api-session/certificates";

fn identity(token: &str) -> Identity {
    let api = reqwest::Url::parse(CONTROLLER).unwrap();
    Identity::from_ext_jwt(api, ca_pem().as_bytes(), Zeroizing::new(token.to_owned())).unwrap()
}

/// A context of an ext-jwt identity logged in (API session `s1`) to the stand-in, with
/// its first API-session certificate, neither refreshing nor renewing yet.
async fn context(fake: &FakeController, token: &str, options: ContextOptions) -> ZitiContext {
    let identity = identity(token);
    let controller =
        Controller::for_tests(fake.base(), AuthMode::Oidc).with_ext_jwt_for_tests(identity.ext_jwt().unwrap().clone());
    let router_tls = crate::tls::client_config(&identity, &[]).unwrap();
    let session = logged_in_session();
    let certified = certify(&controller, &session, options.max_certificate_renewal_interval).await.unwrap();
    let inner = Inner::new(controller, router_tls, identity.api_urls().to_vec(), options, session);
    inner.adopt(certified);
    ZitiContext { inner: Arc::new(inner) }
}

/// Waits (in paused time) until the certificate id is `id`.
async fn certificate_becomes(context: &ZitiContext, id: &str) {
    let wait = async {
        while context.api_session_certificate_id().as_deref() != Some(id) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(3600), wait).await.expect("the certificate is renewed");
}

#[test]
fn renewal_comes_at_three_quarters_of_the_lifetime_or_the_knob_if_sooner() {
    let twelve_hours = Duration::from_secs(12 * 3600);
    assert_eq!(renewal_delay(twelve_hours, None), Duration::from_secs(9 * 3600));
    assert_eq!(renewal_delay(twelve_hours, Some(Duration::from_secs(20))), Duration::from_secs(20));
    assert_eq!(renewal_delay(Duration::from_secs(40), Some(Duration::from_secs(60))), Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn a_login_gets_a_router_certificate_and_it_is_renewed_at_three_quarters_of_its_life() {
    let fake = FakeController::start().await;
    fake.script(CERTIFICATES, [Reply::session_certificates(Duration::from_secs(40))]);
    let context = context(&fake, &idp_token("gateway-idp", 120), ContextOptions::default()).await;
    assert_eq!(context.api_session_certificate_id().as_deref(), Some("cert-1"));
    let first_tls = context.inner.router_tls();
    let started = tokio::time::Instant::now();
    let renewer = tokio::spawn(keep_certified(Arc::downgrade(&context.inner)));

    certificate_becomes(&context, "cert-2").await;
    renewer.abort();

    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(29) && waited <= Duration::from_secs(31), "{waited:?}");
    assert!(!Arc::ptr_eq(&first_tls, &context.inner.router_tls()), "new channels present the new certificate");
    assert_eq!(fake.count(&format!("POST {CERTIFICATES}")), 2, "{:?}", fake.seen());
    assert_eq!(context.api_session_id(), "s1", "renewing the certificate keeps the API session");
}

#[tokio::test(start_paused = true)]
async fn the_renewal_knob_renews_sooner() {
    let fake = FakeController::start().await;
    fake.script(CERTIFICATES, [Reply::session_certificates(Duration::from_secs(12 * 3600))]);
    let options =
        ContextOptions { max_certificate_renewal_interval: Some(Duration::from_secs(5)), ..Default::default() };
    let context = context(&fake, &idp_token("gateway-idp", 120), options).await;
    let started = tokio::time::Instant::now();
    let renewer = tokio::spawn(keep_certified(Arc::downgrade(&context.inner)));

    certificate_becomes(&context, "cert-3").await;
    renewer.abort();

    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(9) && waited <= Duration::from_secs(11), "{waited:?}");
}

#[tokio::test(start_paused = true)]
async fn a_refused_refresh_logs_in_again_with_the_newest_idp_token_and_certifies_the_new_session() {
    let fake = FakeController::start().await;
    fake.script(CERTIFICATES, [Reply::session_certificates(Duration::from_secs(12 * 3600))]);
    let options = ContextOptions { max_refresh_interval: Some(Duration::from_secs(1)), ..Default::default() };
    let first_token = idp_token("gateway-idp", 120);
    let context = context(&fake, &first_token, options).await;
    let newer_token = idp_token("gateway-idp", 240);
    assert_ne!(first_token, newer_token);

    context.update_identity(identity(&newer_token)).await.unwrap();
    assert_eq!(
        fake.count("GET /oidc/authorize"),
        0,
        "a new token for the same subject does not log in: {:?}",
        fake.seen()
    );
    assert_eq!(context.api_session_id(), "s1");

    script_oidc_ext_jwt_login(&fake, "s2");
    fake.script(
        "/oidc/oauth/token",
        [Reply::json(400, serde_json::json!({ "error": "invalid_grant" })), Reply::tokens("s2")],
    );
    let refresher = tokio::spawn(crate::context::refresh::keep_fresh(Arc::downgrade(&context.inner)));
    let wait = async {
        while context.api_session_id() != "s2" {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(600), wait).await.expect("logged in again");
    refresher.abort();

    let login = fake.requests("/oidc/login/ext-jwt");
    assert_eq!(login.len(), 1, "{:?}", fake.seen());
    assert_eq!(login[0].header("authorization"), Some(format!("Bearer {newer_token}")));
    assert_eq!(context.api_session_certificate_id().as_deref(), Some("cert-2"), "the new API session's certificate");
    let certificate_request = fake.requests(CERTIFICATES).pop().unwrap();
    assert_eq!(
        certificate_request.header("authorization"),
        Some(format!("Bearer {}", context.inner.session().token.as_str())),
        "asked for with the new session's token"
    );
}

#[tokio::test]
async fn a_token_for_another_subject_logs_in_at_once() {
    let fake = FakeController::start().await;
    fake.script(CERTIFICATES, [Reply::session_certificates(Duration::from_secs(12 * 3600))]);
    let context = context(&fake, &idp_token("gateway-idp", 120), ContextOptions::default()).await;
    script_oidc_ext_jwt_login(&fake, "s2");
    let other = idp_token("someone-else", 120);

    context.update_identity(identity(&other)).await.unwrap();

    assert_eq!(context.api_session_id(), "s2");
    assert_eq!(fake.requests("/oidc/login/ext-jwt")[0].header("authorization"), Some(format!("Bearer {other}")));
    assert_eq!(context.api_session_certificate_id().as_deref(), Some("cert-2"));
}
