//! Dialing: a Rust dialer reaches the Go SDK's `ziti demo echo-server`.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ziti_sdk::{ZitiConn, ZitiContext};

use crate::support::{GoEchoServer, TestIdentity, exclusive_service, host_role, network, pattern, within};

/// Dials until the Go host's terminator exists (it binds a few seconds after starting).
async fn dial_when_hosted(client: &ZitiContext, service: &str) -> ZitiConn {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        match client.dial(service).await {
            Ok(conn) => return conn,
            Err(ziti_sdk::Error::DialFailed { reason, .. }) if Instant::now() < deadline => {
                tracing::debug!(%reason, "not hosted yet");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(err) => panic!("dial failed: {err}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_dial_reaches_go_echo_server() {
    let network = network();
    let _hosting = exclusive_service(&network).await;
    let host = TestIdentity::create(&network, &host_role(), Some("EC")).await;
    let _go_host = GoEchoServer::start(&network, &host.file, &network.service_name);
    let client = ZitiContext::from_file(&network.client_identity).await.unwrap();

    let mut conn = within("dial", Duration::from_secs(60), dial_when_hosted(&client, &network.service_name)).await;
    assert!(conn.is_encrypted());
    assert!(conn.is_flow_controlled(), "the router uses flow control for the Rust dialer");
    conn.write_all(b"hello go").await.unwrap();
    let mut buf = [0u8; 8];
    within("echo", Duration::from_secs(10), conn.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"hello go");

    // 64 MiB both ways at once, then half-close: the Go host ends the echo on EOF.
    let input = pattern(64 * 1024 * 1024, 8);
    let expected = Sha256::digest(&input);
    let (mut reader, mut writer) = tokio::io::split(conn);
    let started = Instant::now();
    let send = async move {
        writer.write_all(&input).await.unwrap();
        writer.shutdown().await.unwrap();
        writer
    };
    let receive = async move {
        let mut output = Vec::new();
        reader.read_to_end(&mut output).await.unwrap();
        output
    };
    let (_writer, output) =
        within("64 MiB echo", Duration::from_secs(240), async { tokio::join!(send, receive) }).await;
    eprintln!("64 MiB echoed (Rust dial -> Go echo-server, encrypted) in {:.2?}", started.elapsed());
    assert_eq!(output.len(), 64 * 1024 * 1024);
    assert_eq!(Sha256::digest(&output), expected);
    host.delete().await;
}
