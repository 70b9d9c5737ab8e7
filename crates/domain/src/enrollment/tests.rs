//! Enrollment at start-up and after a lost lease, against mocked ports on tokio's
//! paused clock; times are measured from the start of the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rstest::rstest;

use super::*;
use crate::identity::LeasedIdentity;
use crate::test_support::{ProviderMock, TTL, Timeline, installer, leased, quiet_host, secs, transient};

fn fatal() -> ProviderError {
    ProviderError::Fatal("permission denied".into())
}

/// An enroller retrying after 1 s, doubling up to 30 s (the default lease policy's).
fn enroller(timeline: &Arc<Timeline>, provider: Arc<dyn IdentityProvider>, reject: &[&str]) -> Enroller {
    let observer: Arc<dyn LeaseObserver> = timeline.clone();
    Enroller::new(
        provider,
        installer(timeline, reject),
        observer,
        quiet_host(),
        ServiceType::Gateway,
        Backoff::new(secs(1), secs(30)),
    )
}

fn enrolled(id: &str, expires_in: Option<Duration>) -> LeaseEvent {
    LeaseEvent::Enrolled { id: IdentityId::new(id), expires_in }
}

/// The `retry_in` of each `EnrollmentFailed` event.
fn retries(timeline: &Timeline) -> Vec<Duration> {
    timeline
        .events()
        .into_iter()
        .filter_map(|event| match event {
            LeaseEvent::EnrollmentFailed { retry_in, .. } => Some(retry_in),
            _ => None,
        })
        .collect()
}

// --- at start-up ------------------------------------------------------------------

#[rstest]
#[case::expiry_reported(Some(TTL))]
#[case::no_expiry_reported(None)]
#[tokio::test(start_paused = true)]
async fn enroll_at_start_installs_the_first_identity(#[case] expires_in: Option<Duration>) {
    let timeline = Timeline::start();
    let provider = ProviderMock::new(&timeline).requests(vec![Ok(leased("lease-1", expires_in))]).build();

    let lease = enroller(&timeline, provider, &[]).enroll_at_start(secs(30), &CancellationToken::new()).await.unwrap();

    assert_eq!(lease, Lease { id: IdentityId::new("lease-1"), expires_at: expires_in.map(|left| timeline.at(left)) });
    assert_eq!(timeline.requests(), [secs(0)]);
    assert_eq!(timeline.installed(), ["lease-1"]);
    assert_eq!(timeline.events(), [enrolled("lease-1", expires_in)]);
}

#[tokio::test(start_paused = true)]
async fn enroll_at_start_retries_a_provider_that_is_down() {
    let timeline = Timeline::start();
    let provider = ProviderMock::new(&timeline)
        .requests(vec![Err(transient()), Err(transient()), Ok(leased("lease-1", Some(TTL)))])
        .build();

    let lease = enroller(&timeline, provider, &[]).enroll_at_start(secs(30), &CancellationToken::new()).await.unwrap();

    assert_eq!(lease, Lease { id: IdentityId::new("lease-1"), expires_at: Some(timeline.at(secs(3) + TTL)) });
    assert_eq!(timeline.requests(), [secs(0), secs(1), secs(3)]);
    assert_eq!(retries(&timeline), [secs(1), secs(2)]);
    assert_eq!(timeline.installed(), ["lease-1"]);
}

#[rstest]
// Backoff 1, 2, 4 s, then the last wait is cut short to try once more at the deadline.
#[case::ten_seconds(secs(10), &[0, 1, 3, 7, 10])]
#[case::default_thirty_seconds(secs(30), &[0, 1, 3, 7, 15, 30])]
#[case::on_a_backoff_step(secs(7), &[0, 1, 3, 7])]
#[tokio::test(start_paused = true)]
async fn enroll_at_start_keeps_trying_until_the_timeout(#[case] timeout: Duration, #[case] expected: &[u64]) {
    let timeline = Timeline::start();
    let provider = ProviderMock::new(&timeline).requests(expected.iter().map(|_| Err(transient())).collect()).build();

    let result = enroller(&timeline, provider, &[]).enroll_at_start(timeout, &CancellationToken::new()).await;

    let Err(EnrollError::TimedOut { attempts, waited, last }) = result else { panic!("{result:?}") };
    assert_eq!(timeline.requests(), expected.iter().map(|&at| secs(at)).collect::<Vec<_>>());
    assert_eq!(attempts as usize, expected.len());
    assert_eq!((waited, timeline.now()), (timeout, timeout), "it gave up before the timeout");
    assert_eq!(last, transient());
    let waits: Vec<Duration> = expected.windows(2).map(|pair| secs(pair[1] - pair[0])).collect();
    assert_eq!(retries(&timeline), waits);
    assert!(timeline.installed().is_empty());
}

