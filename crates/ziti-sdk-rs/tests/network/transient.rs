//! A controller that is briefly unavailable does not end hosting: with a TLS proxy in
//! front of the controller's API answering 503 to every OIDC token request for a while,
//! the refresh is retried, the router channels and binds stay up, and a Go dialer is
//! served afterwards on the same API session.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use ziti_sdk::{ContextOptions, Identity, ZitiContext};

use crate::support::{TestIdentity, exclusive_service, go_zcat, host_role, network, pattern, within};

const TOKEN_PATH: &str = "/oidc/oauth/token";

/// Terminates TLS with a certificate of its own CA and relays each request (one per
/// connection) to the controller, presenting the identity's certificate there; while
/// `failing`, answers token requests 503 itself.
struct FaultProxy {
    url: String,
    ca_pem: String,
    failing: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn pem_value(identity: &serde_json::Value, field: &str) -> String {
    identity["id"][field].as_str().and_then(|v| v.strip_prefix("pem:")).expect("inline PEM in the identity").to_owned()
}

impl FaultProxy {
    async fn start(identity: &serde_json::Value) -> FaultProxy {
        let upstream = reqwest::Url::parse(identity["ztAPI"].as_str().expect("ztAPI")).unwrap();
        let upstream_addr =
            SocketAddr::new(upstream.host_str().unwrap().parse().unwrap(), upstream.port_or_known_default().unwrap());

        // Towards the controller: the identity's own certificate, key and CA.
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(pem_value(identity, "ca").as_bytes()) {
            roots.add(ca.unwrap()).unwrap();
        }
        let chain: Vec<_> =
            CertificateDer::pem_slice_iter(pem_value(identity, "cert").as_bytes()).map(Result::unwrap).collect();
        let key = PrivateKeyDer::from_pem_slice(pem_value(identity, "key").as_bytes()).unwrap();
        let mut client =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_client_auth_cert(chain, key)
                .unwrap();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = TlsConnector::from(Arc::new(client));

        // Towards the SDK: a certificate for 127.0.0.1 from a CA of this test.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let server_key = rcgen::KeyPair::generate().unwrap();
        let server_cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&server_key, &issuer)
            .unwrap();
        let mut server =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![server_cert.der().clone()],
                    PrivateKeyDer::from_pem_slice(server_key.serialize_pem().as_bytes()).unwrap(),
                )
                .unwrap();
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(server));

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/edge/client/v1", listener.local_addr().unwrap());
        let failing = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (failing, refused) = (failing.clone(), refused.clone());
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let relay = Relay {
                        acceptor: acceptor.clone(),
                        connector: connector.clone(),
                        upstream: upstream_addr,
                        failing: failing.clone(),
                        refused: refused.clone(),
                    };
                    tokio::spawn(relay.serve(stream));
                }
            }
        });
        FaultProxy { url, ca_pem: ca_cert.pem(), failing, refused, task }
    }

    /// The identity pointed at this proxy, trusting its CA besides the controller's.
    fn rewrite(&self, identity: &serde_json::Value) -> serde_json::Value {
        let mut rewritten = identity.clone();
        rewritten["ztAPI"] = self.url.clone().into();
        rewritten["ztAPIs"] = serde_json::Value::Null;
        rewritten["id"]["ca"] = format!("pem:{}\n{}", pem_value(identity, "ca").trim_end(), self.ca_pem).into();
        rewritten
    }
}

struct Relay {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    upstream: SocketAddr,
    failing: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
}

impl Relay {
    async fn serve(self, stream: TcpStream) {
        let Ok(mut client) = self.acceptor.accept(stream).await else { return };
        let mut request = Vec::new();
        let mut buf = [0u8; 8192];
        let head_end = loop {
            if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        };
        let head = String::from_utf8_lossy(&request[..head_end]).into_owned();
        let target = head.split_whitespace().nth(1).unwrap_or_default();
        if self.failing.load(Ordering::SeqCst) && target.starts_with(TOKEN_PATH) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            let answer = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
            let _ = client.write_all(answer.as_bytes()).await;
            let _ = client.shutdown().await;
            return;
        }
        // One request per connection, so that every request passes through this check;
        // the controller serves OIDC only under its own host name.
        let mut rewritten = String::new();
        for line in head.trim_end().lines() {
            let name = line.split(':').next().unwrap_or_default().to_ascii_lowercase();
            if name != "connection" && name != "host" {
                rewritten.push_str(line);
                rewritten.push_str("\r\n");
            }
        }
        rewritten.push_str(&format!("host: {}\r\nconnection: close\r\n\r\n", self.upstream));
        let Ok(tcp) = TcpStream::connect(self.upstream).await else { return };
        let name = ServerName::IpAddress(self.upstream.ip().into());
        let Ok(mut upstream) = self.connector.connect(name, tcp).await else { return };
        if upstream.write_all(rewritten.as_bytes()).await.is_err()
            || upstream.write_all(&request[head_end..]).await.is_err()
        {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_from_the_controller_during_refresh_does_not_end_hosting() {
    let network = network();
    let _hosting = exclusive_service(&network).await;
    let host = TestIdentity::create(&network, &host_role(), Some("EC")).await;
    let original: serde_json::Value = serde_json::from_slice(&std::fs::read(&host.file).unwrap()).unwrap();
    let proxy = FaultProxy::start(&original).await;
    let rewritten = proxy.rewrite(&original);
    let identity = Identity::from_json(rewritten.to_string().as_bytes()).unwrap();
    let options = ContextOptions { max_refresh_interval: Some(Duration::from_secs(2)), ..ContextOptions::default() };
    let context =
        within("login through the proxy", Duration::from_secs(30), ZitiContext::with_options(identity, options))
            .await
            .unwrap();
    let api_session = context.api_session_id();
    let listener = within("bind", Duration::from_secs(30), context.listen(&network.service_name)).await.unwrap();
    let mut bound = listener.bound();
    bound.mark_unchanged();
    let echo = crate::support::echo(listener);

    // The controller is "unavailable" for several refresh attempts.
    proxy.failing.store(true, Ordering::SeqCst);
    within("three refused token requests", Duration::from_secs(60), async {
        while proxy.refused.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    proxy.failing.store(false, Ordering::SeqCst);
    let before = context.session_expires_at();
    within("a refresh after the controller is back", Duration::from_secs(60), async {
        while context.session_expires_at() <= before {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;

    assert!(!echo.is_finished(), "hosting ended: {:?}", echo.await);
    assert!(!bound.has_changed().unwrap(), "the binding was lost (router channels closed) during the outage");
    assert_eq!(context.api_session_id(), api_session, "refreshed the same API session, no new login");
    let input = pattern(64 * 1024, 19);
    let output = within(
        "Go zcat through the Rust host",
        Duration::from_secs(60),
        go_zcat(&network, Path::new(&network.client_identity), &network.service_name, input.clone()),
    )
    .await;
    assert!(output == input, "the echo came back intact");
    host.delete().await;
}
