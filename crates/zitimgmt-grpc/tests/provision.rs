//! `ManagementClient::provision_identity` over real gRPC: the IdP token goes as the
//! call's bearer token, the answer comes back whole, and refusals keep their code.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use support::{Received, Script, TestServer};
use tonic::{Code, Status};
use zitimgmt_grpc::proto::{ProvisionIdentityRequest, ProvisionIdentityResponse};
use zitimgmt_grpc::{ManagementClient, ProvisionedIdentity};

const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJnYXRld2F5LWlkcCJ9.c2lnbmF0dXJl";

fn answer() -> ProvisionIdentityResponse {
    ProvisionIdentityResponse {
        ziti_identity_id: "id-1".to_owned(),
        name: "idp:gateway-idp".to_owned(),
        external_id: "gateway-idp".to_owned(),
        role_attributes: vec!["gateway-hosts".to_owned()],
        created: true,
    }
}

/// A configured bearer token source that the provisioning call must not use.
#[derive(Debug)]
struct Configured;

impl zitimgmt_grpc::BearerTokenSource for Configured {
    fn token(&self) -> Result<zitimgmt_grpc::Zeroizing<String>, String> {
        Ok(zitimgmt_grpc::Zeroizing::new("configured-token".to_owned()))
    }
}

#[tokio::test]
async fn the_idp_token_is_the_calls_bearer_token_and_the_answer_comes_back_whole() {
    let server = TestServer::start(Script::new().provision_returns(Ok(answer()))).await;
    let mut config = server.config();
    config.bearer_token = Some(std::sync::Arc::new(Configured));
    let client = ManagementClient::new(config).expect("client");

    let provisioned = client.provision_identity(TOKEN).await.expect("provisioned");

    assert_eq!(
        provisioned,
        ProvisionedIdentity {
            ziti_identity_id: "id-1".to_owned(),
            name: "idp:gateway-idp".to_owned(),
            external_id: "gateway-idp".to_owned(),
            role_attributes: vec!["gateway-hosts".to_owned()],
            created: true,
        }
    );
    let calls = server.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].received, Received::Provision(ProvisionIdentityRequest {}));
    assert_eq!(calls[0].authorization.as_deref(), Some(format!("Bearer {TOKEN}").as_str()));
}

#[tokio::test]
async fn a_refusal_keeps_its_code_and_message_and_never_shows_the_token() {
    let refusal = Status::failed_precondition("an identity with external id \"gateway-idp\" exists");
    let server = TestServer::start(Script::new().provision_returns(Err(refusal))).await;

    let error = server.client().provision_identity(TOKEN).await.expect_err("refused");

    assert_eq!(error.status().code(), Code::FailedPrecondition);
    let shown = error.to_string();
    assert!(shown.starts_with("ProvisionIdentity: FAILED_PRECONDITION: an identity with external id"), "{shown}");
    assert!(!shown.contains(TOKEN) && !format!("{error:?}").contains(TOKEN), "{error:?}");
}

#[tokio::test]
async fn an_empty_or_unprintable_token_is_refused_before_any_call() {
    let server = TestServer::start(Script::new().provision_returns(Ok(answer()))).await;
    for token in ["", "  ", "token\nwith-newline"] {
        let error = server.client().provision_identity(token).await.expect_err("refused");
        assert_eq!(error.status().code(), Code::InvalidArgument, "{error}");
        assert!(!error.to_string().contains("with-newline"), "{error}");
    }
    assert!(server.calls().is_empty(), "nothing was sent");
}
