//! An in-process ziti-management server on 127.0.0.1.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status};
use zitimgmt_grpc::proto::ziti_management_service_server::{ZitiManagementService, ZitiManagementServiceServer};
use zitimgmt_grpc::proto::{
    ExtendIdentityLeaseRequest, ExtendIdentityLeaseResponse, ProvisionIdentityRequest, ProvisionIdentityResponse,
    ReleaseServiceIdentityRequest, ReleaseServiceIdentityResponse, RequestServiceIdentityRequest,
    RequestServiceIdentityResponse, ResolveIdentityRequest, ResolveIdentityResponse, ServiceType,
};

/// A real OpenZiti identity JSON for `lease` (its own key and a certificate signed by
/// a test CA that names the lease), the same bytes every time in one test process.
pub fn identity_json_for(lease: &str) -> Vec<u8> {
    material_for(lease).0
}

/// The private key PEM of [`identity_json_for`] `lease`, to check it never reaches a log.
pub fn identity_key_for(lease: &str) -> String {
    material_for(lease).1
}

fn material_for(lease: &str) -> (Vec<u8>, String) {
    static MADE: Mutex<Vec<(String, Vec<u8>, String)>> = Mutex::new(Vec::new());
    let mut made = MADE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, json, key)) = made.iter().find(|(name, ..)| name == lease) {
        return (json.clone(), key.clone());
    }
    let (json, key) = make_identity(lease);
    made.push((lease.to_owned(), json.clone(), key.clone()));
    (json, key)
}

/// # Panics
/// When rcgen cannot make the certificates (a test set-up failure).
fn make_identity(lease: &str) -> (Vec<u8>, String) {
    let failed = |err: rcgen::Error| -> ! { panic!("making a test identity: {err}") };
    let ca_key = rcgen::KeyPair::generate().unwrap_or_else(|err| failed(err));
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|err| failed(err));
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "test controller CA");
    let ca = ca_params.self_signed(&ca_key).unwrap_or_else(|err| failed(err));
    let key = rcgen::KeyPair::generate().unwrap_or_else(|err| failed(err));
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|err| failed(err));
    params.distinguished_name.push(rcgen::DnType::CommonName, lease);
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap_or_else(|err| failed(err));
    let json = format!(
        r#"{{"ztAPI":"https://127.0.0.1:1280/edge/client/v1","id":{{"cert":"pem:{}","key":"pem:{}","ca":"pem:{}"}}}}"#,
        escape(&cert.pem()),
        escape(&key.serialize_pem()),
        escape(&ca.pem())
    );
    (json.into_bytes(), key.serialize_pem())
}

fn escape(pem: &str) -> String {
    pem.replace('\r', "").replace('\n', "\\n")
}

/// How the server answers.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Replaces the identity JSON served (e.g. malformed bytes); `None` serves
    /// [`identity_json_for`] the lease.
    pub identity_json: Option<Vec<u8>>,
    /// Reported in `lease_expires_at` when set.
    pub lease_ttl: Option<Duration>,
    /// `RequestServiceIdentity` fails with this code when set.
    pub request_failure: Option<Code>,
    /// Answer `ReleaseServiceIdentity` (otherwise UNIMPLEMENTED).
    pub release: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self { identity_json: None, lease_ttl: Some(Duration::from_secs(300)), request_failure: None, release: true }
    }
}

#[derive(Debug, Default)]
struct State {
    issued: Vec<String>,
    live: HashSet<String>,
    extensions: Vec<(String, Instant)>,
    releases: Vec<String>,
    /// Extensions and releases in the order they arrived, as (`"extend"` or
    /// `"release"`, lease id).
    renewals_and_releases: Vec<(&'static str, String)>,
    resolves: usize,
}

#[derive(Debug, Clone)]
struct Service {
    behaviour: Behaviour,
    state: Arc<Mutex<State>>,
    /// How many `ExtendIdentityLease` calls have arrived, for tests to wait on.
    extended: Arc<watch::Sender<usize>>,
}

impl Service {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn expiry(&self) -> Option<prost_types::Timestamp> {
        self.behaviour.lease_ttl.map(|ttl| prost_types::Timestamp::from(SystemTime::now() + ttl))
    }
}

#[tonic::async_trait]
impl ZitiManagementService for Service {
    async fn resolve_identity(
        &self,
        request: Request<ResolveIdentityRequest>,
    ) -> Result<Response<ResolveIdentityResponse>, Status> {
        let request = request.into_inner();
        self.state().resolves += 1;
        if request.ziti_identity_id.is_empty() && request.ziti_identity_name.is_empty() {
            return Err(Status::invalid_argument("no identity given"));
        }
        let name = if request.ziti_identity_name.is_empty() {
            format!("name-of-{}", request.ziti_identity_id)
        } else {
            request.ziti_identity_name
        };
        Ok(Response::new(ResolveIdentityResponse {
            ziti_identity_id: request.ziti_identity_id,
            principal: format!("principal-{name}"),
            name,
            role_attributes: vec!["gateway-clients".to_owned()],
            external_id: String::new(),
            issued_to: String::new(),
        }))
    }

