//! The admin listener: liveness, readiness and metrics for probes and scrapers, on
//! its own address so that it never competes with (or is exposed like) callers.
//!
//! - `GET /healthz`: 200 `ok` while the process runs;
//! - `GET /readyz`: 200 `ready`, or 503 `not ready: <every failed condition>`;
//! - `GET /metrics`: the OpenMetrics text of [`Metrics`];
//! - `HEAD` works like `GET`; other methods on these paths get 405, other paths 404.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::metrics::{self, Metrics};
use crate::readiness::Readiness;

/// Open admin requests may finish for this long after shutdown; they are short.
const ADMIN_DRAIN: Duration = Duration::from_secs(1);
/// Limits slow or idle admin clients.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A pause after a failed accept, so a persistent error does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves the admin endpoints on `listener` until `shutdown` resolves, then lets open
/// requests finish (briefly) and returns. Run it for the gateway's whole life and
/// stop it last, so that `/readyz` reports 503 while the gateway drains.
pub async fn serve_admin(
    listener: TcpListener,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let (readiness, metrics) = (readiness.clone(), metrics.clone());
                    let handler = service_fn(move |request| {
                        let response = route(&request, &readiness, &metrics);
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let connection = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), handler);
                    let connection = graceful.watch(connection);
                    connections.spawn(async move {
                        if let Err(err) = connection.await {
                            tracing::debug!(%peer, %err, "admin connection ended with an error");
                        }
                    });
                }
                Err(err) => {
                    tracing::warn!(%err, "admin accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    if tokio::time::timeout(ADMIN_DRAIN, graceful.shutdown()).await.is_err() {
        tracing::debug!("admin connections still open at shutdown; closing them");
    }
    // Dropping the set aborts whatever is left.
}

fn route(request: &Request<Incoming>, readiness: &Readiness, metrics: &Metrics) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if !matches!(path, "/healthz" | "/readyz" | "/metrics") {
        return text(StatusCode::NOT_FOUND, "not found".into());
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed".into());
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok".into()),
        "/readyz" => match readiness.check() {
            Ok(()) => text(StatusCode::OK, "ready".into()),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")),
        },
        _ => {
            let mut response = Response::new(Full::new(Bytes::from(metrics.encode())));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(metrics::CONTENT_TYPE));
            response
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
