//! Identity sources and stores on the real overlay: the gateway whose identity is its
//! SPIRE X.509-SVID (rotating, the agent going away, the refusals), and the lease
//! source keeping its identity in memory only.
//!
//! SPIRE is the real one: the network's (`cargo xtask ziti-up`, trust domain
//! `ziti-gateway.test`) or a throwaway second one a test starts, each with its root
//! registered on the controller as a third-party CA where the test needs it.

use std::time::{Duration, Instant};

use workspace_tests::network::{ThrowawaySpire, ZitiNetwork};
use ziti_net_kit::third_party_ca;

use super::{Gateway, TunnelProxy, entries, one_at_a_time, run_to_exit, support, ten_clients_looping};

/// The settings of a gateway whose identity is the SVID of `spiffe_id` from `endpoint`.
fn spiffe_env(network: &ZitiNetwork, endpoint: &str, spiffe_id: &str) -> Vec<(&'static str, String)> {
    let mut env: Vec<_> =
        network.spiffe_env().into_iter().filter(|(name, _)| *name != "SPIFFE_ENDPOINT_SOCKET").collect();
    env.extend([
        ("ZITI_IDENTITY_SOURCE", "spiffe".to_owned()),
        ("SPIFFE_ENDPOINT_SOCKET", endpoint.to_owned()),
        ("ZITI_SPIFFE_ID", spiffe_id.to_owned()),
    ]);
    env
}

fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(name, value)| (*name, value.as_str())).collect()
}

/// An OpenZiti identity found by `spiffe_id`, hosting `gateway`; deleted on drop.
struct SpiffeIdentity<'a> {
    network: &'a ZitiNetwork,
    name: String,
}

impl<'a> SpiffeIdentity<'a> {
    fn create(network: &'a ZitiNetwork, name: &str, spiffe_id: &str) -> Self {
        network.spiffe_identity(name, spiffe_id, &["gateway-hosts"]);
        Self { network, name: name.to_owned() }
    }
}

impl Drop for SpiffeIdentity<'_> {
    fn drop(&mut self) {
        let _ = self.network.ziti().args(["edge", "delete", "identity", &self.name]).output();
    }
}

fn assert_no_secrets(log: &str) {
    assert!(!log.contains("-----BEGIN"), "key or certificate material in the log");
    assert!(!log.contains("\"id\":{"), "identity JSON in the log");
}

#[test]
fn a_gateway_whose_identity_is_its_svid_serves_callers_as_the_identity_with_that_external_id() {
    let _one = one_at_a_time();
    let network = ZitiNetwork::from_env();
    let spiffe_id = network.gateway_spiffe_id();
    let env = spiffe_env(&network, &network.spiffe_endpoint_socket, &spiffe_id);
    let mut env = borrowed(&env);
    env.push(("RUST_LOG", "debug"));
    let mut gateway = Gateway::start(&network, &env);
    gateway.wait_ready(Duration::from_secs(60));
    let proxy = TunnelProxy::start(&network);
    let body = proxy.get_ok("/hello", Duration::from_secs(30));
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["transport"], "overlay", "{json}");

    // The lease is the SVID's SPIFFE ID, and the controller logged the gateway in as the
    // identity whose external id it is.
    assert_eq!(gateway.leases(), std::slice::from_ref(&spiffe_id), "{}", gateway.log());
    let out = network
        .ziti()
        .args(["edge", "list", "identities", &format!("externalId=\"{spiffe_id}\""), "-j"])
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let name = listed["data"][0]["name"].as_str().unwrap_or_else(|| panic!("no identity for {spiffe_id}: {listed}"));
    let bound = format!("service bound on the overlay service=\"gateway\" identity={name}");
    assert!(gateway.log().contains(&bound), "not bound as {name}:\n{}", gateway.log());
    assert!(gateway.log().contains("X.509-SVID from the Workload API"), "{}", gateway.log());

    // The key never touched the disk: no identity directory at all.
    assert!(entries(gateway.identity_dir.path()).is_empty(), "{:?}", entries(gateway.identity_dir.path()));
    let (status, _) = gateway.terminate();
    assert!(status.success(), "{}", gateway.log());
    assert_no_secrets(&gateway.log());
}

