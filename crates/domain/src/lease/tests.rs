//! The lease keeper against mocked ports, on tokio's paused clock: every time below
//! is exact, measured from the start of the test (when the lease was obtained).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rstest::rstest;
use tokio::task::JoinHandle;

use super::*;
use crate::identity::ServiceType;
use std::sync::Mutex;

use crate::identity::IdentityJson;
use crate::ports::{BindingEnded, IdentityInstaller, LossReason};
use crate::test_support::{
    Call, ProviderMock, TTL, Timeline, installer, installer_ending, leased, ms, quiet_host, secs, transient,
};

const INTERVAL: Duration = Duration::from_secs(120);

fn gone() -> ProviderError {
    ProviderError::LeaseGone("revoked".into())
}

fn fatal() -> ProviderError {
    ProviderError::Fatal("permission denied".into())
}

/// A lease obtained at the start of the test, running out after `expires_in`.
fn lease(timeline: &Timeline, id: &str, expires_in: Option<Duration>) -> Lease {
    Lease { id: IdentityId::new(id), expires_at: expires_in.map(|left| timeline.at(left)) }
}

fn renewed(id: &str, expires_in: Option<Duration>) -> LeaseEvent {
    LeaseEvent::Renewed { id: IdentityId::new(id), expires_in }
}

struct Running {
    cancel: CancellationToken,
    task: JoinHandle<Stopped>,
}

/// Spawns a keeper of `lease` with the policy for `interval`; its installer rejects
/// the ids in `reject`, and it reports to `timeline`.
fn start(
    timeline: &Arc<Timeline>,
    provider: Arc<dyn IdentityProvider>,
    reject: &[&str],
    interval: Duration,
    lease: Lease,
) -> Running {
    start_with(timeline, provider, installer(timeline, reject), interval, lease)
}

/// [`start`] with a given installer.
fn start_with(
    timeline: &Arc<Timeline>,
    provider: Arc<dyn IdentityProvider>,
    installer: Arc<dyn IdentityInstaller>,
    interval: Duration,
    lease: Lease,
) -> Running {
    let observer: Arc<dyn LeaseObserver> = timeline.clone();
    let policy = LeasePolicy::new(interval);
    let enroller = Enroller::new(
        provider.clone(),
        installer,
        observer.clone(),
        quiet_host(),
        ServiceType::Gateway,
        policy.retry.clone(),
    );
    let keeper = LeaseKeeper::new(provider, enroller, observer, policy);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(keeper.run(lease, cancel.clone()));
    Running { cancel, task }
}

impl Running {
    /// Lets the keeper run until `until`, then cancels it and checks that it stopped
    /// without letting any time pass.
    async fn stop_at(self, timeline: &Timeline, until: Duration) -> Stopped {
        tokio::time::sleep_until(timeline.at(until)).await;
        self.cancel.cancel();
        let stopped = self.finish().await;
        assert_eq!(timeline.now(), until, "the keeper did not stop as soon as it was cancelled");
        stopped
    }

    /// Waits for the keeper to stop by itself (an hour at most, on the paused clock).
    async fn finish(self) -> Stopped {
        let stopped = tokio::time::timeout(secs(3600), self.task).await.expect("the keeper did not stop");
        stopped.expect("the keeper panicked")
    }
}

/// The keeper stopped on cancellation holding `lease`, and ended it: retired, then
/// released, as its last two calls.
#[track_caller]
fn assert_cancelled(timeline: &Timeline, stopped: &Stopped, lease: Option<&str>) {
    assert!(matches!(stopped.cause, StopCause::Cancelled), "{stopped:?}");
    assert_eq!(stopped.lease.as_ref().map(IdentityId::as_str), lease, "{stopped:?}");
    if let Some(lease) = lease {
        let calls: Vec<Call> = timeline.calls().into_iter().map(|(_, call)| call).collect();
        assert_eq!(
            calls[calls.len().saturating_sub(2)..],
            [Call::Retire(lease.to_owned()), Call::Release(lease.to_owned())],
            "the held lease was not ended last: {calls:?}"
        );
    }
}

fn at(times: &[Duration], id: &str) -> Vec<(Duration, String)> {
    times.iter().map(|&time| (time, id.to_owned())).collect()
}

// --- the policy's arithmetic --------------------------------------------------

