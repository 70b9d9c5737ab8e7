//! The gateway as an attested caller of the network's ziti-management, which
//! `cargo xtask ziti-up` runs with the `spiffe` method: the gateway presents its
//! X.509-SVID from SPIRE's Workload API as its client certificate, is issued its
//! identity under that SPIFFE ID, and a workload the policy does not admit is refused.

use std::time::{Duration, Instant};

use workspace_tests::network::ZitiNetwork;

use super::{Gateway, TunnelProxy, one_at_a_time, run_to_exit};

/// The controller's tags of an identity, by id.
fn tags(network: &ZitiNetwork, id: &str) -> serde_json::Value {
    let out = network.ziti().args(["edge", "list", "identities", &format!("id=\"{id}\""), "-j"]).output().unwrap();
    assert!(out.status.success(), "ziti edge list identities: {}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["data"][0]["tags"].clone()
}

fn management_log(network: &ZitiNetwork) -> String {
    std::fs::read_to_string(network.home.join("ziti-management.log")).unwrap_or_default()
}

/// The network's ziti-management log once a line of it satisfies `wanted`, for what
/// it logs after the gateway has moved on (a release the gateway stopped waiting for).
fn wait_for_management_log_line(network: &ZitiNetwork, wanted: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = management_log(network);
        if log.lines().any(&wanted) || Instant::now() >= deadline {
            return log;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_gateway_is_issued_its_identity_over_mtls_under_its_spiffe_id_and_serves() {
    let _one = one_at_a_time();
    let network = ZitiNetwork::from_env();
    let spiffe_id = network.gateway_spiffe_id();
    let mut gateway = Gateway::start(&network, &[]);
    gateway.wait_ready(Duration::from_secs(60));
    let proxy = TunnelProxy::start(&network);

    let body = proxy.get_ok("/attested", Duration::from_secs(30));
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["transport"], "overlay", "{json}");
    let leases = gateway.leases();
    assert_eq!(leases.len(), 1, "{}", gateway.log());
    let lease = &leases[0];
    assert!(gateway.log().contains("presenting the workload's X.509-SVID to ziti-management"), "{}", gateway.log());
    assert_eq!(tags(&network, lease)["zitiMgmtHolder"], spiffe_id.as_str(), "the lease records its holder");
    let log = management_log(&network);
    let issued = log
        .lines()
        .find(|line| line.contains("identity.issued") && line.contains(lease.as_str()))
        .unwrap_or_else(|| panic!("no audit line for {lease}:\n{log}"));
    assert!(issued.contains(&spiffe_id), "the audit line names the principal: {issued}");

    let (status, _) = gateway.terminate();
    assert!(status.success(), "{}", gateway.log());
    let released =
        |line: &str| line.contains("lease.released") && line.contains(lease.as_str()) && line.contains(&spiffe_id);
    let log = wait_for_management_log_line(&network, released);
    assert!(log.lines().any(released), "the release is audited with its principal:\n{log}");
}

#[test]
fn a_gateway_whose_svid_the_policy_does_not_admit_stops_at_start_naming_the_refusal() {
    let _one = one_at_a_time();
    let network = ZitiNetwork::from_env();
    let impostor = network.spiffe_id("gateway-impostor");
    let _entry = network.create_spiffe_entry(&impostor, Duration::from_secs(120));
    network.workload_api().wait_for_svid(&impostor, workspace_tests::network::SVID_TIMEOUT).unwrap();

    let gateway = Gateway::start(&network, &[("ZITI_SPIFFE_ID", impostor.as_str())]);
    let (status, log) = run_to_exit(gateway, Duration::from_secs(60));

    assert_eq!(status.code(), Some(1), "{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(last.contains("PERMISSION_DENIED") && last.contains(&impostor), "the refusal is named: {last}\n{log}");
    assert!(!log.contains("identity enrolled"), "{log}");
}
