//! Wiring: the domain's host and identity lifecycle, with HTTP, the overlay (or plain
//! TCP) transport, readiness and metrics plugged in, from start-up to a clean
//! shutdown. The policy (what happens when, and in which order) is the domain's.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use domain::ServiceType;
use domain::enrollment::EnrollError;
use domain::hosting::{Host, HostPolicy};
use domain::lease::LeasePolicy;
use domain::ports::{IdentityProvider, IdentityResolver, LeaseObserver};
use domain::resolution::CachingResolver;
use domain::service::{Lifecycle, Serving};
use thiserror::Error;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use ziti_transport::{
    IdentityFileError, IdentityFileStore, OverlayBinder, OverlayInstaller, TcpBindError, TcpServiceListener,
    refused_login,
};

use crate::admin::serve_admin;
use crate::config::{Config, IdentitySourceConfig, IdentityStore, OverlayConfig};
use crate::http::{HttpHandler, HttpService, ProxySettings};
use crate::metrics::Metrics;
use crate::readiness::{HostTracker, LeaseTracker, Readiness};

/// Resolved callers kept at most (see `CachingResolver`).
const RESOLVE_CACHE_CAPACITY: usize = 4096;

#[derive(Debug, Error)]
pub enum AppError {
    #[error("cannot listen for admin requests on {addr}")]
    AdminListen { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Listen(#[from] TcpBindError),
    #[error(transparent)]
    IdentityFile(#[from] IdentityFileError),
    #[error("could not obtain an identity from {from} and bind the service with it")]
    Enrollment {
        #[source]
        source: EnrollError,
        from: &'static str,
    },
    #[error(
        "the controller refused the X.509-SVID of {spiffe_id}: it must trust the SVID's trust domain (a verified \
         third-party CA matching the SAN URI) and hold an identity whose external id is {spiffe_id}, on an auth \
         policy that allows certificates"
    )]
    SvidRefused {
        spiffe_id: String,
        #[source]
        source: EnrollError,
    },
    #[error(
        "the controller refused the identity provider's token for {subject}: it must trust the IdP as an external \
         JWT signer (its issuer, JWKS and audience) and hold an identity whose external id is {subject}, on an auth \
         policy that allows that signer"
    )]
    IdpTokenRefused {
        subject: String,
        #[source]
        source: EnrollError,
    },
    #[error(transparent)]
    Stopped(domain::service::ServiceError),
    #[error("the overlay is on but no ziti-management client was given")]
    NoProvider,
    #[error("the gateway task failed: {0}")]
    Task(String),
}

/// What the binary (or a test) plugs in.
#[derive(Clone)]
pub struct Dependencies {
    /// Required with the overlay on.
    pub provider: Option<Arc<dyn IdentityProvider>>,
    pub resolver: Option<Arc<dyn IdentityResolver>>,
    pub overlay: Arc<dyn OverlayBinder>,
}

impl std::fmt::Debug for Dependencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dependencies").finish_non_exhaustive()
    }
}

/// A started gateway. Stop it with [`RunningGateway::shutdown`] or
/// [`RunningGateway::run_until`]; it may also stop by itself on a fatal lease error.
#[derive(Debug)]
pub struct RunningGateway {
    stop: CancellationToken,
    task: JoinHandle<Result<(), AppError>>,
    admin_addr: SocketAddr,
    listen_addr: Option<SocketAddr>,
    identity_store: Option<Arc<IdentityFileStore>>,
}

impl RunningGateway {
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The plain-TCP address served (overlay off).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen_addr
    }

    /// The identity file in use (overlay on).
    pub fn identity_file(&self) -> Option<PathBuf> {
        self.identity_store.as_ref().and_then(|store| store.current_path())
    }

    /// The private directory holding the identity file (overlay on).
    pub fn identity_dir(&self) -> Option<PathBuf> {
        self.identity_store.as_ref().map(|store| store.dir().to_path_buf())
    }

    /// Runs until `signal` resolves (then shuts down) or the gateway stops by itself.
    pub async fn run_until(mut self, signal: impl std::future::Future<Output = ()>) -> Result<(), AppError> {
        tokio::select! {
            () = signal => self.shutdown().await,
            finished = &mut self.task => flatten(finished),
        }
    }

    /// Stops accepting, drains in-flight requests, releases the lease and removes the
    /// identity file: the path SIGTERM and SIGINT take.
    pub async fn shutdown(self) -> Result<(), AppError> {
        let Self { stop, task, .. } = self;
        stop.cancel();
        flatten(task.await)
    }
}

fn flatten(finished: Result<Result<(), AppError>, tokio::task::JoinError>) -> Result<(), AppError> {
    finished.map_err(|err| AppError::Task(err.to_string()))?
}

/// Starts the gateway: admin listener, the domain's host (HTTP on every connection),
/// then (overlay on) the identity's lifecycle, or (overlay off) the TCP listener.
pub async fn start(config: Config, deps: Dependencies) -> Result<RunningGateway, AppError> {
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::new(config.overlay.is_some()));
    let stop = CancellationToken::new();

    let admin = tokio::net::TcpListener::bind(config.admin_addr)
        .await
        .map_err(|source| AppError::AdminListen { addr: config.admin_addr, source })?;
    let admin_addr = admin.local_addr().map_err(|source| AppError::AdminListen { addr: config.admin_addr, source })?;
    let admin_task =
        tokio::spawn(serve_admin(admin, readiness.clone(), metrics.clone(), stop.clone().cancelled_owned()));

    let host = host(&config, &deps, readiness.clone(), metrics.clone());
    let started = match &config.overlay {
        Some(overlay) => start_overlay(overlay, &deps, host.clone(), readiness, metrics, &stop).await,
        None => start_tcp(&config, &host).await,
    };
    let started = match started {
        Ok(started) => started,
        Err(err) => {
            stop.cancel();
            host.drain(config.shutdown_grace).await;
            admin_task.await.ok();
            return Err(err);
        }
    };
    tracing::info!(admin = %admin_addr, listen = ?started.listen_addr, overlay = config.overlay.is_some(), "gateway serving");

    let (listen_addr, identity_store) = (started.listen_addr, started.store.clone());
    let parts = SupervisedParts { stop: stop.clone(), host, admin_task, serving: started.serving };
    let task = tokio::spawn(supervise(parts, config.shutdown_grace));
    Ok(RunningGateway { stop, task, admin_addr, listen_addr, identity_store })
}

