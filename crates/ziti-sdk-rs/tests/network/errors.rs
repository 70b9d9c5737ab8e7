//! Typed errors a user can act on, never panics.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ziti_sdk::{Error, IdentityError, ZitiContext};

use crate::support::{TestIdentity, exclusive_service, go_zcat, host_role, network, shared_router, within, ziti_cli};

#[tokio::test]
async fn unknown_service_is_not_found_for_dial_and_listen() {
    let network = network();
    let client = ZitiContext::from_file(&network.client_identity).await.unwrap();
    let missing = "sdk-no-such-service";
    let dial = within("dial", Duration::from_secs(30), client.dial(missing)).await;
    assert!(matches!(&dial, Err(Error::ServiceNotFound(name)) if name == missing), "{dial:?}");
    let listen = within("listen", Duration::from_secs(30), client.listen(missing)).await;
    assert!(matches!(&listen, Err(Error::ServiceNotFound(name)) if name == missing), "{listen:?}");
}

#[tokio::test]
async fn dialer_without_bind_permission_cannot_host() {
    let network = network();
    let client = ZitiContext::from_file(&network.client_identity).await.unwrap();
    let listen = within("listen", Duration::from_secs(30), client.listen(&network.service_name)).await;
    match listen {
        Err(Error::NotAuthorized { service, action: "bind" }) => assert_eq!(service, network.service_name),
        other => panic!("expected NotAuthorized to bind, got {other:?}"),
    }
}

#[tokio::test]
async fn host_without_dial_permission_cannot_dial() {
    let network = network();
    let _router = shared_router().await;
    let host = TestIdentity::create(&network, &host_role(), Some("EC")).await;
    let context = ZitiContext::from_file(&host.file).await.unwrap();
    let dial = within("dial", Duration::from_secs(30), context.dial(&network.service_name)).await;
    assert!(matches!(dial, Err(Error::NotAuthorized { action: "dial", .. })), "{dial:?}");
    host.delete().await;
}

#[tokio::test]
async fn deleted_identity_gets_session_expired() {
    let network = network();
    let host = TestIdentity::create(&network, &host_role(), Some("EC")).await;
    let context = ZitiContext::from_file(&host.file).await.unwrap();
    host.delete().await;
    // The API session went with the identity, and the certificate no longer logs in.
    let listen = within("listen", Duration::from_secs(30), context.listen(&network.service_name)).await;
    assert!(matches!(listen, Err(Error::SessionExpired)), "{listen:?}");
    let login = within("login", Duration::from_secs(30), ZitiContext::from_file(&host.file)).await;
    assert!(matches!(login, Err(Error::LoginRejected(_))), "{login:?}");
}

#[tokio::test]
async fn unreadable_identity_files_say_which_field_and_never_echo_the_key() {
    let network = network();
    let text = std::fs::read_to_string(&network.client_identity).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let key = json["id"]["key"].as_str().unwrap().to_owned();

    let mut swapped = json.clone();
    swapped["id"]["key"] =
        serde_json::Value::String("pem:-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n".into());
    let err = ziti_sdk::Identity::from_json(swapped.to_string().as_bytes()).unwrap_err();
    assert!(matches!(err, IdentityError::Field { field: "id.key", .. }), "{err}");

    let mut no_cert = json.clone();
    no_cert["id"].as_object_mut().unwrap().remove("cert");
    assert!(matches!(
        ziti_sdk::Identity::from_json(no_cert.to_string().as_bytes()),
        Err(IdentityError::Missing("id.cert"))
    ));

    let loaded = ziti_sdk::Identity::from_json(text.as_bytes()).unwrap();
    let shown = format!("{loaded:?}");
    let key_body = key.lines().nth(1).unwrap();
    assert!(!shown.contains(key_body), "Debug must not print the key");
    assert!(shown.contains("<redacted>"));
}

#[tokio::test]
async fn a_key_from_another_identity_is_refused_before_any_network_use() {
    let network = network();
    let host = TestIdentity::create(&network, &host_role(), Some("EC")).await;
    let mut client: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&network.client_identity).unwrap()).unwrap();
    let other: serde_json::Value = serde_json::from_slice(&std::fs::read(&host.file).unwrap()).unwrap();
    client["id"]["key"] = other["id"]["key"].clone();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mixed.json");
    std::fs::write(&file, client.to_string()).unwrap();
    let err = within("context", Duration::from_secs(30), ZitiContext::from_file(&file)).await.unwrap_err();
    assert!(
        matches!(&err, Error::Identity(IdentityError::Field { field: "id.key", problem }) if problem.contains("does not match")),
        "{err}"
    );
    let missing = ZitiContext::from_file(dir.path().join("absent.json")).await.unwrap_err();
    assert!(matches!(missing, Error::Identity(IdentityError::Read { .. })), "{missing}");
    host.delete().await;
}

/// A host whose identity loses the Bind permission while it hosts: an OpenZiti v2 router
/// ends the bind ("bind access lost") and the listener says so; a v1.6.20 router keeps
/// routing dials to it (what the version does, not a guarantee to build on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_bind_permission_while_hosting() {
    let network = network();
    let _hosting = exclusive_service(&network).await;
    let host = TestIdentity::create(&network, &host_role(), Some("EC")).await;
    let context = within("login", Duration::from_secs(30), ZitiContext::from_file(&host.file)).await.unwrap();
    let mut listener = within("bind", Duration::from_secs(30), context.listen(&network.service_name)).await.unwrap();
    within("bound", Duration::from_secs(30), listener.wait_bound(true)).await;

    ziti_cli(&network, &["edge", "update", "identity", &host.name, "-a", "sdk-test-no-bind"], Path::new(".")).await;

    if network.routers_end_binds_on_lost_permission() {
        let ended = within("the router to end the bind", Duration::from_secs(30), listener.accept()).await;
        match ended {
            Err(Error::BindFailed { service, reason }) => {
                assert_eq!(service, network.service_name);
                assert!(reason.contains("bind access lost"), "OpenZiti {}: {reason}", network.version);
            }
            other => panic!("OpenZiti {}: expected the bind to end, got {other:?}", network.version),
        }
    } else {
        let echoed = within("a dial after the permission went", Duration::from_secs(30), async {
            let served = async {
                let mut conn = listener.accept().await.expect("the dial reaches the host");
                let mut line = [0u8; 6];
                conn.read_exact(&mut line).await.unwrap();
                conn.write_all(&line).await.unwrap();
                conn.shutdown().await.unwrap();
            };
            let (echoed, ()) = tokio::join!(
                go_zcat(&network, &network.client_identity, &network.service_name, b"still\n".to_vec()),
                served
            );
            echoed
        })
        .await;
        assert_eq!(echoed, b"still\n", "OpenZiti {}", network.version);
    }
    host.delete().await;
}