#[tokio::test(start_paused = true)]
async fn enroll_at_start_stops_at_once_when_refused() {
    let timeline = Timeline::start();
    let provider = ProviderMock::new(&timeline).requests(vec![Err(fatal())]).build();

    let result = enroller(&timeline, provider, &[]).enroll_at_start(secs(30), &CancellationToken::new()).await;

    assert!(matches!(&result, Err(EnrollError::Refused(error)) if *error == fatal()), "{result:?}");
    assert_eq!(timeline.requests(), [secs(0)]);
    assert!(timeline.installed().is_empty());
    assert!(timeline.events().is_empty(), "{:?}", timeline.events());
}

#[rstest]
#[case::release_works(Ok(()))]
#[case::release_fails(Err(transient()))]
#[tokio::test(start_paused = true)]
async fn enroll_at_start_releases_an_identity_the_overlay_rejects(#[case] release: Result<(), ProviderError>) {
    let timeline = Timeline::start();
    let provider =
        ProviderMock::new(&timeline).requests(vec![Ok(leased("lease-1", Some(TTL)))]).release(release).build();

    let result = enroller(&timeline, provider, &["lease-1"]).enroll_at_start(secs(30), &CancellationToken::new()).await;

    let Err(EnrollError::Install { id, source }) = result else { panic!("{result:?}") };
    assert_eq!(id.as_str(), "lease-1");
    assert_eq!(source, InstallError::Unusable("lease-1 would not load".into()));
    assert_eq!(timeline.requests(), [secs(0)]);
    assert_eq!(timeline.installed(), ["lease-1"]);
    assert_eq!(timeline.released(), ["lease-1"]);
    assert!(timeline.events().is_empty(), "{:?}", timeline.events());
}

#[tokio::test(start_paused = true)]
async fn enroll_at_start_stops_when_cancelled() {
    let timeline = Timeline::start();
    let provider = ProviderMock::new(&timeline).requests(vec![Err(transient()), Err(transient())]).build();
    let cancel = CancellationToken::new();
    let canceller = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(secs(2)).await;
        canceller.cancel();
    });

    let result = enroller(&timeline, provider, &[]).enroll_at_start(secs(30), &cancel).await;

    assert!(matches!(result, Err(EnrollError::Cancelled)), "{result:?}");
    assert_eq!(timeline.now(), secs(2));
    assert_eq!(timeline.requests(), [secs(0), secs(1)]);
}

#[tokio::test(start_paused = true)]
async fn enroll_at_start_asks_nothing_once_cancelled() {
    // Both are ready at once; cancellation must win every time.
    for round in 0..64 {
        let timeline = Timeline::start();
        let provider = ProviderMock::new(&timeline).requests(vec![]).build();
        let cancel = CancellationToken::new();
        cancel.cancel();

        let result = enroller(&timeline, provider, &[]).enroll_at_start(secs(30), &cancel).await;

        assert!(matches!(result, Err(EnrollError::Cancelled)), "round {round}: {result:?}");
        assert!(timeline.requests().is_empty(), "round {round}");
    }
}

// --- after a lost lease -------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn reenroll_keeps_trying_through_outages_vanished_leases_and_rejected_identities() {
    let timeline = Timeline::start();
    let mut script: Vec<Result<LeasedIdentity, ProviderError>> = (0..6).map(|_| Err(transient())).collect();
    script.extend([
        Err(ProviderError::LeaseGone("vanished".into())),
        Ok(leased("lease-2", Some(TTL))),
        Ok(leased("lease-3", Some(TTL))),
    ]);
    let provider = ProviderMock::new(&timeline).requests(script).release(Ok(())).build();

    let lease = enroller(&timeline, provider, &["lease-2"]).reenroll(&CancellationToken::new()).await.unwrap();

    // No deadline: 1 s doubling, capped at 30 s.
    let expected = [0, 1, 3, 7, 15, 31, 61, 91, 121];
    assert_eq!(timeline.requests(), expected.map(secs));
    assert_eq!(retries(&timeline), [1, 2, 4, 8, 16, 30, 30, 30].map(secs));
    assert_eq!(timeline.installed(), ["lease-2", "lease-3"]);
    assert_eq!(timeline.released(), ["lease-2"]);
    assert_eq!(lease, Lease { id: IdentityId::new("lease-3"), expires_at: Some(timeline.at(secs(121) + TTL)) });
    assert_eq!(timeline.events().last(), Some(&enrolled("lease-3", Some(TTL))));
}

#[tokio::test(start_paused = true)]
async fn reenroll_stops_when_refused() {
    let timeline = Timeline::start();
    let provider = ProviderMock::new(&timeline).requests(vec![Err(transient()), Err(fatal())]).build();

    let result = enroller(&timeline, provider, &[]).reenroll(&CancellationToken::new()).await;

    assert!(matches!(&result, Err(EnrollError::Refused(error)) if *error == fatal()), "{result:?}");
    assert_eq!(timeline.requests(), [secs(0), secs(1)]);
}
