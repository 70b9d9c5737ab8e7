//! gRPC over TLS (ZITI_MGMT_TLS_CERT + ZITI_MGMT_TLS_KEY): a client that trusts the
//! server's certificate gets answers; a plaintext client gets none.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a failed step should panic

mod support;

use std::time::Duration;

use support::{Management, base_env, free_addr, private_dir, write_private};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use workspace_tests::network::ZitiNetwork;
use zitimgmt_grpc::proto::ResolveIdentityRequest;
use zitimgmt_grpc::proto::ziti_management_service_client::ZitiManagementServiceClient;

#[tokio::test(flavor = "multi_thread")]
async fn serves_grpc_over_tls_with_the_configured_certificate() {
    let network = ZitiNetwork::from_env();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("self-signed cert");
    let dir = private_dir();
    let cert = write_private(dir.path(), "server.pem", certified.cert.pem().as_bytes());
    let key = write_private(dir.path(), "server.key", certified.signing_key.serialize_pem().as_bytes());
    let (grpc, admin) = (free_addr(), free_addr());
    let mut env = base_env(&network, grpc, admin);
    env.push(("ZITI_MGMT_TLS_CERT".into(), cert.display().to_string()));
    env.push(("ZITI_MGMT_TLS_KEY".into(), key.display().to_string()));
    let management = Management::spawn(&env, grpc, admin);
    management.wait_ready(Duration::from_secs(20));

    let tls =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(certified.cert.pem())).domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{grpc}"))
        .expect("uri")
        .tls_config(tls)
        .expect("tls config")
        .connect()
        .await
        .unwrap_or_else(|err| panic!("TLS connect failed: {err:?}; log:\n{}", management.logs()));
    let mut client = ZitiManagementServiceClient::new(channel);
    // An answer from the service itself: the call crossed TLS.
    let status = client.resolve_identity(ResolveIdentityRequest::default()).await.expect_err("nothing to resolve");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // Without TLS: refused at connect, or the call fails, but it is never served.
    if let Ok(mut plaintext) = ZitiManagementServiceClient::connect(format!("http://{grpc}")).await {
        let refused = plaintext.resolve_identity(ResolveIdentityRequest::default()).await.expect_err("no TLS");
        assert_ne!(refused.code(), Code::InvalidArgument, "a plaintext call was served: {refused:?}");
    }
}
