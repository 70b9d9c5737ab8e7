//! Bounded load on the real controller through one ziti-management:
//!
//! 1. 200 leases (TTL 10 s, reaper every 2 s) created by 8 concurrent callers and
//!    each renewed every 4 s while held, then held together for 60 s: none may be
//!    lost and no call may fail;
//! 2. then 80 RequestServiceIdentity calls by 8 concurrent callers: throughput and
//!    latency percentiles.
//!
//! The summary goes to stderr and to `target/reports/ziti-management-load.txt`.
//!
//! 3. What attestation costs: the same enrollments, one caller at a time and then a
//!    burst of 8 concurrent callers, through two ziti-managements side by side in one
//!    run: callers without credentials (`none`) and callers presenting an X.509-SVID
//!    over mTLS (`spiffe`, every call a new connection and handshake in the
//!    "new connection per call" row). Written to `target/reports/ziti-management-attestation.txt`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a failed step should panic

mod support;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream;
use support::controller::ControllerView;
use support::{Client, Management, attested_management, extend, mint, release, request_gateway};
use tokio::sync::{Mutex, Semaphore, watch};
use workspace_tests::network::{ZitiNetwork, workspace_root};

const LEASES: usize = 200;
const CALLERS: usize = 8;
const RENEW_EVERY: Duration = Duration::from_secs(4);
const HOLD: Duration = Duration::from_secs(60);
const BURST: usize = 80;
const SEQUENTIAL: usize = 20;

