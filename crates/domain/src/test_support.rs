//! Test doubles shared by the unit tests: one timeline that records every port call
//! and lease event against tokio's (paused) clock, mocked ports that write to it, and
//! small constructors.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::{InstallError, ProviderError};
use crate::identity::{IdentityId, IdentityJson, LeasedIdentity, ServiceType};
use crate::ports::{
    BindingEnded, IdentityInstaller, IdentityProvider, LeaseEvent, LeaseObserver, MockIdentityInstaller,
    MockIdentityProvider, ServiceListener,
};

/// The lease TTL ziti-management grants.
pub(crate) const TTL: Duration = Duration::from_secs(300);

pub(crate) fn secs(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

pub(crate) fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// An identity as `RequestServiceIdentity` would hand it out.
pub(crate) fn leased(id: &str, expires_in: Option<Duration>) -> LeasedIdentity {
    LeasedIdentity {
        id: IdentityId::new(id),
        identity_json: IdentityJson::new(format!("{{\"id\":\"{id}\"}}").into_bytes()),
        expires_in,
    }
}

pub(crate) fn transient() -> ProviderError {
    ProviderError::Transient("unavailable".into())
}

/// A call made to a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Call {
    Request,
    Extend(String),
    Release(String),
    Install(String),
    Retire(String),
    /// The installer erased what it still held.
    Close,
    /// A served connection ended.
    ConnectionEnded,
}

/// Everything that happened in a test, with the time since the timeline was made.
/// It is also the recording [`LeaseObserver`].
#[derive(Debug)]
pub(crate) struct Timeline {
    origin: Instant,
    calls: Mutex<Vec<(Duration, Call)>>,
    events: Mutex<Vec<(Duration, LeaseEvent)>>,
}

impl Timeline {
    /// Starts the clock now: all times are measured from here.
    pub(crate) fn start() -> Arc<Self> {
        Arc::new(Self { origin: Instant::now(), calls: Mutex::default(), events: Mutex::default() })
    }

    /// The instant `after` the origin.
    pub(crate) fn at(&self, after: Duration) -> Instant {
        self.origin + after
    }

