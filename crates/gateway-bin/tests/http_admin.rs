//! The admin listener as a probe or a scraper sees it, over real loopback sockets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use domain::IdentityId;
use domain::ports::{LeaseEvent, LeaseObserver, LossReason};
use domain::{Caller, Transport};
use gateway_bin::admin::serve_admin;
use gateway_bin::http::{HttpService, ProxySettings, RequestContext, serve_connection};
use gateway_bin::metrics::Metrics;
use gateway_bin::readiness::{LeaseTracker, Readiness};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Admin {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

async fn start_admin(readiness: Arc<Readiness>, metrics: Arc<Metrics>) -> Admin {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_admin(listener, readiness, metrics, async {
        stopped.await.ok();
    }));
    Admin { addr, stop, task }
}

async fn request(method: Method, addr: SocketAddr, path: &str) -> (StatusCode, HeaderMap, String) {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let uri = format!("http://{addr}{path}");
    let response = client.request(Request::builder().method(method).uri(uri).body(Full::default()).unwrap()).await;
    let (parts, body) = response.unwrap().into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, String::from_utf8(body.to_vec()).unwrap())
}

async fn get(addr: SocketAddr, path: &str) -> (StatusCode, HeaderMap, String) {
    request(Method::GET, addr, path).await
}

#[tokio::test]
async fn healthz_answers_ok_while_the_process_runs() {
    let admin = start_admin(Arc::new(Readiness::new(true)), Arc::new(Metrics::new())).await;

    let (status, _, body) = get(admin.addr, "/healthz").await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "ok");
}

#[tokio::test]
async fn readyz_names_the_failing_condition_until_serving_with_a_lease() {
    let readiness = Arc::new(Readiness::new(true));
    let metrics = Arc::new(Metrics::new());
    let admin = start_admin(readiness.clone(), metrics.clone()).await;

    let (status, _, body) = get(admin.addr, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.starts_with("not ready: "), "{body}");
    assert!(body.contains("not serving"), "{body}");
    assert!(body.contains("no overlay identity lease held"), "{body}");

    readiness.set_serving(true);
    let (status, _, body) = get(admin.addr, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!body.contains("not serving"), "{body}");
    assert!(body.contains("no overlay identity lease held"), "{body}");

    // The lease keeper reports an enrollment through the tracker.
    let tracker = LeaseTracker::new(readiness.clone(), metrics.clone());
    let lease = IdentityId::new("lease-1");
    tracker.observe(&LeaseEvent::Enrolled { id: lease.clone(), expires_in: Some(Duration::from_secs(300)) });
    let (status, _, body) = get(admin.addr, "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "ready");

    tracker.observe(&LeaseEvent::Lost { id: lease, reason: LossReason::Expired });
    let (status, _, body) = get(admin.addr, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("no overlay identity lease held"), "{body}");
}

#[tokio::test]
async fn readyz_needs_no_lease_with_the_overlay_off() {
    let readiness = Arc::new(Readiness::new(false));
    let admin = start_admin(readiness.clone(), Arc::new(Metrics::new())).await;

    assert_eq!(get(admin.addr, "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
    readiness.set_serving(true);
    assert_eq!(get(admin.addr, "/readyz").await.2, "ready");
}

#[tokio::test]
async fn metrics_count_served_requests_and_lease_events() {
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::new(true));
    let admin = start_admin(readiness.clone(), metrics.clone()).await;
    let tracker = LeaseTracker::new(readiness, metrics.clone());
    tracker
        .observe(&LeaseEvent::Enrolled { id: IdentityId::new("lease-1"), expires_in: Some(Duration::from_secs(300)) });
    tracker
        .observe(&LeaseEvent::Renewed { id: IdentityId::new("lease-1"), expires_in: Some(Duration::from_secs(300)) });

    // Two requests served by the gateway's HTTP on a real connection.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = listener.local_addr().unwrap();
    let service = HttpService::new(None, &ProxySettings::default(), metrics.clone());
    tokio::spawn(async move {
        let (stream, peer) = listener.accept().await.unwrap();
        let caller = Caller { transport: Transport::Tcp, peer: peer.to_string(), identity: None };
        serve_connection(
            stream,
            RequestContext { caller, principal: None, refusal: None },
            service,
            std::future::pending(),
        )
        .await;
    });
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    for path in ["/a", "/b"] {
        let uri = format!("http://{gateway}{path}");
        let response = client.request(Request::get(uri).body(Full::default()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().collect().await.unwrap();
    }

    let (status, headers, body) = get(admin.addr, "/metrics").await;

    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    assert!(body.contains("gateway_http_requests_total{status=\"200\"} 2"), "{body}");
    assert!(body.contains("gateway_enrollments_total 1"), "{body}");
    assert!(body.contains("gateway_lease_renewals_total{result=\"ok\"} 1"), "{body}");
    assert!(body.contains("gateway_lease_renewals_total{result=\"failed\"} 0"), "{body}");
    assert!(body.contains("gateway_lease_lost_total 0"), "{body}");
    assert!(body.contains("gateway_identity_held 1"), "{body}");
    assert!(body.contains("gateway_lease_seconds_remaining 29"), "{body}");
    assert!(body.ends_with("# EOF\n"));
}

#[tokio::test]
async fn unknown_paths_are_404_and_other_methods_405() {
    let admin = start_admin(Arc::new(Readiness::new(false)), Arc::new(Metrics::new())).await;

    assert_eq!(get(admin.addr, "/").await.0, StatusCode::NOT_FOUND);
    assert_eq!(get(admin.addr, "/metrics/extra").await.0, StatusCode::NOT_FOUND);
    let (status, headers, _) = request(Method::POST, admin.addr, "/healthz").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "GET, HEAD");
    assert_eq!(request(Method::HEAD, admin.addr, "/healthz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_admin_listener_stops_when_shutdown_resolves() {
    let admin = start_admin(Arc::new(Readiness::new(false)), Arc::new(Metrics::new())).await;
    assert_eq!(get(admin.addr, "/healthz").await.0, StatusCode::OK);

    admin.stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), admin.task).await.unwrap().unwrap();

    assert!(tokio::net::TcpStream::connect(admin.addr).await.is_err());
}
