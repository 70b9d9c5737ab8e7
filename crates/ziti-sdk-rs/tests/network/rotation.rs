//! Rotating credentials under load, as with SPIFFE X.509-SVIDs: a host whose identity
//! is a short-lived certificate of a third-party CA (no enrollment, held in memory)
//! presents a new certificate with a new key three times while ten dialers keep
//! exchanging through the overlay. None of their exchanges may fail.
//!
//! The test hosts a service of its own (bound by the test identity only, dialed by
//! `#gateway-clients`): other processes on the shared network (a gateway started by
//! hand) host `gateway` too, and their answers would count as failed exchanges.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;
use workspace_tests::network::ZitiNetwork;
use ziti_sdk::{ContextOptions, Identity, ZitiConn, ZitiContext};

use crate::support::{host_role, network, shared_router, within, ziti_cli};

const SPIFFE_ID: &str = "spiffe://sdk-rotation.test/host";
const CA_NAME: &str = "sdk-rotation-test-ca";
const AUTH_POLICY: &str = "sdk-rotation-cert-only";
const DIALERS: usize = 10;
const ROTATIONS: usize = 3;
/// As SPIRE does: a certificate lives a minute or two and is replaced at half its life.
const SVID_LIFETIME: Duration = Duration::from_secs(60);

/// A throwaway SPIFFE-style authority: a root (registered on the controller) and an
/// intermediate that signs the leaves, as a SPIRE server with an upstream root.
struct Authority {
    intermediate: rcgen::Issuer<'static, rcgen::KeyPair>,
    intermediate_pem: String,
}

impl Authority {
    /// Writes the root's certificate and key into `dir` (for registering the CA).
    fn new(dir: &Path) -> Authority {
        let root_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut root = ca_params("sdk-rotation root");
        root.subject_alt_names = vec![uri("spiffe://sdk-rotation.test")];
        let root_cert = root.self_signed(&root_key).unwrap();
        std::fs::write(dir.join("root.crt"), root_cert.pem()).unwrap();
        std::fs::write(dir.join("root.key"), root_key.serialize_pem()).unwrap();
        let root = rcgen::Issuer::new(root, root_key);

        let intermediate_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let intermediate = ca_params("sdk-rotation intermediate");
        let intermediate_pem = intermediate.signed_by(&intermediate_key, &root).unwrap().pem();
        Authority { intermediate: rcgen::Issuer::new(intermediate, intermediate_key), intermediate_pem }
    }

    /// A new X.509-SVID with a new key: the chain (leaf, intermediate) and the key.
    fn issue(&self) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut leaf = rcgen::CertificateParams::default();
        leaf.distinguished_name = rcgen::DistinguishedName::new();
        leaf.subject_alt_names = vec![uri(SPIFFE_ID)];
        leaf.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature, rcgen::KeyUsagePurpose::KeyAgreement];
        leaf.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let now = SystemTime::now();
        leaf.not_before = (now - Duration::from_secs(10)).into();
        leaf.not_after = (now + SVID_LIFETIME).into();
        leaf.serial_number = Some(rand_serial());
        let cert = leaf.signed_by(&key, &self.intermediate).unwrap();
        (format!("{}{}", cert.pem(), self.intermediate_pem), key.serialize_pem())
    }
}

fn ca_params(name: &str) -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    params
}

fn uri(value: &str) -> rcgen::SanType {
    rcgen::SanType::URI(rcgen::string::Ia5String::try_from(value).unwrap())
}

fn rand_serial() -> rcgen::SerialNumber {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64;
    rcgen::SerialNumber::from_slice(&(nanos | 1 << 62).to_be_bytes())
}

/// The controller objects for the third-party CA, the identity and its service,
/// removed when dropped.
struct Trust {
    network: ZitiNetwork,
    identity: String,
    service: String,
}

