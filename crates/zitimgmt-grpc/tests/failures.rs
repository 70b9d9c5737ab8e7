//! ziti-management down, slow, silent or oversized: every failure is an error of the
//! right class, in bounded time, naming the target.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use domain::ports::{IdentityProvider, IdentityResolver};
use domain::{CallerIdentity, IdentityId, ProviderError, ResolveError, ServiceType};
use service_kit::causes::with_causes;
use support::{Script, TestServer, expiry_in, unused_port};
use tokio::net::{TcpListener, TcpSocket};
use zitimgmt_grpc::proto::RequestServiceIdentityResponse;
use zitimgmt_grpc::{ManagementClient, ManagementConfig};

fn config(target: String, connect: Duration, request: Duration) -> ManagementConfig {
    ManagementConfig { connect_timeout: connect, request_timeout: request, ..ManagementConfig::new(target) }
}

#[tokio::test]
async fn a_server_that_is_down_is_transient_naming_the_target_within_the_connect_timeout() {
    let port = unused_port().await;
    let connect_timeout = Duration::from_secs(2);
    // Building the client needs no server: connections are made per call.
    let client = ManagementClient::new(config(format!("127.0.0.1:{port}"), connect_timeout, Duration::from_secs(10)))
        .expect("client");

    let started = Instant::now();
    let error = client.request_identity(ServiceType::Gateway).await.expect_err("down");

    assert!(started.elapsed() < connect_timeout, "took {:?}", started.elapsed());
    let ProviderError::Transient(source) = &error else { panic!("not transient: {error:?}") };
    let message = with_causes(source.as_ref());
    assert!(message.starts_with("RequestServiceIdentity: UNAVAILABLE: "), "{message}");
    assert!(message.contains(&format!("(target http://127.0.0.1:{port})")), "{message}");
    assert!(message.to_lowercase().contains("connection refused"), "{message}");
}

#[tokio::test]
async fn every_rpc_reports_a_server_that_is_down_as_retryable() {
    let port = unused_port().await;
    let client = ManagementClient::new(ManagementConfig::new(format!("127.0.0.1:{port}"))).expect("client");

    let extend = client.extend_lease(&IdentityId::new("lease-1")).await.expect_err("down");
    assert!(matches!(extend, ProviderError::Transient(_)), "{extend:?}");
    let release = client.release(&IdentityId::new("lease-1")).await.expect_err("down");
    assert!(matches!(release, ProviderError::Transient(_)), "{release:?}");
    let caller = CallerIdentity { id: Some("id-1".to_owned()), name: None, verified: true };
    let resolve = client.resolve(&caller).await.expect_err("down");
    let ResolveError::Unavailable(source) = &resolve else { panic!("not unavailable: {resolve:?}") };
    let message = with_causes(source.as_ref());
    assert!(message.contains(&format!("http://127.0.0.1:{port}")), "{message}");
}

#[tokio::test]
async fn a_server_that_comes_up_later_is_reached_by_the_same_client() {
    // Reserve the port without listening, so connections are refused until it listens.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().expect("address")).expect("bind");
    let addr = socket.local_addr().expect("address");
    let client = ManagementClient::new(ManagementConfig::new(addr.to_string())).expect("client");

    let error = client.request_identity(ServiceType::Gateway).await.expect_err("down");
    assert!(matches!(error, ProviderError::Transient(_)), "{error:?}");

    let answer = RequestServiceIdentityResponse {
        ziti_identity_id: "lease-1".to_owned(),
        identity_json: support::identity_json("lease-1"),
        lease_expires_at: None,
    };
    let _server =
        TestServer::start_on(socket.listen(128).expect("listen"), Script::new().request_returns(Ok(answer))).await;
    let identity = client.request_identity(ServiceType::Gateway).await.expect("reached once up");
    assert_eq!(identity.id, IdentityId::new("lease-1"));
}

#[tokio::test]
async fn a_slow_server_is_transient_after_the_request_timeout() {
    let script = Script::new().on_request(|_| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok(RequestServiceIdentityResponse {
            ziti_identity_id: "lease-1".to_owned(),
            identity_json: support::identity_json("lease-1"),
            lease_expires_at: expiry_in(Duration::from_secs(300)),
        })
    });
    let server = TestServer::start(script).await;
    let client = ManagementClient::new(config(server.host_port(), Duration::from_secs(1), Duration::from_millis(300)))
        .expect("client");

    let started = Instant::now();
    let error = client.request_identity(ServiceType::Gateway).await.expect_err("too slow");

    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    let ProviderError::Transient(source) = &error else { panic!("not transient: {error:?}") };
    let message = with_causes(source.as_ref());
    assert!(message.starts_with("RequestServiceIdentity: "), "{message}");
    assert!(message.contains(&server.host_port()), "{message}");
}

#[tokio::test]
async fn a_server_that_accepts_but_never_speaks_is_transient_after_the_request_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let client = ManagementClient::new(config(addr.to_string(), Duration::from_secs(1), Duration::from_millis(300)))
        .expect("client");

    let started = Instant::now();
    let error = client.extend_lease(&IdentityId::new("lease-1")).await.expect_err("silent");

    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert!(matches!(error, ProviderError::Transient(_)), "{error:?}");
    silent.abort();
}

/// An oversized answer is Fatal: it is deterministic (the same server sends the same
/// answer again), and retrying `RequestServiceIdentity` would make the server lease a
/// fresh identity each time that we could never see, let alone release. Stopping with
/// a message that names the limit is what the operator needs.
#[tokio::test]
async fn a_response_above_the_limit_is_a_fatal_error_naming_the_limit() {
    let answer = RequestServiceIdentityResponse {
        ziti_identity_id: "lease-1".to_owned(),
        identity_json: vec![b'x'; 8 * 1024],
        lease_expires_at: None,
    };
    let server = TestServer::start(Script::new().request_returns(Ok(answer))).await;
    let client =
        ManagementClient::new(ManagementConfig { max_response_bytes: 4 * 1024, ..server.config() }).expect("client");

    let error = client.request_identity(ServiceType::Gateway).await.expect_err("too large");

    let ProviderError::Fatal(source) = &error else { panic!("not fatal: {error:?}") };
    let message = with_causes(source.as_ref());
    assert!(message.starts_with("RequestServiceIdentity: OUT_OF_RANGE: "), "{message}");
    assert!(message.contains("4096"), "{message}");
}

#[tokio::test]
async fn a_response_within_the_limit_is_accepted() {
    let answer = RequestServiceIdentityResponse {
        ziti_identity_id: "lease-1".to_owned(),
        identity_json: vec![b'x'; 3 * 1024],
        lease_expires_at: None,
    };
    let server = TestServer::start(Script::new().request_returns(Ok(answer))).await;
    let client =
        ManagementClient::new(ManagementConfig { max_response_bytes: 4 * 1024, ..server.config() }).expect("client");

    let identity = client.request_identity(ServiceType::Gateway).await.expect("within the limit");

    assert_eq!(identity.identity_json.len(), 3 * 1024);
}