#[rstest]
#[case::default_interval(secs(120), &[secs(1), secs(2), secs(4), secs(8), secs(16), secs(30), secs(30)])]
#[case::ninety_seconds(secs(90), &[secs(1), secs(2), secs(4), secs(8), secs(16), secs(30), secs(30)])]
#[case::twenty_seconds(secs(20), &[secs(1), secs(2), secs(4), secs(8), secs(10), secs(10)])]
#[case::four_seconds(secs(4), &[ms(500), secs(1), secs(2), secs(2)])]
#[case::two_hundred_millis(ms(200), &[ms(25), ms(50), ms(100), ms(100)])]
fn retry_backoff_starts_at_an_eighth_and_stops_at_half_the_interval(
    #[case] interval: Duration,
    #[case] expected: &[Duration],
) {
    let mut retry = LeasePolicy::new(interval).retry;
    let delays: Vec<Duration> = expected.iter().map(|_| retry.next_delay()).collect();
    assert_eq!(delays, expected);
}

#[rstest]
#[case::no_expiry_known(None, INTERVAL)]
#[case::full_lease(Some(TTL), INTERVAL)]
#[case::expiry_demands_it(Some(secs(60)), secs(30))]
#[case::about_to_expire(Some(ms(4)), ms(10))]
#[case::expired(Some(Duration::ZERO), ms(10))]
fn renewal_waits_the_interval_or_half_of_what_is_left(#[case] left: Option<Duration>, #[case] expected: Duration) {
    assert_eq!(LeasePolicy::new(INTERVAL).renewal_wait(left), expected);
}

#[rstest]
#[case::no_expiry_known(secs(8), None, secs(8))]
#[case::plenty_left(secs(8), Some(secs(100)), secs(8))]
#[case::little_left(secs(8), Some(secs(10)), secs(5))]
#[case::almost_nothing_left(secs(8), Some(ms(6)), ms(10))]
fn retry_waits_the_backoff_or_half_of_what_is_left(
    #[case] backoff: Duration,
    #[case] left: Option<Duration>,
    #[case] expected: Duration,
) {
    assert_eq!(LeasePolicy::retry_wait(backoff, left), expected);
}

// --- renewal cadence -------------------------------------------------------------

#[rstest]
#[case::default_no_expiry_reported(secs(120), None)]
#[case::default_five_minutes_reported(secs(120), Some(TTL))]
#[case::ninety_seconds_no_expiry_reported(secs(90), None)]
#[case::ninety_seconds_five_minutes_reported(secs(90), Some(TTL))]
#[case::two_hundred_millis_no_expiry_reported(ms(200), None)]
#[case::two_hundred_millis_five_minutes_reported(ms(200), Some(TTL))]
#[tokio::test(start_paused = true)]
async fn renews_every_interval(#[case] interval: Duration, #[case] reported: Option<Duration>) {
    let timeline = Timeline::start();
    let provider = ProviderMock::new(&timeline).extend_with(move |_, _| Ok(reported)).build();
    let keeper = start(&timeline, provider, &[], interval, lease(&timeline, "lease-1", reported));

    let stopped = keeper.stop_at(&timeline, interval * 3 + interval / 2).await;

    assert_eq!(timeline.extends(), at(&[interval, interval * 2, interval * 3], "lease-1"));
    assert_eq!(timeline.events(), vec![renewed("lease-1", reported); 3]);
    assert_cancelled(&timeline, &stopped, Some("lease-1"));
}

#[rstest]
// Enrolled with 60 s left: the first renewal comes at 30 s, not at 2 min.
#[case::reported_at_enrollment(Some(secs(60)), &[secs(30), secs(60), secs(90)])]
// A renewal reports 60 s left: the next one comes 30 s later.
#[case::reported_on_renewal(Some(TTL), &[secs(120), secs(150), secs(180)])]
#[tokio::test(start_paused = true)]
async fn renews_at_half_of_what_is_left_when_the_server_demands_it(
    #[case] enrolled_with: Option<Duration>,
    #[case] expected: &[Duration],
) {
    let timeline = Timeline::start();
    let provider = ProviderMock::new(&timeline).extend_with(|_, _| Ok(Some(secs(60)))).build();
    let keeper = start(&timeline, provider, &[], INTERVAL, lease(&timeline, "lease-1", enrolled_with));

    let stopped = keeper.stop_at(&timeline, expected[2] + secs(1)).await;

    assert_eq!(timeline.extends(), at(expected, "lease-1"));
    assert_cancelled(&timeline, &stopped, Some("lease-1"));
}

