//! Wiring: the domain's enrollment and lease policy, the overlay (or plain TCP)
//! transport and HTTP, from start-up to a clean shutdown.

mod serve;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use domain::ServiceType;
use domain::enrollment::{EnrollError, Enroller};
use domain::lease::{LeaseKeeper, LeasePolicy, StopCause, Stopped};
use domain::ports::{IdentityProvider, IdentityResolver, LeaseObserver};
use domain::resolution::CachingResolver;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use ziti_transport::{
    IdentityFileError, IdentityFileStore, ListenerUpdate, OverlayBinder, OverlayInstaller, TcpBindError,
    TcpServiceListener, refused_login,
};

use crate::admin::serve_admin;
use crate::config::{Config, IdentitySourceConfig, IdentityStore, OverlayConfig};
use crate::metrics::Metrics;
use crate::readiness::{LeaseTracker, Readiness};

use serve::{ServeContext, Server};

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
    #[error("the identity source refused to keep the identity valid, stopping")]
    LeaseRefused(#[source] domain::ProviderError),
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
        let Self { stop, task, identity_store, .. } = self;
        // Let the supervisor hold the last handle, so it removes the directory itself.
        drop(identity_store);
        stop.cancel();
        flatten(task.await)
    }
}

fn flatten(finished: Result<Result<(), AppError>, tokio::task::JoinError>) -> Result<(), AppError> {
    finished.map_err(|err| AppError::Task(err.to_string()))?
}

/// Starts the gateway: admin listener, then (overlay on) enrollment, identity file,
/// bind and lease keeping, or (overlay off) the TCP listener; then serving.
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

    let resolver = match (&config.overlay, deps.resolver.clone()) {
        (Some(overlay), Some(resolver)) => Some(Arc::new(CachingResolver::new(
            resolver,
            overlay.resolve_cache_ttl,
            RESOLVE_CACHE_CAPACITY,
            overlay.resolve_max_concurrent,
        )) as Arc<dyn IdentityResolver>),
        _ => None,
    };
    let context = ServeContext::new(&config, metrics.clone(), resolver);
    let (listeners, incoming) = mpsc::channel(1);
    let server = Server::spawn(incoming, context, readiness.clone(), stop.child_token());

    let started = match &config.overlay {
        Some(overlay) => start_overlay(overlay, &deps, listeners, readiness.clone(), metrics.clone(), &stop).await,
        None => start_tcp(&config, listeners).await.map(|addr| Started { listen_addr: Some(addr), lease: None }),
    };
    let started = match started {
        Ok(started) => started,
        Err(err) => {
            stop.cancel();
            server.stop(config.shutdown_grace).await;
            admin_task.await.ok();
            return Err(err);
        }
    };
    tracing::info!(admin = %admin_addr, listen = ?started.listen_addr, overlay = config.overlay.is_some(), "gateway serving");

    let identity_store = started.lease.as_ref().and_then(|lease| lease.store.clone());
    let task = tokio::spawn(supervise(SupervisedParts {
        stop: stop.clone(),
        server,
        admin_task,
        lease: started.lease,
        readiness,
        shutdown_grace: config.shutdown_grace,
    }));
    Ok(RunningGateway { stop, task, admin_addr, listen_addr: started.listen_addr, identity_store })
}

struct Started {
    listen_addr: Option<SocketAddr>,
    lease: Option<LeaseParts>,
}

struct LeaseParts {
    /// `None` with `GATEWAY_IDENTITY_STORE=memory`.
    store: Option<Arc<IdentityFileStore>>,
    keeper: JoinHandle<Stopped>,
    keeper_stop: CancellationToken,
}

async fn start_tcp(config: &Config, listeners: mpsc::Sender<ListenerUpdate>) -> Result<SocketAddr, AppError> {
    let listener = TcpServiceListener::bind(config.listen_addr).await?;
    let addr = listener.local_addr().map_err(|source| TcpBindError { addr: config.listen_addr, source })?;
    listeners
        .send(ListenerUpdate::Bound(Box::new(listener)))
        .await
        .map_err(|_| AppError::Task("the server stopped before it started".into()))?;
    Ok(addr)
}

