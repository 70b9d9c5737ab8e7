//! A service without end-to-end encryption (`-e OFF`), made for this test: Go and Rust
//! dialers reach a Rust host and bytes pass in the clear end to end.

use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use workspace_tests::network::ZitiNetwork;
use ziti_sdk::ZitiContext;

use crate::support::{TestIdentity, go_zcat, network, pattern, shared_router, within, ziti_cli};

/// A plaintext service with its own Bind policy (`#<role>`) and the network's dialers.
struct PlainService {
    network: ZitiNetwork,
    name: String,
}

impl PlainService {
    async fn create(network: &ZitiNetwork, host_role: &str) -> PlainService {
        let name = format!("sdk-test-plain-{}", std::process::id());
        let here = Path::new(".");
        ziti_cli(network, &["edge", "create", "service", &name, "-e", "OFF"], here).await;
        let service_role = format!("@{name}");
        let bind_role = format!("#{host_role}");
        for (kind, identities) in [("Bind", bind_role.as_str()), ("Dial", "#gateway-clients")] {
            let policy = format!("{name}-{}", kind.to_lowercase());
            let args = [
                "edge",
                "create",
                "service-policy",
                &policy,
                kind,
                "--service-roles",
                &service_role,
                "--identity-roles",
                identities,
            ];
            ziti_cli(network, &args, here).await;
        }
        PlainService { network: network.clone(), name }
    }
}

impl Drop for PlainService {
    fn drop(&mut self) {
        for policy in ["bind", "dial"] {
            let _ = self
                .network
                .ziti()
                .args(["edge", "delete", "service-policy", &format!("{}-{policy}", self.name)])
                .output();
        }
        let _ = self.network.ziti().args(["edge", "delete", "service", &self.name]).output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_service_echoes_for_go_and_rust_dialers() {
    let network = network();
    let _router = shared_router().await;
    let role = format!("sdk-plain-hosts-{}", std::process::id());
    let service = PlainService::create(&network, &role).await;
    let host = TestIdentity::create(&network, &role, Some("EC")).await;
    let context = ZitiContext::from_file(&host.file).await.unwrap();
    let mut listener = within("bind", Duration::from_secs(30), context.listen(&service.name)).await.unwrap();
    let echo = tokio::spawn(async move {
        loop {
            let conn = listener.accept().await.expect("accept");
            assert!(!conn.is_encrypted());
            tokio::spawn(async move {
                let (mut reader, mut writer) = tokio::io::split(conn);
                if tokio::io::copy(&mut reader, &mut writer).await.is_ok() {
                    let _ = writer.shutdown().await;
                }
            });
        }
    });

    let input = pattern(4 * 1024 * 1024, 4);
    let output = within(
        "Go zcat",
        Duration::from_secs(60),
        go_zcat(&network, &network.client_identity, &service.name, input.clone()),
    )
    .await;
    assert_eq!(Sha256::digest(&output), Sha256::digest(&input));

    let client = ZitiContext::from_file(&network.client_identity).await.unwrap();
    let mut conn = within("Rust dial", Duration::from_secs(30), client.dial(&service.name)).await.unwrap();
    assert!(!conn.is_encrypted());
    conn.write_all(b"in the clear").await.unwrap();
    conn.shutdown().await.unwrap();
    let mut back = Vec::new();
    within("echo", Duration::from_secs(30), conn.read_to_end(&mut back)).await.unwrap();
    assert_eq!(back, b"in the clear");
    echo.abort();
    host.delete().await;
}