// --- failed renewals -------------------------------------------------------------

/// A 5-minute lease whose renewals all fail transiently; once it has expired a new
/// one (`lease-2`, renewed without trouble) is available.
fn failing_until_expiry(timeline: &Arc<Timeline>) -> Running {
    let provider = ProviderMock::new(timeline)
        .extend_with(|id, _| if id == "lease-1" { Err(transient()) } else { Ok(Some(TTL)) })
        .requests(vec![Ok(leased("lease-2", Some(TTL)))])
        .build();
    start(timeline, provider, &[], INTERVAL, lease(timeline, "lease-1", Some(TTL)))
}

#[tokio::test(start_paused = true)]
async fn failed_renewals_are_retried_with_backoff_before_the_lease_expires() {
    let timeline = Timeline::start();
    failing_until_expiry(&timeline).stop_at(&timeline, secs(310)).await;

    let attempts: Vec<Duration> =
        timeline.extends().into_iter().filter(|(_, id)| id == "lease-1").map(|(time, _)| time).collect();
    // Backoff 1 s doubling to 30 s from the failure at 2 min, then half of what is
    // left (59 s at 241 s, 29.5 s at 270.5 s, …).
    let expected_start = [
        ms(120_000),
        ms(121_000),
        ms(123_000),
        ms(127_000),
        ms(135_000),
        ms(151_000),
        ms(181_000),
        ms(211_000),
        ms(241_000),
        ms(270_500),
        ms(285_250),
        ms(292_625),
    ];
    assert_eq!(attempts[..expected_start.len()], expected_start, "{attempts:?}");
    assert!(attempts.iter().all(|&time| time < TTL), "a renewal was attempted after expiry: {attempts:?}");

    // Each failure announces its retry, and that retry is what happens.
    let retries: Vec<(Duration, Duration)> = timeline
        .timed_events()
        .into_iter()
        .filter_map(|(time, event)| match event {
            LeaseEvent::RenewalFailed { id, error, retry_in } => {
                assert_eq!((id.as_str(), error.as_ref()), ("lease-1", &transient()));
                Some((time, retry_in))
            }
            _ => None,
        })
        .collect();
    assert_eq!(retries.len(), attempts.len());
    for (&(failed_at, retry_in), &next) in retries.iter().zip(&attempts[1..]) {
        // tokio's timers tick in whole milliseconds.
        let announced = failed_at + retry_in;
        assert!(announced <= next && next - announced < ms(1), "announced {announced:?}, retried at {next:?}");
        let left = TTL - failed_at;
        assert!(retry_in <= (left / 2).max(MIN_WAIT), "retry at {next:?} is later than half of {left:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn recovers_after_three_failures_and_keeps_the_same_lease() {
    let timeline = Timeline::start();
    let provider = ProviderMock::new(&timeline)
        .extend_script(
            vec![Err(transient()), Err(transient()), Err(transient()), Ok(Some(TTL)), Err(transient())],
            Ok(Some(TTL)),
        )
        .build(); // no request_identity expected: calling it fails the test
    let keeper = start(&timeline, provider, &[], INTERVAL, lease(&timeline, "lease-1", Some(TTL)));

    let stopped = keeper.stop_at(&timeline, secs(400)).await;

    // Three retries (1, 2, 4 s), back to every 2 min after the success, and the
    // backoff starts over at 1 s for the next failure.
    assert_eq!(
        timeline.extends(),
        at(&[secs(120), secs(121), secs(123), secs(127), secs(247), secs(248), secs(368)], "lease-1")
    );
    let failed =
        |retry_in| LeaseEvent::RenewalFailed { id: IdentityId::new("lease-1"), error: Arc::new(transient()), retry_in };
    assert_eq!(
        timeline.events(),
        [
            failed(secs(1)),
            failed(secs(2)),
            failed(secs(4)),
            renewed("lease-1", Some(TTL)),
            failed(secs(1)),
            renewed("lease-1", Some(TTL)),
            renewed("lease-1", Some(TTL)),
        ]
    );
    assert!(timeline.requests().is_empty());
    assert_cancelled(&timeline, &stopped, Some("lease-1"));
}

// --- a lost lease -------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_gone_lease_is_replaced_by_a_new_identity() {
    let timeline = Timeline::start();
    let provider = ProviderMock::new(&timeline)
        .extend_with(|id, _| if id == "lease-1" { Err(gone()) } else { Ok(Some(TTL)) })
        .requests(vec![Ok(leased("lease-2", Some(TTL)))])
        .build();
    let keeper = start(&timeline, provider, &[], INTERVAL, lease(&timeline, "lease-1", Some(TTL)));

    let stopped = keeper.stop_at(&timeline, secs(370)).await;

    assert_eq!(timeline.requests(), [secs(120)]);
    assert_eq!(timeline.installed(), ["lease-2"]);
    let mut expected = at(&[secs(120)], "lease-1");
    expected.extend(at(&[secs(240), secs(360)], "lease-2"));
    assert_eq!(timeline.extends(), expected);
    assert_eq!(
        timeline.events(),
        [
            LeaseEvent::Lost { id: IdentityId::new("lease-1"), reason: LossReason::Gone(Arc::new(gone())) },
            LeaseEvent::Enrolled { id: IdentityId::new("lease-2"), expires_in: Some(TTL) },
            renewed("lease-2", Some(TTL)),
            renewed("lease-2", Some(TTL)),
        ]
    );
    assert_eq!(timeline.released(), ["lease-2"], "a gone lease needs no release, the held one does at the stop");
    let retired: Vec<(Duration, String)> = timeline
        .calls()
        .into_iter()
        .filter_map(|(at, call)| if let Call::Retire(id) = call { Some((at, id)) } else { None })
        .collect();
    assert_eq!(
        retired,
        [(secs(120), "lease-1".to_owned()), (secs(370), "lease-2".to_owned())],
        "the lost lease is retired at once, before a successor is asked for"
    );
    assert_eq!(timeline.calls()[1], (secs(120), Call::Retire("lease-1".to_owned())));
    assert_cancelled(&timeline, &stopped, Some("lease-2"));
}

#[tokio::test(start_paused = true)]
async fn a_lease_whose_binding_ended_is_given_back_and_replaced() {
    let timeline = Timeline::start();
    let provider = ProviderMock::new(&timeline)
        .extend_with(|_, _| Ok(Some(TTL)))
        .requests(vec![Ok(leased("lease-2", Some(TTL)))])
        .build();
    let (ended, ended_bindings) = tokio::sync::watch::channel(None);
    let installer = installer_ending(&timeline, &[], ended_bindings);
    let keeper = start_with(&timeline, provider, installer, INTERVAL, lease(&timeline, "lease-1", Some(TTL)));

    tokio::time::sleep_until(timeline.at(secs(30))).await;
    let reason = "the controller no longer accepts this identity".to_owned();
    ended.send_replace(Some(BindingEnded { id: IdentityId::new("an-earlier-lease"), reason: reason.clone() }));
    tokio::time::sleep_until(timeline.at(secs(60))).await;
    assert!(timeline.calls().is_empty(), "an ended binding of another lease is ignored: {:?}", timeline.calls());
    ended.send_replace(Some(BindingEnded { id: IdentityId::new("lease-1"), reason: reason.clone() }));
    let stopped = keeper.stop_at(&timeline, secs(200)).await;

    let calls: Vec<(Duration, Call)> = timeline.calls().into_iter().take(4).collect();
    assert_eq!(
        calls,
        [
            (secs(60), Call::Retire("lease-1".to_owned())),
            (secs(60), Call::Release("lease-1".to_owned())),
            (secs(60), Call::Request),
            (secs(60), Call::Install("lease-2".to_owned())),
        ],
        "a useless identity is taken out of use, given back, and replaced at once"
    );
    assert_eq!(timeline.extends(), at(&[secs(180)], "lease-2"), "the useless lease is renewed no more");
    assert_eq!(
        timeline.events(),
        [
            LeaseEvent::Lost { id: IdentityId::new("lease-1"), reason: LossReason::BindingEnded(reason) },
            LeaseEvent::Enrolled { id: IdentityId::new("lease-2"), expires_in: Some(TTL) },
            renewed("lease-2", Some(TTL)),
        ]
    );
    assert_cancelled(&timeline, &stopped, Some("lease-2"));
}

#[tokio::test(start_paused = true)]
async fn an_expired_lease_is_replaced_while_the_server_keeps_failing() {
    let timeline = Timeline::start();
    failing_until_expiry(&timeline).stop_at(&timeline, secs(500)).await;

    let lost = timeline.events_where(|event| matches!(event, LeaseEvent::Lost { .. }));
    let [(lost_at, LeaseEvent::Lost { id, reason })] = &lost[..] else { panic!("one Lost expected: {lost:?}") };
    assert_eq!(id.as_str(), "lease-1");
    assert_eq!(*reason, LossReason::Expired);
    assert!(TTL <= *lost_at && *lost_at <= TTL + MIN_WAIT, "lost at {lost_at:?}, the lease ran out at {TTL:?}");

    assert_eq!(timeline.requests(), [*lost_at]);
    assert_eq!(timeline.installed(), ["lease-2"]);
    let after: Vec<(Duration, String)> = timeline.extends().into_iter().filter(|(time, _)| time >= lost_at).collect();
    assert_eq!(after, at(&[*lost_at + INTERVAL], "lease-2"));
}

#[rstest]
#[case::release_works(Ok(()))]
#[case::release_fails(Err(ProviderError::Transient("down".into())))]
#[tokio::test(start_paused = true)]
async fn reenrollment_retries_transient_failures_and_releases_unusable_leases(
    #[case] release: Result<(), ProviderError>,
) {
    let timeline = Timeline::start();
    let provider = ProviderMock::new(&timeline)
        .extend_with(|id, _| if id == "lease-1" { Err(gone()) } else { Ok(Some(TTL)) })
        .requests(vec![
            Err(transient()),
            Err(transient()),
            Ok(leased("lease-2", Some(TTL))),
            Ok(leased("lease-3", Some(TTL))),
        ])
        .release(release)
        .build();
    let keeper = start(&timeline, provider, &["lease-2"], INTERVAL, lease(&timeline, "lease-1", Some(TTL)));

    let stopped = keeper.stop_at(&timeline, secs(250)).await;

    assert_eq!(timeline.requests(), [secs(120), secs(121), secs(123), secs(127)]);
    assert_eq!(timeline.installed(), ["lease-2", "lease-3"]);
    // The unusable one at once; the held one when the keeper stops.
    assert_eq!(timeline.released(), ["lease-2", "lease-3"]);
    assert_eq!(timeline.retired(), ["lease-1", "lease-3"], "an identity never installed needs no retiring");
    let retries: Vec<Duration> = timeline
        .events()
        .into_iter()
        .filter_map(|event| match event {
            LeaseEvent::EnrollmentFailed { retry_in, .. } => Some(retry_in),
            _ => None,
        })
        .collect();
    assert_eq!(retries, [secs(1), secs(2), secs(4)]);
    let enrolled = timeline.events_where(|event| matches!(event, LeaseEvent::Enrolled { .. }));
    assert_eq!(enrolled, [(secs(127), LeaseEvent::Enrolled { id: IdentityId::new("lease-3"), expires_in: Some(TTL) })]);
    let mut expected = at(&[secs(120)], "lease-1");
    expected.extend(at(&[secs(247)], "lease-3"));
    assert_eq!(timeline.extends(), expected);
    assert_cancelled(&timeline, &stopped, Some("lease-3"));
}

// --- stopping -----------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_fatal_renewal_error_stops_the_keeper() {
    let timeline = Timeline::start();
    let provider = ProviderMock::new(&timeline).extend_script(vec![Ok(Some(TTL))], Err(fatal())).build();
    let keeper = start(&timeline, provider, &[], INTERVAL, lease(&timeline, "lease-1", Some(TTL)));

    let stopped = keeper.finish().await;

    assert_eq!(timeline.now(), secs(240));
    assert!(matches!(&stopped.cause, StopCause::Refused(error) if *error == fatal()), "{stopped:?}");
    assert_eq!(stopped.lease, Some(IdentityId::new("lease-1")));
    assert_eq!(timeline.extend_times(), [secs(120), secs(240)]);
    assert!(timeline.requests().is_empty());
    assert_eq!(timeline.retired(), ["lease-1"], "a refused lease's identity is taken out of use");
    assert_eq!(timeline.released(), ["lease-1"], "and given back, best effort");
}

