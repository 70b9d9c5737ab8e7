//! Hosting on several edge routers: one terminator on each, so a dialer reaches the
//! host through whichever router is up.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use ziti_sdk::ZitiContext;

use crate::support::{TestIdentity, exclusive_service, go_zcat, host_role, network, pattern, within};

/// The terminators of `service` hosted by `identity` (the CLI's view of the controller).
fn terminators(network: &workspace_tests::network::ZitiNetwork, service: &str) -> Vec<serde_json::Value> {
    let out = network
        .ziti()
        .args(["edge", "list", "terminators", &format!("service.name=\"{service}\""), "-j"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["data"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_binds_on_every_router_and_is_reached_through_either() {
    let network = network();
    let _hosting = exclusive_service(&network).await;
    let extra = {
        let network = network.clone();
        tokio::task::spawn_blocking(move || network.start_extra_router("router-two", Duration::from_secs(60)))
            .await
            .unwrap()
    };
    let host = TestIdentity::create(&network, &host_role(), Some("EC")).await;
    let context = ZitiContext::from_file(&host.file).await.unwrap();
    let mut listener = within("listen", Duration::from_secs(60), context.listen(&network.service_name)).await.unwrap();
    let echo = tokio::spawn(async move {
        loop {
            let Ok(conn) = listener.accept().await else { return };
            tokio::spawn(async move {
                let (mut reader, mut writer) = tokio::io::split(conn);
                if tokio::io::copy(&mut reader, &mut writer).await.is_ok() {
                    let _ = writer.shutdown().await;
                }
            });
        }
    });

    let routers: Vec<String> = terminators(&network, &network.service_name)
        .iter()
        .filter_map(|t| t["router"]["name"].as_str().map(str::to_owned))
        .collect();
    assert!(
        routers.contains(&network.router_name) && routers.contains(&extra.name),
        "expected a terminator on {} and on {}: {routers:?}",
        network.router_name,
        extra.name
    );

    // With the network's own router down, dials still reach the host, through the other.
    let stopping = network.clone();
    tokio::task::spawn_blocking(move || stopping.stop_router(Duration::from_secs(20))).await.unwrap();
    let payload = pattern(64 * 1024, 7);
    let back = within(
        "a Go dial through the remaining router",
        Duration::from_secs(60),
        go_zcat(&network, &network.client_identity, &network.service_name, payload.clone()),
    )
    .await;
    network.start_router();
    assert!(back == payload, "echo through the remaining router differs ({} bytes back)", back.len());

    echo.abort();
    drop(extra);
    host.delete().await;
    let restarting = network.clone();
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !restarting.router_online() {
            assert!(std::time::Instant::now() < deadline, "the network's router did not come back");
            std::thread::sleep(Duration::from_millis(250));
        }
    })
    .await
    .unwrap();
}
