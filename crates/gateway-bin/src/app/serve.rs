//! The server: accepts from the current binding, serves HTTP on each connection,
//! swaps bindings on re-bind, closes one that is retired, and drains on stop. It is
//! ready to serve exactly while it holds a working binding.

use std::sync::Arc;
use std::time::Duration;

use domain::ports::{Connection, IdentityResolver, ServiceListener};
use domain::{Caller, ListenError};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use ziti_transport::ListenerUpdate;

use crate::config::Config;
use crate::http::{HttpService, RequestContext, serve_connection};
use crate::metrics::Metrics;
use crate::readiness::Readiness;

/// A pause after a failed accept, so a persistent error (e.g. out of file
/// descriptors) does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// What every connection needs.
#[derive(Clone)]
pub(super) struct ServeContext {
    service: HttpService,
    resolver: Option<Arc<dyn IdentityResolver>>,
}

impl ServeContext {
    pub(super) fn new(config: &Config, metrics: Arc<Metrics>, resolver: Option<Arc<dyn IdentityResolver>>) -> Self {
        Self { service: HttpService::new(config.upstream_url.clone(), config.upstream_timeout, metrics), resolver }
    }

    /// The caller's principal, when its identity is known and resolvable. A failed
    /// resolution is logged and the request served without a principal.
    async fn principal(&self, caller: &Caller) -> Option<domain::Principal> {
        let (resolver, identity) = (self.resolver.as_ref()?, caller.identity.as_ref()?);
        match resolver.resolve(identity).await {
            Ok(principal) => Some(principal),
            Err(err) => {
                tracing::warn!(caller = ?identity, %err, "caller not resolved");
                None
            }
        }
    }
}

pub(super) struct Server {
    task: JoinHandle<Arc<GracefulShutdown>>,
    stop: CancellationToken,
}

impl Server {
    /// Serves every binding that arrives on `updates`, one at a time: a new one
    /// replaces (and closes) the previous; open connections carry on.
    pub(super) fn spawn(
        updates: mpsc::Receiver<ListenerUpdate>,
        context: ServeContext,
        readiness: Arc<Readiness>,
        stop: CancellationToken,
    ) -> Self {
        let graceful = Arc::new(GracefulShutdown::new());
        let task = tokio::spawn(run(updates, context, graceful, readiness, stop.clone()));
        Self { task, stop }
    }

    /// Stops accepting, then waits up to `grace` for in-flight requests.
    pub(super) async fn stop(self, grace: Duration) {
        self.stop.cancel();
        let Ok(graceful) = self.task.await else { return };
        let Ok(graceful) = Arc::try_unwrap(graceful) else {
            tracing::warn!("connections still being accepted at shutdown; not draining");
            return;
        };
        let open = graceful.count();
        if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
            tracing::warn!(?grace, open, "in-flight requests did not finish within the shutdown grace period");
        }
    }
}

async fn run(
    mut updates: mpsc::Receiver<ListenerUpdate>,
    context: ServeContext,
    graceful: Arc<GracefulShutdown>,
    readiness: Arc<Readiness>,
    stop: CancellationToken,
) -> Arc<GracefulShutdown> {
    let mut accepting: Option<JoinHandle<()>> = None;
    let mut rebinds_possible = true;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            // A closed channel only means no more re-binds (plain TCP hands over its one
            // listener and drops the sender): keep serving the current listener.
            next = updates.recv(), if rebinds_possible => match next {
                Some(update) => {
                    close(accepting.take()).await;
                    readiness.set_serving(false);
                    if let ListenerUpdate::Bound(listener) = update {
                        readiness.set_serving(true);
                        accepting = Some(tokio::spawn(accept(listener, context.clone(), graceful.clone(), readiness.clone())));
                    }
                }
                None => rebinds_possible = false,
            },
        }
    }
    readiness.set_serving(false);
    close(accepting.take()).await;
    graceful
}

/// Stops accepting from a binding and drops it (which closes it).
async fn close(accepting: Option<JoinHandle<()>>) {
    if let Some(previous) = accepting {
        previous.abort();
        previous.await.ok();
    }
}

async fn accept(
    mut listener: Box<dyn ServiceListener>,
    context: ServeContext,
    graceful: Arc<GracefulShutdown>,
    readiness: Arc<Readiness>,
) {
    // Dropped (and so stopped) with this task, when the binding is replaced or retired.
    let _follow = listener.bound().map(|bound| AbortOnDrop(tokio::spawn(follow_binding(bound, readiness.clone()))));
    loop {
        match listener.accept().await {
            Ok(accepted) => {
                let watcher = graceful.watcher();
                let context = context.clone();
                tokio::spawn(async move { serve(accepted.connection, accepted.caller, context, watcher).await });
            }
            Err(err @ ListenError::Closed(_)) => {
                tracing::error!(%err, "the service binding is gone; not ready until the next one");
                readiness.set_serving(false);
                return;
            }
            Err(err) => {
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

/// Ready while the transport says its binding works (e.g. not while the overlay binds
/// again after a router restart).
async fn follow_binding(mut bound: tokio::sync::watch::Receiver<bool>, readiness: Arc<Readiness>) {
    loop {
        let now = *bound.borrow_and_update();
        readiness.set_serving(now);
        if !now {
            tracing::warn!("the service binding is lost; not ready until it is bound again");
        }
        if bound.changed().await.is_err() {
            return;
        }
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn serve(
    connection: Box<dyn Connection>,
    caller: Caller,
    context: ServeContext,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let principal = context.principal(&caller).await;
    let request = RequestContext { caller, principal };
    serve_connection(connection, request, context.service.clone(), watcher).await;
}