#[tokio::test(start_paused = true)]
async fn a_refused_reenrollment_stops_the_keeper_without_a_lease() {
    let timeline = Timeline::start();
    let provider = ProviderMock::new(&timeline)
        .extend_script(vec![], Err(gone()))
        .requests(vec![Err(transient()), Err(fatal())])
        .build();
    let keeper = start(&timeline, provider, &[], INTERVAL, lease(&timeline, "lease-1", Some(TTL)));

    let stopped = keeper.finish().await;

    assert_eq!(timeline.now(), secs(121));
    assert!(matches!(&stopped.cause, StopCause::Refused(error) if *error == fatal()), "{stopped:?}");
    assert_eq!(stopped.lease, None);
    assert_eq!(timeline.retired(), ["lease-1"], "the lost lease was retired when it was lost");
    assert!(timeline.released().is_empty(), "a gone lease needs no release");
}

#[rstest]
#[case::before_the_first_renewal(secs(60), &[])]
#[case::just_before_a_renewal(ms(239_999), &[secs(120)])]
#[case::between_renewals(secs(300), &[secs(120), secs(240)])]
#[tokio::test(start_paused = true)]
async fn cancelling_stops_at_once_and_renews_no_more(#[case] cancel_at: Duration, #[case] expected: &[Duration]) {
    let timeline = Timeline::start();
    let provider = ProviderMock::new(&timeline).extend_with(|_, _| Ok(Some(TTL))).build();
    let keeper = start(&timeline, provider, &[], INTERVAL, lease(&timeline, "lease-1", Some(TTL)));

    let stopped = keeper.stop_at(&timeline, cancel_at).await;
    tokio::time::sleep(secs(600)).await;

    assert_eq!(timeline.extend_times(), expected);
    assert_cancelled(&timeline, &stopped, Some("lease-1"));
}

