//! ORY Hydra beside the network, trusted by the controller as an ext-jwt signer: the
//! gateway can log in with the client-credentials token of its Hydra client.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use ziti_net_kit::ext_jwt::{self, ExtJwtSigner, IDP_AUTH_POLICY};
use ziti_net_kit::hydra::{self, Hydra, HydraBinary, HydraSettings};
use ziti_net_kit::third_party_ca;

use super::cli::Cli;
use super::layout::Layout;
use super::provision::{CLIENTS_ROLE, HOSTS_ROLE};

/// The controller's name for Hydra as a JWT signer.
const SIGNER_NAME: &str = "hydra";
/// The `aud` the controller demands of IdP tokens (and Hydra's clients are allowed).
pub const AUDIENCE: &str = "openziti";
/// The claim whose value is an identity's external id: Hydra's client-credentials
/// tokens carry the client id in `sub`.
const CLAIM: &str = "sub";
/// The gateway's Hydra client, and the external id of its identity of the same name.
pub const GATEWAY_CLIENT_ID: &str = "gateway-idp";

/// What the env file says about the running Hydra.
#[derive(Debug)]
pub struct Running {
    pub bin: PathBuf,
    pub admin_url: String,
    pub issuer: String,
    pub secret_file: PathBuf,
}

/// The file holding the secret of the gateway's Hydra client (mode 0600).
pub fn gateway_secret_file(layout: &Layout) -> PathBuf {
    layout.hydra_dir().join(format!("{GATEWAY_CLIENT_ID}.secret"))
}

/// Starts Hydra in `target/ziti-net/hydra` (recording its pid), creates the gateway's
/// client there, and on the controller the ext-jwt signer, the auth policy that admits
/// only it, and the gateway's identity by external id; checks that the client gets a
/// token.
pub fn start(root: &Path, cli: &Cli, layout: &Layout) -> Result<Running> {
    let started = Instant::now();
    let binary = HydraBinary::locate(root)?;
    crate::step(&format!("ORY Hydra {} from {} ({})", binary.version, binary.path.display(), binary.found));
    let dir = layout.hydra_dir();
    let hydra = Hydra::start(&HydraSettings::new(&binary, &dir), &mut |what| crate::step(what))?;
    // From here on Hydra outlives this value; `ziti-down` stops it by its recorded pid.
    let admin = hydra.admin().clone();
    super::record_pid(layout, "hydra", hydra.detach())?;

    let scopes = [HOSTS_ROLE, CLIENTS_ROLE];
    crate::step(&format!("Hydra client {GATEWAY_CLIENT_ID} (audience {AUDIENCE}, scopes {})", scopes.join(" ")));
    let secret = hydra::random_secret()?;
    let secret_file = gateway_secret_file(layout);
    hydra::write_secret_file(&secret_file, &secret)?;
    admin.create_client(GATEWAY_CLIENT_ID, &secret, &[AUDIENCE], &scopes)?;
    admin.token(GATEWAY_CLIENT_ID, &secret, AUDIENCE, &scopes).context("the gateway's first Hydra token")?;

    let jwks_url = admin.jwks_url();
    crate::step(&format!(
        "ext-jwt signer {SIGNER_NAME:?} (issuer {}, audience {AUDIENCE}, claim {CLAIM})",
        admin.issuer()
    ));
    let signer = ExtJwtSigner {
        name: SIGNER_NAME,
        issuer: admin.issuer(),
        jwks_url: &jwks_url,
        audience: AUDIENCE,
        claims_property: CLAIM,
    };
    let signer_id = signer.register(|| cli.command())?;
    let policy = ext_jwt::ext_jwt_only_auth_policy(|| cli.command(), IDP_AUTH_POLICY, &signer_id)?;
    crate::step(&format!(
        "identity {GATEWAY_CLIENT_ID} (external id {GATEWAY_CLIENT_ID}, #{HOSTS_ROLE}, auth policy {IDP_AUTH_POLICY})"
    ));
    third_party_ca::external_id_identity(
        || cli.command(),
        GATEWAY_CLIENT_ID,
        GATEWAY_CLIENT_ID,
        &policy,
        &[HOSTS_ROLE],
    )?;
    crate::step(&format!("Hydra set up in {:.1} s", started.elapsed().as_secs_f64()));
    Ok(Running {
        bin: binary.path,
        admin_url: admin.admin_url().to_owned(),
        issuer: admin.issuer().to_owned(),
        secret_file,
    })
}