impl Trust {
    async fn set_up(network: &ZitiNetwork, dir: &Path) -> Trust {
        let identity = format!("sdk-rotation-host-{}", std::process::id());
        let (net, dir, name) = (network.clone(), dir.to_owned(), identity.clone());
        tokio::task::spawn_blocking(move || {
            let ziti = || net.ziti();
            ziti_net_kit::third_party_ca::register_spiffe_ca(
                ziti,
                CA_NAME,
                &dir.join("root.crt"),
                &dir.join("root.key"),
            )
            .expect("the CA is registered and verified");
            let policy = ziti_net_kit::third_party_ca::cert_only_auth_policy(ziti, AUTH_POLICY).expect("auth policy");
            ziti_net_kit::third_party_ca::external_id_identity(ziti, &name, SPIFFE_ID, &policy, &[&host_role()])
                .expect("identity by external id");
        })
        .await
        .unwrap();
        let service = format!("sdk-rotation-{}", std::process::id());
        let here = Path::new(".");
        ziti_cli(network, &["edge", "create", "service", &service], here).await;
        let (bind, dial) = (format!("{service}-bind"), format!("{service}-dial"));
        let (service_role, identity_role) = (format!("@{service}"), format!("@{identity}"));
        for (policy, kind, identities) in [(&bind, "Bind", identity_role.as_str()), (&dial, "Dial", "#gateway-clients")]
        {
            let args = ["edge", "create", "service-policy", policy, kind, "--service-roles", &service_role];
            ziti_cli(network, &[&args[..], &["--identity-roles", identities]].concat(), here).await;
        }
        Trust { network: network.clone(), identity, service }
    }
}

impl Drop for Trust {
    fn drop(&mut self) {
        let delete = |kind: &str, name: &str| {
            let _ = self.network.ziti().args(["edge", "delete", kind, name]).output();
        };
        delete("service-policy", &format!("{}-bind", self.service));
        delete("service-policy", &format!("{}-dial", self.service));
        delete("service", &self.service);
        delete("identity", &self.identity);
        delete("ca", CA_NAME);
    }
}

/// One request: a new connection, a message, its echo.
async fn exchange(client: &ZitiContext, service: &str, message: &[u8]) -> Result<(), String> {
    let mut conn = client.dial(service).await.map_err(|err| format!("dial: {err}"))?;
    round_trip(&mut conn, message).await?;
    conn.shutdown().await.map_err(|err| format!("shutdown: {err}"))
}

async fn round_trip(conn: &mut ZitiConn, message: &[u8]) -> Result<(), String> {
    conn.write_all(message).await.map_err(|err| format!("write: {err}"))?;
    let mut back = vec![0; message.len()];
    tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut back))
        .await
        .map_err(|_| "no echo within 10 s".to_owned())?
        .map_err(|err| format!("read: {err}"))?;
    if back == message {
        Ok(())
    } else {
        // Another host of the service (e.g. a gateway run by hand) answers differently.
        Err(format!("echo differs: {:?}", String::from_utf8_lossy(&back)))
    }
}

