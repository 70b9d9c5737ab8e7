//! The gateway binary on the real overlay: enrolled through the network's
//! ziti-management, bound on the `gateway` service with the pure-Rust SDK, and reached
//! by a client no one here wrote (the Go SDK's `ziti tunnel proxy`, then plain HTTP).
//!
//! The tests run one at a time: each binds the one `gateway` service, and two hosts
//! would share the dials.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a failed step should panic
#![allow(clippy::await_holding_lock)] // the turn-taking guard is held on purpose

mod support;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use support::entries;
use workspace_tests::network::ZitiNetwork;
use workspace_tests::{Behaviour, FakeManagement};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway");

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running `gateway` with the overlay on; its stderr is collected.
struct Gateway {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    /// Collects the log until the gateway closes its stderr (when it exits).
    log_reader: Option<std::thread::JoinHandle<()>>,
    admin: String,
    identity_dir: tempfile::TempDir,
}

impl Gateway {
    /// The network's ziti-management (over TLS) unless `extra` names another target.
    fn start(network: &ZitiNetwork, extra: &[(&str, &str)]) -> Self {
        let identity_dir = tempfile::tempdir().unwrap();
        let admin = format!("127.0.0.1:{}", free_port());
        let own_target = extra.iter().any(|(name, _)| *name == "ZITI_MANAGEMENT_GRPC_TARGET");
        let management = if own_target { Vec::new() } else { network.management_env().to_vec() };
        let mut child = Command::new(GATEWAY)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(management)
            .envs([
                ("ZITI_ENABLED", "true"),
                ("ZITI_SERVICE_NAME", network.service_name.as_str()),
                ("GATEWAY_IDENTITY_DIR", &identity_dir.path().to_string_lossy()),
                ("GATEWAY_ADMIN_ADDR", &admin),
                ("RUST_LOG", "info"),
            ])
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let lines = log.clone();
        let log_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap_or_else(PoisonError::into_inner).push(line);
            }
        });
        Self { child, log, log_reader: Some(log_reader), admin, identity_dir }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(PoisonError::into_inner).join("\n")
    }

    /// Lease renewals that got through so far, from its `/metrics`.
    fn renewals_ok(&self) -> u64 {
        let (_, metrics) = support::blocking_get(&self.admin, "/metrics").unwrap();
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("gateway_lease_renewals_total{result=\"ok\"} "))
            .and_then(|count| count.trim().parse().ok())
            .unwrap_or_else(|| panic!("no renewal count in /metrics:\n{metrics}"))
    }

    /// The leases it enrolled, in order (from its log: ids only, never secrets).
    fn leases(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|line| line.contains("readiness: identity enrolled"))
            .filter_map(|line| line.split("lease=").nth(1)?.split_whitespace().next().map(str::to_owned))
            .collect()
    }

    /// Waits until it has enrolled its `nth` lease (1 = the first).
    fn wait_for_lease(&self, nth: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.leases().len() < nth {
            assert!(Instant::now() < deadline, "no lease number {nth} within {within:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the gateway exited with {status}:\n{}", self.log());
            }
            if support::blocking_get(&self.admin, "/readyz").is_ok_and(|(status, _)| status == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "not ready within {within:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let asked = Instant::now();
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, asked.elapsed());
            }
            assert!(asked.elapsed() < Duration::from_secs(15), "no exit after SIGTERM:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ziti tunnel proxy gateway:PORT`: the Go SDK dialing the service for plain TCP clients.
struct TunnelProxy {
    child: Child,
    addr: String,
}

impl TunnelProxy {
    fn start(network: &ZitiNetwork) -> Self {
        let port = free_port();
        let child = network
            .ziti()
            .current_dir(&network.home) // `ziti-down` sweeps what runs there
            .args(["tunnel", "proxy", &format!("{}:{port}", network.service_name), "-i"])
            .arg(&network.client_identity)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self { child, addr: format!("127.0.0.1:{port}") }
    }

    /// GETs `path` through the overlay until it answers 200, or panics after `within`.
    fn get_ok(&self, path: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            match support::blocking_get(&self.addr, path) {
                Ok((200, body)) => return body,
                other if Instant::now() >= deadline => {
                    panic!("no 200 through the overlay within {within:?}: {other:?}")
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

impl Drop for TunnelProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the default `GATEWAY_UNVERIFIED_CALLERS=anonymous` makes of a caller the router
/// did not vouch for: no name, no id, no principal.
fn assert_unverified_caller_is_anonymous(json: &serde_json::Value) {
    assert!(json["caller"]["name"].is_null(), "an unverified claim was passed on: {json}");
    assert!(json["caller"]["id"].is_null(), "{json}");
    assert_eq!(json["caller"]["verified"], false, "{json}");
    assert!(json["principal"].is_null(), "an unverified claim was resolved: {json}");
}

/// Ten clients looping GETs through the proxy at `addr` until `done` says so (asked
/// every half second); returns how many were answered 200 and how many were not.
fn ten_clients_looping(addr: &str, mut done: impl FnMut() -> bool) -> (u64, u64) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let stop = AtomicBool::new(false);
    let (ok, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|scope| {
        for client in 0..10 {
            let (stop, ok, failed) = (&stop, &ok, &failed);
            scope.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match support::blocking_get(addr, &format!("/loop/{client}")) {
                        Ok((200, _)) => ok.fetch_add(1, Ordering::SeqCst),
                        other => {
                            eprintln!("client {client}: {other:?}");
                            failed.fetch_add(1, Ordering::SeqCst)
                        }
                    };
                }
            });
        }
        while !done() {
            std::thread::sleep(Duration::from_millis(500));
        }
        stop.store(true, Ordering::SeqCst);
    });
    (ok.into_inner(), failed.into_inner())
}

/// A ready gateway with `extra` settings, answering through `ziti tunnel proxy`.
fn serving(network: &ZitiNetwork, extra: &[(&str, &str)]) -> (Gateway, TunnelProxy) {
    let mut gateway = Gateway::start(network, extra);
    gateway.wait_ready(Duration::from_secs(60));
    let proxy = TunnelProxy::start(network);
    proxy.get_ok("/before", Duration::from_secs(30));
    (gateway, proxy)
}

fn identity_exists(network: &ZitiNetwork, id: &str) -> bool {
    let out = network.ziti().args(["edge", "list", "identities", &format!("id=\"{id}\""), "-j"]).output().unwrap();
    assert!(out.status.success(), "ziti edge list identities: {}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["data"].as_array().is_some_and(|found| !found.is_empty())
}

#[test]
fn serves_http_over_the_overlay_to_a_go_client_and_cleans_up_on_sigterm() {
    let _one = one_at_a_time();
    let network = ZitiNetwork::from_env();
    // At debug, so that the no-key-in-the-log check below means something.
    let mut gateway = Gateway::start(&network, &[("RUST_LOG", "debug")]);
    gateway.wait_ready(Duration::from_secs(60));
    let proxy = TunnelProxy::start(&network);

    let body = proxy.get_ok("/hello", Duration::from_secs(30));
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    eprintln!("OpenZiti {}: the Go client through `ziti tunnel proxy` got {json}", network.version);
    assert_eq!(json["transport"], "overlay", "{json}");
    assert_eq!(json["path"], "/hello");
    if network.routers_vouch_for_dialers() {
        // The router filled in the dialer's identity from its session: verified, and
        // resolved through ziti-management.
        assert_eq!(json["caller"]["name"], "gateway-client", "{json}");
        assert!(json["caller"]["id"].as_str().is_some_and(|id| !id.is_empty()), "{json}");
        assert_eq!(json["caller"]["verified"], true, "{json}");
        assert_eq!(json["principal"]["name"], "gateway-client", "{json}");
        assert_eq!(json["principal"]["role_attributes"], serde_json::json!(["gateway-clients"]), "{json}");
    } else {
        // A v1 router passes on only the dialer's own claim: by default the gateway
        // serves such a caller as anonymous and resolves nothing.
        assert_unverified_caller_is_anonymous(&json);
    }

    let leases = gateway.leases();
    assert_eq!(leases.len(), 1, "{}", gateway.log());
    assert!(identity_exists(&network, &leases[0]));
    let file = entries(gateway.identity_dir.path());
    assert_eq!(file.len(), 1, "one private identity directory");

    let (status, took) = gateway.terminate();
    assert!(status.success(), "exit {status}:\n{}", gateway.log());
    assert!(took < Duration::from_secs(5), "took {took:?} to stop");
    assert!(entries(gateway.identity_dir.path()).is_empty(), "identity files left behind");
    assert!(!identity_exists(&network, &leases[0]), "the lease was not released on the controller");
    assert!(!gateway.log().contains("-----BEGIN"), "key material in the log");
    assert!(!gateway.log().contains("\"id\":{"), "identity JSON in the log");
}

/// SIGKILL leaves the identity directory, key file included; the next gateway started
/// on the same `GATEWAY_IDENTITY_DIR` erases it, and leaves a running gateway's alone.
#[test]
fn the_next_start_erases_a_killed_gateways_identity_directory_and_keeps_a_running_ones() {
    let _one = one_at_a_time();
    let network = ZitiNetwork::from_env();
    let shared = tempfile::tempdir().unwrap();
    let shared_dir = shared.path().to_string_lossy().into_owned();
    let on_shared = [("GATEWAY_IDENTITY_DIR", shared_dir.as_str())];
    let identity_files = |dir: &std::path::Path| {
        entries(dir)
            .into_iter()
            .filter(|file| {
                file.file_name().and_then(|name| name.to_str()).is_some_and(|n| n.starts_with("ziti-identity-"))
            })
            .collect::<Vec<_>>()
    };

    let mut killed = Gateway::start(&network, &on_shared);
    killed.wait_ready(Duration::from_secs(60));
    let killed_dirs = entries(shared.path());
    assert_eq!(killed_dirs.len(), 1, "{killed_dirs:?}");
    let mut running = Gateway::start(&network, &on_shared);
    running.wait_ready(Duration::from_secs(60));
    let running_dir = entries(shared.path()).into_iter().find(|dir| *dir != killed_dirs[0]).unwrap();

    let killed_pid = killed.child.id();
    killed.child.kill().unwrap(); // SIGKILL
    killed.child.wait().unwrap();
    assert_eq!(identity_files(&killed_dirs[0]).len(), 1, "SIGKILL should leave the key file behind");

    let mut next = Gateway::start(&network, &on_shared);
    next.wait_ready(Duration::from_secs(60));
    assert!(!killed_dirs[0].exists(), "the killed gateway's directory is still there:\n{}", next.log());
    assert_eq!(identity_files(&running_dir).len(), 1, "the running gateway's key file is gone");
    let erased = next.log().lines().find(|line| line.contains("erased an identity directory")).map(str::to_owned);
    let erased = erased.unwrap_or_else(|| panic!("no erasure logged:\n{}", next.log()));
    assert!(erased.contains(&format!("pid={killed_pid}")), "{erased}");
    assert!(erased.contains(&killed_dirs[0].display().to_string()), "{erased}");
    assert!(running.child.try_wait().unwrap().is_none(), "the running gateway stopped");
    assert_eq!(entries(shared.path()).len(), 2, "{:?}", entries(shared.path()));

    for gateway in [&mut next, &mut running] {
        let (status, _) = gateway.terminate();
        assert!(status.success(), "{}", gateway.log());
    }
    assert!(entries(shared.path()).is_empty(), "left behind: {:?}", entries(shared.path()));
}

#[test]
fn a_lost_lease_is_replaced_and_the_gateway_serves_again_without_a_restart() {
    let _one = one_at_a_time();
    let network = ZitiNetwork::from_env();
    let (mut gateway, proxy) = serving(&network, &[("ZITI_LEASE_RENEWAL_INTERVAL", "2s")]);
    let first = gateway.leases()[0].clone();
    let first_file = entries(gateway.identity_dir.path()).into_iter().flat_map(|dir| entries(&dir)).collect::<Vec<_>>();
    assert_eq!(first_file.len(), 1);

    // Behind the gateway's back, as an operator revoking it would.
    let out = network.ziti().args(["edge", "delete", "identity", &format!("id:{first}")]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let lost_at = Instant::now();
    gateway.wait_for_lease(2, Duration::from_secs(60));
    assert!(!first_file[0].exists(), "the lost identity's file must be gone");
    proxy.get_ok("/after", Duration::from_secs(30));
    eprintln!("lease lost -> serving again in {:.1} s", lost_at.elapsed().as_secs_f64());
    assert!(gateway.child.try_wait().unwrap().is_none(), "the gateway restarted");
    let (status, _) = gateway.terminate();
    assert!(status.success(), "{}", gateway.log());
}

/// The gateway's identity loses the Bind permission while it hosts (its role attribute
/// taken away by an operator). An OpenZiti v2 router ends the bind: the gateway gives
/// that lease back and serves again with a new one, without a restart. A v1.6.20 router
/// keeps routing dials to the old binding, and the gateway keeps serving on it.
#[test]
fn a_binding_the_router_ends_is_replaced_without_a_restart() {
    let _one = one_at_a_time();
    let network = ZitiNetwork::from_env();
    let (mut gateway, proxy) = serving(&network, &[]);
    let first = gateway.leases()[0].clone();

    // `--`: a generated id may start with `-`.
    let out = network
        .ziti()
        .args(["edge", "update", "identity", "-a", "gateway-test-no-bind", "--", &first])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let revoked_at = Instant::now();

    if network.routers_end_binds_on_lost_permission() {
        gateway.wait_for_lease(2, Duration::from_secs(60));
        proxy.get_ok("/after", Duration::from_secs(30));
        eprintln!(
            "OpenZiti {}: binding ended -> serving again in {:.1} s",
            network.version,
            revoked_at.elapsed().as_secs_f64()
        );
        assert!(!identity_exists(&network, &first), "the ended lease was not given back");
    } else {
        proxy.get_ok("/after", Duration::from_secs(30));
        assert_eq!(gateway.leases(), vec![first], "OpenZiti {}: {}", network.version, gateway.log());
    }
    assert!(gateway.child.try_wait().unwrap().is_none(), "the gateway restarted");
    let (status, _) = gateway.terminate();
    assert!(status.success(), "{}", gateway.log());
}

#[test]
fn after_a_router_restart_the_gateway_serves_again_by_itself() {
    let _one = one_at_a_time();
    let network = ZitiNetwork::from_env();
    let (mut gateway, proxy) = serving(&network, &[]);

    let stopped = Instant::now();
    network.restart_router(Duration::from_secs(60));
    let back_online = stopped.elapsed();
    proxy.get_ok("/after", Duration::from_secs(90));
    eprintln!(
        "router stopped -> online again in {:.1} s -> gateway serving through it in {:.1} s",
        back_online.as_secs_f64(),
        stopped.elapsed().as_secs_f64()
    );
    gateway.wait_ready(Duration::from_secs(30));
    assert!(gateway.child.try_wait().unwrap().is_none(), "the gateway process restarted");
    let (status, _) = gateway.terminate();
    assert!(status.success(), "{}", gateway.log());
}

// --- identities the overlay cannot use --------------------------------------------

/// Runs the gateway until it exits by itself; returns its exit status and log.
fn run_to_exit(mut gateway: Gateway, within: Duration) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = gateway.child.try_wait().unwrap() {
            // Its last log lines: read to the end of its stderr.
            if let Some(reader) = gateway.log_reader.take() {
                reader.join().ok();
            }
            assert!(entries(gateway.identity_dir.path()).is_empty(), "identity files left behind");
            return (status, gateway.log());
        }
        assert!(Instant::now() < deadline, "still running after {within:?}:\n{}", gateway.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The network's client identity with one field replaced: well-formed JSON that the
/// SDK must refuse (or that the controller must refuse) with a clear reason.
fn client_identity_with(network: &ZitiNetwork, field: &str, value: &str) -> Vec<u8> {
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&network.client_identity).unwrap()).unwrap();
    json["id"][field] = serde_json::Value::String(value.to_owned());
    serde_json::to_vec(&json).unwrap()
}

/// A CA that signed nothing on this network.
fn unrelated_ca() -> String {
    let ca = rcgen::generate_simple_self_signed(vec!["unrelated-ca".to_owned()]).unwrap();
    format!("pem:{}", ca.cert.pem())
}

#[rstest::rstest]
#[case::broken_certificate(
    "cert",
    "pem:-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    "id.cert"
)]
#[case::wrong_ca("ca", "", "UnknownIssuer")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_the_overlay_cannot_use_stops_the_start_clearly(
    #[case] field: &str,
    #[case] value: &str,
    #[case] named: &str,
) {
    let _one = one_at_a_time();
    let network = ZitiNetwork::from_env();
    let wrong_ca = unrelated_ca();
    let value = if value.is_empty() { wrong_ca.as_str() } else { value };
    let identity = client_identity_with(&network, field, value);
    let management =
        FakeManagement::start(Behaviour { identity_json: Some(identity), ..Behaviour::default() }).await.unwrap();
    let target = management.target();
    let (status, log) = tokio::task::spawn_blocking(move || {
        let network = ZitiNetwork::from_env();
        let gateway = Gateway::start(&network, &[("ZITI_MANAGEMENT_GRPC_TARGET", target.as_str())]);
        run_to_exit(gateway, Duration::from_secs(60))
    })
    .await
    .unwrap();

    assert_eq!(status.code(), Some(1), "{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(last.contains(named), "the error does not name the cause ({named}): {last}\n{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains("-----BEGIN"), "key material in the log:\n{log}");
    assert_eq!(management.issued().len(), 1, "an unusable identity is not retried at start-up");
    assert_eq!(management.releases(), management.issued(), "the unusable lease is given back");
}

#[test]
fn an_identity_without_bind_permission_stops_the_start_clearly_and_is_given_back() {
    let _one = one_at_a_time();
    let network = ZitiNetwork::from_env();
    // A ziti-management that gives gateways an attribute no Bind policy names.
    let grpc = free_port();
    let mut management = Command::new(&network.management_bin)
        .env_clear()
        .envs([
            ("ZITI_MGMT_CONTROLLER_URL", network.ctrl_url.as_str()),
            ("ZITI_MGMT_CONTROLLER_CA", &network.ctrl_ca.to_string_lossy()),
            ("ZITI_MGMT_ADMIN_USER", network.admin_user.as_str()),
            ("ZITI_MGMT_ADMIN_PASSWORD", network.admin_password.as_str()),
            ("ZITI_MGMT_GATEWAY_ROLE_ATTRIBUTES", "gateway-without-bind"),
            ("ZITI_MGMT_GRPC_ADDR", &format!("127.0.0.1:{grpc}")),
            ("ZITI_MGMT_ADMIN_ADDR", &format!("127.0.0.1:{}", free_port())),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let target = format!("http://127.0.0.1:{grpc}");
    let gateway = Gateway::start(&network, &[("ZITI_MANAGEMENT_GRPC_TARGET", target.as_str())]);
    let (status, log) = run_to_exit(gateway, Duration::from_secs(60));
    let _ = management.kill();
    let _ = management.wait();

    assert_eq!(status.code(), Some(1), "{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.contains("gateway") && (last.contains("not authorized") || last.contains("no policy")),
        "the error does not name the missing permission: {last}\n{log}"
    );
    // "identity <id> could not be used (its lease was given back): ..."
    let id = last.split(" could not be used").next().and_then(|head| head.rsplit(' ').next()).unwrap_or_default();
    assert!(last.contains(&format!("identity {id} could not be used (its lease was given back)")), "{last}");
    assert!(!identity_exists(&network, id), "the refused identity {id} is still on the controller");
}

// --- ziti-management unreachable for a while -----------------------------------------

/// A loopback TCP relay to `upstream` that can be cut (new and open connections
/// refused or dropped) and restored, standing in for a network partition.
struct Relay {
    addr: String,
    cut: Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    fn start(upstream: String) -> Self {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cutting = cut.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                if cutting.load(Ordering::SeqCst) {
                    continue; // dropped at once
                }
                let Ok(server) = std::net::TcpStream::connect(&upstream) else { continue };
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    let cut = cutting.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        use std::io::{Read, Write};
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || cut.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Self { addr, cut }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn ziti_management_unreachable_for_less_than_the_ttl_does_not_interrupt_service() {
    let _one = one_at_a_time();
    let network = ZitiNetwork::from_env();
    let relay = Relay::start(network.management_grpc_target.trim_start_matches("https://").to_owned());
    // TLS through the relay: the certificate names 127.0.0.1, the relay's address too.
    let target = format!("https://{}", relay.addr);
    let ca = network.management_tls_ca.to_string_lossy().into_owned();
    let (socket, spiffe_id) = (network.spiffe_endpoint_socket.clone(), network.gateway_spiffe_id());
    let mut gateway = Gateway::start(
        &network,
        &[
            ("ZITI_MANAGEMENT_GRPC_TARGET", target.as_str()),
            ("ZITI_MANAGEMENT_TLS_CA", ca.as_str()),
            ("SPIFFE_ENDPOINT_SOCKET", socket.as_str()),
            ("ZITI_SPIFFE_ID", spiffe_id.as_str()),
            ("ZITI_LEASE_RENEWAL_INTERVAL", "2s"),
            ("ZITI_MANAGEMENT_TIMEOUT", "1s"),
        ],
    );
    gateway.wait_ready(Duration::from_secs(60));
    let proxy = TunnelProxy::start(&network);
    proxy.get_ok("/before", Duration::from_secs(30));

    relay.set_cut(true);
    let outage = Instant::now();
    let mut served = 0;
    while outage.elapsed() < Duration::from_secs(10) {
        let (status, body) = support::blocking_get(&proxy.addr, "/during")
            .unwrap_or_else(|err| panic!("request failed after {:?}: {err}\n{}", outage.elapsed(), gateway.log()));
        assert_eq!(status, 200, "interrupted after {:?}: {body}\n{}", outage.elapsed(), gateway.log());
        served += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    let renewed_before_the_end = gateway.renewals_ok();
    relay.set_cut(false);
    assert!(gateway.log().contains("lease renewal failed"), "the outage was not noticed:\n{}", gateway.log());

    // Renewals get through again, on the same lease.
    let failures = gateway.log().matches("lease renewal failed").count();
    let deadline = Instant::now() + Duration::from_secs(10);
    while gateway.renewals_ok() <= renewed_before_the_end {
        assert!(Instant::now() < deadline, "no renewal got through after the outage:\n{}", gateway.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    proxy.get_ok("/after", Duration::from_secs(5));
    assert_eq!(gateway.leases().len(), 1, "the lease was replaced:\n{}", gateway.log());
    assert!(!gateway.log().contains("lease lost"), "{}", gateway.log());
    let (status, _) = gateway.terminate();
    assert!(status.success(), "{}", gateway.log());
    eprintln!("ziti-management cut for 10 s: {served} requests served, {failures} renewals failed meanwhile");
}

#[test]
fn a_hundred_concurrent_go_dialers_are_all_served() {
    let _one = one_at_a_time();
    let network = ZitiNetwork::from_env();
    let mut gateway = Gateway::start(&network, &[]);
    gateway.wait_ready(Duration::from_secs(60));
    let proxy = TunnelProxy::start(&network);
    proxy.get_ok("/warm-up", Duration::from_secs(30));

    // `ziti tunnel proxy` dials the service once per TCP connection: 100 Go dials at once.
    let barrier = Arc::new(std::sync::Barrier::new(100));
    let requests: Vec<_> = (0..100)
        .map(|n| {
            let (addr, barrier) = (proxy.addr.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                support::blocking_get(&addr, &format!("/conn/{n}"))
            })
        })
        .collect();
    for (n, request) in requests.into_iter().enumerate() {
        let (status, body) = request.join().unwrap().unwrap_or_else(|err| panic!("request {n}: {err}"));
        assert_eq!(status, 200, "request {n}: {body}");
        assert!(body.contains(&format!("\"path\":\"/conn/{n}\"")), "request {n} got another's answer: {body}");
    }
    let (status, _) = gateway.terminate();
    assert!(status.success(), "{}", gateway.log());
}

/// An identity holding the role `gateway-admins`, which the forged claims name; deleted
/// again on drop.
struct Admin<'a> {
    network: &'a ZitiNetwork,
    name: String,
}

impl<'a> Admin<'a> {
    fn create(network: &'a ZitiNetwork) -> Self {
        let name = format!("gateway-admin-{}", std::process::id());
        let out = network.ziti().args(["edge", "create", "identity", &name, "-a", "gateway-admins"]).output().unwrap();
        assert!(out.status.success(), "creating {name}: {}", String::from_utf8_lossy(&out.stderr));
        Self { network, name }
    }
}

impl Drop for Admin<'_> {
    fn drop(&mut self) {
        let _ = self.network.ziti().args(["edge", "delete", "identity", &self.name]).output();
    }
}

/// One GET over a Rust SDK dial of the `gateway` service whose Connect claims to be
/// `claimed` (edge header 1008); retried until the fresh binding takes dials.
async fn forged_get(network: &ZitiNetwork, claimed: &str) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let context = ziti_sdk::ZitiContext::from_file(&network.client_identity).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = loop {
        match context.dial_with_forged_caller_claim(&network.service_name, claimed).await {
            Ok(conn) => break conn,
            Err(err) if Instant::now() < deadline => {
                eprintln!("dial not answered yet: {err}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("no dial within 30 s: {err}"),
        }
    };
    conn.write_all(b"GET /whoami HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut response)).await.unwrap().unwrap();
    let response = String::from_utf8_lossy(&response);
    let status = response.get(9..12).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or_else(|err| panic!("not JSON ({err}): {response}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_caller_claim_never_reaches_the_upstream_as_someone_else() {
    let _one = one_at_a_time();
    let network = ZitiNetwork::from_env();
    let admin = Admin::create(&network);
    for policy in [None, Some("anonymous"), Some("claim"), Some("reject")] {
        let extra: Vec<(&str, &str)> =
            policy.map(|policy| ("GATEWAY_UNVERIFIED_CALLERS", policy)).into_iter().collect();
        let mut gateway = Gateway::start(&network, &extra);
        gateway.wait_ready(Duration::from_secs(60));
        let (status, json) = forged_get(&network, &admin.name).await;
        let policy = policy.unwrap_or("(default)");
        eprintln!("OpenZiti {}, GATEWAY_UNVERIFIED_CALLERS={policy}: {status} {json}", network.version);
        if network.routers_vouch_for_dialers() {
            // The router names the dialer from its session, whatever it claims.
            assert_eq!(status, 200, "{policy}: {json}");
            assert_eq!(json["caller"]["name"], "gateway-client", "{policy}: {json}");
            assert_eq!(json["caller"]["verified"], true, "{policy}: {json}");
            assert_eq!(json["principal"]["name"], "gateway-client", "{policy}: {json}");
        } else {
            match policy {
                "claim" => {
                    // Explicitly opted into: passed on, and marked as a mere claim.
                    assert_eq!(status, 200, "{json}");
                    assert_eq!(json["caller"]["name"], admin.name.as_str(), "{json}");
                    assert_eq!(json["caller"]["verified"], false, "{json}");
                }
                "reject" => {
                    assert_eq!(status, 403, "{json}");
                    assert!(json["error"].as_str().is_some_and(|reason| !reason.is_empty()), "{json}");
                }
                _ => assert_unverified_caller_is_anonymous(&json),
            }
        }
        if policy != "claim" || network.routers_vouch_for_dialers() {
            let text = json.to_string();
            assert!(
                !text.contains(&admin.name) && !text.contains("gateway-admins"),
                "{policy}: the claim got through: {text}"
            );
        }
        let (status, _) = gateway.terminate();
        assert!(status.success(), "{}", gateway.log());
    }
}

#[path = "overlay/attested.rs"]
mod attested;
#[path = "overlay/idp.rs"]
mod idp;
#[path = "overlay/sources.rs"]
mod sources;
