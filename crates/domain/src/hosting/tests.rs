//! The host against in-memory bindings and a recording handler, on tokio's paused
//! clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::*;
use crate::caller::{CallerIdentity, Transport};
use crate::error::ResolveError;
use crate::ports::{Accepted, Admitted, Connection, MockIdentityResolver};

/// A binding fed by the test; records when it is dropped (closed).
struct Binding {
    incoming: mpsc::Receiver<Result<Accepted, ListenError>>,
    bound: Option<watch::Receiver<bool>>,
    closed: Arc<AtomicBool>,
}

#[async_trait]
impl ServiceListener for Binding {
    async fn accept(&mut self) -> Result<Accepted, ListenError> {
        match self.incoming.recv().await {
            Some(next) => next,
            None => std::future::pending().await,
        }
    }

    fn bound(&self) -> Option<watch::Receiver<bool>> {
        self.bound.clone()
    }
}

impl Drop for Binding {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

struct Fed {
    dial: mpsc::Sender<Result<Accepted, ListenError>>,
    closed: Arc<AtomicBool>,
}

fn binding(bound: Option<watch::Receiver<bool>>) -> (Box<dyn ServiceListener>, Fed) {
    let (dial, incoming) = mpsc::channel(16);
    let closed = Arc::new(AtomicBool::new(false));
    (Box::new(Binding { incoming, bound, closed: closed.clone() }), Fed { dial, closed })
}

fn caller(peer: &str, identity: Option<(&str, bool)>) -> Caller {
    Caller {
        transport: Transport::Overlay,
        peer: peer.to_owned(),
        identity: identity.map(|(name, verified)| CallerIdentity {
            id: Some(format!("id-{name}")),
            name: Some(name.to_owned()),
            verified,
        }),
    }
}

impl Fed {
    /// A connection from `caller`; the test keeps the other end (dropping it ends the
    /// connection for a handler that reads).
    async fn dial(&self, caller: Caller) -> tokio::io::DuplexStream {
        let (ours, theirs) = tokio::io::duplex(64);
        let connection: Box<dyn Connection> = Box::new(theirs);
        self.dial.send(Ok(Accepted { connection, caller })).await.unwrap();
        ours
    }
}

/// How the recording handler serves: until its client hangs up, or (with `linger`)
/// that long past the drain signal.
#[derive(Default)]
struct Recorder {
    served: Mutex<Vec<Admitted>>,
    finished: AtomicUsize,
    linger_after_drain: Option<Duration>,
}

#[async_trait]
impl ConnectionHandler for Recorder {
    async fn serve(&self, mut connection: Box<dyn Connection>, admitted: Admitted, drain: CancellationToken) {
        use tokio::io::AsyncReadExt;
        self.served.lock().unwrap().push(admitted);
        let mut buf = [0u8; 16];
        tokio::select! {
            _ = connection.read(&mut buf) => {}
            () = drain.cancelled() => {
                if let Some(linger) = self.linger_after_drain {
                    tokio::time::sleep(linger).await;
                }
            }
        }
        self.finished.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct Observed {
    serving: Mutex<Vec<bool>>,
    opened: AtomicUsize,
    closed: AtomicUsize,
    refused: AtomicUsize,
}

impl HostObserver for Observed {
    fn serving(&self, serving: bool) {
        self.serving.lock().unwrap().push(serving);
    }
    fn connection_opened(&self) {
        self.opened.fetch_add(1, Ordering::SeqCst);
    }
    fn connection_closed(&self) {
        self.closed.fetch_add(1, Ordering::SeqCst);
    }
    fn connection_refused(&self) {
        self.refused.fetch_add(1, Ordering::SeqCst);
    }
}

impl Observed {
    fn last_serving(&self) -> Option<bool> {
        self.serving.lock().unwrap().last().copied()
    }
}

fn host_with(
    recorder: &Arc<Recorder>,
    observed: &Arc<Observed>,
    max_connections: usize,
    unverified_callers: UnverifiedCallers,
    resolver: Option<Arc<dyn IdentityResolver>>,
) -> Host {
    let policy = HostPolicy { max_connections, unverified_callers, resolver };
    Host::new(recorder.clone(), observed.clone(), policy)
}

/// Lets every ready task run (the clock is paused, so nothing else moves).
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_connection_beyond_the_limit_is_closed_at_once_and_counted() {
    let (recorder, observed) = (Arc::new(Recorder::default()), Arc::new(Observed::default()));
    let host = host_with(&recorder, &observed, 2, UnverifiedCallers::Anonymous, None);
    let (listener, fed) = binding(None);
    host.serve(listener);

    let _first = fed.dial(caller("a", None)).await;
    let _second = fed.dial(caller("b", None)).await;
    let mut third = fed.dial(caller("c", None)).await;
    settle().await;

    assert_eq!(recorder.served.lock().unwrap().len(), 2, "a third connection was served");
    assert_eq!(observed.refused.load(Ordering::SeqCst), 1);
    assert_eq!(observed.opened.load(Ordering::SeqCst), 2);
    // Closed unread: the client sees the end of the stream.
    let mut buf = [0u8; 1];
    assert_eq!(tokio::io::AsyncReadExt::read(&mut third, &mut buf).await.unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_new_binding_replaces_the_old_one_whose_connections_carry_on() {
    let (recorder, observed) = (Arc::new(Recorder::default()), Arc::new(Observed::default()));
    let host = host_with(&recorder, &observed, 8, UnverifiedCallers::Anonymous, None);
    let (first, first_fed) = binding(None);
    host.serve(first);
    let old_connection = first_fed.dial(caller("old", None)).await;
    settle().await;

    let (second, second_fed) = binding(None);
    host.serve(second);
    settle().await;
    assert!(first_fed.closed.load(Ordering::SeqCst), "the replaced binding was not closed");
    assert_eq!(recorder.finished.load(Ordering::SeqCst), 0, "the old binding's connection was cut");

    let _new_connection = second_fed.dial(caller("new", None)).await;
    settle().await;
    assert_eq!(recorder.served.lock().unwrap().len(), 2);
    drop(old_connection);
    settle().await;
    assert_eq!(recorder.finished.load(Ordering::SeqCst), 1);
    assert_eq!(observed.closed.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn reachability_follows_the_binding_and_its_end() {
    let (recorder, observed) = (Arc::new(Recorder::default()), Arc::new(Observed::default()));
    let host = host_with(&recorder, &observed, 8, UnverifiedCallers::Anonymous, None);
    let (bound_tx, bound_rx) = watch::channel(true);
    let (listener, fed) = binding(Some(bound_rx));
    host.serve(listener);
    settle().await;
    assert_eq!(observed.last_serving(), Some(true));

    bound_tx.send_replace(false); // e.g. binding again after a router restart
    settle().await;
    assert_eq!(observed.last_serving(), Some(false));
    bound_tx.send_replace(true);
    settle().await;
    assert_eq!(observed.last_serving(), Some(true));

    fed.dial.send(Err(ListenError::Closed("the router ended the bind".into()))).await.unwrap();
    settle().await;
    assert_eq!(observed.last_serving(), Some(false), "a binding that ended still counts as serving");

    host.close_binding();
    assert_eq!(observed.last_serving(), Some(false));
}

#[tokio::test(start_paused = true)]
async fn a_drain_lets_in_flight_connections_finish_within_the_grace_and_accepts_nothing_more() {
    let recorder = Arc::new(Recorder { linger_after_drain: Some(Duration::from_secs(3)), ..Recorder::default() });
    let observed = Arc::new(Observed::default());
    let host = host_with(&recorder, &observed, 8, UnverifiedCallers::Anonymous, None);
    let (listener, fed) = binding(None);
    host.serve(listener);
    let _busy = fed.dial(caller("busy", None)).await;
    settle().await;

    let started = tokio::time::Instant::now();
    assert!(host.drain(Duration::from_secs(10)).await, "the drain gave up");
    assert_eq!(started.elapsed(), Duration::from_secs(3), "the drain did not wait for the in-flight connection");
    assert_eq!(recorder.finished.load(Ordering::SeqCst), 1);
    assert!(fed.closed.load(Ordering::SeqCst), "still accepting after the drain");
    assert_eq!(observed.last_serving(), Some(false));

    let (late, late_fed) = binding(None);
    host.serve(late);
    assert!(late_fed.closed.load(Ordering::SeqCst), "a binding was served after the drain");
}

#[tokio::test(start_paused = true)]
async fn a_drain_gives_up_at_the_grace() {
    let recorder = Arc::new(Recorder { linger_after_drain: Some(Duration::from_secs(60)), ..Recorder::default() });
    let observed = Arc::new(Observed::default());
    let host = host_with(&recorder, &observed, 8, UnverifiedCallers::Anonymous, None);
    let (listener, fed) = binding(None);
    host.serve(listener);
    let _stuck = fed.dial(caller("stuck", None)).await;
    settle().await;

    let started = tokio::time::Instant::now();
    assert!(!host.drain(Duration::from_secs(5)).await, "a connection still busy counted as drained");
    assert_eq!(started.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn callers_are_admitted_by_the_policy_before_any_resolution() {
    let mut resolver = MockIdentityResolver::new();
    resolver
        .expect_resolve()
        .withf(|identity| identity.name.as_deref() == Some("verified"))
        .times(1)
        .returning(|_| Ok(Principal { name: "verified".to_owned(), role_attributes: vec!["clients".to_owned()] }));
    let resolver: Arc<dyn IdentityResolver> = Arc::new(resolver);
    let (recorder, observed) = (Arc::new(Recorder::default()), Arc::new(Observed::default()));
    let host = host_with(&recorder, &observed, 8, UnverifiedCallers::Reject, Some(resolver));
    let (listener, fed) = binding(None);
    host.serve(listener);

    let _verified = fed.dial(caller("c1", Some(("verified", true)))).await;
    let _claimed = fed.dial(caller("c2", Some(("claimed", false)))).await;
    settle().await;

    let served = recorder.served.lock().unwrap().clone();
    assert_eq!(served[0].principal.as_ref().map(|principal| principal.name.as_str()), Some("verified"));
    assert_eq!(served[0].refusal, None);
    assert_eq!(served[1].refusal, Some(crate::Refusal::UnverifiedCaller));
    assert_eq!(served[1].caller.identity, None, "a refused claim was passed on");
    assert_eq!(served[1].principal, None);
}

#[tokio::test(start_paused = true)]
async fn a_failed_resolution_serves_the_caller_without_a_principal() {
    let mut resolver = MockIdentityResolver::new();
    resolver.expect_resolve().returning(|_| {
        Err(ResolveError::Unavailable(Arc::from(Box::<dyn std::error::Error + Send + Sync>::from("down"))))
    });
    let resolver: Arc<dyn IdentityResolver> = Arc::new(resolver);
    let (recorder, observed) = (Arc::new(Recorder::default()), Arc::new(Observed::default()));
    let host = host_with(&recorder, &observed, 8, UnverifiedCallers::Anonymous, Some(resolver));
    let (listener, fed) = binding(None);
    host.serve(listener);
    let _connection = fed.dial(caller("c1", Some(("verified", true)))).await;
    settle().await;

    let served = recorder.served.lock().unwrap().clone();
    assert_eq!(served.len(), 1);
    assert_eq!(served[0].principal, None);
    assert_eq!(served[0].caller.identity.as_ref().and_then(|identity| identity.name.as_deref()), Some("verified"));
}
