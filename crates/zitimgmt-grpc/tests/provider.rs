//! The identity provider port over real gRPC: what the gateway gets from ziti-management
//! and how each server answer is classified.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use domain::ports::IdentityProvider;
use domain::{IdentityId, ProviderError, ServiceType};
use rstest::rstest;
use service_kit::causes::with_causes;
use support::{Received, Script, TestServer, expiry_in, identity_json};
use tonic::{Code, Status};
use zitimgmt_grpc::proto::{
    ExtendIdentityLeaseRequest, ExtendIdentityLeaseResponse, ReleaseServiceIdentityRequest,
    ReleaseServiceIdentityResponse, RequestServiceIdentityRequest, RequestServiceIdentityResponse,
    ServiceType as ProtoServiceType,
};

const TTL: Duration = Duration::from_secs(300);

fn leased(id: &str, expires: Option<Duration>) -> RequestServiceIdentityResponse {
    RequestServiceIdentityResponse {
        ziti_identity_id: id.to_owned(),
        identity_json: identity_json(id),
        lease_expires_at: expires.and_then(expiry_in),
    }
}

fn assert_close_to(actual: Option<Duration>, expected: Duration) {
    let actual = actual.expect("an expiry");
    assert!(actual <= expected && actual >= expected - Duration::from_secs(5), "expires in {actual:?}");
}

#[tokio::test]
async fn request_identity_returns_exactly_what_the_server_sent() {
    let server = TestServer::start(Script::new().request_returns(Ok(leased("lease-1", Some(TTL))))).await;

    let identity = server.client().request_identity(ServiceType::Gateway).await.expect("leased");

    assert_eq!(identity.id, IdentityId::new("lease-1"));
    assert_eq!(identity.identity_json.as_bytes(), identity_json("lease-1").as_slice());
    assert_close_to(identity.expires_in, TTL);
    assert_eq!(
        server.received(),
        vec![Received::Request(RequestServiceIdentityRequest { service_type: ProtoServiceType::Gateway.into() })]
    );
}

#[tokio::test]
async fn the_deadline_is_sent_to_the_server() {
    let server = TestServer::start(Script::new().request_returns(Ok(leased("lease-1", None)))).await;

    server.client().request_identity(ServiceType::Gateway).await.expect("leased");

    let calls = server.calls();
    assert!(calls[0].grpc_timeout.is_some(), "{calls:?}");
}

#[tokio::test]
async fn an_identity_without_expiry_has_none() {
    let server = TestServer::start(Script::new().request_returns(Ok(leased("lease-1", None)))).await;

    let identity = server.client().request_identity(ServiceType::Gateway).await.expect("leased");

    assert_eq!(identity.expires_in, None);
}

#[tokio::test]
async fn an_expiry_in_the_past_is_zero() {
    let mut answer = leased("lease-1", None);
    answer.lease_expires_at = Some(prost_types::Timestamp { seconds: 1_000, nanos: 0 });
    let server = TestServer::start(Script::new().request_returns(Ok(answer))).await;

    let identity = server.client().request_identity(ServiceType::Gateway).await.expect("leased");

    assert_eq!(identity.expires_in, Some(Duration::ZERO));
}

#[tokio::test]
async fn an_empty_identity_json_is_handed_on_with_its_lease_id_so_the_lease_can_be_released() {
    let answer = RequestServiceIdentityResponse { identity_json: Vec::new(), ..leased("lease-1", Some(TTL)) };
    let server = TestServer::start(Script::new().request_returns(Ok(answer))).await;

    let identity = server.client().request_identity(ServiceType::Gateway).await.expect("handed on");

    assert_eq!(identity.id.as_str(), "lease-1");
    assert!(identity.identity_json.is_empty());
}

#[tokio::test]
async fn an_empty_identity_id_is_fatal_naming_the_field_without_echoing_the_json() {
    let answer = RequestServiceIdentityResponse { ziti_identity_id: String::new(), ..leased("lease-1", Some(TTL)) };
    let server = TestServer::start(Script::new().request_returns(Ok(answer))).await;

    let error = server.client().request_identity(ServiceType::Gateway).await.expect_err("refused");

    let ProviderError::Fatal(source) = &error else { panic!("not fatal: {error:?}") };
    let message = with_causes(source.as_ref());
    assert!(message.contains("ziti_identity_id"), "{message}");
    assert!(!message.contains("KEY-lease-1"), "the secret leaked: {message}");
}

#[rstest]
#[case::unavailable(Code::Unavailable, "transient")]
#[case::resource_exhausted(Code::ResourceExhausted, "transient")]
#[case::internal(Code::Internal, "transient")]
#[case::not_found(Code::NotFound, "fatal")]
#[case::permission_denied(Code::PermissionDenied, "fatal")]
#[case::invalid_argument(Code::InvalidArgument, "fatal")]
#[case::unauthenticated(Code::Unauthenticated, "fatal")]
#[tokio::test]
async fn request_failures_are_classified(#[case] code: Code, #[case] expected: &str) {
    let server = TestServer::start(Script::new().request_returns(Err(Status::new(code, "scripted refusal")))).await;

    let error = server.client().request_identity(ServiceType::Gateway).await.expect_err("failed");

    assert_eq!(kind(&error), expected, "{error:?}");
    let message = with_causes(&error);
    assert!(message.contains("RequestServiceIdentity"), "{message}");
    assert!(message.contains("scripted refusal"), "{message}");
    assert!(message.contains(&format!("http://{}", server.host_port())), "{message}");
}

