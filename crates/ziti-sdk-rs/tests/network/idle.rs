//! What an idle accepted connection costs a Rust host: 1,000 connections from the Go
//! SDK's `ziti tunnel proxy` (a separate process, so this process's RSS is the host's),
//! each echoed once and then left open. Reports; asserts only that all were served.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;
use ziti_sdk::{ContextOptions, ZitiContext};

use crate::support::{TestIdentity, exclusive_service, host_role, network, within};

const IDLE: usize = 1000;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

async fn idle_cost(flow_control: bool) {
    let network = network();
    let _hosting = exclusive_service(&network).await;
    let host = TestIdentity::create(&network, &host_role(), Some("EC")).await;
    let options = ContextOptions { flow_control, ..ContextOptions::default() };
    let context = ZitiContext::with_options(ziti_sdk::Identity::from_file(&host.file).unwrap(), options).await.unwrap();
    let mut listener = within("bind", Duration::from_secs(30), context.listen(&network.service_name)).await.unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let counted = served.clone();
    let server = tokio::spawn(async move {
        while let Ok(mut conn) = listener.accept().await {
            assert_eq!(conn.is_flow_controlled(), flow_control);
            counted.fetch_add(1, Ordering::Relaxed);
            // The smallest echo: the measure is the SDK's, not an application buffer's.
            tokio::spawn(async move {
                let mut byte = [0u8; 1];
                while let Ok(1) = conn.read(&mut byte).await {
                    if conn.write_all(&byte).await.is_err() {
                        break;
                    }
                }
            });
        }
    });

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _proxy = Command::from(network.ziti())
        .args(["tunnel", "proxy", &format!("{}:{port}", network.service_name), "-i"])
        .arg(&network.client_identity)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let echo_once = |addr: String| async move {
        let mut conn = TcpStream::connect(&addr).await?;
        conn.write_all(b"x").await?;
        let mut byte = [0u8; 1];
        conn.read_exact(&mut byte).await?;
        Ok::<_, std::io::Error>(conn)
    };
    // Warm up (the proxy's router channel, the host's first allocations) until it echoes.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut warm = Vec::new();
    while warm.len() < 16 {
        match tokio::time::timeout(Duration::from_secs(10), echo_once(addr.clone())).await {
            Ok(Ok(conn)) => warm.push(conn),
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("the proxy never echoed: {other:?}"),
        }
    }
    drop(warm);
    let before = rss_kib();
    let mut held = Vec::new();
    within("1,000 idle connections", Duration::from_secs(300), async {
        for _ in 0..IDLE / 50 {
            let batch: Vec<_> = (0..50).map(|_| tokio::spawn(echo_once(addr.clone()))).collect();
            for conn in batch {
                held.push(conn.await.unwrap().expect("echo through the proxy"));
            }
        }
    })
    .await;
    let after = rss_kib();
    assert!(served.load(Ordering::Relaxed) >= IDLE);
    let per_conn = (after.saturating_sub(before)) as f64 / IDLE as f64;
    eprintln!(
        "flow control {}: host RSS {before} KiB -> {after} KiB with {IDLE} idle connections: {per_conn:.1} KiB each",
        if flow_control { "on" } else { "off" }
    );
    drop(held);
    server.abort();
    host.delete().await;
}

// One measure per test (run each in a process of its own): freed memory of an earlier
// run in the same process would be reused and hide the later run's cost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: cargo test -p ziti-sdk-rs --test network idle::with_flow -- --ignored --nocapture"]
async fn with_flow_control_rss_per_idle_connection() {
    idle_cost(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: cargo test -p ziti-sdk-rs --test network idle::without_flow -- --ignored --nocapture"]
async fn without_flow_control_rss_per_idle_connection() {
    idle_cost(false).await;
}