    /// Time since the origin.
    pub(crate) fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    pub(crate) fn record(&self, call: Call) {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).push((self.now(), call));
    }

    pub(crate) fn calls(&self) -> Vec<(Duration, Call)> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// `extend_lease` calls: when, and for which lease.
    pub(crate) fn extends(&self) -> Vec<(Duration, String)> {
        self.calls()
            .into_iter()
            .filter_map(|(at, call)| match call {
                Call::Extend(id) => Some((at, id)),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn extend_times(&self) -> Vec<Duration> {
        self.extends().into_iter().map(|(at, _)| at).collect()
    }

    /// When `request_identity` was called.
    pub(crate) fn requests(&self) -> Vec<Duration> {
        self.calls().into_iter().filter(|(_, call)| *call == Call::Request).map(|(at, _)| at).collect()
    }

    /// The ids the installer was handed, in order.
    pub(crate) fn installed(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter_map(|(_, call)| match call {
                Call::Install(id) => Some(id),
                _ => None,
            })
            .collect()
    }

    /// The ids the installer was told to retire, in order.
    pub(crate) fn retired(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter_map(|(_, call)| match call {
                Call::Retire(id) => Some(id),
                _ => None,
            })
            .collect()
    }

    /// The ids given back with `release`, in order.
    pub(crate) fn released(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter_map(|(_, call)| match call {
                Call::Release(id) => Some(id),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn timed_events(&self) -> Vec<(Duration, LeaseEvent)> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(crate) fn events(&self) -> Vec<LeaseEvent> {
        self.timed_events().into_iter().map(|(_, event)| event).collect()
    }

    /// The events `keep` selects, with their times.
    pub(crate) fn events_where(&self, keep: impl Fn(&LeaseEvent) -> bool) -> Vec<(Duration, LeaseEvent)> {
        self.timed_events().into_iter().filter(|(_, event)| keep(event)).collect()
    }
}

impl LeaseObserver for Timeline {
    fn observe(&self, event: &LeaseEvent) {
        let at = self.now();
        self.events.lock().unwrap_or_else(PoisonError::into_inner).push((at, event.clone()));
    }
}

type ExtendAnswer = Result<Option<Duration>, ProviderError>;

/// The same scripted answer once more: errors cannot be cloned (their sources are
/// boxed), so an equal one (same kind, same message) is made.
fn again<T: Clone>(answer: &Result<T, ProviderError>) -> Result<T, ProviderError> {
    let cause = |source: &crate::error::Cause| -> crate::error::Cause { source.to_string().into() };
    match answer {
        Ok(value) => Ok(value.clone()),
        Err(ProviderError::Transient(source)) => Err(ProviderError::Transient(cause(source))),
        Err(ProviderError::LeaseGone(source)) => Err(ProviderError::LeaseGone(cause(source))),
        Err(ProviderError::Fatal(source)) => Err(ProviderError::Fatal(cause(source))),
    }
}

/// Builds a [`MockIdentityProvider`] whose calls go to a [`Timeline`]. A method left
/// unconfigured panics when called, so "never called" needs no extra expectation.
/// `release` answers `Ok` unless configured otherwise.
pub(crate) struct ProviderMock {
    mock: MockIdentityProvider,
    timeline: Arc<Timeline>,
    release_configured: bool,
}

impl ProviderMock {
    pub(crate) fn new(timeline: &Arc<Timeline>) -> Self {
        Self { mock: MockIdentityProvider::new(), timeline: timeline.clone(), release_configured: false }
    }

    /// `extend_lease` answers with `answer(lease id, time of the call)`.
    pub(crate) fn extend_with(
        mut self,
        answer: impl Fn(&str, Duration) -> ExtendAnswer + Send + Sync + 'static,
    ) -> Self {
        let timeline = self.timeline.clone();
        self.mock.expect_extend_lease().returning(move |id| {
            timeline.record(Call::Extend(id.as_str().to_owned()));
            answer(id.as_str(), timeline.now()).map(crate::Renewal::extended)
        });
        self
    }

    /// `extend_lease` gives the answers of `script` in order, then `then` for good.
    pub(crate) fn extend_script(self, script: Vec<ExtendAnswer>, then: ExtendAnswer) -> Self {
        let script = Mutex::new(VecDeque::from(script));
        self.extend_with(move |_, _| {
            script.lock().unwrap_or_else(PoisonError::into_inner).pop_front().unwrap_or_else(|| again(&then))
        })
    }

    /// `request_identity` gives exactly the answers of `script`, in order; one call
    /// more fails the test.
    pub(crate) fn requests(mut self, script: Vec<Result<LeasedIdentity, ProviderError>>) -> Self {
        let timeline = self.timeline.clone();
        let count = script.len();
        let script = Mutex::new(VecDeque::from(script));
        self.mock.expect_request_identity().times(count).returning(move |service| {
            assert_eq!(service, ServiceType::Gateway);
            timeline.record(Call::Request);
            script.lock().unwrap_or_else(PoisonError::into_inner).pop_front().unwrap_or_else(|| {
                panic!("request_identity called more often than scripted");
            })
        });
        self
    }

    /// `release` is recorded and answers `answer`.
    pub(crate) fn release(mut self, answer: Result<(), ProviderError>) -> Self {
        let timeline = self.timeline.clone();
        self.mock.expect_release().returning(move |id| {
            timeline.record(Call::Release(id.as_str().to_owned()));
            again(&answer)
        });
        self.release_configured = true;
        self
    }

    fn finish(self) -> MockIdentityProvider {
        if self.release_configured { self.mock } else { self.release(Ok(())).mock }
    }

    pub(crate) fn build(self) -> Arc<dyn IdentityProvider> {
        Arc::new(self.finish())
    }

    /// Like [`build`](Self::build), but every `extend_lease` call, once recorded,
    /// never answers.
    pub(crate) fn build_hanging_extend(self) -> Arc<dyn IdentityProvider> {
        Arc::new(Hanging { mock: self.finish(), extend: true })
    }

    /// Like [`build`](Self::build), but every `release` call, once recorded, never
    /// answers.
    pub(crate) fn build_hanging_release(self) -> Arc<dyn IdentityProvider> {
        Arc::new(Hanging { mock: self.finish(), extend: false })
    }
}

/// A provider whose `extend_lease` (or else `release`) is made and recorded but never
/// completes.
struct Hanging {
    mock: MockIdentityProvider,
    extend: bool,
}

#[async_trait]
impl IdentityProvider for Hanging {
    async fn request_identity(&self, service: ServiceType) -> Result<LeasedIdentity, ProviderError> {
        self.mock.request_identity(service).await
    }

    async fn extend_lease(&self, id: &IdentityId) -> Result<crate::Renewal, ProviderError> {
        let answer = self.mock.extend_lease(id).await;
        if self.extend { std::future::pending().await } else { answer }
    }

    async fn release(&self, id: &IdentityId) -> Result<(), ProviderError> {
        let answer = self.mock.release(id).await;
        if self.extend { answer } else { std::future::pending().await }
    }
}

/// An installer that records the ids it is handed (and told to retire) and rejects
/// those in `reject`.
pub(crate) fn installer(timeline: &Arc<Timeline>, reject: &[&str]) -> Arc<dyn IdentityInstaller> {
    installer_ending(timeline, reject, watch::channel(None).1)
}

/// [`installer`] that reports the bindings `ended` says ended.
pub(crate) fn installer_ending(
    timeline: &Arc<Timeline>,
    reject: &[&str],
    ended: watch::Receiver<Option<BindingEnded>>,
) -> Arc<dyn IdentityInstaller> {
    let reject: Vec<String> = reject.iter().map(|&id| id.to_owned()).collect();
    let mut mock = MockIdentityInstaller::new();
    mock.expect_ended_bindings().returning(move || ended.clone());
    let retiring = timeline.clone();
    mock.expect_retire().returning(move |id| {
        retiring.record(Call::Retire(id.as_str().to_owned()));
        true
    });
    let closing = timeline.clone();
    mock.expect_close().returning(move || closing.record(Call::Close));
    let timeline = timeline.clone();
    mock.expect_install().returning(move |identity| {
        let id = identity.id.as_str().to_owned();
        timeline.record(Call::Install(id.clone()));
        assert!(!identity.identity_json.is_empty(), "the installer got no identity JSON");
        if reject.contains(&id) {
            Err(InstallError::Unusable(format!("{id} would not load").into()))
        } else {
            Ok(Box::new(Idle) as Box<dyn ServiceListener>)
        }
    });
    Arc::new(mock)
}

/// A binding nobody dials.
pub(crate) struct Idle;

#[async_trait]
impl ServiceListener for Idle {
    async fn accept(&mut self) -> Result<crate::ports::Accepted, crate::ListenError> {
        std::future::pending().await
    }
}

/// Hears nothing and serves nothing: a host for tests of the lease policy alone.
pub(crate) struct Quiet;

impl crate::ports::HostObserver for Quiet {
    fn serving(&self, _serving: bool) {}
    fn connection_opened(&self) {}
    fn connection_closed(&self) {}
    fn connection_refused(&self) {}
}

#[async_trait]
impl crate::ports::ConnectionHandler for Quiet {
    async fn serve(
        &self,
        _connection: Box<dyn crate::ports::Connection>,
        _admitted: crate::ports::Admitted,
        _drain: tokio_util::sync::CancellationToken,
    ) {
    }
}

/// A host with no handler or observer worth the name.
pub(crate) fn quiet_host() -> crate::hosting::Host {
    let policy = crate::hosting::HostPolicy {
        max_connections: 8,
        unverified_callers: crate::UnverifiedCallers::Anonymous,
        resolver: None,
    };
    crate::hosting::Host::new(Arc::new(Quiet), Arc::new(Quiet), policy)
}
