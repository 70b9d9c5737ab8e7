//! TLS and mTLS towards ziti-management, with a throw-away CA.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use domain::ports::IdentityProvider;
use domain::{IdentityId, ProviderError, ServiceType};
use service_kit::causes::with_causes;
use support::{Script, TestPki, TestServer, identity_json};
use zitimgmt_grpc::proto::{ExtendIdentityLeaseResponse, RequestServiceIdentityResponse};
use zitimgmt_grpc::{ManagementClient, ManagementConfig, TlsMaterial};

fn script() -> Script {
    Script::new()
        .request_returns(Ok(RequestServiceIdentityResponse {
            ziti_identity_id: "lease-1".to_owned(),
            identity_json: identity_json("lease-1"),
            lease_expires_at: None,
        }))
        .extend_returns(Ok(ExtendIdentityLeaseResponse { lease_expires_at: None }))
}

fn client(target: String, tls: TlsMaterial) -> ManagementClient {
    ManagementClient::new(ManagementConfig::new(target).with_tls(tls)).expect("client")
}

#[tokio::test]
async fn tls_with_the_servers_ca_works() {
    let pki = TestPki::new();
    let server = TestServer::start_tls(script(), pki.server_tls(false)).await;
    // host:port with TLS material means https; the certificate names 127.0.0.1.
    let client = client(server.host_port(), TlsMaterial::with_ca(pki.ca_pem.clone()));

    let identity = client.request_identity(ServiceType::Gateway).await.expect("leased over TLS");

    assert_eq!(identity.identity_json.as_bytes(), identity_json("lease-1").as_slice());
    assert!(client.target().starts_with("https://"), "{}", client.target());
}

#[tokio::test]
async fn tls_with_an_https_uri_and_a_domain_name_works() {
    let pki = TestPki::new();
    let server = TestServer::start_tls(script(), pki.server_tls(false)).await;
    let tls = TlsMaterial::with_ca(pki.ca_pem.clone()).with_domain_name("localhost");
    let client = client(format!("https://{}", server.host_port()), tls);

    client.extend_lease(&IdentityId::new("lease-1")).await.expect("extended over TLS");
}

#[tokio::test]
async fn tls_with_another_ca_fails_clearly() {
    let pki = TestPki::new();
    let server = TestServer::start_tls(script(), pki.server_tls(false)).await;
    let client = client(server.host_port(), TlsMaterial::with_ca(TestPki::new().ca_pem));

    let error = client.request_identity(ServiceType::Gateway).await.expect_err("untrusted server");

    // A handshake failure is a connection failure: retried, and said so.
    let ProviderError::Transient(source) = &error else { panic!("not transient: {error:?}") };
    let message = with_causes(source.as_ref());
    assert!(message.contains(&format!("https://{}", server.host_port())), "{message}");
    assert!(message.to_lowercase().contains("certificate"), "{message}");
}

#[tokio::test]
async fn tls_checks_the_name_on_the_certificate() {
    let pki = TestPki::new();
    let server = TestServer::start_tls(script(), pki.server_tls(false)).await;
    let tls = TlsMaterial::with_ca(pki.ca_pem.clone()).with_domain_name("not-ziti-management.example");
    let client = client(server.host_port(), tls);

    let error = client.request_identity(ServiceType::Gateway).await.expect_err("wrong name");

    assert!(with_causes(&error).to_lowercase().contains("certificate"), "{error:?}");
}

#[tokio::test]
async fn mtls_with_a_client_certificate_works() {
    let pki = TestPki::new();
    let server = TestServer::start_tls(script(), pki.server_tls(true)).await;
    let tls = TlsMaterial::with_ca(pki.ca_pem.clone())
        .with_client_identity(pki.client_cert_pem.clone(), pki.client_key_pem.clone());
    let client = client(server.host_port(), tls);

    let identity = client.request_identity(ServiceType::Gateway).await.expect("leased over mTLS");

    assert_eq!(identity.id, IdentityId::new("lease-1"));
}

#[tokio::test]
async fn mtls_without_a_client_certificate_fails_clearly() {
    let pki = TestPki::new();
    let server = TestServer::start_tls(script(), pki.server_tls(true)).await;
    let client = client(server.host_port(), TlsMaterial::with_ca(pki.ca_pem.clone()));

    let error = client.request_identity(ServiceType::Gateway).await.expect_err("no client certificate");

    let message = with_causes(&error);
    assert!(message.contains("RequestServiceIdentity"), "{message}");
    assert!(message.to_lowercase().contains("certificate"), "{message}");
    assert!(server.received().is_empty(), "the server answered a client without a certificate");
}

#[tokio::test]
async fn plain_text_to_a_tls_server_fails() {
    let pki = TestPki::new();
    let server = TestServer::start_tls(script(), pki.server_tls(false)).await;

    let error = server.client().request_identity(ServiceType::Gateway).await.expect_err("plain text");

    assert!(matches!(error, ProviderError::Transient(_)), "{error:?}");
}
