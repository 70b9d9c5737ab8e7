//! The server: accepts from the current binding, serves HTTP on each connection,
//! swaps bindings on re-bind, closes one that is retired, and drains on stop. It is
//! ready to serve exactly while it holds a working binding.
//!
//! Work per connection is bounded: at most `GATEWAY_MAX_CONNECTIONS` are served at
//! once, and a connection accepted beyond that is closed at once, unread and
//! unanswered (cheaper under a flood than any answer; counted in
//! `gateway_connections_refused_total`). Each connection's caller is admitted by the
//! domain's [`UnverifiedCallers`] policy before its principal is resolved, so a caller
//! the overlay did not vouch for costs no `ResolveIdentity` unless the policy is `claim`.

use std::sync::Arc;
use std::time::Duration;

use domain::ports::{Connection, IdentityResolver, ServiceListener};
use domain::{Caller, ListenError, UnverifiedCallers};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use ziti_transport::ListenerUpdate;

use crate::config::Config;
use crate::http::{HttpService, ProxySettings, RequestContext, serve_connection};
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
    unverified_callers: UnverifiedCallers,
    /// One permit per connection being served (`GATEWAY_MAX_CONNECTIONS`).
    connections: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl ServeContext {
    pub(super) fn new(config: &Config, metrics: Arc<Metrics>, resolver: Option<Arc<dyn IdentityResolver>>) -> Self {
        let settings =
            ProxySettings { timeout: config.upstream_timeout, forwarded_hosts: config.forwarded_hosts.clone() };
        Self {
            service: HttpService::new(config.upstream_url.clone(), &settings, metrics.clone()),
            resolver,
            unverified_callers: config.overlay.as_ref().map(|overlay| overlay.unverified_callers).unwrap_or_default(),
            connections: Arc::new(Semaphore::new(config.max_connections.clamp(1, Semaphore::MAX_PERMITS))),
            metrics,
        }
    }

    /// A slot for one more connection, or `None` (counted) when all are taken.
    fn connection_slot(&self) -> Option<ConnectionSlot> {
        match self.connections.clone().try_acquire_owned() {
            Ok(permit) => {
                self.metrics.record_connection_opened();
                Some(ConnectionSlot { _permit: permit, metrics: self.metrics.clone() })
            }
            Err(_) => {
                self.metrics.record_connection_refused();
                None
            }
        }
    }

    /// What the connection's requests are served as: the caller as the policy admits
    /// it, with its principal when it has an identity left to resolve.
    async fn request_context(&self, caller: Caller) -> RequestContext {
        let (transport, peer) = (caller.transport, caller.peer.clone());
        match self.unverified_callers.admit(caller).into_result() {
            Ok(caller) => {
                let principal = self.principal(&caller).await;
                RequestContext { caller, principal, refusal: None }
            }
            Err(refusal) => {
                tracing::debug!(%transport, %peer, %refusal, "caller refused");
                RequestContext {
                    caller: Caller { transport, peer, identity: None },
                    principal: None,
                    refusal: Some(refusal),
                }
            }
        }
    }

    /// The caller's principal, when its identity is known and resolvable. A failed
    /// resolution is logged and the request served without a principal.
    async fn principal(&self, caller: &Caller) -> Option<domain::Principal> {
        let (resolver, identity) = (self.resolver.as_ref()?, caller.identity.as_ref()?);
        match resolver.resolve(identity).await {
            Ok(principal) => Some(principal),
            Err(err) => {
                tracing::warn!(caller = ?identity, err = service_kit::causes::with_causes(&err), "caller not resolved");
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
                let Some(slot) = context.connection_slot() else {
                    tracing::debug!(peer = %accepted.caller.peer, "connection limit reached; connection closed");
                    continue;
                };
                let watcher = graceful.watcher();
                let context = context.clone();
                tokio::spawn(async move {
                    serve(accepted.connection, accepted.caller, context, watcher).await;
                    drop(slot);
                });
            }
            Err(err @ ListenError::Closed(_)) => {
                tracing::error!(
                    err = service_kit::causes::with_causes(&err),
                    "the service binding is gone; not ready until the next one"
                );
                readiness.set_serving(false);
                return;
            }
            Err(err) => {
                tracing::warn!(err = service_kit::causes::with_causes(&err), "accept failed");
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

/// A connection being served: holds its permit and the open-connections gauge.
struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.metrics.record_connection_closed();
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
    let request = context.request_context(caller).await;
    serve_connection(connection, request, context.service.clone(), watcher).await;
}
