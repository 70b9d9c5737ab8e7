//! The reverse proxy: forwards each request to the upstream with the caller's
//! identity in headers the gateway sets itself, and streams the answer back.
//!
//! Header rules, so that an upstream can trust what it receives. Header names are
//! compared without regard to case and with `_` read as `-`, because CGI-style stacks
//! (WSGI, Rack, PHP) map both to the same `HTTP_*` key:
//! - hop-by-hop headers (RFC 9110 §7.6.1, and those named in `Connection`) are
//!   removed both ways; upgrades (WebSocket) are therefore not proxied;
//! - every client-sent header starting `x-ziti-` is removed, then the gateway sets
//!   `x-ziti-caller-transport` (`tcp`/`overlay`), `x-ziti-caller-verified` (always:
//!   `true` only when the overlay vouched for the caller's identity), and when known
//!   `x-ziti-caller-id`, `x-ziti-caller-name`, `x-ziti-principal` and
//!   `x-ziti-principal-roles` (comma-separated role attributes);
//! - the gateway is the edge, so every client-sent header that names a client address,
//!   a forwarding path or an original URL is removed ([`FORWARDING_PREFIXES`],
//!   [`FORWARDING`]: `forwarded`, `x-forwarded*`, `x-real-ip`, `true-client-ip`, …),
//!   then the gateway sets only what it knows: `x-forwarded-for` is the TCP peer's IP
//!   (absent on the overlay, whose peers are circuits, not addresses),
//!   `x-forwarded-proto` is `http`, and `x-forwarded-host` is the client's `host` only
//!   when that is one of the configured forwarded hosts (`GATEWAY_FORWARDED_HOSTS`),
//!   else absent: a client's `host` is whatever it typed;
//! - `host` becomes the upstream's authority.
//!
//! The path is normalised first (see `target`): a request whose path would leave the
//! upstream's base path, or that spells a separator in a way an upstream might decode,
//! is answered 400 and never forwarded. The query is passed on as it came.
//!
//! Only `http://` upstreams are supported: TLS to the upstream would need a TLS
//! connector and its trust configuration, so an `https://` URL is rejected up front
//! with [`UpstreamError::Https`] rather than failing on the first request.

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::target::{self, PathError};
use super::{ProxySettings, RequestContext, ResponseBody, text_response};

const CALLER_TRANSPORT: HeaderName = HeaderName::from_static("x-ziti-caller-transport");
const CALLER_ID: HeaderName = HeaderName::from_static("x-ziti-caller-id");
const CALLER_NAME: HeaderName = HeaderName::from_static("x-ziti-caller-name");
const CALLER_VERIFIED: HeaderName = HeaderName::from_static("x-ziti-caller-verified");
const PRINCIPAL: HeaderName = HeaderName::from_static("x-ziti-principal");
const PRINCIPAL_ROLES: HeaderName = HeaderName::from_static("x-ziti-principal-roles");
const ZITI_PREFIX: &str = "x-ziti-";

/// Client headers starting with these (after `_` → `-`) are removed: only the
/// gateway says how a request was forwarded.
const FORWARDING_PREFIXES: [&str; 2] = [ZITI_PREFIX, "x-forwarded"];

/// Client headers that name a client address, a forwarding path or an original
/// host or URL, as proxies, CDNs and frameworks read them; all removed.
const FORWARDING: [&str; 17] = [
    "forwarded",
    "forwarded-for",
    "x-real-ip",
    "x-client-ip",
    "client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-cluster-client-ip",
    "x-original-forwarded-for",
    "x-originating-ip",
    "x-remote-ip",
    "x-remote-addr",
    "x-host",
    "x-original-host",
    "x-original-url",
    "x-rewrite-url",
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Hop-by-hop headers: meaningful for one connection only, never forwarded.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Idle upstream connections are kept this long for reuse.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// An upstream URL the proxy cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("https upstreams are not supported; use an http:// URL")]
    Https,
    #[error("the upstream URL must be an absolute http:// URL with a host, e.g. http://127.0.0.1:3000")]
    NotAbsoluteHttp,
    #[error("the upstream URL must not have a query")]
    Query,
}

pub(super) struct Proxy {
    client: Client<HttpConnector, Incoming>,
    authority: Authority,
    /// The upstream URL's path without its trailing `/`, prefixed to every request's.
    base_path: String,
    timeout: Duration,
    /// Client `Host` values passed on as `x-forwarded-host`, lower case.
    forwarded_hosts: Vec<String>,
}