#[tokio::test(start_paused = true)]
async fn cancelling_wins_over_a_renewal_due_at_the_same_instant() {
    // Cancellation and the renewal timer become ready together; whichever the keeper
    // looks at first, it must stop without extending.
    for round in 0..64 {
        let timeline = Timeline::start();
        let provider = ProviderMock::new(&timeline).extend_with(|_, _| Ok(Some(TTL))).build();
        let keeper = start(&timeline, provider, &[], INTERVAL, lease(&timeline, "lease-1", Some(TTL)));
        tokio::task::yield_now().await; // the keeper starts waiting

        tokio::time::advance(INTERVAL).await; // the renewal is due…
        keeper.cancel.cancel(); // …and shutdown is asked before the keeper wakes up
        let stopped = keeper.finish().await;

        assert_eq!(timeline.extend_times(), [], "round {round}");
        assert_cancelled(&timeline, &stopped, Some("lease-1"));
    }
}

#[tokio::test(start_paused = true)]
async fn cancelling_stops_a_renewal_that_hangs() {
    let timeline = Timeline::start();
    let provider = ProviderMock::new(&timeline).extend_with(|_, _| Ok(Some(TTL))).build_hanging_extend();
    let keeper = start(&timeline, provider, &[], INTERVAL, lease(&timeline, "lease-1", Some(TTL)));

    let stopped = keeper.stop_at(&timeline, secs(125)).await;

    assert_eq!(timeline.extend_times(), [secs(120)]);
    assert!(timeline.events().is_empty(), "{:?}", timeline.events());
    assert_cancelled(&timeline, &stopped, Some("lease-1"));
}

