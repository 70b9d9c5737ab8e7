//! The gateway's HTTP as a caller and an upstream see it, over real loopback sockets:
//! caller description, reverse proxy and its identity headers, upstream failures,
//! and draining in-flight requests at shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use domain::{Caller, CallerIdentity, Principal, Transport};
use gateway_bin::http::{HttpService, ProxySettings, RequestContext, serve_connection};
use gateway_bin::metrics::Metrics;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::PythonUpstream;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A gateway serving on 127.0.0.1:0 the way the domain's host drives it: each
/// connection tracked and given the drain signal; stop accepting, then drain.
struct Gateway {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    drain: CancellationToken,
    accepting: JoinHandle<TaskTracker>,
}

impl Gateway {
    async fn start(upstream: Option<Uri>, timeout: Duration, context: fn(SocketAddr) -> RequestContext) -> Self {
        let settings = ProxySettings { timeout, ..ProxySettings::default() };
        Self::start_with(upstream, &settings, context).await
    }

    async fn start_with(
        upstream: Option<Uri>,
        settings: &ProxySettings,
        context: fn(SocketAddr) -> RequestContext,
    ) -> Self {
        let metrics = Arc::new(Metrics::new());
        let service = HttpService::try_new(upstream, settings, metrics.clone()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, drain) = (CancellationToken::new(), CancellationToken::new());
        let accepting = tokio::spawn({
            let (stop, drain) = (stop.clone(), drain.clone());
            async move {
                let tracker = TaskTracker::new();
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        accepted = listener.accept() => {
                            let (stream, peer) = accepted.unwrap();
                            let drain = drain.clone().cancelled_owned();
                            tracker.spawn(serve_connection(stream, context(peer), service.clone(), drain));
                        }
                    }
                }
                tracker
            }
        });
        Self { addr, metrics, stop, drain, accepting }
    }

    fn url(&self, path: &str) -> Uri {
        format!("http://{}{path}", self.addr).parse().unwrap()
    }

    /// Stops accepting and drains, within `grace`; true when everything finished.
    async fn shutdown(self, grace: Duration) -> bool {
        self.stop.cancel();
        let tracker = self.accepting.await.unwrap();
        self.drain.cancel();
        tracker.close();
        tokio::time::timeout(grace, tracker.wait()).await.is_ok()
    }
}

fn tcp_caller(peer: SocketAddr) -> RequestContext {
    RequestContext {
        caller: Caller { transport: Transport::Tcp, peer: peer.to_string(), identity: None },
        principal: None,
        refusal: None,
    }
}

fn overlay_caller(_: SocketAddr) -> RequestContext {
    RequestContext {
        caller: Caller {
            transport: Transport::Overlay,
            peer: "circuit-7".to_owned(),
            identity: Some(CallerIdentity {
                id: Some("zid-42".to_owned()),
                name: Some("alice".to_owned()),
                verified: true,
            }),
        },
        principal: Some(Principal { name: "Alice".to_owned(), role_attributes: vec!["readers".to_owned()] }),
        refusal: None,
    }
}

/// What the upstream received.
#[derive(Debug)]
struct Seen {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

/// A real hyper upstream on loopback: records each request; `/slow` answers after
/// `slow`; everything else answers 201 at once.
async fn start_upstream(slow: Duration) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            let handler = hyper::service::service_fn(move |request: Request<Incoming>| {
                let seen = seen.clone();
                async move {
                    let (parts, body) = request.into_parts();
                    let body = body.collect().await.unwrap().to_bytes();
                    let slow_path = parts.uri.path() == "/slow";
                    seen.send(Seen { method: parts.method, uri: parts.uri, headers: parts.headers, body }).ok();
                    if slow_path {
                        tokio::time::sleep(slow).await;
                    }
                    let response = Response::builder()
                        .status(StatusCode::CREATED)
                        .header("x-upstream", "yes")
                        .header("keep-alive", "timeout=5")
                        .body(Full::new(Bytes::from_static(b"upstream says hi")))
                        .unwrap();
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), handler));
        }
    });
    (addr, received)
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

