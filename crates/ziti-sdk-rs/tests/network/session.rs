//! API session refresh: new tokens reach the router (UpdateToken) and hosting goes on.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ziti_sdk::{ContextOptions, Identity, ZitiContext};

use crate::support::{TestIdentity, exclusive_service, host_role, network, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshed_sessions_keep_hosting_and_dialing() {
    let network = network();
    let _hosting = exclusive_service(&network).await;
    let host = TestIdentity::create(&network, &host_role(), Some("EC")).await;
    let options = ContextOptions { max_refresh_interval: Some(Duration::from_secs(2)), ..ContextOptions::default() };
    let context = ZitiContext::with_options(Identity::from_file(&host.file).unwrap(), options).await.unwrap();
    let mut listener = context.listen(&network.service_name).await.unwrap();
    let first_expiry = context.session_expires_at();

    // Several refreshes, each followed by UpdateToken on the open router channel: three
    // later expiries seen (each refresh moves it on; at most 2 s apart).
    let mut expiries = vec![first_expiry];
    let deadline = Instant::now() + Duration::from_secs(20);
    while expiries.len() < 4 {
        assert!(Instant::now() < deadline, "refreshed {} times in 20 s", expiries.len() - 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let expiry = context.session_expires_at();
        if expiries.last() != Some(&expiry) {
            assert!(expiries.last() < Some(&expiry), "the expiry went back: {expiries:?}, then {expiry:?}");
            expiries.push(expiry);
        }
    }

    let client = ZitiContext::from_file(&network.client_identity).await.unwrap();
    let dial = tokio::spawn({
        let service = network.service_name.clone();
        async move {
            let mut conn = client.dial(&service).await.expect("dial after refresh");
            conn.write_all(b"ping").await.unwrap();
            let mut back = [0u8; 4];
            conn.read_exact(&mut back).await.unwrap();
            back
        }
    });
    let mut conn = within("accept after refresh", Duration::from_secs(30), listener.accept()).await.unwrap();
    let mut buf = [0u8; 4];
    conn.read_exact(&mut buf).await.unwrap();
    conn.write_all(&buf).await.unwrap();
    assert_eq!(&within("echo", Duration::from_secs(30), dial).await.unwrap(), b"ping");
    host.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_latency_probes_keep_the_channel() {
    let network = network();
    let _hosting = exclusive_service(&network).await;
    let host = TestIdentity::create(&network, &host_role(), Some("EC")).await;
    let options =
        ContextOptions { latency_probe_interval: Some(Duration::from_millis(500)), ..ContextOptions::default() };
    let context = ZitiContext::with_options(Identity::from_file(&host.file).unwrap(), options).await.unwrap();
    let mut listener = context.listen(&network.service_name).await.unwrap();
    // A probe the router left unanswered would close the channel and unbind.
    let unbound = tokio::time::timeout(Duration::from_secs(4), listener.wait_bound(false)).await;
    assert!(unbound.is_err(), "the listener stayed bound while probing every 500 ms");
    host.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_api_sessions_host_and_dial() {
    let network = network();
    let _hosting = exclusive_service(&network).await;
    let host = TestIdentity::create(&network, &host_role(), Some("EC")).await;
    let legacy = ContextOptions { force_legacy_auth: true, ..ContextOptions::default() };
    let context = ZitiContext::with_options(Identity::from_file(&host.file).unwrap(), legacy.clone()).await.unwrap();
    assert_eq!(context.identity_name(), host.name);
    let mut listener =
        within("legacy bind", Duration::from_secs(30), context.listen(&network.service_name)).await.unwrap();
    let client =
        ZitiContext::with_options(Identity::from_file(&network.client_identity).unwrap(), legacy).await.unwrap();
    let dial = tokio::spawn({
        let service = network.service_name.clone();
        async move {
            // Until the host's terminator takes dials (it is bound again if the router
            // ends its service session meanwhile).
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            let mut conn = loop {
                match client.dial(&service).await {
                    Ok(conn) => break conn,
                    Err(err) if tokio::time::Instant::now() < deadline => {
                        eprintln!("legacy dial not answered yet: {err}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(err) => panic!("legacy dial: {err}"),
                }
            };
            conn.write_all(b"lgcy").await.unwrap();
            let mut back = [0u8; 4];
            conn.read_exact(&mut back).await.unwrap();
            back
        }
    });
    let mut conn = within("accept", Duration::from_secs(30), listener.accept()).await.unwrap();
    let mut buf = [0u8; 4];
    conn.read_exact(&mut buf).await.unwrap();
    conn.write_all(&buf).await.unwrap();
    assert_eq!(&within("echo", Duration::from_secs(30), dial).await.unwrap(), b"lgcy");
    host.delete().await;
}
