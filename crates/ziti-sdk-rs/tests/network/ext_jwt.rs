//! Ext-jwt identities: a throwaway Hydra client and an OpenZiti identity whose external
//! id is that client's id (auth policy `idp-jwt`, trusting the network's Hydra through
//! the ext-jwt signer `hydra`) log in with a client-credentials token, get an
//! API-session certificate for the routers, host `gateway` for a Go dialer and dial a
//! Go echo server (OIDC and legacy login); with a short renewal interval the
//! API-session certificate is renewed while a connection keeps working.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use workspace_tests::network::{IdpClient, IdpIdentity, ZitiNetwork};
use zeroize::Zeroizing;
use ziti_sdk::{ContextOptions, Identity, ZitiConn, ZitiContext};

use crate::support::{
    GoEchoServer, TestIdentity, echo, exclusive_service, go_zcat, host_role, network, shared_router, within, ziti_cli,
};

/// A Hydra client and the OpenZiti identity its tokens log in as; both removed when
/// dropped.
struct IdpHost {
    client: IdpClient,
    identity: IdpIdentity,
}

impl IdpHost {
    /// `tag` names the client and identity (unique per test); `roles` are the
    /// identity's role attributes.
    async fn create(network: &ZitiNetwork, tag: &str, roles: &[&str]) -> IdpHost {
        let name = format!("sdk-ext-jwt-{tag}-{}", std::process::id());
        let roles: Vec<String> = roles.iter().map(|role| (*role).to_owned()).collect();
        let network = network.clone();
        tokio::task::spawn_blocking(move || {
            let client = network.idp_client(&name, &[]);
            let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
            let identity = network.idp_identity(&name, client.client_id(), &roles);
            IdpHost { client, identity }
        })
        .await
        .unwrap()
    }

    /// An ext-jwt identity with a fresh token from Hydra.
    async fn identity(&self, network: &ZitiNetwork) -> Identity {
        let token = tokio::task::block_in_place(|| Zeroizing::new(self.client.token()));
        let url = reqwest::Url::parse(&network.controller_url).unwrap();
        let ca = std::fs::read(&network.controller_ca_bundle).expect("controller CA bundle");
        Identity::from_ext_jwt(url, &ca, token).expect("an ext-jwt identity")
    }
}

/// A service of this test: bound by a throwaway Go host, dialed by an ext-jwt identity;
/// removed when dropped.
struct DialService {
    network: ZitiNetwork,
    name: String,
}

impl DialService {
    async fn create(network: &ZitiNetwork, host_role: &str, dialer: &str) -> DialService {
        let name = format!("sdk-{host_role}");
        let here = Path::new(".");
        ziti_cli(network, &["edge", "create", "service", &name], here).await;
        let service_role = format!("@{name}");
        let (bind, dial) = (format!("{name}-bind"), format!("{name}-dial"));
        let (host, dialer) = (format!("#{host_role}"), format!("@{dialer}"));
        for (policy, kind, identities) in [(&bind, "Bind", host.as_str()), (&dial, "Dial", dialer.as_str())] {
            let args = ["edge", "create", "service-policy", policy, kind, "--service-roles", &service_role];
            ziti_cli(network, &[&args[..], &["--identity-roles", identities]].concat(), here).await;
        }
        DialService { network: network.clone(), name }
    }
}

impl Drop for DialService {
    fn drop(&mut self) {
        for (kind, name) in [
            ("service-policy", format!("{}-bind", self.name)),
            ("service-policy", format!("{}-dial", self.name)),
            ("service", self.name.clone()),
        ] {
            let _ = self.network.ziti().args(["edge", "delete", kind, &name]).output();
        }
    }
}

/// Dials until the Go host's terminator exists (it binds a few seconds after starting).
async fn dial_when_hosted(client: &ZitiContext, service: &str) -> ZitiConn {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        match client.dial(service).await {
            Ok(conn) => return conn,
            Err(err) if Instant::now() < deadline => {
                tracing::debug!(%err, "not dialable yet");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(err) => panic!("dial failed: {err}"),
        }
    }
}