#[test]
fn rotating_svids_fail_no_request_of_ten_clients_looping_through_the_overlay() {
    let _one = one_at_a_time();
    let network = ZitiNetwork::from_env();
    let spiffe_id = network.spiffe_id("gateway-rotating");
    let _identity = SpiffeIdentity::create(&network, "gateway-spiffe-rotating", &spiffe_id);
    // 60-second SVIDs: the agent rotates about every 30 s.
    let _entry = network.create_spiffe_entry(&spiffe_id, Duration::from_secs(60));
    network.workload_api().wait_for_svid(&spiffe_id, Duration::from_secs(30)).unwrap();
    let env = spiffe_env(&network, &network.spiffe_endpoint_socket, &spiffe_id);
    let mut gateway = Gateway::start(&network, &borrowed(&env));
    gateway.wait_ready(Duration::from_secs(60));
    let proxy = TunnelProxy::start(&network);
    proxy.get_ok("/before", Duration::from_secs(30));

    let rotations = |gateway: &Gateway| -> Vec<String> {
        gateway.log().lines().filter(|line| line.contains("credential rotated")).map(str::to_owned).collect()
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs(240);
    let (ok, failed) =
        ten_clients_looping(&proxy.addr, || rotations(&gateway).len() >= 3 || Instant::now() >= deadline);
    let rotated = rotations(&gateway);
    eprintln!(
        "OpenZiti {}: {} rotations in {:.0} s, {ok} requests answered 200, {failed} failed",
        network.version,
        rotated.len(),
        started.elapsed().as_secs_f64()
    );
    for line in &rotated {
        eprintln!("  {line}");
    }
    for line in gateway.log().lines().filter(|line| line.contains("X.509-SVID from the Workload API")) {
        eprintln!("  {line}");
    }
    assert!(rotated.len() >= 3, "fewer than 3 rotations in 240 s:\n{}", gateway.log());
    assert_eq!(failed, 0, "requests failed during rotations");
    assert!(ok > 100, "only {ok} requests");
    assert_eq!(gateway.leases().len(), 1, "the identity was lost and enrolled again:\n{}", gateway.log());
    let (status, _) = gateway.terminate();
    assert!(status.success(), "{}", gateway.log());
    assert_no_secrets(&gateway.log());
}

#[test]
fn with_the_agent_gone_past_the_svid_lifetime_the_gateway_goes_unready_and_serves_again_when_it_is_back() {
    let _one = one_at_a_time();
    let network = ZitiNetwork::from_env();
    let mut spire: ThrowawaySpire = network.start_throwaway_spire("agent-outage.test");
    let (root_cert, root_key) = (spire.spire().root_cert(), spire.spire().root_key());
    third_party_ca::register_spiffe_ca(|| network.ziti(), "spire-outage", &root_cert, &root_key).unwrap();
    let spiffe_id = "spiffe://agent-outage.test/gateway";
    let _identity = SpiffeIdentity::create(&network, "gateway-spiffe-outage", spiffe_id);
    let lifetime = Duration::from_secs(30);
    spire.issue_svid(spiffe_id, lifetime);

    let env = spiffe_env(&network, &spire.spire().workload_api().endpoint(), spiffe_id);
    let mut gateway = Gateway::start(&network, &borrowed(&env));
    gateway.wait_ready(Duration::from_secs(60));
    let proxy = TunnelProxy::start(&network);
    proxy.get_ok("/before", Duration::from_secs(30));

    spire.stop_agent().unwrap();
    let stopped = Instant::now();
    // It keeps serving on the SVID it holds.
    proxy.get_ok("/agent-gone", Duration::from_secs(5));
    let ready = |gateway: &Gateway| support::blocking_get(&gateway.admin, "/readyz").is_ok_and(|(s, _)| s == 200);
    let lost = |gateway: &Gateway| gateway.log().lines().any(|line| line.contains("lease lost"));
    while !lost(&gateway) {
        assert!(stopped.elapsed() < lifetime + Duration::from_secs(15), "the SVID was not lost:\n{}", gateway.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let lost_after = stopped.elapsed();
    // Gone for longer than an SVID lives: not ready all the while.
    while stopped.elapsed() < lifetime + Duration::from_secs(5) {
        assert!(!ready(&gateway), "ready without a valid SVID:\n{}", gateway.log());
        std::thread::sleep(Duration::from_millis(500));
    }
    let down_for = stopped.elapsed();

    spire.start_agent().unwrap();
    let back = Instant::now();
    gateway.wait_ready(Duration::from_secs(90));
    let ready_after = back.elapsed();
    proxy.get_ok("/agent-back", Duration::from_secs(30));
    let serving_after = back.elapsed();
    eprintln!(
        "OpenZiti {}: agent stopped; SVID lost (not ready) after {:.1} s (SVID lifetime {lifetime:?}); agent down \
         {:.1} s; back: ready after {:.1} s, serving through the overlay after {:.1} s",
        network.version,
        lost_after.as_secs_f64(),
        down_for.as_secs_f64(),
        ready_after.as_secs_f64(),
        serving_after.as_secs_f64()
    );
    assert!(gateway.child.try_wait().unwrap().is_none(), "the gateway restarted");
    let losses = gateway.log().lines().filter(|line| line.contains("lease lost")).count();
    assert_eq!(losses, 1, "{}", gateway.log());
    let (status, _) = gateway.terminate();
    assert!(status.success(), "{}", gateway.log());
    let _ = network.ziti().args(["edge", "delete", "ca", "spire-outage"]).output();
}

#[test]
fn an_svid_whose_spiffe_id_no_identity_has_stops_the_start_naming_it() {
    let _one = one_at_a_time();
    let network = ZitiNetwork::from_env();
    let spiffe_id = network.spiffe_id("nobody");
    let _entry = network.create_spiffe_entry(&spiffe_id, Duration::from_secs(120));
    network.workload_api().wait_for_svid(&spiffe_id, Duration::from_secs(30)).unwrap();
    let env = spiffe_env(&network, &network.spiffe_endpoint_socket, &spiffe_id);
    let (status, log) = run_to_exit(Gateway::start(&network, &borrowed(&env)), Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{log}");
    let expected = format!("the controller refused the X.509-SVID of {spiffe_id}");
    assert!(log.contains(&expected), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert_no_secrets(&log);
}

#[test]
fn an_svid_of_a_trust_domain_the_controller_does_not_trust_stops_the_start_naming_it() {
    let _one = one_at_a_time();
    let network = ZitiNetwork::from_env();
    let spire = network.start_throwaway_spire("untrusted.test");
    let spiffe_id = "spiffe://untrusted.test/gateway";
    // The identity exists; only the trust is missing.
    let _identity = SpiffeIdentity::create(&network, "gateway-spiffe-untrusted", spiffe_id);
    spire.issue_svid(spiffe_id, Duration::from_secs(120));
    let env = spiffe_env(&network, &spire.spire().workload_api().endpoint(), spiffe_id);
    let (status, log) = run_to_exit(Gateway::start(&network, &borrowed(&env)), Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains(&format!("the controller refused the X.509-SVID of {spiffe_id}")), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn no_workload_api_stops_the_start_after_the_enrollment_timeout_naming_the_socket() {
    let _one = one_at_a_time();
    let network = ZitiNetwork::from_env();
    let missing = tempfile::tempdir().unwrap();
    let endpoint = format!("unix://{}/agent.sock", missing.path().display());
    let mut env = spiffe_env(&network, &endpoint, "spiffe://ziti-gateway.test/gateway");
    env.push(("ZITI_ENROLLMENT_TIMEOUT", "3s".to_owned()));
    let started = Instant::now();
    let (status, log) = run_to_exit(Gateway::start(&network, &borrowed(&env)), Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains(&format!("the SPIFFE Workload API at {endpoint} gave no X.509-SVID")), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    eprintln!("no Workload API: exit {status} after {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn with_the_memory_store_a_leased_identity_is_never_written_even_when_killed() {
    let _one = one_at_a_time();
    let network = ZitiNetwork::from_env();
    let mut gateway = Gateway::start(&network, &[("GATEWAY_IDENTITY_STORE", "memory")]);
    gateway.wait_ready(Duration::from_secs(60));
    let proxy = TunnelProxy::start(&network);
    proxy.get_ok("/hello", Duration::from_secs(30));
    assert!(entries(gateway.identity_dir.path()).is_empty(), "{:?}", entries(gateway.identity_dir.path()));
    gateway.child.kill().unwrap(); // SIGKILL
    gateway.child.wait().unwrap();
    assert!(entries(gateway.identity_dir.path()).is_empty(), "{:?}", entries(gateway.identity_dir.path()));
}
