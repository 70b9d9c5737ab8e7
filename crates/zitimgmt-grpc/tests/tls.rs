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

/// A client certificate that the test swaps, as the Workload API swaps SVIDs.
#[derive(Debug)]
struct Swappable(std::sync::Mutex<(String, String)>);

impl zitimgmt_grpc::ClientCertificateSource for Swappable {
    fn current(&self) -> Option<zitimgmt_grpc::ClientCertificate> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let (cert, key) = self.0.lock().unwrap().clone();
        Some(zitimgmt_grpc::ClientCertificate {
            chain: CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<_, _>>().unwrap(),
            key: PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        })
    }
}

fn leaf_der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
}

#[tokio::test]
async fn a_rotating_client_certificate_is_presented_anew_on_each_new_connection() {
    let pki = TestPki::new();
    let (first, second) = (pki.client_identity("svid-1"), pki.client_identity("svid-2"));
    let source = std::sync::Arc::new(Swappable(std::sync::Mutex::new(first.clone())));
    let server = TestServer::start_tls(script(), pki.server_tls(true)).await;
    let addr = server.host_port();
    let tls = TlsMaterial::with_ca(pki.ca_pem.clone()).with_client_certificate_source(source.clone());
    let client = client(addr.clone(), tls);

    client.request_identity(ServiceType::Gateway).await.expect("over mTLS with the first certificate");
    *source.0.lock().unwrap() = second.clone();
    // The server goes away and comes back on the same port: the client connects anew.
    drop(server);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let listener = loop {
        match tokio::net::TcpListener::bind(&addr).await {
            Ok(listener) => break listener,
            Err(err) => assert!(std::time::Instant::now() < deadline, "the port stays taken: {err}"),
        }
        tokio::task::yield_now().await;
    };
    let server = TestServer::start_tls_on(listener, script(), pki.server_tls(true)).await;
    let mut leased = client.request_identity(ServiceType::Gateway).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while leased.is_err() && std::time::Instant::now() < deadline {
        leased = client.request_identity(ServiceType::Gateway).await;
    }
    leased.expect("over mTLS with the second certificate");

    let presented: Vec<Vec<u8>> = server.calls().into_iter().filter_map(|call| call.client_certificate).collect();
    assert!(!presented.is_empty(), "the new connection presented a certificate");
    assert!(
        presented.iter().all(|leaf| *leaf == leaf_der(&second.0)),
        "the new connection presents the new certificate"
    );
}

#[tokio::test]
async fn a_fixed_and_a_rotating_client_certificate_together_are_refused() {
    let pki = TestPki::new();
    let source = std::sync::Arc::new(Swappable(std::sync::Mutex::new(pki.client_identity("svid"))));
    let tls = TlsMaterial::with_ca(pki.ca_pem.clone())
        .with_client_identity(pki.client_cert_pem.clone(), pki.client_key_pem.clone())
        .with_client_certificate_source(source);
    let error = ManagementClient::new(ManagementConfig::new("127.0.0.1:1").with_tls(tls)).expect_err("two identities");
    assert!(with_causes(&error).contains("not both"), "{}", with_causes(&error));
}

/// A bearer token that the test replaces, as a projected token file is replaced.
#[derive(Debug)]
struct Token(std::sync::Mutex<String>);

impl zitimgmt_grpc::BearerTokenSource for Token {
    fn token(&self) -> Result<zitimgmt_grpc::Zeroizing<String>, String> {
        Ok(zitimgmt_grpc::Zeroizing::new(self.0.lock().unwrap().clone()))
    }
}

#[tokio::test]
async fn the_bearer_token_is_asked_for_on_every_call() {
    let pki = TestPki::new();
    let server = TestServer::start_tls(script(), pki.server_tls(false)).await;
    let token = std::sync::Arc::new(Token(std::sync::Mutex::new("token-one".to_owned())));
    let mut config = ManagementConfig::new(server.host_port()).with_tls(TlsMaterial::with_ca(pki.ca_pem.clone()));
    config.bearer_token = Some(token.clone());
    let client = ManagementClient::new(config).expect("client");

    client.request_identity(ServiceType::Gateway).await.expect("first call");
    *token.0.lock().unwrap() = "token-two".to_owned();
    client.extend_lease(&IdentityId::new("lease-1")).await.expect("second call");

    let sent: Vec<Option<String>> = server.calls().into_iter().map(|call| call.authorization).collect();
    assert_eq!(sent, [Some("Bearer token-one".to_owned()), Some("Bearer token-two".to_owned())]);
}
