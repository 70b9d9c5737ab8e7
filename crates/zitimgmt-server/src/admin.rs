//! The admin listener, for probes and scrapers:
//!
//! - `GET /healthz`: 200 `ok` while the process runs;
//! - `GET /readyz`: 200 `ready` when the controller answers with a valid admin
//!   session (checked live, logging in again if needed), else 503 `not ready: ...`
//!   (why is in the log only);
//! - `GET /metrics`: the OpenMetrics text of [`Metrics`];
//! - other methods on these paths get 405, other paths 404.

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
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::controller::Controller;
use crate::metrics::{self, Metrics};

/// A readiness probe gives the controller this long to answer.
const READINESS_TIMEOUT: Duration = Duration::from_secs(3);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// `/readyz` when the controller cannot be used, whatever the reason.
pub const NOT_READY: &str = "not ready: the controller cannot be reached or used (details in the log)";

/// A pause after a failed accept, so a persistent error does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves the admin endpoints on `listener` until `shutdown` resolves.
pub async fn serve_admin(
    listener: TcpListener,
    controller: Arc<Controller>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let (controller, metrics) = (controller.clone(), metrics.clone());
                    let handler = service_fn(move |request| {
                        let (controller, metrics) = (controller.clone(), metrics.clone());
                        async move { Ok::<_, Infallible>(route(&request, &controller, &metrics).await) }
                    });
                    let connection = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), handler);
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
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // Dropping the set closes what is still open: admin requests are short.
}

async fn route(request: &Request<Incoming>, controller: &Controller, metrics: &Metrics) -> Response<Full<Bytes>> {
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
        "/readyz" => match tokio::time::timeout(READINESS_TIMEOUT, controller.check()).await {
            Ok(Ok(())) => text(StatusCode::OK, "ready".into()),
            Ok(Err(err)) => {
                // The details (admin user, TLS, the controller's messages) are for the log only.
                tracing::warn!(%err, "not ready");
                text(StatusCode::SERVICE_UNAVAILABLE, NOT_READY.into())
            }
            Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "not ready: the controller did not answer in time".into()),
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