async fn round_trip(conn: &mut ZitiConn, message: &[u8]) {
    conn.write_all(message).await.unwrap();
    let mut echoed = vec![0u8; message.len()];
    within("echo", Duration::from_secs(10), conn.read_exact(&mut echoed)).await.unwrap();
    assert_eq!(echoed, message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idp_identity_hosts_the_service_for_go_zcat_and_dials_a_go_echo_server() {
    let network = network();
    let _hosting = exclusive_service(&network).await;
    let idp = IdpHost::create(&network, "host", &[&host_role()]).await;
    let context = within("ext-jwt login", Duration::from_secs(30), ZitiContext::new(idp.identity(&network).await))
        .await
        .expect("the identity logs in with the Hydra token");
    assert_eq!(context.identity_name(), idp.identity.name);
    assert_eq!(context.identity_id(), idp.identity.id);
    assert!(context.api_session_certificate_id().is_some(), "an API-session certificate for the routers");

    let listener = within("bind", Duration::from_secs(30), context.listen(&network.service_name)).await.unwrap();
    let echo = echo(listener);
    let echoed = within(
        "Go zcat through the ext-jwt host",
        Duration::from_secs(30),
        go_zcat(&network, &network.client_identity, &network.service_name, b"hello idp host\n".to_vec()),
    )
    .await;
    assert_eq!(echoed, b"hello idp host\n", "OpenZiti {}", network.version);
    echo.abort();

    let host_role = format!("sdk-ext-jwt-host-host-{}", std::process::id());
    let service = DialService::create(&network, &host_role, &idp.identity.name).await;
    let host = TestIdentity::create(&network, &host_role, Some("EC")).await;
    let _go_host = GoEchoServer::start(&network, &host.file, &service.name);
    let mut conn = within("dial", Duration::from_secs(60), dial_when_hosted(&context, &service.name)).await;
    round_trip(&mut conn, b"hello go echo server").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_session_certificate_is_renewed_while_a_connection_keeps_working() {
    let network = network();
    let _router = shared_router().await;
    let idp = IdpHost::create(&network, "renew", &[]).await;
    let host_role = format!("sdk-ext-jwt-renew-host-{}", std::process::id());
    let service = DialService::create(&network, &host_role, &idp.identity.name).await;
    let host = TestIdentity::create(&network, &host_role, Some("EC")).await;
    let _go_host = GoEchoServer::start(&network, &host.file, &service.name);
    let options =
        ContextOptions { max_certificate_renewal_interval: Some(Duration::from_secs(3)), ..Default::default() };
    let context = within(
        "ext-jwt login",
        Duration::from_secs(30),
        ZitiContext::with_options(idp.identity(&network).await, options),
    )
    .await
    .unwrap();
    let first = context.api_session_certificate_id().expect("a first API-session certificate");
    let mut conn = within("dial", Duration::from_secs(60), dial_when_hosted(&context, &service.name)).await;
    round_trip(&mut conn, b"before renewal").await;

    let mut seen = vec![first.clone()];
    within("two renewals", Duration::from_secs(30), async {
        while seen.len() < 3 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = context.api_session_certificate_id().expect("a certificate");
            if seen.last() != Some(&now) {
                seen.push(now);
            }
        }
    })
    .await;
    let api_session = context.api_session_id();

    round_trip(&mut conn, b"the connection opened before the renewals still works").await;
    let mut fresh = within("dial after renewal", Duration::from_secs(30), context.dial(&service.name)).await.unwrap();
    round_trip(&mut fresh, b"a new dial after the renewals").await;
    assert_eq!(context.api_session_id(), api_session, "renewing the certificate keeps the API session");
    assert_eq!(seen.iter().collect::<std::collections::HashSet<_>>().len(), 3, "three distinct certificates: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idp_identity_logged_in_the_legacy_way_dials_a_go_echo_server() {
    let network = network();
    let _router = shared_router().await;
    let idp = IdpHost::create(&network, "legacy", &[]).await;
    let host_role = format!("sdk-ext-jwt-legacy-host-{}", std::process::id());
    let service = DialService::create(&network, &host_role, &idp.identity.name).await;
    let host = TestIdentity::create(&network, &host_role, Some("EC")).await;
    let _go_host = GoEchoServer::start(&network, &host.file, &service.name);
    let options = ContextOptions { force_legacy_auth: true, ..Default::default() };
    let context = within(
        "legacy ext-jwt login",
        Duration::from_secs(30),
        ZitiContext::with_options(idp.identity(&network).await, options),
    )
    .await
    .expect("authenticate?method=ext-jwt");
    assert_eq!(context.identity_name(), idp.identity.name);
    assert!(context.api_session_certificate_id().is_some());

    let mut conn = within("dial", Duration::from_secs(60), dial_when_hosted(&context, &service.name)).await;
    round_trip(&mut conn, b"hello from a legacy session").await;
}
