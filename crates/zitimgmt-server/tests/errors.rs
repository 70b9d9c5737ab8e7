//! Refusals and failures as a caller or an operator meets them: gRPC codes, exit
//! codes and messages, readiness and metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a failed step should panic

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::controller::ControllerView;
use support::{BINARY, Management, base_env, extend, free_addr, http_get, release, request_gateway};
use tonic::Code;
use workspace_tests::network::ZitiNetwork;
use zitimgmt_grpc::proto::{RequestServiceIdentityRequest, ResolveIdentityRequest, ServiceType};

#[tokio::test(flavor = "multi_thread")]
async fn an_unspecified_or_unknown_service_type_is_an_invalid_argument() {
    let network = ZitiNetwork::from_env();
    let management = Management::start(&network, "1m", "30s");
    let mut client = management.client().await;
    for service_type in [ServiceType::Unspecified as i32, 42] {
        let status =
            client.request_service_identity(RequestServiceIdentityRequest { service_type }).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "service_type {service_type}: {status:?}");
    }
    // Counted in the metrics, beside a successful call.
    let issued = request_gateway(&mut client).await.expect("a gateway identity");
    release(&mut client, &issued.ziti_identity_id).await.expect("release");
    let (status, metrics) = http_get(management.admin, "/metrics").expect("metrics");
    assert_eq!(status, 200);
    for line in [
        r#"zitimgmt_requests_total{method="RequestServiceIdentity",code="INVALID_ARGUMENT",principal="anonymous"} 2"#,
        r#"zitimgmt_requests_total{method="RequestServiceIdentity",code="OK",principal="anonymous"} 1"#,
        r#"zitimgmt_requests_total{method="ReleaseServiceIdentity",code="OK",principal="anonymous"} 1"#,
        r#"zitimgmt_request_duration_seconds_count{method="RequestServiceIdentity"} 3"#,
    ] {
        assert!(metrics.contains(line), "missing {line} in:\n{metrics}");
    }
    assert!(metrics.contains("zitimgmt_leases_held "), "{metrics}");
    assert_eq!(http_get(management.admin, "/readyz"), Some((200, "ready".to_owned())));
    assert_eq!(http_get(management.admin, "/healthz"), Some((200, "ok".to_owned())));
}

#[tokio::test(flavor = "multi_thread")]
async fn identities_it_did_not_issue_can_be_resolved_but_not_extended_or_released() {
    let network = ZitiNetwork::from_env();
    let management = Management::start(&network, "1m", "30s");
    let mut client = management.client().await;
    let controller = ControllerView::login(&network).await;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let (name, external) = (format!("mgmt-test-plain-{suffix}"), format!("alice-{suffix}@example.com"));
    let id = controller.create_identity(&name, &external, &["gateway-clients"]).await;

    let resolved = client
        .resolve_identity(ResolveIdentityRequest { ziti_identity_id: id.clone(), ziti_identity_name: String::new() })
        .await
        .expect("resolve")
        .into_inner();
    assert_eq!((resolved.name.as_str(), resolved.principal.as_str()), (name.as_str(), external.as_str()));
    assert_eq!(resolved.external_id, external);
    assert_eq!(resolved.role_attributes, ["gateway-clients"]);

    assert_eq!(extend(&mut client, &id).await.expect_err("not a lease").code(), Code::NotFound);
    assert_eq!(release(&mut client, &id).await.expect_err("not a lease").code(), Code::NotFound);
    assert!(controller.identity(&id).await.is_some(), "ziti-management deleted an identity it does not manage");
    controller.delete(&id).await;

    for (id, name) in [("no-such-identity", ""), ("", "no-such-name"), ("a/b?c", ""), ("", "quote\" and \\")] {
        let request = ResolveIdentityRequest { ziti_identity_id: id.into(), ziti_identity_name: name.into() };
        let status = client.resolve_identity(request).await.expect_err("unknown");
        assert_eq!(status.code(), Code::NotFound, "{id:?}/{name:?}: {status:?}");
    }
    let empty = ResolveIdentityRequest::default();
    assert_eq!(client.resolve_identity(empty).await.expect_err("empty").code(), Code::InvalidArgument);
    assert_eq!(extend(&mut client, "").await.expect_err("empty").code(), Code::NotFound);
}

