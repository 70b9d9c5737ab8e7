//! HTTP on one accepted connection, whatever the transport (overlay or plain TCP).
//!
//! Without an upstream every request is answered with a JSON description of its
//! caller (`describe`); with one, every request is reverse-proxied to it with the
//! caller's identity in `x-ziti-*` headers the gateway sets itself (`proxy`). A caller
//! the server refused (see [`RequestContext::refusal`]) gets 403 with a JSON reason
//! for each request, in either mode.
//!
//! # Graceful drain
//!
//! [`serve_connection`] takes a `drain` signal (the domain host's drain token, see
//! `domain::hosting::Host::drain`). When it fires, the connection finishes its
//! in-flight request (idle keep-alive connections close at once, busy ones answer with
//! `connection: close` and then close); the host bounds the wait. A connection that
//! starts after the drain began closes as soon as it has nothing in flight.

mod describe;
mod proxy;
mod target;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use domain::Refusal;
use domain::ports::{Admitted, Connection, ConnectionHandler};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

pub use proxy::UpstreamError;

/// The default deadline for the upstream's response head.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a connection may take to send a request head (also the keep-alive idle
/// limit), so that slow or idle clients cannot hold connections, or a drain, forever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The body of every response: a small fixed body or an upstream's, streamed.
pub type ResponseBody = BoxBody<Bytes, hyper::Error>;

/// Who is on the other end of a connection: admitted and resolved once per
/// connection, by the domain's host, before serving it (a refused caller gets 403 for
/// each request).
pub type RequestContext = Admitted;

/// How requests are forwarded to an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    /// The deadline for the upstream's response head (504 after it).
    pub timeout: Duration,
    /// Client `Host` values (`host` or `host:port`, any case) passed on as
    /// `x-forwarded-host`; for any other, none is sent.
    pub forwarded_hosts: Vec<String>,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self { timeout: DEFAULT_UPSTREAM_TIMEOUT, forwarded_hosts: Vec::new() }
    }
}

/// What answers the requests: the caller description or the reverse proxy. Cheap to
/// clone (one `Arc`); one instance serves every connection, so proxied requests
/// share one upstream connection pool.
#[derive(Clone)]
pub struct HttpService {
    inner: Arc<Inner>,
}

struct Inner {
    mode: Mode,
    metrics: Arc<Metrics>,
}

enum Mode {
    Describe,
    Proxy(Box<proxy::Proxy>),
    /// An upstream URL that [`HttpService::new`] could not use: every request is
    /// refused (the configuration is expected to reject such a URL first).
    Misconfigured,
}

impl std::fmt::Debug for HttpService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match &self.inner.mode {
            Mode::Describe => "describe",
            Mode::Proxy(_) => "proxy",
            Mode::Misconfigured => "misconfigured",
        };
        f.debug_struct("HttpService").field("mode", &mode).finish_non_exhaustive()
    }
}

impl HttpService {
    /// Like [`Self::try_new`], for an upstream URL the configuration already checked.
    /// An unusable one is logged and every request then answers 502, rather than
    /// silently falling back to describing callers.
    pub fn new(upstream: Option<http::Uri>, settings: &ProxySettings, metrics: Arc<Metrics>) -> Self {
        match Self::try_new(upstream, settings, metrics.clone()) {
            Ok(service) => service,
            Err(err) => {
                tracing::error!(%err, "unusable upstream URL; every request will be answered 502");
                Self { inner: Arc::new(Inner { mode: Mode::Misconfigured, metrics }) }
            }
        }
    }

    /// Describes callers without an upstream; reverse-proxies to `upstream` with one.
    /// Only `http://` upstreams are supported (`UpstreamError::Https` otherwise).
    pub fn try_new(
        upstream: Option<http::Uri>,
        settings: &ProxySettings,
        metrics: Arc<Metrics>,
    ) -> Result<Self, UpstreamError> {
        let mode = match upstream {
            None => Mode::Describe,
            Some(uri) => Mode::Proxy(Box::new(proxy::Proxy::new(&uri, settings)?)),
        };
        Ok(Self { inner: Arc::new(Inner { mode, metrics }) })
    }

    /// Answers one request and counts the response by status.
    pub async fn handle(&self, request: Request<Incoming>, context: &RequestContext) -> Response<ResponseBody> {
        let (method, path) = (request.method().clone(), request.uri().path().to_owned());
        let response = match (&context.refusal, &self.inner.mode) {
            (Some(refusal), _) => refused(*refusal),
            (None, Mode::Describe) => describe::describe(&request, context),
            (None, Mode::Proxy(proxy)) => proxy.forward(request, context).await,
            (None, Mode::Misconfigured) => {
                text_response(StatusCode::BAD_GATEWAY, "bad gateway: the upstream is misconfigured")
            }
        };
        self.inner.metrics.record_response(response.status());
        tracing::debug!(
            transport = %context.caller.transport,
            peer = %context.caller.peer,
            %method,
            path,
            status = response.status().as_u16(),
            "request served"
        );
        response
    }
}

/// Serves HTTP/1.1 (keep-alive on) on one accepted connection until the client
/// closes it or it fails; once `drain` resolves, it finishes what is in flight and
/// closes (see the module docs). Connection errors are the client's business and logged at debug.
pub async fn serve_connection<IO>(
    io: IO,
    request_context: RequestContext,
    service: HttpService,
    drain: impl std::future::Future<Output = ()>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let context = Arc::new(request_context);
    let peer = context.caller.peer.clone();
    let transport = context.caller.transport;
    let handler = service_fn(move |request| {
        let (service, context) = (service.clone(), context.clone());
        async move { Ok::<_, Infallible>(service.handle(request, &context).await) }
    });
    let connection = http1::Builder::new()
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), handler);
    tokio::pin!(connection, drain);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = drain.as_mut() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = ended {
        tracing::debug!(%transport, %peer, %err, "connection ended with an error");
    }
}

/// The domain host's [`ConnectionHandler`]: HTTP on each connection.
#[derive(Debug, Clone)]
pub struct HttpHandler {
    service: HttpService,
}

impl HttpHandler {
    pub fn new(service: HttpService) -> Self {
        Self { service }
    }
}

#[async_trait::async_trait]
impl ConnectionHandler for HttpHandler {
    async fn serve(&self, connection: Box<dyn Connection>, admitted: Admitted, drain: CancellationToken) {
        serve_connection(connection, admitted, self.service.clone(), drain.cancelled_owned()).await;
    }
}

/// 403 with `{"error":"forbidden","reason":...}`.
fn refused(refusal: Refusal) -> Response<ResponseBody> {
    let body = serde_json::json!({"error": "forbidden", "reason": refusal.to_string()});
    fixed_response(StatusCode::FORBIDDEN, "application/json", Bytes::from(body.to_string()))
}

/// A small plain-text response (errors): never any internals.
fn text_response(status: StatusCode, body: &'static str) -> Response<ResponseBody> {
    fixed_response(status, "text/plain; charset=utf-8", Bytes::from_static(body.as_bytes()))
}

fn fixed_response(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}