#[tokio::test(start_paused = true)]
async fn cancelling_stops_a_reenrollment_that_is_waiting_to_retry() {
    let timeline = Timeline::start();
    let provider =
        ProviderMock::new(&timeline).extend_script(vec![], Err(gone())).requests(vec![Err(transient())]).build();
    let keeper = start(&timeline, provider, &[], INTERVAL, lease(&timeline, "lease-1", Some(TTL)));

    let stopped = keeper.stop_at(&timeline, ms(120_500)).await;

    assert_eq!(timeline.requests(), [secs(120)]);
    assert!(timeline.installed().is_empty());
    assert_eq!(timeline.retired(), ["lease-1"]);
    assert!(timeline.released().is_empty());
    assert_cancelled(&timeline, &stopped, None);
}

// --- ending the lease ---------------------------------------------------------------

#[rstest]
#[case::release_fails(Some(Err(ProviderError::Transient("down".into()))))]
#[case::release_hangs(None)]
#[tokio::test(start_paused = true)]
async fn a_release_that_fails_or_hangs_does_not_hold_up_the_stop(#[case] answer: Option<Result<(), ProviderError>>) {
    let timeline = Timeline::start();
    let provider = ProviderMock::new(&timeline).extend_with(|_, _| Ok(Some(TTL)));
    let provider = match answer {
        Some(answer) => provider.release(answer).build(),
        None => provider.build_hanging_release(),
    };
    let keeper = start(&timeline, provider, &[], INTERVAL, lease(&timeline, "lease-1", Some(TTL)));
    tokio::time::sleep(secs(10)).await;
    keeper.cancel.cancel();

    let stopped = keeper.finish().await;

    assert!(timeline.now() <= secs(10) + LeasePolicy::new(INTERVAL).release_timeout, "{:?}", timeline.now());
    assert_eq!(timeline.retired(), ["lease-1"], "the identity is retired whatever the server does");
    assert_eq!(timeline.released(), ["lease-1"]);
    assert!(matches!(stopped.cause, StopCause::Cancelled), "{stopped:?}");
}