/// The domain's host: HTTP on each connection, admission and resolution as
/// configured, readiness and metrics from what it reports.
fn host(config: &Config, deps: &Dependencies, readiness: Arc<Readiness>, metrics: Arc<Metrics>) -> Host {
    let resolver = match (&config.overlay, deps.resolver.clone()) {
        (Some(overlay), Some(resolver)) => Some(Arc::new(CachingResolver::new(
            resolver,
            overlay.resolve_cache_ttl,
            RESOLVE_CACHE_CAPACITY,
            overlay.resolve_max_concurrent,
        )) as Arc<dyn IdentityResolver>),
        _ => None,
    };
    let settings = ProxySettings { timeout: config.upstream_timeout, forwarded_hosts: config.forwarded_hosts.clone() };
    let http = HttpService::new(config.upstream_url.clone(), &settings, metrics.clone());
    let policy = HostPolicy {
        max_connections: config.max_connections,
        unverified_callers: config.overlay.as_ref().map(|overlay| overlay.unverified_callers).unwrap_or_default(),
        resolver,
    };
    Host::new(Arc::new(HttpHandler::new(http)), Arc::new(HostTracker::new(readiness, metrics)), policy)
}

struct Started {
    listen_addr: Option<SocketAddr>,
    /// The identity's lifecycle (overlay on).
    serving: Option<Serving>,
    /// `None` with the overlay off or `GATEWAY_IDENTITY_STORE=memory`.
    store: Option<Arc<IdentityFileStore>>,
}

async fn start_tcp(config: &Config, host: &Host) -> Result<Started, AppError> {
    let listener = TcpServiceListener::bind(config.listen_addr).await?;
    let addr = listener.local_addr().map_err(|source| TcpBindError { addr: config.listen_addr, source })?;
    host.serve(Box::new(listener));
    Ok(Started { listen_addr: Some(addr), serving: None, store: None })
}

async fn start_overlay(
    overlay: &OverlayConfig,
    deps: &Dependencies,
    host: Host,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    stop: &CancellationToken,
) -> Result<Started, AppError> {
    let provider = deps.provider.clone().ok_or(AppError::NoProvider)?;
    let parent = overlay.identity_dir.clone().unwrap_or_else(std::env::temp_dir);
    for erased in IdentityFileStore::erase_abandoned(&parent)?.erased {
        let path = erased.path.display();
        tracing::info!(%path, pid = erased.pid, "erased an identity directory left by a gateway that is no longer running");
    }
    let store = match overlay.identity_store {
        IdentityStore::File => Some(Arc::new(IdentityFileStore::new_in(&parent)?)),
        IdentityStore::Memory => None,
    };
    let installer = Arc::new(
        OverlayInstaller::new(store.clone(), deps.overlay.clone(), overlay.service_name.clone())
            .with_pins(overlay.controller_pins.clone()),
    );
    let observer: Arc<dyn LeaseObserver> = Arc::new(LeaseTracker::new(readiness, metrics));
    let policy = LeasePolicy::new(overlay.renewal_interval);
    let lifecycle = Lifecycle::new(provider, installer, observer, host, ServiceType::Gateway, policy);
    let source = overlay.identity_source.describe();
    tracing::info!(source, "obtaining the gateway's identity");
    let serving = lifecycle.start(overlay.enrollment_timeout, stop).await.map_err(|error| {
        match (&overlay.identity_source, &error) {
            (IdentitySourceConfig::Spiffe(_), EnrollError::Install { id, .. }) if refused_login(&error) => {
                AppError::SvidRefused { spiffe_id: id.to_string(), source: error }
            }
            (IdentitySourceConfig::Jwt(_), EnrollError::Install { id, .. }) if refused_login(&error) => {
                AppError::IdpTokenRefused { subject: id.to_string(), source: error }
            }
            _ => AppError::Enrollment { source: error, from: source },
        }
    })?;
    tracing::info!(lease = %serving.first_lease(), service = %overlay.service_name, "identity enrolled and service bound");
    Ok(Started { listen_addr: None, serving: Some(serving), store })
}

struct SupervisedParts {
    stop: CancellationToken,
    host: Host,
    admin_task: JoinHandle<()>,
    serving: Option<Serving>,
}

/// Runs the domain's lifecycle to its end (a stop request, or the identity source
/// refusing for good), then stops the admin listener last, so that `/readyz` answers
/// 503 while the gateway drains.
async fn supervise(parts: SupervisedParts, grace: Duration) -> Result<(), AppError> {
    let SupervisedParts { stop, host, admin_task, serving } = parts;
    let outcome = match serving {
        Some(serving) => serving.run(stop.clone(), grace).await.map_err(AppError::Stopped),
        None => {
            stop.cancelled().await;
            tracing::info!("shutting down: no new connections, draining in-flight requests");
            host.drain(grace).await;
            Ok(())
        }
    };
    stop.cancel();
    admin_task.await.ok();
    tracing::info!("gateway stopped");
    outcome
}