async fn start_overlay(
    overlay: &OverlayConfig,
    deps: &Dependencies,
    listeners: mpsc::Sender<ListenerUpdate>,
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
        OverlayInstaller::new(store.clone(), deps.overlay.clone(), overlay.service_name.clone(), listeners)
            .with_pins(overlay.controller_pins.clone()),
    );
    let observer: Arc<dyn LeaseObserver> = Arc::new(LeaseTracker::new(readiness, metrics));
    let policy = LeasePolicy::new(overlay.renewal_interval);
    let enroller =
        Enroller::new(provider.clone(), installer, observer.clone(), ServiceType::Gateway, policy.retry.clone());
    let source = overlay.identity_source.describe();
    tracing::info!(source, "obtaining the gateway's identity");
    let lease = enroller.enroll_at_start(overlay.enrollment_timeout, stop).await.map_err(|error| {
        match (&overlay.identity_source, &error) {
            (IdentitySourceConfig::Spiffe(_), EnrollError::Install { id, .. }) if refused_login(&error) => {
                AppError::SvidRefused { spiffe_id: id.to_string(), source: error }
            }
            _ => AppError::Enrollment { source: error, from: source },
        }
    })?;
    tracing::info!(lease = %lease.id, service = %overlay.service_name, "identity enrolled and service bound");

    // Not a child of `stop`: the lease is ended only after the drain (see `supervise`),
    // so requests in flight at SIGTERM finish on a live identity.
    let keeper_stop = CancellationToken::new();
    let keeper = LeaseKeeper::new(provider, enroller, observer, policy);
    let keeper = tokio::spawn(keeper.run(lease, keeper_stop.clone()));
    Ok(Started { listen_addr: None, lease: Some(LeaseParts { store, keeper, keeper_stop }) })
}

struct SupervisedParts {
    stop: CancellationToken,
    server: Server,
    admin_task: JoinHandle<()>,
    lease: Option<LeaseParts>,
    readiness: Arc<Readiness>,
    shutdown_grace: Duration,
}

/// Waits for a stop request or a fatal lease error, then shuts down in order: stop
/// accepting and drain, then stop the lease keeper (which retires and releases its
/// lease) and remove the identity directory.
async fn supervise(parts: SupervisedParts) -> Result<(), AppError> {
    let SupervisedParts { stop, server, admin_task, lease, readiness, shutdown_grace } = parts;
    let Some(LeaseParts { store, mut keeper, keeper_stop }) = lease else {
        stop.cancelled().await;
        tracing::info!("shutting down: no new connections, draining in-flight requests");
        server.stop(shutdown_grace).await;
        stop.cancel();
        admin_task.await.ok();
        tracing::info!("gateway stopped");
        return Ok(());
    };
    let stopped_by_itself = tokio::select! {
        () = stop.cancelled() => None,
        stopped = &mut keeper => Some(stopped),
    };
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    readiness.set_serving(false);
    server.stop(shutdown_grace).await;
    keeper_stop.cancel();
    let stopped = match stopped_by_itself {
        Some(stopped) => stopped,
        None => keeper.await,
    };
    let outcome = match stopped {
        Ok(Stopped { cause: StopCause::Refused(error), .. }) => Err(AppError::LeaseRefused(error)),
        Ok(Stopped { cause: StopCause::Cancelled, .. }) => Ok(()),
        Err(err) => Err(AppError::Task(err.to_string())),
    };
    // The keeper retired its identity; whatever is left goes now, and the directory with
    // the last handle (a `RunningGateway` dropped without `shutdown` may still hold one).
    if let Some(store) = store {
        store.clear();
        if let Ok(store) = Arc::try_unwrap(store)
            && let Err(err) = store.remove()
        {
            tracing::warn!(err = service_kit::causes::with_causes(&err), "could not remove the identity directory");
        }
    }
    stop.cancel();
    admin_task.await.ok();
    tracing::info!("gateway stopped");
    outcome
}
