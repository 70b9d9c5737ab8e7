//! SPIRE beside the network, trusted by the controller: the gateway can take its
//! OpenZiti identity from the X.509-SVID the SPIRE agent gives its uid.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ziti_net_kit::spire::{Spire, SpireBinaries, SpireSettings, current_uid};
use ziti_net_kit::third_party_ca::{self, SPIFFE_AUTH_POLICY};

use super::cli::Cli;
use super::layout::Layout;
use super::provision::HOSTS_ROLE;

/// The trust domain of the network's SPIRE.
pub const TRUST_DOMAIN: &str = "ziti-gateway.test";
/// The controller's name for SPIRE's root CA.
const CA_NAME: &str = "spire";
/// The gateway's identity when it runs with its SVID.
pub const GATEWAY_IDENTITY: &str = "gateway-spiffe";
/// Short, so that rotations happen while tests run.
const GATEWAY_SVID_TTL: Duration = Duration::from_secs(120);
/// A new entry reaches the agent at its next sync (about 5 s).
const FIRST_SVID_TIMEOUT: Duration = Duration::from_secs(30);

/// The gateway's SPIFFE ID (its identity's external id).
pub fn gateway_spiffe_id() -> String {
    format!("spiffe://{TRUST_DOMAIN}/gateway")
}

/// What the env file says about the running SPIRE.
#[derive(Debug)]
pub struct Running {
    pub bin_dir: PathBuf,
    pub server_socket: PathBuf,
    pub workload_endpoint: String,
}

/// Starts SPIRE in `target/ziti-net/spire`, registers its root on the controller, the
/// gateway's identity by external id, and the SPIRE entry for this uid; waits until
/// the agent serves that SVID.
pub fn start(root: &std::path::Path, cli: &Cli, layout: &Layout) -> Result<Running> {
    let started = Instant::now();
    let binaries = SpireBinaries::locate(root)?;
    crate::step(&format!("SPIRE {} from {} ({})", binaries.version, binaries.dir.display(), binaries.found));
    let dir = layout.spire_dir();
    let settings = SpireSettings { binaries: &binaries, trust_domain: TRUST_DOMAIN, dir: &dir };
    let spire = Spire::start(&settings, &mut |what| crate::step(what))?;
    // From here on SPIRE outlives this value; `ziti-down` stops it by its recorded pids.
    let workload_api = spire.workload_api().clone();
    let server = spire.server().clone();
    let (root_cert, root_key) = (spire.root_cert(), spire.root_key());
    let pids = spire.detach();
    super::record_pid(layout, "spire-server", pids.server)?;
    super::record_pid(layout, "spire-agent", pids.agent)?;

    crate::step(&format!("registering SPIRE's root as the CA {CA_NAME:?} (SAN URI, scheme spiffe) and verifying it"));
    third_party_ca::register_spiffe_ca(|| cli.command(), CA_NAME, &root_cert, &root_key)?;
    let policy = third_party_ca::cert_only_auth_policy(|| cli.command(), SPIFFE_AUTH_POLICY)?;
    let spiffe_id = gateway_spiffe_id();
    crate::step(&format!(
        "identity {GATEWAY_IDENTITY} (external id {spiffe_id}, #{HOSTS_ROLE}, auth policy {SPIFFE_AUTH_POLICY})"
    ));
    third_party_ca::external_id_identity(|| cli.command(), GATEWAY_IDENTITY, &spiffe_id, &policy, &[HOSTS_ROLE])?;

    let uid = current_uid()?;
    crate::step(&format!("SPIRE entry {spiffe_id} for uid {uid} (X.509-SVID TTL {} s)", GATEWAY_SVID_TTL.as_secs()));
    server.create_entry(&spiffe_id, uid, GATEWAY_SVID_TTL)?;
    let waited = Instant::now();
    workload_api.wait_for_svid(&spiffe_id, FIRST_SVID_TIMEOUT).context("waiting for the gateway's first SVID")?;
    crate::step(&format!(
        "the agent serves {spiffe_id} (after {:.1} s; SPIRE set up in {:.1} s)",
        waited.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    ));
    Ok(Running {
        bin_dir: binaries.dir,
        server_socket: server.socket().to_path_buf(),
        workload_endpoint: workload_api.endpoint(),
    })
}