impl Proxy {
    pub(super) fn new(upstream: &Uri, settings: &ProxySettings) -> Result<Self, UpstreamError> {
        match upstream.scheme() {
            Some(scheme) if *scheme == Scheme::HTTP => {}
            Some(scheme) if *scheme == Scheme::HTTPS => return Err(UpstreamError::Https),
            _ => return Err(UpstreamError::NotAbsoluteHttp),
        }
        let authority = upstream.authority().cloned().ok_or(UpstreamError::NotAbsoluteHttp)?;
        if upstream.query().is_some() {
            return Err(UpstreamError::Query);
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(Self {
            client,
            authority,
            base_path: upstream.path().trim_end_matches('/').to_owned(),
            timeout: settings.timeout,
            forwarded_hosts: settings.forwarded_hosts.iter().map(|host| host.to_ascii_lowercase()).collect(),
        })
    }

    /// Forwards `request`; 502 when the upstream cannot be reached or fails, 504 when
    /// its response head takes longer than the timeout. Details go to the log only.
    pub(super) async fn forward(&self, request: Request<Incoming>, context: &RequestContext) -> Response<ResponseBody> {
        if request.method() == Method::CONNECT {
            return text_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        }
        let (mut parts, body) = request.into_parts();
        parts.uri = match self.upstream_uri(&parts.uri) {
            Ok(uri) => uri,
            Err(TargetError::Unsupported) => {
                return text_response(StatusCode::BAD_REQUEST, "bad request: unsupported request target");
            }
            Err(TargetError::Path(err)) => {
                tracing::debug!(target = %parts.uri, %err, "request target refused");
                return text_response(StatusCode::BAD_REQUEST, "bad request: the path is not allowed");
            }
        };
        let forwarded_host = parts.headers.get(header::HOST).filter(|host| self.is_forwarded_host(host)).cloned();
        prepare_request_headers(&mut parts.headers, context, forwarded_host);
        let upstream_request = Request::from_parts(parts, body);

        match tokio::time::timeout(self.timeout, self.client.request(upstream_request)).await {
            Ok(Ok(response)) => {
                let (mut parts, body) = response.into_parts();
                remove_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, body.boxed())
            }
            Ok(Err(err)) => {
                let cause = std::error::Error::source(&err).map(ToString::to_string);
                tracing::warn!(upstream = %self.authority, %err, cause, "upstream request failed");
                text_response(StatusCode::BAD_GATEWAY, "bad gateway: the upstream is unavailable")
            }
            Err(_) => {
                tracing::warn!(upstream = %self.authority, timeout = ?self.timeout, "upstream timed out");
                text_response(StatusCode::GATEWAY_TIMEOUT, "gateway timeout: the upstream did not answer in time")
            }
        }
    }

    /// The upstream's URI for a request target: upstream base path + normalised path +
    /// query as sent.
    fn upstream_uri(&self, target: &Uri) -> Result<Uri, TargetError> {
        let path_and_query = target.path_and_query().filter(|pq| pq.path().starts_with('/'));
        let path_and_query = path_and_query.ok_or(TargetError::Unsupported)?;
        let path = target::normalise(path_and_query.path()).map_err(TargetError::Path)?;
        let query = path_and_query.query().map(|query| format!("?{query}")).unwrap_or_default();
        let path_and_query: PathAndQuery =
            format!("{}{path}{query}", self.base_path).parse().map_err(|_| TargetError::Unsupported)?;
        Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| TargetError::Unsupported)
    }

    fn is_forwarded_host(&self, host: &HeaderValue) -> bool {
        let Ok(host) = host.to_str() else { return false };
        self.forwarded_hosts.iter().any(|allowed| allowed.eq_ignore_ascii_case(host))
    }
}

/// A request target the proxy does not forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetError {
    /// Not a path (`*`, authority-form), or not one that makes a valid URI.
    Unsupported,
    Path(PathError),
}

/// Whether only the gateway may set a header of this name (see the module docs).
fn is_gateway_owned(name: &HeaderName) -> bool {
    // Names are stored lower-case, so this is a case-insensitive match.
    let name = name.as_str().replace('_', "-");
    FORWARDING_PREFIXES.iter().any(|prefix| name.starts_with(prefix)) || FORWARDING.contains(&name.as_str())
}

