//! Hosting the service: accept from the current binding, admit each caller and resolve
//! its principal, hand the connection to the [`ConnectionHandler`] (HTTP in the
//! gateway), swap bindings on re-bind, close one that is retired, and drain on stop.
//! The service is reachable exactly while a working binding is held.
//!
//! Work is bounded: at most `max_connections` are served at once; one accepted beyond
//! that is closed at once, unread (cheaper under a flood than any answer). A caller
//! the overlay did not vouch for costs no resolution unless the policy is `claim`.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::caller::{Caller, Principal, UnverifiedCallers};
use crate::error::ListenError;
use crate::ports::{Admitted, ConnectionHandler, HostObserver, IdentityResolver, ServiceListener};

/// A pause after a failed accept, so a persistent error (e.g. out of file descriptors)
/// does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// How connections are admitted.
#[derive(Clone)]
pub struct HostPolicy {
    /// Connections served at once at most (`GATEWAY_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// How callers the overlay did not vouch for are served.
    pub unverified_callers: UnverifiedCallers,
    /// Resolves admitted callers' identities to principals, when there is one.
    pub resolver: Option<Arc<dyn IdentityResolver>>,
}

impl std::fmt::Debug for HostPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostPolicy")
            .field("max_connections", &self.max_connections)
            .field("unverified_callers", &self.unverified_callers)
            .finish_non_exhaustive()
    }
}

/// The service's host: one binding at a time. Cheap to clone; every clone is the same
/// host.
#[derive(Clone)]
pub struct Host {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").finish_non_exhaustive()
    }
}

struct Inner {
    handler: Arc<dyn ConnectionHandler>,
    observer: Arc<dyn HostObserver>,
    policy: HostPolicy,
    connections: Arc<Semaphore>,
    /// Every connection task, so that a drain can wait for them.
    tracker: TaskTracker,
    /// Cancelled when draining: connections finish what is in flight and close.
    drain: CancellationToken,
    /// The task accepting from the current binding (dropping the binding closes it).
    accepting: Mutex<Option<JoinHandle<()>>>,
}

impl Host {
    /// A host with no binding yet.
    pub fn new(handler: Arc<dyn ConnectionHandler>, observer: Arc<dyn HostObserver>, policy: HostPolicy) -> Self {
        let connections = Arc::new(Semaphore::new(policy.max_connections.clamp(1, Semaphore::MAX_PERMITS)));
        let inner = Inner {
            handler,
            observer,
            policy,
            connections,
            tracker: TaskTracker::new(),
            drain: CancellationToken::new(),
            accepting: Mutex::new(None),
        };
        Self { inner: Arc::new(inner) }
    }

    /// Serves `listener` from now on; the previous binding is closed, its open
    /// connections carry on. Ignored once draining.
    pub fn serve(&self, listener: Box<dyn ServiceListener>) {
        let mut accepting = self.inner.accepting();
        stop(accepting.take());
        if self.inner.drain.is_cancelled() {
            return;
        }
        self.inner.observer.serving(true);
        *accepting = Some(tokio::spawn(accept(listener, self.inner.clone())));
    }

    /// Closes the binding: nothing is accepted (and the service is not reachable)
    /// until the next [`Host::serve`]. Open connections carry on.
    pub fn close_binding(&self) {
        stop(self.inner.accepting().take());
        self.inner.observer.serving(false);
    }

    /// Stops accepting for good, tells every connection to finish what it has in
    /// flight, and waits up to `grace` for them. Returns whether they all finished.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.close_binding();
        self.inner.drain.cancel();
        self.inner.tracker.close();
        let open = self.inner.tracker.len();
        let drained = tokio::time::timeout(grace, self.inner.tracker.wait()).await.is_ok();
        if !drained {
            tracing::warn!(?grace, open, "in-flight requests did not finish within the shutdown grace period");
        }
        drained
    }
}

impl Inner {
    fn accepting(&self) -> MutexGuard<'_, Option<JoinHandle<()>>> {
        self.accepting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for one more connection, or `None` (reported) when all are taken.
    fn connection_slot(&self) -> Option<ConnectionSlot> {
        let permit = self.connections.clone().try_acquire_owned();
        match permit {
            Ok(permit) => {
                self.observer.connection_opened();
                Some(ConnectionSlot { _permit: permit, observer: self.observer.clone() })
            }
            Err(_) => {
                self.observer.connection_refused();
                None
            }
        }
    }

    /// Who the connection's requests are served as: the caller as the policy admits
    /// it, with its principal when it has an identity left to resolve.
    async fn admit(&self, caller: Caller) -> Admitted {
        let (transport, peer) = (caller.transport, caller.peer.clone());
        match self.policy.unverified_callers.admit(caller).into_result() {
            Ok(caller) => {
                let principal = self.principal(&caller).await;
                Admitted { caller, principal, refusal: None }
            }
            Err(refusal) => {
                tracing::debug!(%transport, %peer, %refusal, "caller refused");
                Admitted { caller: Caller { transport, peer, identity: None }, principal: None, refusal: Some(refusal) }
            }
        }
    }

    /// The caller's principal, when its identity is known and resolvable. A failed
    /// resolution is logged and the caller served without a principal.
    async fn principal(&self, caller: &Caller) -> Option<Principal> {
        let (resolver, identity) = (self.policy.resolver.as_ref()?, caller.identity.as_ref()?);
        match resolver.resolve(identity).await {
            Ok(principal) => Some(principal),
            Err(err) => {
                let err: &(dyn std::error::Error + 'static) = &err;
                tracing::warn!(caller = ?identity, err, "caller not resolved");
                None
            }
        }
    }
}

fn stop(accepting: Option<JoinHandle<()>>) {
    if let Some(task) = accepting {
        // Aborting drops the binding (which closes it) at the task's next await.
        task.abort();
    }
}

async fn accept(mut listener: Box<dyn ServiceListener>, host: Arc<Inner>) {
    // Stopped with this task, when the binding is replaced or retired.
    let _follow = listener.bound().map(|bound| AbortOnDrop(tokio::spawn(follow_binding(bound, host.clone()))));
    loop {
        match listener.accept().await {
            Ok(accepted) => {
                let Some(slot) = host.connection_slot() else {
                    tracing::debug!(peer = %accepted.caller.peer, "connection limit reached; connection closed");
                    continue;
                };
                let connection_host = host.clone();
                host.tracker.spawn(async move {
                    let admitted = connection_host.admit(accepted.caller).await;
                    let drain = connection_host.drain.clone();
                    connection_host.handler.serve(accepted.connection, admitted, drain).await;
                    drop(slot);
                });
            }
            Err(err @ ListenError::Closed(_)) => {
                let err: &(dyn std::error::Error + 'static) = &err;
                tracing::error!(err, "the service binding is gone; not ready until the next one");
                host.observer.serving(false);
                return;
            }
            Err(err) => {
                {
                    let err: &(dyn std::error::Error + 'static) = &err;
                    tracing::warn!(err, "accept failed");
                }
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

/// Reachable while the transport says its binding works (e.g. not while the overlay
/// binds again after a router restart).
async fn follow_binding(mut bound: watch::Receiver<bool>, host: Arc<Inner>) {
    loop {
        let now = *bound.borrow_and_update();
        host.observer.serving(now);
        if !now {
            tracing::warn!("the service binding is lost; not ready until it is bound again");
        }
        if bound.changed().await.is_err() {
            return;
        }
    }
}

/// A connection being served: holds its permit, reports its end.
struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
    observer: Arc<dyn HostObserver>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.observer.connection_closed();
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests;
