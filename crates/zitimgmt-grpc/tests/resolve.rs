//! The identity resolver port over real gRPC.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use domain::ports::IdentityResolver;
use domain::{CallerIdentity, Principal, ResolveError};
use rstest::rstest;
use service_kit::causes::with_causes;
use support::{Received, Script, TestServer};
use tonic::{Code, Status};
use zitimgmt_grpc::proto::{ResolveIdentityRequest, ResolveIdentityResponse};

fn caller(id: Option<&str>, name: Option<&str>) -> CallerIdentity {
    CallerIdentity { id: id.map(str::to_owned), name: name.map(str::to_owned), verified: true }
}

fn answer(principal: &str, name: &str) -> ResolveIdentityResponse {
    ResolveIdentityResponse {
        ziti_identity_id: "id-1".to_owned(),
        name: name.to_owned(),
        principal: principal.to_owned(),
        role_attributes: vec!["gateway-clients".to_owned(), "ops".to_owned()],
        external_id: String::new(),
        issued_to: String::new(),
    }
}

#[tokio::test]
async fn resolves_by_id_to_the_principal_with_its_roles() {
    let server =
        TestServer::start(Script::new().resolve_returns(Ok(answer("alice@example.com", "alice-laptop")))).await;

    let principal = server.client().resolve(&caller(Some("id-1"), Some("alice-laptop"))).await.expect("resolved");

    assert_eq!(
        principal,
        Principal {
            name: "alice@example.com".to_owned(),
            role_attributes: vec!["gateway-clients".to_owned(), "ops".to_owned()],
        }
    );
    assert_eq!(
        server.received(),
        vec![Received::Resolve(ResolveIdentityRequest {
            ziti_identity_id: "id-1".to_owned(),
            ziti_identity_name: String::new(),
        })]
    );
}

#[tokio::test]
async fn resolves_by_name_when_there_is_no_id() {
    let server =
        TestServer::start(Script::new().resolve_returns(Ok(answer("alice@example.com", "alice-laptop")))).await;

    server.client().resolve(&caller(None, Some("alice-laptop"))).await.expect("resolved");

    assert_eq!(
        server.received(),
        vec![Received::Resolve(ResolveIdentityRequest {
            ziti_identity_id: String::new(),
            ziti_identity_name: "alice-laptop".to_owned(),
        })]
    );
}

#[tokio::test]
async fn the_principal_falls_back_to_the_name() {
    let server = TestServer::start(Script::new().resolve_returns(Ok(answer("", "alice-laptop")))).await;

    let principal = server.client().resolve(&caller(Some("id-1"), None)).await.expect("resolved");

    assert_eq!(principal.name, "alice-laptop");
}

#[tokio::test]
async fn an_answer_without_principal_or_name_is_unavailable() {
    let server = TestServer::start(Script::new().resolve_returns(Ok(answer("", "")))).await;

    let error = server.client().resolve(&caller(Some("id-1"), None)).await.expect_err("no principal");

    assert!(matches!(error, ResolveError::Unavailable(_)), "{error:?}");
}

#[tokio::test]
async fn a_caller_without_id_or_name_is_unknown_without_asking() {
    let server = TestServer::start(Script::new().resolve_returns(Ok(answer("p", "n")))).await;

    let error = server.client().resolve(&caller(None, Some(""))).await.expect_err("anonymous");

    assert_eq!(error, ResolveError::NotFound);
    assert!(server.received().is_empty());
}

#[rstest]
#[case::not_found(Code::NotFound, true)]
#[case::unavailable(Code::Unavailable, false)]
#[case::permission_denied(Code::PermissionDenied, false)]
#[case::internal(Code::Internal, false)]
#[tokio::test]
async fn failures_are_mapped(#[case] code: Code, #[case] not_found: bool) {
    let server = TestServer::start(Script::new().resolve_returns(Err(Status::new(code, "scripted refusal")))).await;

    let error = server.client().resolve(&caller(Some("id-1"), None)).await.expect_err("failed");

    if not_found {
        assert_eq!(error, ResolveError::NotFound);
    } else {
        let ResolveError::Unavailable(source) = &error else { panic!("not unavailable: {error:?}") };
        let message = with_causes(source.as_ref());
        assert!(message.starts_with("ResolveIdentity: "), "{message}");
        assert!(message.contains("scripted refusal"), "{message}");
    }
}