/// Applies the header rules of the module docs to a request about to be forwarded;
/// `forwarded_host` is the client's `host` when it is an allowed one.
fn prepare_request_headers(headers: &mut HeaderMap, context: &RequestContext, forwarded_host: Option<HeaderValue>) {
    remove_hop_by_hop(headers);
    let forged: Vec<HeaderName> = headers.keys().filter(|name| is_gateway_owned(name)).cloned().collect();
    for name in forged {
        headers.remove(name);
    }
    headers.remove(header::HOST);

    let caller = &context.caller;
    headers.insert(CALLER_TRANSPORT, HeaderValue::from_static(caller.transport.as_str()));
    let verified = caller.identity.as_ref().is_some_and(|identity| identity.verified);
    headers.insert(CALLER_VERIFIED, HeaderValue::from_static(if verified { "true" } else { "false" }));
    if let Some(identity) = &caller.identity {
        set_identity_header(headers, CALLER_ID, identity.id.as_deref());
        set_identity_header(headers, CALLER_NAME, identity.name.as_deref());
    }
    if let Some(principal) = &context.principal {
        set_identity_header(headers, PRINCIPAL, Some(&principal.name));
        if !principal.role_attributes.is_empty() {
            set_identity_header(headers, PRINCIPAL_ROLES, Some(&principal.role_attributes.join(",")));
        }
    }

    if caller.transport == domain::Transport::Tcp
        && let Ok(peer) = caller.peer.parse::<SocketAddr>()
        && let Ok(ip) = HeaderValue::from_str(&peer.ip().to_string())
    {
        headers.insert(X_FORWARDED_FOR, ip);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    if let Some(host) = forwarded_host {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

/// Sets an identity header when the value is known. A value that cannot be a header
/// (control characters) is left out and logged: the upstream then sees an unknown
/// caller, which can grant no more than a known one.
fn set_identity_header(headers: &mut HeaderMap, name: HeaderName, value: Option<&str>) {
    let Some(value) = value else { return };
    match HeaderValue::from_bytes(value.as_bytes()) {
        Ok(value) => {
            headers.insert(name, value);
        }
        Err(_) => tracing::warn!(header = %name, "caller identity value cannot be sent as a header; left out"),
    }
}

/// Removes the hop-by-hop headers, including those the `Connection` header names.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.into_iter().chain(HOP_BY_HOP) {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use domain::{Caller, CallerIdentity, Principal, Transport};

    use super::*;

    fn context(transport: Transport, peer: &str) -> RequestContext {
        RequestContext {
            caller: Caller {
                transport,
                peer: peer.into(),
                identity: (transport == Transport::Overlay).then(|| CallerIdentity {
                    id: Some("id-1".into()),
                    name: Some("alice".into()),
                    verified: false,
                }),
            },
            principal: (transport == Transport::Overlay)
                .then(|| Principal { name: "Alice".into(), role_attributes: vec!["a".into(), "b".into()] }),
            refusal: None,
        }
    }

    #[test]
    fn client_ziti_and_forwarding_headers_are_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert("X-Ziti-Caller-Id", HeaderValue::from_static("admin"));
        headers.insert("x-ziti-anything", HeaderValue::from_static("forged"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        headers.insert("connection", HeaderValue::from_static("keep-alive, x-custom"));
        headers.insert("x-custom", HeaderValue::from_static("1"));
        headers.insert("x-kept", HeaderValue::from_static("1"));

        prepare_request_headers(
            &mut headers,
            &context(Transport::Tcp, "127.0.0.1:5555"),
            Some(HeaderValue::from_static("gw")),
        );

        assert_eq!(headers.get("x-ziti-caller-transport").unwrap(), "tcp");
        assert!(headers.get("x-ziti-caller-id").is_none());
        assert!(headers.get("x-ziti-anything").is_none());
        assert_eq!(headers.get("x-forwarded-for").unwrap(), "127.0.0.1");
        assert_eq!(headers.get("x-forwarded-host").unwrap(), "gw");
        assert!(headers.get("connection").is_none());
        assert!(headers.get("x-custom").is_none());
        assert_eq!(headers.get("x-kept").unwrap(), "1");
    }

    #[test]
    fn overlay_callers_carry_their_identity_and_principal() {
        let mut headers = HeaderMap::new();
        headers.insert("x-ziti-caller-id", HeaderValue::from_static("admin"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        prepare_request_headers(&mut headers, &context(Transport::Overlay, "circuit-1"), None);

        assert_eq!(headers.get("x-ziti-caller-transport").unwrap(), "overlay");
        assert_eq!(headers.get_all("x-ziti-caller-id").iter().collect::<Vec<_>>(), ["id-1"]);
        assert_eq!(headers.get_all("x-ziti-caller-verified").iter().collect::<Vec<_>>(), ["false"]);
        assert_eq!(headers.get("x-ziti-caller-name").unwrap(), "alice");
        assert_eq!(headers.get("x-ziti-principal").unwrap(), "Alice");
        assert_eq!(headers.get("x-ziti-principal-roles").unwrap(), "a,b");
        assert!(headers.get("x-forwarded-for").is_none());
    }

    #[rstest::rstest]
    #[case::underscores("x_ziti_principal")]
    #[case::mixed("X_Ziti-Caller_Verified")]
    #[case::forwarded("Forwarded")]
    #[case::forwarded_port("x-forwarded-port")]
    #[case::forwarded_prefix("x_forwarded_prefix")]
    #[case::forwarded_bare("x-forwarded")]
    #[case::real_ip("x_real_ip")]
    #[case::true_client_ip("true-client-ip")]
    #[case::cloudflare("cf_connecting_ip")]
    #[case::original_url("x-original-url")]
    #[case::rewrite_url("x_rewrite_url")]
    fn client_headers_only_the_gateway_may_set_are_removed(#[case] name: &str) {
        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_static("forged"));
        headers.insert("x-zitiish", HeaderValue::from_static("kept"));
        headers.insert("x-forward", HeaderValue::from_static("kept"));

        prepare_request_headers(&mut headers, &context(Transport::Overlay, "circuit-1"), None);

        assert!(headers.values().all(|value| value != "forged"), "{name} reached the upstream: {headers:?}");
        assert_eq!(headers.get("x-zitiish").unwrap(), "kept");
        assert_eq!(headers.get("x-forward").unwrap(), "kept");
    }

    #[test]
    fn a_tcp_caller_is_sent_as_unverified() {
        let mut headers = HeaderMap::new();
        headers.insert("x-ziti-caller-verified", HeaderValue::from_static("true"));
        prepare_request_headers(&mut headers, &context(Transport::Tcp, "127.0.0.1:5555"), None);
        assert_eq!(headers.get_all("x-ziti-caller-verified").iter().collect::<Vec<_>>(), ["false"]);
    }

    #[tokio::test]
    async fn x_forwarded_host_is_the_clients_host_only_when_allowed() {
        let settings = ProxySettings { forwarded_hosts: vec!["API.example.com".into()], ..ProxySettings::default() };
        let proxy = Proxy::new(&"http://up:3000".parse().unwrap(), &settings).unwrap();
        assert!(proxy.is_forwarded_host(&HeaderValue::from_static("api.EXAMPLE.com")));
        assert!(!proxy.is_forwarded_host(&HeaderValue::from_static("api.example.com:8080")));
        assert!(!proxy.is_forwarded_host(&HeaderValue::from_static("evil.example")));
        let proxy = Proxy::new(&"http://up:3000".parse().unwrap(), &ProxySettings::default()).unwrap();
        assert!(!proxy.is_forwarded_host(&HeaderValue::from_static("api.example.com")));
    }

    #[tokio::test]
    async fn upstream_urls_are_checked_and_paths_joined() {
        let settings = ProxySettings { timeout: Duration::from_secs(1), ..ProxySettings::default() };
        assert_eq!(Proxy::new(&"https://up:443".parse().unwrap(), &settings).err(), Some(UpstreamError::Https));
        assert_eq!(Proxy::new(&"/relative".parse().unwrap(), &settings).err(), Some(UpstreamError::NotAbsoluteHttp));
        assert_eq!(Proxy::new(&"http://up/?q=1".parse().unwrap(), &settings).err(), Some(UpstreamError::Query));

        let proxy = Proxy::new(&"http://up:3000/api/".parse().unwrap(), &settings).unwrap();
        let uri = proxy.upstream_uri(&"/x/y?z=1".parse().unwrap()).unwrap();
        assert_eq!(uri, "http://up:3000/api/x/y?z=1");
        let uri = proxy.upstream_uri(&"/x/./%2e%2e/y?a=/../b&c=%2e%2e".parse().unwrap()).unwrap();
        assert_eq!(uri, "http://up:3000/api/y?a=/../b&c=%2e%2e", "the path is normalised, the query kept");
        assert_eq!(proxy.upstream_uri(&"/../private".parse().unwrap()), Err(TargetError::Path(PathError::Escapes)));
        let proxy = Proxy::new(&"http://up:3000".parse().unwrap(), &settings).unwrap();
        assert_eq!(proxy.upstream_uri(&"http://other/x?z".parse().unwrap()).unwrap(), "http://up:3000/x?z");
        assert_eq!(proxy.upstream_uri(&"*".parse().unwrap()), Err(TargetError::Unsupported));
    }
}
