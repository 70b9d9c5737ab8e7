//! Per-circuit flow control: one client that stops reading while the host sends it
//! 64 MiB must not slow 16 other connections on the same router, must not make the
//! host buffer without bound, and must get all its data once it reads again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use ziti_sdk::{ContextOptions, ZitiContext, ZitiListener};

use crate::support::{TestIdentity, exclusive_service, host_role, network, pattern, within};

const BULK: usize = 64 * 1024 * 1024;
const BULK_CHUNK: usize = 1024 * 1024;
const ECHO_CONNS: usize = 16;
const ECHO_SIZE: usize = 1024;
/// How long each echo connection keeps sending requests in a measurement.
const ECHO_PHASE: Duration = Duration::from_secs(5);
/// A round that takes longer counts as failed (and ends that connection's phase).
const ROUND_LIMIT: Duration = Duration::from_secs(60);
/// What the stalled client must have been sent before the others are measured: its
/// receive buffer's worth (after which the host also has to stop sending).
const STALL_AFTER: usize = 4 * 1024 * 1024;
/// The host counts as held back once it has sent nothing more for this long.
const HELD_BACK: Duration = Duration::from_millis(500);

/// The bulk stream, made chunk by chunk so that neither side holds 64 MiB at once.
fn bulk_chunk(index: usize) -> Vec<u8> {
    pattern(BULK_CHUNK, index as u64 + 1)
}

fn bulk_digest() -> Vec<u8> {
    let mut hash = Sha256::new();
    for index in 0..BULK / BULK_CHUNK {
        hash.update(bulk_chunk(index));
    }
    hash.finalize().to_vec()
}

/// Host: a first byte `B` asks for the 64 MiB stream, anything else for an echo.
fn serve(mut listener: ZitiListener, bulk_sent: Arc<AtomicUsize>) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok(conn) = listener.accept().await {
            let bulk_sent = bulk_sent.clone();
            tokio::spawn(async move {
                let (mut reader, mut writer) = tokio::io::split(conn);
                let mut first = [0u8; 1];
                if reader.read_exact(&mut first).await.is_err() {
                    return;
                }
                if first[0] == b'B' {
                    for index in 0..BULK / BULK_CHUNK {
                        if writer.write_all(&bulk_chunk(index)).await.is_err() {
                            return;
                        }
                        bulk_sent.fetch_add(BULK_CHUNK, Ordering::Relaxed);
                    }
                    let _ = writer.shutdown().await;
                    // Stay open until the client has read it all and hangs up.
                    let _ = tokio::io::copy(&mut reader, &mut tokio::io::sink()).await;
                } else {
                    let _ = writer.write_all(&first).await;
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                }
            });
        }
    })
}

/// 16 connections doing 1 KiB echoes for [`ECHO_PHASE`]; every round's latency, the
/// last one included even when it outlasts the phase, and each connection's dial and
/// first one-byte echo as a round of its own (a failed dial counts as a round that
/// took until it failed, and as a failure).
async fn echo_latencies(client: &ZitiContext, service: &str, flow_control: bool) -> (Vec<Duration>, usize) {
    let mut conns = Vec::new();
    let mut opening = Vec::new();
    let mut failed = 0;
    for _ in 0..ECHO_CONNS {
        let started = Instant::now();
        let mut conn = match within("echo dial", Duration::from_secs(90), client.dial(service)).await {
            Ok(conn) => conn,
            Err(err) => {
                eprintln!("echo dial failed after {:.2?}: {err}", started.elapsed());
                opening.push(started.elapsed());
                failed += 1;
                continue;
            }
        };
        assert_eq!(conn.is_flow_controlled(), flow_control, "the data path asked for");
        conn.write_all(b"E").await.unwrap();
        let mut first = [0u8; 1];
        let answered = tokio::time::timeout(ROUND_LIMIT, conn.read_exact(&mut first)).await;
        opening.push(started.elapsed());
        match answered {
            Ok(Ok(_)) => conns.push(conn),
            other => {
                eprintln!("echo start failed after {:.2?}: {other:?}", started.elapsed());
                failed += 1;
            }
        }
    }
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut conn)| {
            tokio::spawn(async move {
                let request = pattern(ECHO_SIZE, 1000 + i as u64);
                let mut reply = vec![0u8; ECHO_SIZE];
                let mut latencies = Vec::new();
                let started = Instant::now();
                while started.elapsed() < ECHO_PHASE {
                    let round = Instant::now();
                    let echoed = tokio::time::timeout(ROUND_LIMIT, async {
                        conn.write_all(&request).await?;
                        conn.read_exact(&mut reply).await
                    })
                    .await;
                    latencies.push(round.elapsed());
                    match echoed {
                        Ok(Ok(_)) => assert_eq!(reply, request, "echo connection {i} got its own bytes back"),
                        other => {
                            eprintln!("echo round failed after {:.2?}: {other:?}", round.elapsed());
                            return (latencies, 1);
                        }
                    }
                }
                (latencies, 0)
            })
        })
        .collect();
    let mut all = opening;
    for task in tasks {
        let (latencies, round_failed) = task.await.expect("echo task");
        all.extend(latencies);
        failed += round_failed;
    }
    all.sort();
    (all, failed)
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)]
}

