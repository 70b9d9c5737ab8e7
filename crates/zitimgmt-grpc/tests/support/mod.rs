//! A scripted ziti-management server on loopback (real gRPC, optionally TLS), and
//! test certificates. Each test binary uses a different part of it.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};
use zitimgmt_grpc::proto::ziti_management_service_server::{ZitiManagementService, ZitiManagementServiceServer};
use zitimgmt_grpc::proto::{
    ExtendIdentityLeaseRequest, ExtendIdentityLeaseResponse, ProvisionIdentityRequest, ProvisionIdentityResponse,
    ReleaseServiceIdentityRequest, ReleaseServiceIdentityResponse, RequestServiceIdentityRequest,
    RequestServiceIdentityResponse, ResolveIdentityRequest, ResolveIdentityResponse,
};
use zitimgmt_grpc::{ManagementClient, ManagementConfig};

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Status>> + Send>>;
type Handler<Req, Resp> = Arc<dyn Fn(Req) -> BoxFuture<Resp> + Send + Sync>;

fn handler<Req, Resp, F, Fut>(f: F) -> Handler<Req, Resp>
where
    F: Fn(Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
{
    Arc::new(move |request| Box::pin(f(request)))
}

/// How the server answers each RPC; an unscripted RPC answers UNIMPLEMENTED.
#[derive(Clone, Default)]
pub struct Script {
    resolve: Option<Handler<ResolveIdentityRequest, ResolveIdentityResponse>>,
    request: Option<Handler<RequestServiceIdentityRequest, RequestServiceIdentityResponse>>,
    extend: Option<Handler<ExtendIdentityLeaseRequest, ExtendIdentityLeaseResponse>>,
    release: Option<Handler<ReleaseServiceIdentityRequest, ReleaseServiceIdentityResponse>>,
    provision: Option<Handler<ProvisionIdentityRequest, ProvisionIdentityResponse>>,
}

impl Script {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn on_resolve<F, Fut>(self, f: F) -> Self
    where
        F: Fn(ResolveIdentityRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ResolveIdentityResponse, Status>> + Send + 'static,
    {
        Self { resolve: Some(handler(f)), ..self }
    }

    pub fn on_request<F, Fut>(self, f: F) -> Self
    where
        F: Fn(RequestServiceIdentityRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<RequestServiceIdentityResponse, Status>> + Send + 'static,
    {
        Self { request: Some(handler(f)), ..self }
    }

    pub fn on_extend<F, Fut>(self, f: F) -> Self
    where
        F: Fn(ExtendIdentityLeaseRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ExtendIdentityLeaseResponse, Status>> + Send + 'static,
    {
        Self { extend: Some(handler(f)), ..self }
    }

    pub fn on_release<F, Fut>(self, f: F) -> Self
    where
        F: Fn(ReleaseServiceIdentityRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ReleaseServiceIdentityResponse, Status>> + Send + 'static,
    {
        Self { release: Some(handler(f)), ..self }
    }

    /// `ProvisionIdentity` always gives this answer.
    pub fn provision_returns(self, answer: Result<ProvisionIdentityResponse, Status>) -> Self {
        let handler = handler(move |_| {
            let answer = clone_answer(&answer);
            async move { answer }
        });
        Self { provision: Some(handler), ..self }
    }

    /// `RequestServiceIdentity` always gives this answer.
    pub fn request_returns(self, answer: Result<RequestServiceIdentityResponse, Status>) -> Self {
        self.on_request(move |_| {
            let answer = clone_answer(&answer);
            async move { answer }
        })
    }

    /// `ExtendIdentityLease` always gives this answer.
    pub fn extend_returns(self, answer: Result<ExtendIdentityLeaseResponse, Status>) -> Self {
        self.on_extend(move |_| {
            let answer = clone_answer(&answer);
            async move { answer }
        })
    }

    /// `ReleaseServiceIdentity` always gives this answer.
    pub fn release_returns(self, answer: Result<ReleaseServiceIdentityResponse, Status>) -> Self {
        self.on_release(move |_| {
            let answer = clone_answer(&answer);
            async move { answer }
        })
    }

    /// `ResolveIdentity` always gives this answer.
    pub fn resolve_returns(self, answer: Result<ResolveIdentityResponse, Status>) -> Self {
        self.on_resolve(move |_| {
            let answer = clone_answer(&answer);
            async move { answer }
        })
    }
}

fn clone_answer<T: Clone>(answer: &Result<T, Status>) -> Result<T, Status> {
    match answer {
        Ok(message) => Ok(message.clone()),
        Err(status) => Err(Status::new(status.code(), status.message())),
    }
}

/// A request as the server received it.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    Resolve(ResolveIdentityRequest),
    Request(RequestServiceIdentityRequest),
    Extend(ExtendIdentityLeaseRequest),
    Release(ReleaseServiceIdentityRequest),
    Provision(ProvisionIdentityRequest),
}

/// What the server saw of a request besides its message.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub received: Received,
    /// The `grpc-timeout` header: the deadline the client announced.
    pub grpc_timeout: Option<String>,
    /// The `authorization` header.
    pub authorization: Option<String>,
    /// The client certificate (leaf, DER) of the connection the call came on.
    pub client_certificate: Option<Vec<u8>>,
}

#[derive(Clone)]
struct Service {
    script: Script,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Service {
    fn record<T>(&self, request: &Request<T>, received: Received) {
        let header = |name| request.metadata().get(name).and_then(|value| value.to_str().ok()).map(str::to_owned);
        let client_certificate =
            request.peer_certs().and_then(|certificates| certificates.first().map(|leaf| leaf.to_vec()));
        let call = Call {
            received,
            grpc_timeout: header("grpc-timeout"),
            authorization: header("authorization"),
            client_certificate,
        };
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).push(call);
    }
}

async fn run<Req, Resp>(handler: Option<&Handler<Req, Resp>>, request: Req) -> Result<Response<Resp>, Status> {
    match handler {
        Some(handler) => handler(request).await.map(Response::new),
        None => Err(Status::unimplemented("not scripted")),
    }
}

#[tonic::async_trait]
impl ZitiManagementService for Service {
    async fn resolve_identity(
        &self,
        request: Request<ResolveIdentityRequest>,
    ) -> Result<Response<ResolveIdentityResponse>, Status> {
        self.record(&request, Received::Resolve(request.get_ref().clone()));
        run(self.script.resolve.as_ref(), request.into_inner()).await
    }

    async fn request_service_identity(
        &self,
        request: Request<RequestServiceIdentityRequest>,
    ) -> Result<Response<RequestServiceIdentityResponse>, Status> {
        self.record(&request, Received::Request(*request.get_ref()));
        run(self.script.request.as_ref(), request.into_inner()).await
    }

    async fn extend_identity_lease(
        &self,
        request: Request<ExtendIdentityLeaseRequest>,
    ) -> Result<Response<ExtendIdentityLeaseResponse>, Status> {
        self.record(&request, Received::Extend(request.get_ref().clone()));
        run(self.script.extend.as_ref(), request.into_inner()).await
    }

    async fn release_service_identity(
        &self,
        request: Request<ReleaseServiceIdentityRequest>,
    ) -> Result<Response<ReleaseServiceIdentityResponse>, Status> {
        self.record(&request, Received::Release(request.get_ref().clone()));
        run(self.script.release.as_ref(), request.into_inner()).await
    }

    async fn provision_identity(
        &self,
        request: Request<ProvisionIdentityRequest>,
    ) -> Result<Response<ProvisionIdentityResponse>, Status> {
        self.record(&request, Received::Provision(*request.get_ref()));
        run(self.script.provision.as_ref(), request.into_inner()).await
    }
}

/// A running scripted server; stops when dropped.
pub struct TestServer {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
    stop: Option<oneshot::Sender<()>>,
}

impl TestServer {
    /// A plain-text server on a fresh loopback port.
    pub async fn start(script: Script) -> Self {
        Self::start_with(loopback().await, script, None)
    }

    /// A plain-text server on the given listener.
    pub async fn start_on(listener: TcpListener, script: Script) -> Self {
        Self::start_with(listener, script, None)
    }

    /// A TLS server on a fresh loopback port.
    pub async fn start_tls(script: Script, tls: ServerTlsConfig) -> Self {
        Self::start_with(loopback().await, script, Some(tls))
    }

    pub async fn start_tls_on(listener: TcpListener, script: Script, tls: ServerTlsConfig) -> Self {
        Self::start_with(listener, script, Some(tls))
    }

    fn start_with(listener: TcpListener, script: Script, tls: Option<ServerTlsConfig>) -> Self {
        let addr = listener.local_addr().expect("local address");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let service = Service { script, calls: calls.clone() };
        let mut builder = Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).expect("server TLS config");
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let server = builder.add_service(ZitiManagementServiceServer::new(service)).serve_with_incoming_shutdown(
            TcpListenerStream::new(listener),
            async {
                stopped.await.ok();
            },
        );
        tokio::spawn(async move {
            if let Err(error) = server.await {
                eprintln!("test ziti-management stopped: {error}");
            }
        });
        Self { addr, calls, stop: Some(stop) }
    }

    /// `127.0.0.1:port`, the `host:port` form of a target.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// A plain-text configuration for this server, with short test deadlines.
    pub fn config(&self) -> ManagementConfig {
        ManagementConfig {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(2),
            ..ManagementConfig::new(self.host_port())
        }
    }

    /// A plain-text client of this server.
    pub fn client(&self) -> ManagementClient {
        ManagementClient::new(self.config()).expect("client")
    }

    /// Every call received, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The messages received, in order.
    pub fn received(&self) -> Vec<Received> {
        self.calls().into_iter().map(|call| call.received).collect()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
    }
}

async fn loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.expect("bind loopback")
}

/// A timestamp `ttl` from now, as a server would set `lease_expires_at`.
pub fn expiry_in(ttl: Duration) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp::from(SystemTime::now() + ttl))
}

