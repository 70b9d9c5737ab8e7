//! A lost router channel: dialing says no router is reachable, the listener binds again
//! by itself once the router is back, and dialers reconnect.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ziti_sdk::{ZitiContext, ZitiListener};

use crate::support::{TestIdentity, exclusive_service, host_role, network, within};

/// Accepts one connection and echoes 4 bytes.
async fn echo_once(listener: &mut ZitiListener) {
    let mut conn = listener.accept().await.expect("accept");
    let mut buf = [0u8; 4];
    conn.read_exact(&mut buf).await.unwrap();
    conn.write_all(&buf).await.unwrap();
}

/// Dials (retrying while the router learns the new terminator) and checks the echo.
async fn ping(client: &ZitiContext, service: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = loop {
        match client.dial(service).await {
            Ok(conn) => break conn,
            Err(err) if Instant::now() < deadline => {
                tracing::debug!(%err, "dial not possible yet");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(err) => panic!("dial failed: {err}"),
        }
    };
    conn.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    conn.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_binds_again_after_the_router_restarts() {
    let network = network();
    let _hosting = exclusive_service(&network).await;
    let host = TestIdentity::create(&network, &host_role(), Some("EC")).await;
    let context = ZitiContext::from_file(&host.file).await.unwrap();
    let mut listener = context.listen(&network.service_name).await.unwrap();
    let client = ZitiContext::from_file(&network.client_identity).await.unwrap();
    let service = network.service_name.clone();
    let (_, ()) = within("echo before", Duration::from_secs(30), async {
        tokio::join!(echo_once(&mut listener), ping(&client, &service))
    })
    .await;

    let stopping = network.clone();
    tokio::task::spawn_blocking(move || stopping.stop_router(Duration::from_secs(20))).await.unwrap();
    within("the listener to notice", Duration::from_secs(20), listener.wait_bound(false)).await;
    let unreachable = within("dial without a router", Duration::from_secs(30), client.dial(&service)).await;
    assert!(matches!(unreachable, Err(ziti_sdk::Error::NoRouterReachable { .. })), "{unreachable:?}");
    network.start_router();
    within("the listener to bind again", Duration::from_secs(90), listener.wait_bound(true)).await;

    let (_, ()) = within("echo after", Duration::from_secs(60), async {
        tokio::join!(echo_once(&mut listener), ping(&client, &service))
    })
    .await;
    host.delete().await;
}