/// This process's resident set (host and clients both live here), in KiB.
fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

struct Report {
    p99_alone: Duration,
    p99_stalled: Duration,
    max_stalled: Duration,
    rounds_alone: usize,
    rounds_stalled: usize,
    rss_before_kib: u64,
    rss_stalled_kib: u64,
    failures: usize,
    stalled_read: Result<usize, String>,
    digest_matches: bool,
}

async fn run(flow_control: bool) -> Report {
    let options = ContextOptions { flow_control, ..ContextOptions::default() };
    let network = network();
    let _hosting = exclusive_service(&network).await;
    let host = TestIdentity::create(&network, &host_role(), Some("EC")).await;
    let host_context =
        ZitiContext::with_options(ziti_sdk::Identity::from_file(&host.file).unwrap(), options.clone()).await.unwrap();
    let listener = within("bind", Duration::from_secs(30), host_context.listen(&network.service_name)).await.unwrap();
    let bulk_sent = Arc::new(AtomicUsize::new(0));
    let server = serve(listener, bulk_sent.clone());
    let client = ZitiContext::with_options(ziti_sdk::Identity::from_file(&network.client_identity).unwrap(), options)
        .await
        .unwrap();
    let service = network.service_name.clone();
    let expected = bulk_digest();

    let (alone, failed_alone) = echo_latencies(&client, &service, flow_control).await;
    assert_eq!(failed_alone, 0, "every dial and round works without the stalled reader");
    let rss_before_kib = rss_kib("VmRSS:");

    // The stalled client asks for the stream and reads nothing until told.
    let mut stalled = within("stalled dial", Duration::from_secs(30), client.dial(&service)).await.unwrap();
    assert_eq!(stalled.is_flow_controlled(), flow_control);
    stalled.write_all(b"B").await.unwrap();
    within("the host to send the stalled client 4 MiB and be held back", Duration::from_secs(60), async {
        let (mut last, mut since) = (0, Instant::now());
        loop {
            let sent = bulk_sent.load(Ordering::Relaxed);
            if sent != last {
                (last, since) = (sent, Instant::now());
            } else if sent >= STALL_AFTER && since.elapsed() >= HELD_BACK {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let (with_stall, failures) = echo_latencies(&client, &service, flow_control).await;
    let rss_stalled_kib = rss_kib("VmRSS:");

    let reading = async {
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0;
        loop {
            let n = stalled.read(&mut buf).await.map_err(|err| format!("{err} after {total} bytes"))?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            total += n;
        }
        Ok::<_, String>((total, hash.finalize().to_vec()))
    };
    let read = tokio::time::timeout(Duration::from_secs(180), reading)
        .await
        .unwrap_or_else(|_| Err("reading the 64 MiB did not finish within 180 s".to_owned()));
    drop(stalled);
    server.abort();
    host.delete().await;
    let (stalled_read, digest_matches) = match read {
        Ok((total, digest)) => (Ok(total), digest == expected),
        Err(err) => (Err(err), false),
    };
    Report {
        p99_alone: p99(&alone),
        p99_stalled: p99(&with_stall),
        max_stalled: with_stall.last().copied().unwrap_or_default(),
        rounds_alone: alone.len(),
        rounds_stalled: with_stall.len(),
        rss_before_kib,
        rss_stalled_kib,
        failures,
        stalled_read,
        digest_matches,
    }
}

fn print(label: &str, report: &Report) {
    eprintln!(
        "{label}: 1 KiB echo p99 {:.2?} alone ({} rounds), {:.2?} beside a stalled reader ({} rounds, slowest {:.2?}); \
         {} dials or rounds failed beside it; process RSS {} KiB before the stall, {} KiB during it; \
         stalled reader got {:?} (digest ok: {})",
        report.p99_alone,
        report.rounds_alone,
        report.p99_stalled,
        report.rounds_stalled,
        report.max_stalled,
        report.failures,
        report.rss_before_kib,
        report.rss_stalled_kib,
        report.stalled_read,
        report.digest_matches,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_slows_no_other_connection_and_gets_all_its_data() {
    let report = run(true).await;
    print("flow control on", &report);
    // Scheduling noise on a shared machine can reach a few ms at the tail.
    assert_eq!(report.failures, 0, "every dial and round beside the stalled reader works");
    let limit = report.p99_alone * 2 + Duration::from_millis(5);
    assert!(
        report.p99_stalled <= limit,
        "p99 beside the stalled reader {:?} exceeds 2x the p99 without it ({:?})",
        report.p99_stalled,
        report.p99_alone
    );
    assert_eq!(report.stalled_read, Ok(BULK), "the stalled connection stayed open and got everything");
    assert!(report.digest_matches, "the stalled connection's 64 MiB arrived intact");
    // Both sides live in this process: the stall may add a receive window and a send
    // window (4 MiB each) plus allocator slack, not the 64 MiB stream.
    let grown_kib = report.rss_stalled_kib.saturating_sub(report.rss_before_kib);
    assert!(grown_kib < 32 * 1024, "RSS grew by {grown_kib} KiB during the stall");
}

/// The same with flow control off (the legacy data path), for comparison: it reports
/// rather than asserts, since what it shows is the harm flow control removes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a comparison run of about two minutes: cargo test ... flow -- --ignored --nocapture"]
async fn legacy_path_with_a_stalled_reader_for_comparison() {
    let report = run(false).await;
    print("flow control off", &report);
}

/// The Go SDK with its own flow control (`ziti tunnel proxy` asks for it) against a Rust
/// host with flow control: both ends are xgress endpoints and the router only forwards
/// between them (dropping what a full queue cannot take), so this is where resends and
/// round-trip estimates decide the speed. 16 MiB echoed through the proxy, hashed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_flow_controlled_dialer_moves_bulk_data_to_a_rust_host_at_speed() {
    use std::process::Stdio;
    use tokio::net::TcpStream;

    let network = network();
    let _hosting = exclusive_service(&network).await;
    let host = TestIdentity::create(&network, &host_role(), Some("EC")).await;
    let context = ZitiContext::from_file(&host.file).await.unwrap();
    let mut listener = within("bind", Duration::from_secs(30), context.listen(&network.service_name)).await.unwrap();
    let server = tokio::spawn(async move {
        while let Ok(conn) = listener.accept().await {
            assert!(conn.is_flow_controlled(), "the router uses flow control for the Rust host");
            tokio::spawn(async move {
                let (mut reader, mut writer) = tokio::io::split(conn);
                if tokio::io::copy(&mut reader, &mut writer).await.is_ok() {
                    let _ = writer.shutdown().await;
                }
            });
        }
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("proxy.log");
    let _proxy = tokio::process::Command::from(network.ziti())
        .args(["tunnel", "proxy", &format!("{}:{port}", network.service_name), "-i"])
        .arg(&network.client_identity)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    // The proxy listens once its router channel is up: echo one byte to know.
    let ready = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            if let Ok(mut conn) = TcpStream::connect(&addr).await {
                let mut byte = [0u8; 1];
                let echoed = async {
                    conn.write_all(b"x").await?;
                    conn.read_exact(&mut byte).await
                };
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), echoed).await {
                    return conn;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let Ok(mut conn) = ready else {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        panic!("the proxy did not echo within 120 s; its log:\n{log}");
    };

    let input = pattern(16 * 1024 * 1024, 16);
    let expected = Sha256::digest(&input);
    let started = Instant::now();
    let (mut reader, mut writer) = conn.split();
    let send = async {
        writer.write_all(&input).await.unwrap();
        writer.shutdown().await.unwrap();
    };
    let receive = async {
        let mut output = Vec::new();
        reader.read_to_end(&mut output).await.unwrap();
        output
    };
    let ((), output) = within("16 MiB echo", Duration::from_secs(120), async { tokio::join!(send, receive) }).await;
    let took = started.elapsed();
    eprintln!("16 MiB echoed (Go tunnel proxy with flow control -> Rust host with flow control) in {took:.2?}");
    assert_eq!(Sha256::digest(&output), expected, "16 MiB came back intact");
    // Legacy hosting does this in well under a second here; stalls waiting for resends
    // would take tens of seconds.
    assert!(took < Duration::from_secs(15), "16 MiB took {took:?}");
    server.abort();
    host.delete().await;
}