/// A stand-in identity JSON: its bytes are what the tests compare.
pub fn identity_json(lease: &str) -> Vec<u8> {
    format!(
        r#"{{"ztAPI":"https://ctrl:1280","id":{{"cert":"pem:CERT-{lease}","key":"pem:KEY-{lease}","ca":"pem:CA"}}}}"#
    )
    .into_bytes()
}

/// A port on loopback that nobody listens on (bound, then released).
pub async fn unused_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    listener.local_addr().expect("local address").port()
}

/// A throw-away PKI: a CA, a server certificate for `localhost` and 127.0.0.1, and a
/// client certificate, all PEM.
pub struct TestPki {
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

impl TestPki {
    pub fn new() -> Self {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.distinguished_name.push(DnType::CommonName, "test ziti-management CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().expect("server key");
        let mut server_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("server params");
        server_params.distinguished_name.push(DnType::CommonName, "ziti-management");
        let server_cert = server_params.signed_by(&server_key, &issuer).expect("server certificate");

        let client_key = KeyPair::generate().expect("client key");
        let mut client_params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        client_params.distinguished_name.push(DnType::CommonName, "gateway");
        let client_cert = client_params.signed_by(&client_key, &issuer).expect("client certificate");

        Self {
            ca_pem: ca_cert.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
            issuer,
        }
    }

    /// Another client certificate from this CA, named `name`: (certificate PEM, key PEM).
    pub fn client_identity(&self, name: &str) -> (String, String) {
        let issuer = &self.issuer;
        let key = KeyPair::generate().expect("client key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, issuer).expect("client certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// Server TLS with this PKI's server certificate; with `require_client_cert`, only
    /// clients with a certificate from this CA get through.
    pub fn server_tls(&self, require_client_cert: bool) -> ServerTlsConfig {
        let tls = ServerTlsConfig::new().identity(Identity::from_pem(&self.server_cert_pem, &self.server_key_pem));
        if require_client_cert { tls.client_ca_root(Certificate::from_pem(&self.ca_pem)) } else { tls }
    }
}
