use super::*;
use crate::channel::ConnKind;
use crate::controller::AuthMode;
use crate::fake_controller::{FakeController, Reply, logged_in_session};

const CONTROLLER: &str = "https://ctrl.example:1280/";

/// A new certificate (and key) under a throwaway CA, for `api`.
fn identity_for(api: &str) -> Identity {
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = rcgen::CertificateParams::new(vec!["host".to_owned()]).unwrap().signed_by(&key, &issuer).unwrap();
    Identity::from_pem(&[api], cert.pem().as_bytes(), key.serialize_pem().as_bytes(), ca.pem().as_bytes()).unwrap()
}

/// A context logged in (API session `s1`) to the stand-in as [`CONTROLLER`], with a
/// channel to `router:3022` carrying one connection, and a cached Dial token.
fn context(fake: &FakeController) -> (ZitiContext, Channel) {
    let identity = identity_for(CONTROLLER);
    let router_tls = crate::tls::client_config(&identity, &[]).unwrap();
    let controller = Controller::for_tests(fake.base(), AuthMode::Oidc);
    let session = logged_in_session();
    let inner = Inner::new(controller, router_tls, identity.api_urls().to_vec(), ContextOptions::default(), session);
    let channel = Channel::detached("router:3022");
    let (_conn, _inbox) = channel.register(ConnKind::Dial);
    inner.routers.keep("router:3022", &channel, &inner.session());
    let cached =
        ServiceSession { id: "ss1".to_owned(), token: "dial-token".to_owned().into(), edge_routers: Vec::new() };
    lock(&inner.dial_sessions).insert("service-1".to_owned(), cached);
    (ZitiContext { inner: Arc::new(inner) }, channel)
}

fn assert_unchanged(context: &ZitiContext, channel: &Channel, fake: &FakeController) {
    assert_eq!(context.api_session_id(), "s1");
    assert_eq!(context.inner.channels().len(), 1, "the channel is still used for new work");
    assert!(!channel.is_closed());
    assert_eq!(*context.inner.renewals().borrow(), 0, "listeners are not told to bind again");
    assert!(lock(&context.inner.dial_sessions).contains_key("service-1"), "{:?}", fake.seen());
}

#[tokio::test]
async fn an_identity_for_another_controller_is_refused_and_nothing_changes() {
    let fake = FakeController::start().await;
    fake.script_cert_login();
    fake.script("/oidc/oauth/token", [Reply::tokens("s2")]);
    let (context, channel) = context(&fake);

    let refused = context.update_identity(identity_for("https://elsewhere.example:1280/")).await;

    match refused {
        Err(err @ Error::OtherController { .. }) => {
            assert!(err.to_string().contains("https://elsewhere.example:1280/"), "{err}");
            assert!(err.to_string().contains(CONTROLLER), "{err}");
        }
        other => panic!("expected OtherController, got {other:?}"),
    }
    assert!(fake.seen().is_empty(), "no login attempted: {:?}", fake.seen());
    assert_unchanged(&context, &channel, &fake);
}

#[tokio::test]
async fn a_failed_login_with_the_new_certificate_keeps_the_current_session() {
    let fake = FakeController::start().await;
    fake.script("/oidc/authorize", [Reply::redirect("/oidc/login/cert?authRequestID=ar1")]);
    fake.script("/oidc/login/cert", [Reply::status(401)]);
    let (context, channel) = context(&fake);

    let failed = context.update_identity(identity_for(CONTROLLER)).await;

    assert!(matches!(failed, Err(Error::LoginRejected(_))), "{failed:?}");
    assert_eq!(fake.count("POST /oidc/login/cert"), 1, "{:?}", fake.seen());
    assert_unchanged(&context, &channel, &fake);
}

#[tokio::test]
async fn an_update_logs_in_at_once_and_retires_the_old_sessions_channels() {
    let fake = FakeController::start().await;
    fake.script_cert_login();
    fake.script("/oidc/oauth/token", [Reply::tokens("s2")]);
    let (context, channel) = context(&fake);
    let renewals = context.inner.renewals();

    context.update_identity(identity_for(CONTROLLER)).await.unwrap();

    assert_eq!(fake.count("POST /oidc/login/cert"), 1, "{:?}", fake.seen());
    assert_eq!(context.api_session_id(), "s2", "a new API session from the login with the new certificate");
    assert!(context.inner.channels().is_empty(), "new work opens new channels");
    assert!(!channel.is_closed(), "the connection on the old channel carries on");
    assert_eq!(context.inner.retired_channels().len(), 1);
    assert!(renewals.has_changed().unwrap(), "listeners are told to bind again");
    assert!(lock(&context.inner.dial_sessions).is_empty(), "Dial tokens of the old session are dropped");
}