#[derive(Debug, Default)]
struct Samples {
    creations: Vec<Duration>,
    extensions: Vec<Duration>,
    errors: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_leases_held_for_a_minute_then_a_burst_of_requests() {
    let network = ZitiNetwork::from_env();
    let management = Management::start(&network, "10s", "2s");
    let client = management.client().await;
    let controller = ControllerView::login(&network).await;
    let samples = Arc::new(Mutex::new(Samples::default()));

    // Phase 1: create 200 leases (8 callers at a time), each renewed from its birth.
    let gate = Arc::new(Semaphore::new(CALLERS));
    let (hold_end_tx, hold_end) = watch::channel::<Option<Instant>>(None);
    let started = Instant::now();
    let mut holders = Vec::new();
    for _ in 0..LEASES {
        let (client, gate, samples, hold_end) = (client.clone(), gate.clone(), samples.clone(), hold_end.clone());
        holders.push(tokio::spawn(hold_lease(client, gate, samples, hold_end)));
    }
    // Wait until every lease exists (or failed), then hold them all for HOLD.
    let creation_deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let done = {
            let s = samples.lock().await;
            s.creations.len() + s.errors.len()
        };
        if done >= LEASES {
            break;
        }
        assert!(Instant::now() < creation_deadline, "creating {LEASES} leases took over 180 s; {done} done");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let created_in = started.elapsed();
    hold_end_tx.send(Some(Instant::now() + HOLD)).expect("holders listen");
    let mut ids = Vec::new();
    for holder in holders {
        if let Some(id) =
            tokio::time::timeout(HOLD + Duration::from_secs(60), holder).await.expect("holder ended").expect("join")
        {
            ids.push(id);
        }
    }
    let held_for = started.elapsed() - created_in;

    // None lost: every identity is still on the controller, every call succeeded.
    let mut lost = 0;
    for id in &ids {
        if controller.identity(id).await.is_none() {
            lost += 1;
        }
    }
    let phase1 = std::mem::take(&mut *samples.lock().await);

    // Release the 200 before the burst, so that their expiry does not disturb it.
    let releasing = Instant::now();
    let release_errors = release_all(&client, &ids).await;
    let released_in = releasing.elapsed();

    // One caller at a time: the latency of a single enrollment on an idle server.
    let mut sequential = Vec::new();
    let mut sequential_ids = Vec::new();
    for _ in 0..SEQUENTIAL {
        let mut client = client.clone();
        let t = Instant::now();
        let issued = request_gateway(&mut client).await.expect("sequential request");
        sequential.push(t.elapsed());
        sequential_ids.push(issued.ziti_identity_id);
    }
    let sequential_release_errors = release_all(&client, &sequential_ids).await;

    // Phase 2: a burst of RequestServiceIdentity from 8 concurrent callers.
    let burst_started = Instant::now();
    let results: Vec<(Duration, Result<String, tonic::Status>)> = stream::iter(0..BURST)
        .map(|_| {
            let mut client = client.clone();
            async move {
                let t = Instant::now();
                let result = request_gateway(&mut client).await.map(|issued| issued.ziti_identity_id);
                (t.elapsed(), result)
            }
        })
        .buffer_unordered(CALLERS)
        .collect()
        .await;
    let burst_wall = burst_started.elapsed();
    let burst_ids: Vec<String> = results.iter().filter_map(|(_, r)| r.as_ref().ok().cloned()).collect();
    let burst_errors: Vec<String> =
        results.iter().filter_map(|(_, r)| r.as_ref().err().map(|s| format!("{s:?}"))).collect();
    let burst_latencies: Vec<Duration> = results.iter().filter(|(_, r)| r.is_ok()).map(|(d, _)| *d).collect();
    let burst_release_errors = release_all(&client, &burst_ids).await;

    let mut report = String::new();
    let w = &mut report;
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    writeln!(
        w,
        "ziti-management load test ({profile} build; real controller {}, one ziti-management)",
        network.ctrl_url
    )
    .unwrap();
    writeln!(w, "phase 1: {LEASES} leases, TTL 10 s, reaper every 2 s, renewed every {RENEW_EVERY:?}").unwrap();
    writeln!(
        w,
        "  created {} leases in {:.1} s by {CALLERS} callers ({:.1} identities/s, renewals running)",
        phase1.creations.len(),
        created_in.as_secs_f64(),
        phase1.creations.len() as f64 / created_in.as_secs_f64()
    )
    .unwrap();
    writeln!(w, "  RequestServiceIdentity during creation: {}", percentiles(&phase1.creations)).unwrap();
    writeln!(
        w,
        "  held all for {:.1} s; extensions: {} ok, {}",
        held_for.as_secs_f64(),
        phase1.extensions.len(),
        percentiles(&phase1.extensions)
    )
    .unwrap();
    writeln!(w, "  errors: {}; leases lost: {lost}", phase1.errors.len()).unwrap();
    writeln!(w, "  released {} in {:.1} s ({} errors)", ids.len(), released_in.as_secs_f64(), release_errors).unwrap();
    writeln!(w, "single caller: {SEQUENTIAL} RequestServiceIdentity one at a time").unwrap();
    writeln!(w, "  latency: {}", percentiles(&sequential)).unwrap();
    writeln!(w, "phase 2: {BURST} RequestServiceIdentity, {CALLERS} concurrent callers").unwrap();
    writeln!(
        w,
        "  {} ok in {:.2} s: {:.1} identities/s",
        burst_latencies.len(),
        burst_wall.as_secs_f64(),
        burst_latencies.len() as f64 / burst_wall.as_secs_f64()
    )
    .unwrap();
    writeln!(w, "  latency: {}", percentiles(&burst_latencies)).unwrap();
    writeln!(w, "  errors: {}; release errors: {burst_release_errors}", burst_errors.len()).unwrap();
    eprintln!("{report}");
    let dir = workspace_root().join("target/reports");
    std::fs::create_dir_all(&dir).expect("reports dir");
    std::fs::write(dir.join("ziti-management-load.txt"), &report).expect("write report");

    assert!(
        phase1.errors.is_empty(),
        "errors while holding leases: {:?}",
        &phase1.errors[..phase1.errors.len().min(5)]
    );
    assert_eq!(ids.len(), LEASES);
    assert_eq!(lost, 0, "leases lost");
    assert_eq!(release_errors + burst_release_errors + sequential_release_errors, 0, "release errors");
    assert!(burst_errors.is_empty(), "burst errors: {:?}", &burst_errors[..burst_errors.len().min(5)]);
    // Every lease was renewed all through the hold (a tick of slack for timing).
    let renewals_expected = LEASES * (HOLD.as_secs() / RENEW_EVERY.as_secs() - 1) as usize;
    assert!(
        phase1.extensions.len() >= renewals_expected,
        "{} extensions, expected >= {renewals_expected}",
        phase1.extensions.len()
    );
}

/// Creates one lease (through the gate) and renews it until the hold ends; returns
/// its id, or `None` after recording an error.
async fn hold_lease(
    mut client: Client,
    gate: Arc<Semaphore>,
    samples: Arc<Mutex<Samples>>,
    mut hold_end: watch::Receiver<Option<Instant>>,
) -> Option<String> {
    let permit = gate.acquire().await.expect("gate");
    let t = Instant::now();
    let created = request_gateway(&mut client).await;
    drop(permit);
    let id = match created {
        Ok(issued) => {
            samples.lock().await.creations.push(t.elapsed());
            issued.ziti_identity_id
        }
        Err(status) => {
            samples.lock().await.errors.push(format!("create: {status:?}"));
            return None;
        }
    };
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + RENEW_EVERY, RENEW_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let end = *hold_end.borrow_and_update();
        if end.is_some_and(|end| Instant::now() >= end) {
            return Some(id);
        }
        let t = Instant::now();
        match extend(&mut client, &id).await {
            Ok(_) => samples.lock().await.extensions.push(t.elapsed()),
            Err(status) => {
                samples.lock().await.errors.push(format!("extend {id}: {status:?}"));
                return Some(id);
            }
        }
    }
}