/// A source whose credential rotates every minute and lives two (an X.509-SVID): the
/// certificate issued at minute `n` is `svid-n`.
fn rotating_source(timeline: &Arc<Timeline>) -> Arc<dyn IdentityProvider> {
    let mut mock = crate::ports::MockIdentityProvider::new();
    let recorder = timeline.clone();
    mock.expect_extend_lease().returning(move |id| {
        recorder.record(Call::Extend(id.as_str().to_owned()));
        let now = recorder.now().as_secs();
        let issued = now / 60 * 60;
        let credential = IdentityJson::new(format!("svid-{}", issued / 60).into_bytes());
        Ok(Renewal::with_credential(credential, Some(secs(issued + 120 - now))))
    });
    let releasing = timeline.clone();
    mock.expect_release().returning(move |id| {
        releasing.record(Call::Release(id.as_str().to_owned()));
        Ok(())
    });
    Arc::new(mock)
}

/// An installer that records the credentials it is handed, fails the first rotation
/// and knows which credential is in use.
fn rotating_installer(timeline: &Arc<Timeline>) -> (Arc<dyn IdentityInstaller>, Arc<Mutex<Vec<String>>>) {
    let in_use = Arc::new(Mutex::new(vec!["svid-0".to_owned()]));
    let mut mock = crate::ports::MockIdentityInstaller::new();
    mock.expect_ended_bindings().returning(|| tokio::sync::watch::channel(None).1);
    let retiring = timeline.clone();
    mock.expect_retire().returning(move |id| {
        retiring.record(Call::Retire(id.as_str().to_owned()));
        true
    });
    let used = in_use.clone();
    let failed_once = std::sync::atomic::AtomicBool::new(false);
    mock.expect_rotate().returning(move |_, credential| {
        let credential = String::from_utf8(credential.as_bytes().to_vec()).unwrap();
        let mut used = used.lock().unwrap();
        if used.last() == Some(&credential) {
            return Ok(Rotation::Unchanged);
        }
        if !failed_once.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(crate::InstallError::Failed("the controller is unreachable".into()));
        }
        used.push(credential);
        Ok(Rotation::Rotated)
    });
    (Arc::new(mock), in_use)
}

#[tokio::test(start_paused = true)]
async fn each_rotated_credential_is_put_to_use_before_the_one_in_use_expires() {
    let timeline = Timeline::start();
    let (installer, in_use) = rotating_installer(&timeline);
    let running = start_with(
        &timeline,
        rotating_source(&timeline),
        installer,
        INTERVAL,
        lease(&timeline, "svid", Some(secs(120))),
    );
    let stopped = running.stop_at(&timeline, secs(250)).await;
    assert_cancelled(&timeline, &stopped, Some("svid"));

    // The first rotation failed at 60 s and was tried again a second later (119 s left,
    // so the next look came at half of that); each later credential was in use within
    // a second of its issue, long before the one it replaced expired.
    assert_eq!(*in_use.lock().unwrap(), ["svid-0", "svid-1", "svid-2", "svid-3", "svid-4"]);
    let rotated: Vec<_> = timeline
        .events_where(|event| matches!(event, LeaseEvent::Rotated { .. } | LeaseEvent::RotationFailed { .. }))
        .into_iter()
        .map(|(at, event)| (at, matches!(event, LeaseEvent::Rotated { .. })))
        .collect();
    assert_eq!(
        rotated,
        [(secs(60), false), (secs(61), true), (ms(120_500), true), (ms(180_500), true), (ms(240_500), true)]
    );
    assert!(
        timeline.events_where(|event| matches!(event, LeaseEvent::Lost { .. })).is_empty(),
        "a rotating identity was lost"
    );
}
