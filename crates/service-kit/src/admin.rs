//! The admin listener, for probes and scrapers, on its own address so that it never
//! competes with (or is exposed like) a service's callers:
//!
//! - `GET /healthz`: 200 `ok` while the process runs;
//! - `GET /readyz`: 200 `ready`, or 503 with the service's reason;
//! - `GET /metrics`: the service's OpenMetrics text;
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

/// The media type of the OpenMetrics text served on `/metrics`.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Limits slow or idle admin clients.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A pause after a failed accept, so a persistent error does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// What a service reports on its admin endpoints.
pub trait AdminSource: Send + Sync + 'static {
    /// `Ok` when the service is ready, else the whole body of the 503 answer.
    fn readiness(&self) -> impl Future<Output = Result<(), String>> + Send;

    /// The OpenMetrics text exposition (see [`OPENMETRICS_CONTENT_TYPE`]).
    fn metrics(&self) -> String;
}

/// Serves the admin endpoints on `listener` until `shutdown` resolves, then lets open
/// requests finish for up to `drain` (none with [`Duration::ZERO`]), closes what is
/// left and returns.
pub async fn serve<S: AdminSource>(
    listener: TcpListener,
    source: Arc<S>,
    drain: Duration,
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
                    let source = source.clone();
                    let handler = service_fn(move |request| {
                        let source = source.clone();
                        async move { Ok::<_, Infallible>(route(&request, source.as_ref()).await) }
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
    if !drain.is_zero() && tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::debug!("admin connections still open at shutdown; closing them");
    }
    // Dropping the set aborts whatever is left.
}

async fn route(request: &Request<Incoming>, source: &impl AdminSource) -> Response<Full<Bytes>> {
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
        "/readyz" => match source.readiness().await {
            Ok(()) => text(StatusCode::OK, "ready".into()),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, why),
        },
        _ => {
            let mut response = Response::new(Full::new(Bytes::from(source.metrics())));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS_CONTENT_TYPE));
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;

    use super::*;

    /// Ready when told; metrics are a fixed line.
    #[derive(Default)]
    struct Fake {
        ready: AtomicBool,
    }

    impl AdminSource for Fake {
        async fn readiness(&self) -> Result<(), String> {
            if self.ready.load(Ordering::SeqCst) { Ok(()) } else { Err("not ready: still starting".to_owned()) }
        }

        fn metrics(&self) -> String {
            "requests_total 3\n# EOF\n".to_owned()
        }
    }

    /// Sends one HTTP/1.1 request and returns the whole answer as text.
    async fn ask(addr: std::net::SocketAddr, method: &str, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("{method} {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    async fn start(source: Arc<Fake>) -> (std::net::SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(serve(listener, source, Duration::from_secs(1), stopped));
        (addr, stop, task)
    }

    #[tokio::test]
    async fn answers_probes_and_scrapes() {
        let source = Arc::new(Fake::default());
        let (addr, stop, task) = start(source.clone()).await;

        let health = ask(addr, "GET", "/healthz").await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        assert!(health.ends_with("\r\n\r\nok"), "{health}");

        let not_ready = ask(addr, "GET", "/readyz").await;
        assert!(not_ready.starts_with("HTTP/1.1 503"), "{not_ready}");
        assert!(not_ready.ends_with("\r\n\r\nnot ready: still starting"), "{not_ready}");
        source.ready.store(true, Ordering::SeqCst);
        let ready = ask(addr, "GET", "/readyz").await;
        assert!(ready.starts_with("HTTP/1.1 200") && ready.ends_with("\r\n\r\nready"), "{ready}");

        let metrics = ask(addr, "GET", "/metrics").await;
        assert!(metrics.contains(&format!("content-type: {OPENMETRICS_CONTENT_TYPE}")), "{metrics}");
        assert!(metrics.ends_with("requests_total 3\n# EOF\n"), "{metrics}");

        let _ = stop.send(());
        task.await.unwrap();
    }

    #[tokio::test]
    async fn refuses_other_methods_and_paths() {
        let (addr, stop, task) = start(Arc::new(Fake::default())).await;

        let post = ask(addr, "POST", "/healthz").await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        assert!(post.contains("allow: GET, HEAD"), "{post}");
        let head = ask(addr, "HEAD", "/healthz").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let other = ask(addr, "GET", "/").await;
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");

        let _ = stop.send(());
        task.await.unwrap();
    }

    #[tokio::test]
    async fn stops_listening_at_shutdown() {
        let (addr, stop, task) = start(Arc::new(Fake::default())).await;
        let _ = stop.send(());
        task.await.unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "still listening after shutdown");
    }
}
