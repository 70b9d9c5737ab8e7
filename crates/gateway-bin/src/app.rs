//! Wiring: the domain's enrollment and lease policy, the identity file, the overlay
//! (or plain TCP) listener and HTTP, from start-up to a clean shutdown.

mod listener;
mod serve;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use domain::enrollment::{EnrollError, Enroller};
use domain::lease::{LeaseKeeper, LeasePolicy, StopCause, Stopped};
use domain::ports::{IdentityInstaller, IdentityProvider, IdentityResolver, LeaseObserver};
use domain::resolution::CachingResolver;
use domain::{InstallError, LeasedIdentity, ServiceType};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use ziti_transport::TcpOverlayListener;

use crate::admin::serve_admin;
use crate::config::{Config, OverlayConfig};
use crate::identity_file::{IdentityFileError, IdentityFileStore};
use crate::metrics::Metrics;
use crate::readiness::{LeaseTracker, Readiness};

pub use listener::{Connection, OverlayBinder, OverlayUnavailable, ServiceListener, boxed};
use serve::{ServeContext, Server};

/// How long a best-effort lease release may take at shutdown.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);
/// Resolved callers kept at most (see `CachingResolver`).
const RESOLVE_CACHE_CAPACITY: usize = 4096;

#[derive(Debug, Error)]
pub enum AppError {
    #[error("cannot listen for admin requests on {addr}: {source}")]
    AdminListen { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Listen(#[from] ziti_transport::TcpError),
    #[error(transparent)]
    IdentityFile(#[from] IdentityFileError),
    #[error("enrollment with ziti-management failed: {0}")]
    Enrollment(#[from] EnrollError),
    #[error("ziti-management refused to keep the lease, stopping: {0}")]
    LeaseRefused(domain::ProviderError),
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
        (Some(overlay), Some(resolver)) => {
            Some(Arc::new(CachingResolver::new(resolver, overlay.resolve_cache_ttl, RESOLVE_CACHE_CAPACITY))
                as Arc<dyn IdentityResolver>)
        }
        _ => None,
    };
    let context = ServeContext::new(&config, metrics.clone(), resolver);
    let (listeners, incoming) = mpsc::channel(1);
    let server = Server::spawn(incoming, context, stop.child_token());

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
    readiness.set_serving(true);
    tracing::info!(admin = %admin_addr, listen = ?started.listen_addr, overlay = config.overlay.is_some(), "gateway serving");

    let identity_store = started.lease.as_ref().map(|lease| lease.store.clone());
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
    provider: Arc<dyn IdentityProvider>,
    store: Arc<IdentityFileStore>,
    keeper: JoinHandle<Stopped>,
    keeper_stop: CancellationToken,
}

async fn start_tcp(config: &Config, listeners: mpsc::Sender<Box<dyn ServiceListener>>) -> Result<SocketAddr, AppError> {
    let listener = TcpOverlayListener::bind(config.listen_addr).await?;
    let addr = listener
        .local_addr()
        .map_err(|source| AppError::Listen(ziti_transport::TcpError::Bind { addr: config.listen_addr, source }))?;
    listeners.send(boxed(listener)).await.map_err(|_| AppError::Task("the server stopped before it started".into()))?;
    Ok(addr)
}

async fn start_overlay(
    overlay: &OverlayConfig,
    deps: &Dependencies,
    listeners: mpsc::Sender<Box<dyn ServiceListener>>,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    stop: &CancellationToken,
) -> Result<Started, AppError> {
    let provider = deps.provider.clone().ok_or(AppError::NoProvider)?;
    let store = Arc::new(match &overlay.identity_dir {
        Some(parent) => IdentityFileStore::new_in(parent)?,
        None => IdentityFileStore::new()?,
    });
    let installer = Arc::new(OverlayInstaller {
        store: store.clone(),
        overlay: deps.overlay.clone(),
        service: overlay.service_name.clone(),
        listeners,
    });
    let observer: Arc<dyn LeaseObserver> = Arc::new(LeaseTracker::new(readiness, metrics));
    let policy = LeasePolicy::new(overlay.renewal_interval);
    let enroller =
        Enroller::new(provider.clone(), installer, observer.clone(), ServiceType::Gateway, policy.retry.clone());
    tracing::info!(target = %overlay.management_target, "requesting a service identity from ziti-management");
    let lease = enroller.enroll_at_start(overlay.enrollment_timeout, stop).await?;
    tracing::info!(lease = %lease.id, service = %overlay.service_name, "identity enrolled and service bound");

    let keeper_stop = stop.child_token();
    let keeper = LeaseKeeper::new(provider.clone(), enroller, observer, policy);
    let keeper = tokio::spawn(keeper.run(lease, keeper_stop.clone()));
    Ok(Started { listen_addr: None, lease: Some(LeaseParts { provider, store, keeper, keeper_stop }) })
}

/// Puts a leased identity to use: checks and stores it, binds the service with it,
/// and hands the new listener to the server (which drops the old one).
struct OverlayInstaller {
    store: Arc<IdentityFileStore>,
    overlay: Arc<dyn OverlayBinder>,
    service: String,
    listeners: mpsc::Sender<Box<dyn ServiceListener>>,
}

#[async_trait]
impl IdentityInstaller for OverlayInstaller {
    async fn install(&self, identity: LeasedIdentity) -> Result<(), InstallError> {
        let staged = self.store.stage(&identity.identity_json).map_err(|err| InstallError(err.to_string()))?;
        let listener = self.overlay.bind(staged.path(), &self.service).await.map_err(InstallError)?;
        self.store.commit(staged);
        self.listeners.send(listener).await.map_err(|_| InstallError("the gateway is shutting down".to_owned()))
    }
}

struct SupervisedParts {
    stop: CancellationToken,
    server: Server,
    admin_task: JoinHandle<()>,
    lease: Option<LeaseParts>,
    readiness: Arc<Readiness>,
    shutdown_grace: Duration,
}

/// Waits for a stop request or a fatal lease error, then shuts down in order:
/// stop accepting, drain, stop lease keeping, release the lease, remove the file.
async fn supervise(parts: SupervisedParts) -> Result<(), AppError> {
    let SupervisedParts { stop, server, admin_task, lease, readiness, shutdown_grace } = parts;
    let (mut outcome, lease) = match lease {
        Some(LeaseParts { provider, store, mut keeper, keeper_stop }) => {
            let stopped = tokio::select! {
                () = stop.cancelled() => None,
                stopped = &mut keeper => Some(stopped),
            };
            let outcome = match &stopped {
                Some(Ok(Stopped { cause: StopCause::Refused(error), .. })) => {
                    Err(AppError::LeaseRefused(error.clone()))
                }
                Some(Err(err)) => Err(AppError::Task(err.to_string())),
                _ => Ok(()),
            };
            (outcome, Some((provider, store, keeper, keeper_stop, stopped)))
        }
        None => {
            stop.cancelled().await;
            (Ok(()), None)
        }
    };
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    readiness.set_serving(false);
    server.stop(shutdown_grace).await;

    if let Some((provider, store, keeper, keeper_stop, stopped)) = lease {
        keeper_stop.cancel();
        let stopped = match stopped {
            Some(stopped) => stopped,
            None => keeper.await,
        };
        match stopped {
            Ok(Stopped { lease: Some(id), .. }) => release(provider.as_ref(), &id).await,
            Ok(Stopped { lease: None, .. }) => {}
            Err(err) if outcome.is_ok() => outcome = Err(AppError::Task(err.to_string())),
            Err(_) => {}
        }
        // The secret goes first; the directory goes with the last handle (a
        // `RunningGateway` dropped without `shutdown` may still hold one).
        store.clear();
        if let Ok(store) = Arc::try_unwrap(store) {
            if let Err(err) = store.remove() {
                tracing::warn!(%err, "could not remove the identity directory");
            }
        }
    }
    stop.cancel();
    admin_task.await.ok();
    tracing::info!("gateway stopped");
    outcome
}

async fn release(provider: &dyn IdentityProvider, id: &domain::IdentityId) {
    match tokio::time::timeout(RELEASE_TIMEOUT, provider.release(id)).await {
        Ok(Ok(())) => tracing::info!(lease = %id, "lease released"),
        Ok(Err(err)) => tracing::warn!(lease = %id, %err, "could not release the lease; it will expire"),
        Err(_) => tracing::warn!(lease = %id, "releasing the lease timed out; it will expire"),
    }
}
