//! The service's lifecycle against mocked ports, on tokio's paused clock: the order
//! of a shutdown, a refusal that stops it, a start that fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::*;
use crate::caller::{Caller, Transport};
use crate::error::{InstallError, ListenError};
use crate::hosting::HostPolicy;
use crate::identity::LeasedIdentity;
use crate::ports::{Accepted, Admitted, Connection, ConnectionHandler, MockIdentityInstaller, ServiceListener};
use crate::test_support::{Call, ProviderMock, Quiet, TTL, Timeline, leased, secs};

/// A binding whose connections the test sends.
struct Fed(mpsc::Receiver<Accepted>);

#[async_trait]
impl ServiceListener for Fed {
    async fn accept(&mut self) -> Result<Accepted, ListenError> {
        match self.0.recv().await {
            Some(accepted) => Ok(accepted),
            None => std::future::pending().await,
        }
    }
}

/// Serves each connection until the drain, then for two more seconds (a request in
/// flight), and records its end.
struct SlowToFinish(Arc<Timeline>);

#[async_trait]
impl ConnectionHandler for SlowToFinish {
    async fn serve(&self, _connection: Box<dyn Connection>, _admitted: Admitted, drain: CancellationToken) {
        drain.cancelled().await;
        tokio::time::sleep(secs(2)).await;
        self.0.record(Call::ConnectionEnded);
    }
}

/// An installer that records its calls, hands out `bindings` in order, and refuses
/// when none is left.
fn installer(timeline: &Arc<Timeline>, bindings: Vec<Fed>) -> Arc<dyn IdentityInstaller> {
    let bindings = Mutex::new(bindings);
    let mut mock = MockIdentityInstaller::new();
    let t = timeline.clone();
    mock.expect_install().returning(move |identity: LeasedIdentity| {
        t.record(Call::Install(identity.id.as_str().to_owned()));
        let mut bindings = bindings.lock().unwrap();
        if bindings.is_empty() {
            return Err(InstallError::Unusable("it would not load".into()));
        }
        Ok(Box::new(bindings.remove(0)) as Box<dyn ServiceListener>)
    });
    let t = timeline.clone();
    mock.expect_retire().returning(move |id| {
        t.record(Call::Retire(id.as_str().to_owned()));
        true
    });
    let t = timeline.clone();
    mock.expect_close().returning(move || t.record(Call::Close));
    mock.expect_ended_bindings().returning(|| tokio::sync::watch::channel(None).1);
    Arc::new(mock)
}

fn lifecycle(
    timeline: &Arc<Timeline>,
    provider: Arc<dyn IdentityProvider>,
    installer: Arc<dyn IdentityInstaller>,
    handler: Arc<dyn ConnectionHandler>,
) -> Lifecycle {
    let policy =
        HostPolicy { max_connections: 8, unverified_callers: crate::UnverifiedCallers::Anonymous, resolver: None };
    let host = Host::new(handler, Arc::new(Quiet), policy);
    let observer: Arc<dyn LeaseObserver> = timeline.clone();
    Lifecycle::new(provider, installer, observer, host, ServiceType::Gateway, LeasePolicy::new(secs(120)))
}

#[tokio::test(start_paused = true)]
async fn a_stop_drains_in_flight_requests_before_the_lease_is_ended_and_erased() {
    let timeline = Timeline::start();
    let provider =
        ProviderMock::new(&timeline).requests(vec![Ok(leased("lease-1", Some(TTL)))]).extend_with(|_, _| Ok(Some(TTL)));
    let (dial, incoming) = mpsc::channel(4);
    let installer = installer(&timeline, vec![Fed(incoming)]);
    let handler = Arc::new(SlowToFinish(timeline.clone()));
    let serving = lifecycle(&timeline, provider.build(), installer, handler)
        .start(secs(30), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(serving.first_lease().as_str(), "lease-1");

    let (_client, server) = tokio::io::duplex(64);
    let caller = Caller { transport: Transport::Overlay, peer: "c1".to_owned(), identity: None };
    dial.send(Accepted { connection: Box::new(server), caller }).await.unwrap();
    tokio::task::yield_now().await;

    let stop = CancellationToken::new();
    let running = tokio::spawn(serving.run(stop.clone(), secs(10)));
    tokio::time::sleep(secs(1)).await;
    stop.cancel();
    running.await.unwrap().unwrap();

    // The connection finished 2 s into the drain; only then was the lease retired and
    // released, and last the installer erased what it held.
    let calls: Vec<_> = timeline.calls().into_iter().filter(|(_, call)| *call != Call::Request).collect();
    assert_eq!(
        calls,
        [
            (secs(0), Call::Install("lease-1".to_owned())),
            (secs(3), Call::ConnectionEnded),
            (secs(3), Call::Retire("lease-1".to_owned())),
            (secs(3), Call::Release("lease-1".to_owned())),
            (secs(3), Call::Close),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_source_that_refuses_for_good_stops_the_service_with_its_cause() {
    let timeline = Timeline::start();
    let provider = ProviderMock::new(&timeline)
        .requests(vec![Ok(leased("lease-1", Some(TTL)))])
        .extend_with(|_, _| Err(ProviderError::Fatal("permission denied".into())));
    let (_dial, incoming) = mpsc::channel(4);
    let installer = installer(&timeline, vec![Fed(incoming)]);
    let serving = lifecycle(&timeline, provider.build(), installer, Arc::new(Quiet))
        .start(secs(30), &CancellationToken::new())
        .await
        .unwrap();

    let stopped = serving.run(CancellationToken::new(), secs(10)).await;
    assert!(matches!(stopped, Err(ServiceError::Refused(ProviderError::Fatal(_)))), "{stopped:?}");
    assert_eq!(timeline.now(), secs(120), "it stopped at the first renewal");
    assert_eq!(timeline.calls().last().map(|(_, call)| call.clone()), Some(Call::Close));
}

#[tokio::test(start_paused = true)]
async fn a_start_that_fails_leaves_nothing_behind() {
    let timeline = Timeline::start();
    let provider = ProviderMock::new(&timeline).requests(vec![Ok(leased("lease-1", Some(TTL)))]);
    let installer = installer(&timeline, Vec::new());
    let failed = lifecycle(&timeline, provider.build(), installer, Arc::new(Quiet))
        .start(secs(30), &CancellationToken::new())
        .await;
    assert!(matches!(failed, Err(EnrollError::Install { .. })), "{failed:?}");
    let calls: Vec<_> = timeline.calls().into_iter().map(|(_, call)| call).collect();
    assert_eq!(
        calls,
        [Call::Request, Call::Install("lease-1".to_owned()), Call::Release("lease-1".to_owned()), Call::Close]
    );
}