#[tokio::test]
async fn extend_sends_the_id_and_returns_the_new_expiry() {
    let server = TestServer::start(
        Script::new().extend_returns(Ok(ExtendIdentityLeaseResponse { lease_expires_at: expiry_in(TTL) })),
    )
    .await;

    let expires_in = server.client().extend_lease(&IdentityId::new("lease-7")).await.expect("extended").expires_in;

    assert_close_to(expires_in, TTL);
    assert_eq!(
        server.received(),
        vec![Received::Extend(ExtendIdentityLeaseRequest { ziti_identity_id: "lease-7".to_owned() })]
    );
}

#[tokio::test]
async fn extend_without_expiry_returns_none() {
    let server =
        TestServer::start(Script::new().extend_returns(Ok(ExtendIdentityLeaseResponse { lease_expires_at: None })))
            .await;

    let expires_in = server.client().extend_lease(&IdentityId::new("lease-7")).await.expect("extended").expires_in;

    assert_eq!(expires_in, None);
}

#[rstest]
#[case::not_found(Code::NotFound, "lease gone")]
#[case::unavailable(Code::Unavailable, "transient")]
#[case::deadline_exceeded(Code::DeadlineExceeded, "transient")]
#[case::aborted(Code::Aborted, "transient")]
#[case::permission_denied(Code::PermissionDenied, "fatal")]
#[case::failed_precondition(Code::FailedPrecondition, "fatal")]
#[case::unimplemented(Code::Unimplemented, "fatal")]
#[tokio::test]
async fn extend_failures_are_classified(#[case] code: Code, #[case] expected: &str) {
    let server = TestServer::start(Script::new().extend_returns(Err(Status::new(code, "scripted refusal")))).await;

    let error = server.client().extend_lease(&IdentityId::new("lease-7")).await.expect_err("failed");

    assert_eq!(kind(&error), expected, "{error:?}");
    let message = with_causes(&error);
    assert!(message.contains("ExtendIdentityLease"), "{message}");
    assert!(message.contains("scripted refusal"), "{message}");
}

#[tokio::test]
async fn extend_not_found_says_which_rpc_and_code() {
    let server = TestServer::start(Script::new().extend_returns(Err(Status::not_found("no lease lease-7")))).await;

    let error = server.client().extend_lease(&IdentityId::new("lease-7")).await.expect_err("gone");

    assert_eq!(
        error,
        ProviderError::LeaseGone(
            format!("ExtendIdentityLease: NOT_FOUND: no lease lease-7 (target http://{})", server.host_port()).into()
        )
    );
}

#[tokio::test]
async fn release_sends_the_id() {
    let server = TestServer::start(Script::new().release_returns(Ok(ReleaseServiceIdentityResponse {}))).await;

    server.client().release(&IdentityId::new("lease-3")).await.expect("released");

    assert_eq!(
        server.received(),
        vec![Received::Release(ReleaseServiceIdentityRequest { ziti_identity_id: "lease-3".to_owned() })]
    );
}

#[rstest]
#[case::unimplemented(Code::Unimplemented)]
#[case::already_gone(Code::NotFound)]
#[tokio::test]
async fn release_accepts_a_server_that_cannot_or_need_not(#[case] code: Code) {
    let server = TestServer::start(Script::new().release_returns(Err(Status::new(code, "scripted")))).await;

    server.client().release(&IdentityId::new("lease-3")).await.expect("released");
}

#[tokio::test]
async fn release_on_a_server_without_the_rpc_is_ok() {
    // Nothing scripted: the server answers UNIMPLEMENTED, as an older one would.
    let server = TestServer::start(Script::new()).await;

    server.client().release(&IdentityId::new("lease-3")).await.expect("released");
}

#[rstest]
#[case::unavailable(Code::Unavailable, "transient")]
#[case::permission_denied(Code::PermissionDenied, "fatal")]
#[tokio::test]
async fn release_failures_are_classified(#[case] code: Code, #[case] expected: &str) {
    let server = TestServer::start(Script::new().release_returns(Err(Status::new(code, "scripted refusal")))).await;

    let error = server.client().release(&IdentityId::new("lease-3")).await.expect_err("failed");

    assert_eq!(kind(&error), expected, "{error:?}");
    assert!(with_causes(&error).contains("ReleaseServiceIdentity"), "{error:?}");
}

fn kind(error: &ProviderError) -> &'static str {
    match error {
        ProviderError::Transient(_) => "transient",
        ProviderError::LeaseGone(_) => "lease gone",
        ProviderError::Fatal(_) => "fatal",
        _ => "another kind",
    }
}