#[test]
fn a_wrong_admin_password_stops_the_start_quickly_and_clearly() {
    let network = ZitiNetwork::from_env();
    let password = "wrong-Pa55word-xyz";
    let mut env = base_env(&network, free_addr(), free_addr());
    env.retain(|(name, _)| name != "ZITI_MGMT_ADMIN_PASSWORD");
    env.push(("ZITI_MGMT_ADMIN_PASSWORD".into(), password.into()));
    let started = Instant::now();
    let output = Command::new(BINARY).env_clear().envs(env).output().expect("run ziti-management");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(stderr.contains("rejected the admin credentials of user \"admin\""), "stderr: {stderr}");
    assert!(!stderr.contains(password), "the password was printed: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

#[test]
fn a_bad_value_exits_2_naming_the_variable_without_echoing_the_password() {
    let network = ZitiNetwork::from_env();
    let mut env = base_env(&network, free_addr(), free_addr());
    env.push(("ZITI_MGMT_LEASE_TTL".into(), "soon".into()));
    let output = Command::new(BINARY).env_clear().envs(env).output().expect("run ziti-management");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("ZITI_MGMT_LEASE_TTL=\"soon\""), "stderr: {stderr}");
    assert!(!stderr.contains(&network.admin_password), "stderr: {stderr}");
}

/// Decided and documented: a controller that cannot be reached does not stop the
/// start (it may come up later). The server runs, `/readyz` answers 503 naming the
/// problem, and calls answer UNAVAILABLE (promptly, so callers retry).
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_controller_means_not_ready_and_unavailable() {
    let network = ZitiNetwork::from_env();
    let (grpc, admin) = (free_addr(), free_addr());
    let mut env = base_env(&network, grpc, admin);
    let closed = free_addr();
    env.retain(|(name, _)| name != "ZITI_MGMT_CONTROLLER_URL");
    env.push(("ZITI_MGMT_CONTROLLER_URL".into(), format!("https://{closed}")));
    let management = Management::spawn(&env, grpc, admin);
    let deadline = Instant::now() + Duration::from_secs(15);
    let readyz = loop {
        if let Some(answer) = http_get(admin, "/readyz") {
            break answer;
        }
        assert!(Instant::now() < deadline, "admin listener never came up; log:\n{}", management.logs());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(readyz.0, 503, "{readyz:?}");
    // Generic for whoever asks; the details are in the log.
    assert_eq!(readyz.1, "not ready: the controller cannot be reached or used (details in the log)");
    assert_eq!(http_get(admin, "/healthz"), Some((200, "ok".to_owned())));

    let mut client = management.client().await;
    let started = Instant::now();
    let status = request_gateway(&mut client).await.expect_err("no controller");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert_eq!(status.message(), "the controller is unavailable; try again later", "details reach the caller");
    let logs = management.logs();
    assert!(logs.contains("the controller cannot be reached (admin login)"), "details missing from the log:\n{logs}");
    assert_eq!(extend(&mut client, "some-id").await.expect_err("no controller").code(), Code::Unavailable);
}

/// The controller forgets the admin session (it expired, or an operator ended it):
/// the next call logs in again by itself and succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_admin_session_is_renewed_transparently() {
    let network = ZitiNetwork::from_env();
    let controller = ControllerView::login(&network).await;
    // An admin of its own, so that ending its sessions disturbs nobody else.
    let username = format!("mgmt-test-admin-{}", uuid::Uuid::new_v4().simple());
    let password = format!("Pw-{}", uuid::Uuid::new_v4().simple());
    let admin_id = controller.create_admin(&username, &password).await;
    let (grpc, admin) = (free_addr(), free_addr());
    let mut env = base_env(&network, grpc, admin);
    env.retain(|(name, _)| name != "ZITI_MGMT_ADMIN_USER" && name != "ZITI_MGMT_ADMIN_PASSWORD");
    env.push(("ZITI_MGMT_ADMIN_USER".into(), username.clone()));
    env.push(("ZITI_MGMT_ADMIN_PASSWORD".into(), password.clone()));
    let management = Management::spawn(&env, grpc, admin);
    management.wait_ready(Duration::from_secs(20));
    let mut client = management.client().await;

    let first = request_gateway(&mut client).await.expect("before the session is lost");
    assert!(controller.end_api_sessions(&admin_id).await >= 1, "the server had no API session");
    extend(&mut client, &first.ziti_identity_id).await.expect("extension right after the session was ended");
    release(&mut client, &first.ziti_identity_id).await.expect("release");

    let logs = management.logs();
    assert_eq!(logs.matches("logged in to the controller").count(), 2, "expected exactly one re-login:\n{logs}");
    assert!(!logs.contains(&password), "the password reached the logs");
    drop(management);
    controller.delete(&admin_id).await;
}