    async fn request_service_identity(
        &self,
        request: Request<RequestServiceIdentityRequest>,
    ) -> Result<Response<RequestServiceIdentityResponse>, Status> {
        if request.into_inner().service_type != ServiceType::Gateway as i32 {
            return Err(Status::invalid_argument("unknown service type"));
        }
        if let Some(code) = self.behaviour.request_failure {
            return Err(Status::new(code, "scripted failure"));
        }
        let id = {
            let mut state = self.state();
            let id = format!("lease-{}", state.issued.len() + 1);
            state.issued.push(id.clone());
            state.live.insert(id.clone());
            id
        };
        let identity_json = self.behaviour.identity_json.clone().unwrap_or_else(|| identity_json_for(&id));
        Ok(Response::new(RequestServiceIdentityResponse {
            ziti_identity_id: id,
            identity_json,
            lease_expires_at: self.expiry(),
        }))
    }

    async fn extend_identity_lease(
        &self,
        request: Request<ExtendIdentityLeaseRequest>,
    ) -> Result<Response<ExtendIdentityLeaseResponse>, Status> {
        let id = request.into_inner().ziti_identity_id;
        let mut state = self.state();
        state.extensions.push((id.clone(), Instant::now()));
        state.renewals_and_releases.push(("extend", id.clone()));
        self.extended.send_replace(state.extensions.len());
        if !state.live.contains(&id) {
            return Err(Status::not_found(format!("no lease {id}")));
        }
        drop(state);
        Ok(Response::new(ExtendIdentityLeaseResponse { lease_expires_at: self.expiry() }))
    }

    async fn release_service_identity(
        &self,
        request: Request<ReleaseServiceIdentityRequest>,
    ) -> Result<Response<ReleaseServiceIdentityResponse>, Status> {
        if !self.behaviour.release {
            return Err(Status::unimplemented("release is optional"));
        }
        let id = request.into_inner().ziti_identity_id;
        let mut state = self.state();
        state.releases.push(id.clone());
        state.renewals_and_releases.push(("release", id.clone()));
        if state.live.remove(&id) {
            Ok(Response::new(ReleaseServiceIdentityResponse {}))
        } else {
            Err(Status::not_found(format!("no lease {id}")))
        }
    }

    async fn provision_identity(
        &self,
        _request: Request<ProvisionIdentityRequest>,
    ) -> Result<Response<ProvisionIdentityResponse>, Status> {
        Err(Status::unimplemented("this fake does not provision identities"))
    }
}

/// A running in-process ziti-management server.
#[derive(Debug)]
pub struct FakeManagement {
    addr: SocketAddr,
    service: Service,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl FakeManagement {
    pub async fn start(behaviour: Behaviour) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let service = Service { behaviour, state: Arc::default(), extended: Arc::new(watch::Sender::new(0)) };
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .add_service(ZitiManagementServiceServer::new(service.clone()))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                stopped.await.ok();
            });
        let task = tokio::spawn(async move {
            if let Err(err) = server.await {
                eprintln!("fake ziti-management stopped: {err}");
            }
        });
        Ok(Self { addr, service, stop: Some(stop), task })
    }

    /// The gRPC target, as `ZITI_MANAGEMENT_GRPC_TARGET` takes it.
    pub fn target(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Lease ids issued, in order.
    pub fn issued(&self) -> Vec<String> {
        self.service.state().issued.clone()
    }

    /// Every `ExtendIdentityLease` received, with when.
    pub fn extensions(&self) -> Vec<(String, Instant)> {
        self.service.state().extensions.clone()
    }

    /// Waits until at least `count` `ExtendIdentityLease` calls have arrived, or `within`
    /// has passed; returns every one received by then, with when.
    pub async fn wait_for_extensions(&self, count: usize, within: Duration) -> Vec<(String, Instant)> {
        let mut extended = self.service.extended.subscribe();
        // A timeout only means fewer arrived: the caller asserts on what it got.
        let _ = tokio::time::timeout(within, extended.wait_for(|&seen| seen >= count)).await;
        self.extensions()
    }

    /// `ExtendIdentityLease` and `ReleaseServiceIdentity` calls in the order they
    /// arrived: (`"extend"` or `"release"`, lease id).
    pub fn renewals_and_releases(&self) -> Vec<(&'static str, String)> {
        self.service.state().renewals_and_releases.clone()
    }

    /// Lease ids whose release was asked for.
    pub fn releases(&self) -> Vec<String> {
        self.service.state().releases.clone()
    }

    /// Leases that exist (issued, not released or revoked).
    pub fn live(&self) -> Vec<String> {
        let mut live: Vec<String> = self.service.state().live.iter().cloned().collect();
        live.sort();
        live
    }

    pub fn resolves(&self) -> usize {
        self.service.state().resolves
    }

    /// Ends a lease behind the gateway's back (as if it had expired or been deleted).
    pub fn revoke(&self, lease: &str) {
        self.service.state().live.remove(lease);
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        (&mut self.task).await.ok();
    }
}