async fn send(request: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, String) {
    let response = client().request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, String::from_utf8(body.to_vec()).unwrap())
}

async fn get(uri: Uri) -> (StatusCode, HeaderMap, String) {
    send(Request::get(uri).body(Full::default()).unwrap()).await
}

#[tokio::test]
async fn without_upstream_a_tcp_caller_is_described_as_json() {
    let gateway = Gateway::start(None, Duration::from_secs(5), tcp_caller).await;

    let (status, headers, body) = get(gateway.url("/hello/world?x=1")).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["transport"], "tcp");
    let peer = json["caller"]["peer"].as_str().unwrap();
    assert!(peer.starts_with("127.0.0.1:"), "{peer}");
    assert_eq!(json["caller"]["id"], serde_json::Value::Null);
    assert_eq!(json["caller"]["name"], serde_json::Value::Null);
    assert_eq!(json["principal"], serde_json::Value::Null);
    assert_eq!(json["method"], "GET");
    assert_eq!(json["path"], "/hello/world");
    assert_eq!(gateway.metrics.http_requests_total(200), 1);
}

#[tokio::test]
async fn proxy_forwards_the_request_with_gateway_set_identity_headers() {
    let (upstream, mut seen) = start_upstream(Duration::ZERO).await;
    let gateway =
        Gateway::start(Some(format!("http://{upstream}").parse().unwrap()), Duration::from_secs(5), tcp_caller).await;

    let request = Request::post(gateway.url("/api/items?sort=desc&limit=2"))
        .header("x-ziti-caller-id", "admin")
        .header("X-Ziti-Caller-Transport", "overlay")
        .header("x-forwarded-for", "10.9.8.7")
        .header("x-app", "kept")
        .body(Full::new(Bytes::from_static(b"{\"name\":\"widget\"}")))
        .unwrap();
    let (status, headers, body) = send(request).await;

    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body, "upstream says hi");
    assert_eq!(headers["x-upstream"], "yes");
    assert!(headers.get("keep-alive").is_none(), "hop-by-hop response headers are not passed back");

    let seen = seen.recv().await.unwrap();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.uri.path(), "/api/items");
    assert_eq!(seen.uri.query(), Some("sort=desc&limit=2"));
    assert_eq!(&seen.body[..], b"{\"name\":\"widget\"}");
    assert_eq!(seen.headers["x-app"], "kept");
    assert_eq!(seen.headers["x-ziti-caller-transport"], "tcp");
    assert!(seen.headers.get("x-ziti-caller-id").is_none(), "a forged caller id must not reach the upstream");
    assert!(seen.headers.get("x-ziti-caller-name").is_none());
    assert!(seen.headers.get("x-ziti-principal").is_none());
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["host"], upstream.to_string());
    assert_eq!(gateway.metrics.http_requests_total(201), 1);
}

#[tokio::test]
async fn proxy_sets_the_overlay_callers_identity_over_a_forged_one() {
    let (upstream, mut seen) = start_upstream(Duration::ZERO).await;
    let gateway =
        Gateway::start(Some(format!("http://{upstream}").parse().unwrap()), Duration::from_secs(5), overlay_caller)
            .await;

    let request = Request::get(gateway.url("/whoami"))
        .header("x-ziti-caller-id", "admin")
        .header("x-ziti-principal", "root")
        .body(Full::default())
        .unwrap();
    let (status, _, _) = send(request).await;

    assert_eq!(status, StatusCode::CREATED);
    let seen = seen.recv().await.unwrap();
    assert_eq!(seen.headers["x-ziti-caller-transport"], "overlay");
    assert_eq!(seen.headers.get_all("x-ziti-caller-id").iter().collect::<Vec<_>>(), ["zid-42"]);
    assert_eq!(seen.headers["x-ziti-caller-name"], "alice");
    assert_eq!(seen.headers["x-ziti-caller-verified"], "true");
    assert_eq!(seen.headers.get_all("x-ziti-principal").iter().collect::<Vec<_>>(), ["Alice"]);
    assert_eq!(seen.headers["x-ziti-principal-roles"], "readers");
    assert!(seen.headers.get("x-forwarded-for").is_none(), "overlay peers have no IP address");
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_without_internals() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let gateway =
        Gateway::start(Some(format!("http://{closed}").parse().unwrap()), Duration::from_secs(5), tcp_caller).await;

    let (status, headers, body) = get(gateway.url("/anything")).await;

    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert_eq!(body, "bad gateway: the upstream is unavailable");
    assert!(!body.contains(&closed.port().to_string()));
    assert_eq!(gateway.metrics.http_requests_total(502), 1);
}