/// Releases every lease, 8 at a time; returns how many releases failed.
async fn release_all(client: &Client, ids: &[String]) -> usize {
    stream::iter(ids.iter().cloned())
        .map(|id| {
            let mut client = client.clone();
            async move { release(&mut client, &id).await.is_err() }
        })
        .buffer_unordered(CALLERS)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await
}

fn percentiles(samples: &[Duration]) -> String {
    if samples.is_empty() {
        return "no samples".to_owned();
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let at = |p: f64| sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "n={} p50={:.1} ms p95={:.1} ms p99={:.1} ms max={:.1} ms",
        sorted.len(),
        ms(at(0.50)),
        ms(at(0.95)),
        ms(at(0.99)),
        ms(sorted[sorted.len() - 1])
    )
}

/// Enrollments in one configuration: one caller at a time, then a burst.
struct Enrollments {
    sequential: Vec<Duration>,
    burst: Vec<Duration>,
    burst_wall: Duration,
    errors: usize,
}

async fn enrollments(connect: impl AsyncFn() -> Client, fresh_connection_each_call: bool) -> Enrollments {
    let shared = connect().await;
    let mut ids = Vec::new();
    let mut errors = 0;
    let mut sequential = Vec::new();
    for _ in 0..SEQUENTIAL {
        let t = Instant::now();
        let mut client = if fresh_connection_each_call { connect().await } else { shared.clone() };
        match request_gateway(&mut client).await {
            Ok(issued) => {
                sequential.push(t.elapsed());
                ids.push(issued.ziti_identity_id);
            }
            Err(_) => errors += 1,
        }
    }
    let started = Instant::now();
    let connect = &connect;
    let results: Vec<(Duration, Result<String, tonic::Status>)> = stream::iter(0..BURST)
        .map(|_| {
            let shared = shared.clone();
            async move {
                let t = Instant::now();
                let mut client = if fresh_connection_each_call { connect().await } else { shared };
                let result = request_gateway(&mut client).await.map(|issued| issued.ziti_identity_id);
                (t.elapsed(), result)
            }
        })
        .buffer_unordered(CALLERS)
        .collect()
        .await;
    let burst_wall = started.elapsed();
    let mut burst = Vec::new();
    for (took, result) in results {
        match result {
            Ok(id) => {
                burst.push(took);
                ids.push(id);
            }
            Err(_) => errors += 1,
        }
    }
    errors += release_all(&shared, &ids).await;
    Enrollments { sequential, burst, burst_wall, errors }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_attestation_costs_enrollments_with_and_without_mtls_side_by_side() {
    let network = ZitiNetwork::from_env();
    let svid = mint(&network, "load/gateway");
    let policy = format!(
        "[[allow]]\nspiffe_id = \"{}\"\nservice_types = [\"gateway\"]\nrole_attributes = [\"load-test\"]\n",
        svid.spiffe_id
    );
    let plain = Management::start(&network, "5m", "30s");
    let (attested, _policy) = attested_management(&network, &policy);
    let connect_plain = async || plain.client().await;
    let connect_attested =
        async || attested.connect_as(Some((&svid.chain_pem, &svid.key_pem))).await.expect("mTLS with the SVID");

    // Alternated, so that a slower controller moment does not land on one side only.
    let none_first = enrollments(connect_plain, false).await;
    let spiffe_first = enrollments(connect_attested, false).await;
    let none_second = enrollments(connect_plain, false).await;
    let spiffe_second = enrollments(connect_attested, false).await;
    let spiffe_handshakes = enrollments(connect_attested, true).await;

    let join = |a: Enrollments, b: Enrollments| Enrollments {
        sequential: [a.sequential, b.sequential].concat(),
        burst: [a.burst, b.burst].concat(),
        burst_wall: a.burst_wall + b.burst_wall,
        errors: a.errors + b.errors,
    };
    let none = join(none_first, none_second);
    let spiffe = join(spiffe_first, spiffe_second);
    let rate = |e: &Enrollments| e.burst.len() as f64 / e.burst_wall.as_secs_f64();
    let p99 = |samples: &[Duration]| {
        let mut sorted = samples.to_vec();
        sorted.sort();
        sorted
            .get(((0.99 * sorted.len() as f64).ceil() as usize).saturating_sub(1))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let mut report = String::new();
    let w = &mut report;
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    writeln!(w, "what attestation costs ({profile} build; real controller, two ziti-managements side by side)")
        .unwrap();
    writeln!(
        w,
        "| callers | one at a time (n={}) | burst of {BURST} x2, {CALLERS} concurrent | identities/s | burst p99 |",
        2 * SEQUENTIAL
    )
    .unwrap();
    writeln!(w, "|---|---|---|---|---|").unwrap();
    for (name, e) in [("none (TLS, no client certificate)", &none), ("spiffe (mTLS, X.509-SVID)", &spiffe)] {
        writeln!(
            w,
            "| {name} | {} | {} | {:.1} | {:.1} ms |",
            percentiles(&e.sequential),
            percentiles(&e.burst),
            rate(e),
            p99(&e.burst)
        )
        .unwrap();
    }
    writeln!(
        w,
        "| spiffe, a new connection and handshake per call | {} | {} | {:.1} | {:.1} ms |",
        percentiles(&spiffe_handshakes.sequential),
        percentiles(&spiffe_handshakes.burst),
        rate(&spiffe_handshakes),
        p99(&spiffe_handshakes.burst)
    )
    .unwrap();
    writeln!(
        w,
        "spiffe / none: identities/s {:.2}x, burst p99 {:.2}x; errors: none {}, spiffe {}, spiffe per-call handshakes {}",
        rate(&spiffe) / rate(&none),
        p99(&spiffe.burst) / p99(&none.burst),
        none.errors,
        spiffe.errors,
        spiffe_handshakes.errors
    )
    .unwrap();
    eprintln!("{report}");
    let dir = workspace_root().join("target/reports");
    std::fs::create_dir_all(&dir).expect("reports dir");
    std::fs::write(dir.join("ziti-management-attestation.txt"), &report).expect("write report");

    assert_eq!(none.errors + spiffe.errors + spiffe_handshakes.errors, 0, "every enrollment succeeds:\n{report}");
    assert_eq!(spiffe.burst.len(), 2 * BURST, "{report}");
    let logs = attested.logs();
    let issued_to_svid =
        logs.lines().filter(|line| line.contains("identity.issued") && line.contains(&svid.spiffe_id)).count();
    assert_eq!(issued_to_svid, 3 * (SEQUENTIAL + BURST), "every attested enrollment is audited with its principal");
}
