//! Building a client: what is refused up front, with a message naming what to fix.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::TestPki;
use zitimgmt_grpc::{ClientError, ConfigError, ManagementClient, ManagementConfig, TlsError, TlsMaterial};

#[tokio::test]
async fn a_server_that_is_down_does_not_stop_construction() {
    let client = ManagementClient::new(ManagementConfig::new("127.0.0.1:1")).expect("lazy");

    assert_eq!(client.target(), "http://127.0.0.1:1");
}

#[tokio::test]
async fn an_invalid_target_is_refused_naming_it() {
    let error = ManagementClient::new(ManagementConfig::new("ziti management")).expect_err("invalid");

    assert!(matches!(error, ClientError::Config(ConfigError::InvalidTarget { .. })), "{error:?}");
    assert!(error.to_string().contains("\"ziti management\""), "{error}");
}

#[tokio::test]
async fn a_plain_http_target_with_tls_is_refused() {
    let pki = TestPki::new();
    let config = ManagementConfig::new("http://mgmt:50051").with_tls(TlsMaterial::with_ca(pki.ca_pem));

    let error = ManagementClient::new(config).expect_err("contradiction");

    assert!(matches!(error, ClientError::Config(ConfigError::PlaintextTargetWithTls { .. })), "{error:?}");
}

#[tokio::test]
async fn a_zero_timeout_is_refused() {
    let config = ManagementConfig { connect_timeout: Duration::ZERO, ..ManagementConfig::new("mgmt:1") };

    let error = ManagementClient::new(config).expect_err("zero");

    assert!(error.to_string().contains("connect_timeout"), "{error}");
}

#[tokio::test]
async fn a_ca_file_without_a_certificate_is_refused() {
    let config = ManagementConfig::new("mgmt:50051").with_tls(TlsMaterial::with_ca("not a certificate"));

    let error = ManagementClient::new(config).expect_err("no CA");

    assert!(
        matches!(&error, ClientError::TlsMaterial { source: TlsError::NoCertificate { what: "CA" }, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("https://mgmt:50051"), "{error}");
}

#[tokio::test]
async fn a_client_certificate_without_its_key_is_refused() {
    let pki = TestPki::new();
    let tls =
        TlsMaterial { client_cert_pem: Some(pki.client_cert_pem.into_bytes()), ..TlsMaterial::with_ca(pki.ca_pem) };

    let error = ManagementClient::new(ManagementConfig::new("mgmt:50051").with_tls(tls)).expect_err("half");

    assert!(
        matches!(
            &error,
            ClientError::TlsMaterial { source: TlsError::HalfClientIdentity { present: "certificate" }, .. }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn an_unreadable_client_key_is_refused_without_showing_it() {
    let pki = TestPki::new();
    let tls = TlsMaterial::with_ca(pki.ca_pem).with_client_identity(pki.client_cert_pem, "SECRET-NOT-A-KEY");

    let error = ManagementClient::new(ManagementConfig::new("mgmt:50051").with_tls(tls)).expect_err("bad key");

    assert!(matches!(&error, ClientError::TlsMaterial { source: TlsError::UnreadableKey, .. }), "{error:?}");
    assert!(!format!("{error} {error:?}").contains("SECRET"), "{error:?}");
}

#[test]
fn outside_a_runtime_is_an_error_not_a_panic() {
    let error = ManagementClient::new(ManagementConfig::new("127.0.0.1:50051")).expect_err("no runtime");

    assert!(matches!(error, ClientError::NoRuntime), "{error:?}");
}

#[tokio::test]
async fn plaintext_to_a_remote_host_is_refused_unless_allowed() {
    let error = ManagementClient::new(ManagementConfig::new("ziti-management:50051")).expect_err("cleartext");
    assert!(matches!(error, ClientError::Config(ConfigError::PlaintextToRemote { .. })), "{error:?}");
    assert!(error.to_string().contains("\"ziti-management:50051\""), "{error}");

    let allowed =
        ManagementConfig { allow_plaintext_to_remote: true, ..ManagementConfig::new("ziti-management:50051") };
    let client = ManagementClient::new(allowed).expect("explicitly allowed");
    assert_eq!(client.target(), "http://ziti-management:50051");
}
