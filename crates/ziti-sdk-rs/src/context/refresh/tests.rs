use rustls::{ClientConfig, RootCertStore};

use super::*;
use crate::context::ContextOptions;
use crate::controller::Controller;
use crate::fake_controller::{FakeController, Reply, logged_in_session};

const TOKEN: &str = "POST /oidc/oauth/token";
const AUTHORIZE: &str = "GET /oidc/authorize";

/// A context logged in (API session `s1`) to the stand-in, refreshing every second.
fn context(fake: &FakeController) -> Arc<Inner> {
    let session = logged_in_session();
    let router_tls = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    let options = ContextOptions { max_refresh_interval: Some(Duration::from_secs(1)), ..ContextOptions::default() };
    let controller = Controller::for_tests(fake.base(), AuthMode::Oidc);
    Arc::new(Inner::new(controller, Arc::new(router_tls), Vec::new(), options, session))
}

/// Waits (in paused time) until the context holds a token other than `old`.
async fn refreshed(inner: &Inner, old: &str) {
    let wait = async {
        while inner.session().token.as_str() == old {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(600), wait).await.expect("the session is refreshed");
}

/// Runs the refresher against `fake` (in paused time) until the context holds a new token.
async fn refresh_until_renewed(fake: &FakeController) -> Arc<Inner> {
    let inner = context(fake);
    let old = inner.session().token.clone();
    let refresher = tokio::spawn(keep_fresh(Arc::downgrade(&inner)));
    refreshed(&inner, &old).await;
    refresher.abort();
    inner
}

fn assert_logged_in_again(fake: &FakeController, inner: &Inner) {
    assert_eq!(fake.count(AUTHORIZE), 1, "{:?}", fake.seen());
    assert_eq!(inner.session().api_session_id, "s2", "a new API session from a fresh login");
}

#[tokio::test(start_paused = true)]
async fn a_refresh_answered_503_is_retried_with_backoff_without_logging_in_again() {
    let fake = FakeController::start().await;
    fake.script("/oidc/oauth/token", [Reply::status(503), Reply::status(503), Reply::status(503), Reply::tokens("s1")]);
    fake.script("/edge/client/v1/current-identity", [Reply::json(200, serde_json::json!({ "data": {} }))]);
    let inner = context(&fake);
    let old = inner.session().token.clone();
    let started = tokio::time::Instant::now();
    let refresher = tokio::spawn(keep_fresh(Arc::downgrade(&inner)));

    refreshed(&inner, &old).await;
    refresher.abort();
    assert_eq!(fake.count(AUTHORIZE), 0, "no login while the controller is only unavailable: {:?}", fake.seen());
    assert_eq!(fake.count(TOKEN), 4, "{:?}", fake.seen());
    assert_eq!(inner.session().api_session_id, "s1", "the same API session, refreshed");
    // 1 s to the first refresh, then three backoff steps (upper halves of 1, 2 and 4 s).
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(4500) && waited <= Duration::from_secs(8), "{waited:?}");
}

#[tokio::test(start_paused = true)]
async fn a_refused_refresh_logs_in_again_with_the_certificate() {
    let fake = FakeController::start().await;
    fake.script(
        "/oidc/oauth/token",
        [Reply::json(400, serde_json::json!({ "error": "invalid_grant" })), Reply::tokens("s2")],
    );
    fake.script_cert_login();
    let inner = refresh_until_renewed(&fake).await;
    assert_logged_in_again(&fake, &inner);
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_of_a_session_the_controller_no_longer_accepts_logs_in_again() {
    let fake = FakeController::start().await;
    // What the controller answers once the identity is deleted.
    let not_found = serde_json::json!({ "error": "server_error", "error_description": "identity not found" });
    fake.script("/oidc/oauth/token", [Reply::json(500, not_found), Reply::tokens("s2")]);
    fake.script("/edge/client/v1/current-identity", [Reply::status(401)]);
    fake.script_cert_login();
    let inner = refresh_until_renewed(&fake).await;
    assert_logged_in_again(&fake, &inner);
}