#[derive(Default)]
struct Tally {
    done: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

/// Waits until `tally` counts `more` exchanges beyond `from`.
async fn exchanges_after(tally: &Tally, from: usize, more: usize) {
    within("dialers to make progress", Duration::from_secs(60), async {
        while tally.done.load(Ordering::Relaxed) < from + more {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

async fn terminators(network: &ZitiNetwork, service: &str) -> usize {
    let filter = format!("service.name=\"{service}\"");
    let json = crate::support::ziti_cli(network, &["edge", "list", "terminators", &filter, "-j"], Path::new(".")).await;
    let listed: serde_json::Value = serde_json::from_str(&json).unwrap();
    listed["data"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotating_the_certificate_under_load_fails_no_exchange() {
    let network = network();
    // Its own service; no router restart by another test of this binary meanwhile.
    let _router = shared_router().await;
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new(dir.path());
    let trust = Trust::set_up(&network, dir.path()).await;
    let controller_ca = std::fs::read(&network.ctrl_ca).unwrap();
    let svid = |authority: &Authority| {
        let (chain, key) = authority.issue();
        Identity::from_pem(&[network.ctrl_url.as_str()], chain.as_bytes(), key.as_bytes(), &controller_ca).unwrap()
    };

    // Refresh often, as with the short access tokens a SPIFFE deployment would pick.
    let options = ContextOptions { max_refresh_interval: Some(Duration::from_secs(10)), ..ContextOptions::default() };
    let host =
        within("login with the SVID", Duration::from_secs(30), ZitiContext::with_options(svid(&authority), options))
            .await
            .expect("the SVID chain logs in");
    let listener = within("bind", Duration::from_secs(30), host.listen(&trust.service)).await.unwrap();
    let mut bound = listener.bound();
    let unbound_seen = Arc::new(AtomicUsize::new(0));
    let watch_bound = tokio::spawn({
        let unbound_seen = unbound_seen.clone();
        async move {
            while bound.changed().await.is_ok() {
                if !*bound.borrow() {
                    unbound_seen.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    let echo = crate::support::echo(listener);

    let client = ZitiContext::from_file(&network.client_identity).await.unwrap();
    let service = trust.service.clone();
    // Opened before the first rotation, used after each.
    let mut long_lived =
        within("the long-lived connection", Duration::from_secs(30), client.dial(&service)).await.unwrap();
    round_trip(&mut long_lived, b"before any rotation").await.unwrap();

    let tally = Arc::new(Tally::default());
    // Dialers poll it between exchanges.
    let stop = tokio::sync::watch::Sender::new(false);
    let dialers: Vec<_> = (0..DIALERS)
        .map(|n| {
            let (client, service, tally, stop) = (client.clone(), service.clone(), tally.clone(), stop.clone());
            tokio::spawn(async move {
                let mut k = 0u64;
                while !*stop.borrow() {
                    let message = format!("dialer {n} request {k}");
                    match exchange(&client, &service, message.as_bytes()).await {
                        Ok(()) => {
                            tally.done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) => {
                            let at = humantime_now();
                            tally.failures.lock().await.push(format!("{at} {message}: {err}"));
                        }
                    }
                    k += 1;
                }
            })
        })
        .collect();

    let mut sessions = vec![host.api_session_id()];
    exchanges_after(&tally, 0, 50).await;
    for rotation in 1..=ROTATIONS {
        // The scenario's pace: a new SVID at about half the lifetime of the current one.
        tokio::time::sleep(SVID_LIFETIME / 2).await;
        let before = tally.done.load(Ordering::Relaxed);
        within("the rotation", Duration::from_secs(30), host.update_identity(svid(&authority)))
            .await
            .unwrap_or_else(|err| panic!("rotation {rotation}: {err}"));
        let session = host.api_session_id();
        assert!(!sessions.contains(&session), "rotation {rotation} logged in afresh: {session} after {sessions:?}");
        sessions.push(session);
        exchanges_after(&tally, before, 50).await;
        round_trip(&mut long_lived, format!("after rotation {rotation}").as_bytes()).await.unwrap_or_else(|err| {
            panic!("the connection opened before the rotations broke after rotation {rotation}: {err}")
        });
    }
    // The old binds are gone: one terminator, the current one.
    within("replaced terminators to go", Duration::from_secs(60), async {
        while terminators(&network, &service).await != 1 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    let before = tally.done.load(Ordering::Relaxed);
    exchanges_after(&tally, before, 50).await;

    stop.send_replace(true);
    for dialer in dialers {
        within("dialers to stop", Duration::from_secs(30), dialer).await.unwrap();
    }
    let failures = tally.failures.lock().await.clone();
    let done = tally.done.load(Ordering::Relaxed);
    assert!(failures.is_empty(), "{} of {} exchanges failed: {failures:#?}", failures.len(), done + failures.len());
    assert_eq!(unbound_seen.load(Ordering::Relaxed), 0, "the listener was unbound at some point");
    assert!(!echo.is_finished(), "the listener stopped: {:?}", echo.await);
    tracing::info!(exchanges = done, sessions = ?sessions, "rotations done");
    watch_bound.abort();
}

/// Seconds since the epoch, to line failures up with the logs.
fn humantime_now() -> String {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    format!("t={}.{:03}", now.as_secs(), now.subsec_millis())
}
