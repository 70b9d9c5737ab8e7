//! Hosting: Go dialers and Rust dialers reach a Rust-hosted echo on the encrypted service.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use ziti_sdk::{DialerIdentity, ZitiContext, ZitiListener};

use crate::support::{TestIdentity, exclusive_service, go_zcat, host_role, network, pattern, within};

/// A Rust echo host that records who it served.
struct RustEcho {
    dialers: Arc<Mutex<Vec<DialerIdentity>>>,
    task: JoinHandle<ziti_sdk::Error>,
}

impl RustEcho {
    fn start(mut listener: ZitiListener) -> RustEcho {
        let dialers = Arc::new(Mutex::new(Vec::new()));
        let seen = dialers.clone();
        let task = tokio::spawn(async move {
            loop {
                let conn = match listener.accept().await {
                    Ok(conn) => conn,
                    Err(err) => return err,
                };
                assert!(conn.is_encrypted(), "the service requires encryption");
                assert!(conn.is_flow_controlled(), "the router uses flow control for the Rust host");
                seen.lock().unwrap().push(conn.dialer().cloned().unwrap_or(DialerIdentity::Unknown));
                tokio::spawn(async move {
                    let mut conn = conn;
                    // Each payload is written back as it arrived (`read_chunk`, no buffer of
                    // our own). The dialer checks the bytes; a peer closing early only ends
                    // this echo.
                    while let Ok(Some(payload)) = conn.read_chunk(usize::MAX).await {
                        if conn.write_all(&payload).await.is_err() {
                            return;
                        }
                    }
                    let _ = conn.shutdown().await;
                });
            }
        });
        RustEcho { dialers, task }
    }

    fn served(&self) -> Vec<DialerIdentity> {
        self.dialers.lock().unwrap().clone()
    }
}

impl Drop for RustEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_zcat_reaches_rust_echo_with_large_encrypted_transfer() {
    let network = network();
    let _hosting = exclusive_service(&network).await;
    // RSA 4096: the Go enroller's default key.
    let host = TestIdentity::create(&network, &host_role(), None).await;
    let context = within("host login", Duration::from_secs(30), ZitiContext::from_file(&host.file)).await.unwrap();
    assert_eq!(context.identity_name(), host.name);
    let listener = within("bind", Duration::from_secs(30), context.listen(&network.service_name)).await.unwrap();
    let echo = RustEcho::start(listener);

    let hello = within(
        "small zcat",
        Duration::from_secs(30),
        go_zcat(&network, &network.client_identity, &network.service_name, b"hello over ziti\n".to_vec()),
    )
    .await;
    assert_eq!(hello, b"hello over ziti\n");

    let client = ZitiContext::from_file(&network.client_identity).await.unwrap();
    let expected = if network.routers_vouch_for_dialers() {
        DialerIdentity::Verified { id: client.identity_id(), name: client.identity_name() }
    } else {
        DialerIdentity::Claimed { name: client.identity_name() }
    };
    assert_eq!(echo.served(), vec![expected], "OpenZiti {}", network.version);

    let input = pattern(64 * 1024 * 1024, 64);
    let expected = Sha256::digest(&input);
    let started = Instant::now();
    let output = within(
        "64 MiB zcat",
        Duration::from_secs(180),
        go_zcat(&network, &network.client_identity, &network.service_name, input),
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(output.len(), 64 * 1024 * 1024);
    assert_eq!(Sha256::digest(&output), expected, "64 MiB came back intact");
    eprintln!("64 MiB echoed (Go zcat -> Rust host, encrypted) in {elapsed:.2?}");
    assert_eq!(echo.served().len(), 2);
    host.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_rust_dials_are_all_served() {
    let network = network();
    let _hosting = exclusive_service(&network).await;
    let host = TestIdentity::create(&network, &host_role(), Some("EC")).await;
    let host_context = ZitiContext::from_file(&host.file).await.unwrap();
    let echo = RustEcho::start(host_context.listen(&network.service_name).await.unwrap());
    let client = ZitiContext::from_file(&network.client_identity).await.unwrap();

    let started = Instant::now();
    let dials = (0..100u64).map(|i| {
        let client = client.clone();
        let service = network.service_name.clone();
        tokio::spawn(async move {
            let mut conn = client.dial(&service).await.expect("dial");
            let payload = pattern(4096 + i as usize, i);
            conn.write_all(&payload).await.unwrap();
            conn.shutdown().await.unwrap();
            let mut back = Vec::new();
            conn.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, payload, "connection {i} echoed its own bytes");
        })
    });
    let dials: Vec<_> = dials.collect();
    within("100 concurrent dials", Duration::from_secs(90), async {
        for dial in dials {
            dial.await.expect("dial task");
        }
    })
    .await;
    eprintln!("100 concurrent dials echoed in {:.2?}", started.elapsed());
    assert_eq!(echo.served().len(), 100);
    let claimed = echo.served().iter().filter(|d| d.name() == Some(client.identity_name().as_str())).count();
    assert_eq!(claimed, 100, "each dial carries the dialer's name");
    host.delete().await;
}