#[tokio::test]
async fn a_slow_upstream_is_a_504_after_the_timeout() {
    let (upstream, _seen) = start_upstream(Duration::from_secs(10)).await;
    let gateway =
        Gateway::start(Some(format!("http://{upstream}").parse().unwrap()), Duration::from_millis(300), tcp_caller)
            .await;

    let started = tokio::time::Instant::now();
    let (status, _, body) = get(gateway.url("/slow")).await;

    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(body, "gateway timeout: the upstream did not answer in time");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(gateway.metrics.http_requests_total(504), 1);
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish_then_stops() {
    let (upstream, mut seen) = start_upstream(Duration::from_millis(700)).await;
    let gateway =
        Gateway::start(Some(format!("http://{upstream}").parse().unwrap()), Duration::from_secs(5), tcp_caller).await;
    let addr = gateway.addr;

    let in_flight = tokio::spawn(get(gateway.url("/slow")));
    seen.recv().await.unwrap(); // the request reached the upstream
    let drained = gateway.shutdown(Duration::from_secs(5)).await;

    assert!(drained, "the drain finished within the grace period");
    let (status, headers, body) = in_flight.await.unwrap();
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body, "upstream says hi");
    assert_eq!(headers.get("connection").map(|value| value.to_str().unwrap()), Some("close"));
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no new connections after shutdown");
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections_at_once() {
    let gateway = Gateway::start(None, Duration::from_secs(5), tcp_caller).await;
    let client = client();
    // Leaves an idle keep-alive connection in the client's pool.
    let response = client.request(Request::get(gateway.url("/")).body(Full::default()).unwrap()).await.unwrap();
    response.into_body().collect().await.unwrap();

    let drained = gateway.shutdown(Duration::from_secs(2)).await;

    assert!(drained, "idle connections do not hold up the drain");
}

/// Client headers that claim an identity or a forwarding path, in both spellings.
const FORGED_HEADERS: &[(&str, &str)] = &[
    ("x_ziti_principal", "admin"),
    ("x_ziti_caller_verified", "true"),
    ("X_Ziti_Caller_Id", "zid-admin"),
    ("x-ziti-principal-roles", "gateway-admins"),
    ("X-Forwarded-Port", "443"),
    ("x-forwarded-prefix", "/admin"),
    ("x-forwarded-ssl", "on"),
    ("x-forwarded-scheme", "https"),
    ("x_forwarded_for", "6.6.6.6"),
    ("x_forwarded_proto", "https"),
    ("x-forwarded-host", "evil.example"),
    ("x-real-ip", "6.6.6.6"),
    ("x_real_ip", "6.6.6.6"),
    ("forwarded", "for=6.6.6.6;proto=https"),
    ("true-client-ip", "6.6.6.6"),
    ("cf_connecting_ip", "6.6.6.6"),
    ("x-client-ip", "6.6.6.6"),
    ("x-cluster-client-ip", "6.6.6.6"),
    ("x-original-forwarded-for", "6.6.6.6"),
];

#[tokio::test]
async fn forged_identity_and_forwarding_headers_in_either_spelling_do_not_reach_a_wsgi_upstream() {
    let upstream = PythonUpstream::wsgi_header_echo();
    let gateway =
        Gateway::start(Some(format!("http://{}/", upstream.addr).parse().unwrap()), Duration::from_secs(5), tcp_caller)
            .await;

    let mut request = Request::get(gateway.url("/whoami")).header("host", "evil.example").header("x-app", "kept");
    for (name, value) in FORGED_HEADERS {
        request = request.header(*name, *value);
    }
    let (status, _, body) = send(request.body(Full::default()).unwrap()).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    let environ: BTreeMap<String, String> = serde_json::from_str(&body).unwrap();
    let expected: BTreeMap<String, String> = [
        ("HTTP_HOST", upstream.addr.to_string().as_str()),
        ("HTTP_X_APP", "kept"),
        ("HTTP_X_ZITI_CALLER_TRANSPORT", "tcp"),
        ("HTTP_X_ZITI_CALLER_VERIFIED", "false"),
        ("HTTP_X_FORWARDED_FOR", "127.0.0.1"),
        ("HTTP_X_FORWARDED_PROTO", "http"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect();
    assert_eq!(environ, expected, "the upstream's environ holds only the gateway's own values");
}

#[tokio::test]
async fn x_forwarded_host_reaches_the_upstream_only_for_a_listed_host() {
    let upstream = PythonUpstream::wsgi_header_echo();
    let settings = ProxySettings { forwarded_hosts: vec!["gw.example".to_owned()], ..ProxySettings::default() };
    let gateway =
        Gateway::start_with(Some(format!("http://{}/", upstream.addr).parse().unwrap()), &settings, tcp_caller).await;

    for (host, forwarded) in [("GW.example", Some("GW.example")), ("evil.example", None), ("gw.example:81", None)] {
        let request = Request::get(gateway.url("/")).header("host", host).header("x-forwarded-host", "forged");
        let (status, _, body) = send(request.body(Full::default()).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let environ: BTreeMap<String, String> = serde_json::from_str(&body).unwrap();
        assert_eq!(environ.get("HTTP_X_FORWARDED_HOST").map(String::as_str), forwarded, "Host: {host}");
    }
}

#[tokio::test]
async fn dot_segments_cannot_leave_the_upstreams_base_path() {
    let files = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(files.path().join("api/docs")).unwrap();
    std::fs::create_dir_all(files.path().join("private")).unwrap();
    std::fs::write(files.path().join("api/docs/readme.txt"), "public readme").unwrap();
    std::fs::write(files.path().join("private/secret.txt"), "top secret").unwrap();
    let log = tempfile::tempdir().unwrap();
    let seen = log.path().join("seen.log");
    let upstream = PythonUpstream::file_server(files.path(), &seen);
    let gateway = Gateway::start(
        Some(format!("http://{}/api/", upstream.addr).parse().unwrap()),
        Duration::from_secs(5),
        tcp_caller,
    )
    .await;

    assert_eq!(support::get(gateway.addr, "/docs/readme.txt").await.unwrap(), (200, "public readme".to_owned()));
    let inside = support::get(gateway.addr, "/docs/./old/../%72eadme.txt?v=1").await.unwrap();
    assert_eq!(inside, (200, "public readme".to_owned()), "dot segments that stay inside are resolved");
    for target in [
        "/../private/secret.txt",
        "/%2e%2e/private/secret.txt",
        "/%2E%2e/private/secret.txt",
        "/.%2e/private/secret.txt",
        "/docs/../../private/secret.txt",
        "/..%2fprivate/secret.txt",
        "/..%5cprivate%5csecret.txt",
    ] {
        let (status, body) = support::get(gateway.addr, target).await.unwrap();
        assert_eq!(status, 400, "{target} answered {status}: {body}");
        assert!(body.starts_with("bad request: "), "{target}: {body}");
    }

    let seen = std::fs::read_to_string(&seen).unwrap();
    assert_eq!(
        seen.lines().collect::<Vec<_>>(),
        ["/api/docs/readme.txt", "/api/docs/readme.txt?v=1"],
        "the upstream saw only targets inside its base path"
    );
    assert_eq!(gateway.metrics.http_requests_total(400), 7);
}
