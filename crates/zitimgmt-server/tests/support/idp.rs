//! Provisioning from identity-provider tokens: a ziti-management with the `jwt` method
//! trusting the network SPIRE's JWT-SVIDs (the stand-in IdP until the network has one),
//! an auth policy of the test's own on the controller, and tokens minted with extra
//! audiences, which the tests map to role attributes (`aud` as the roles claim).

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use workspace_tests::network::ZitiNetwork;
use zitimgmt_grpc::{ManagementClient, ManagementConfig, TlsMaterial};

use super::controller::ControllerView;
use super::{Management, management_with, private_dir, write_private};

/// The audience ziti-management requires; the other audiences of a token are its "roles".
pub const AUDIENCE: &str = "ziti-management";

/// The auth policy `cargo xtask ziti-up` makes for Hydra's tokens.
pub const HYDRA_AUTH_POLICY: &str = "idp-jwt";

/// The role attributes the test policy lets tokens grant.
pub const ALLOWED: [&str; 2] = ["gateway-hosts", "gateway-clients"];

/// A ziti-management that provisions, with the controller auth policy made for it.
pub struct Provisioning {
    pub management: Management,
    pub controller: ControllerView,
    pub auth_policy_id: String,
    pub auth_policy_name: String,
    /// Made by the test (and deleted by [`Provisioning::cleanup`]), not the network's.
    owns_auth_policy: bool,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Provisioning {
    /// Starts one; `extra` adds settings (e.g. other auth methods, the idle time).
    pub async fn start(network: &ZitiNetwork, extra: &[(&str, &str)]) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let controller = ControllerView::login(network).await;
        let auth_policy_name =
            format!("zm-provision-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let auth_policy_id = controller.create_auth_policy(&auth_policy_name).await;
        let spire = network.spire_server();
        let jwks_dir = private_dir();
        let jwks = spire.bundle_jwks().expect("SPIRE's bundle as a JWKS");
        let jwks = write_private(jwks_dir.path(), "jwks.json", jwks.as_bytes()).display().to_string();
        let issuer = spire.jwt_issuer();
        let allowed = ALLOWED.iter().map(|role| format!("{role:?}")).collect::<Vec<_>>().join(", ");
        let policy = format!("[provision]\nrole_attributes = [{allowed}]\n");
        let mut auth = vec![
            ("ZITI_MGMT_AUTH_METHODS", "jwt"),
            ("ZITI_MGMT_JWT_ISSUER", issuer.as_str()),
            ("ZITI_MGMT_JWT_AUDIENCE", AUDIENCE),
            ("ZITI_MGMT_JWT_JWKS_FILE", jwks.as_str()),
            ("ZITI_MGMT_PROVISION_AUTH_POLICY", auth_policy_name.as_str()),
            ("ZITI_MGMT_PROVISION_ROLES_CLAIM", "aud"),
        ];
        for (name, value) in extra {
            auth.retain(|(known, _)| known != name);
            auth.push((name, value));
        }
        let (management, policy_dir) = management_with(network, &policy, &auth);
        Self {
            management,
            controller,
            auth_policy_id,
            auth_policy_name,
            owns_auth_policy: true,
            _dirs: (jwks_dir, policy_dir),
        }
    }

    /// One trusting the network's Hydra, as an operator would set it up: its JWKS,
    /// issuer and audience, the principal `sub` (the client id), the roles claim `scp`
    /// (the granted scopes) and the network's auth policy `idp-jwt`.
    pub async fn start_for_hydra(network: &ZitiNetwork) -> Self {
        let controller = ControllerView::login(network).await;
        let auth_policy_name = HYDRA_AUTH_POLICY.to_owned();
        let auth_policy_id = controller.auth_policy_id(&auth_policy_name).await;
        let jwks_url = network.hydra().jwks_url();
        let allowed = ALLOWED.iter().map(|role| format!("{role:?}")).collect::<Vec<_>>().join(", ");
        let policy = format!("[provision]\nrole_attributes = [{allowed}]\n");
        let auth = [
            ("ZITI_MGMT_AUTH_METHODS", "jwt"),
            ("ZITI_MGMT_JWT_ISSUER", network.oidc_issuer.as_str()),
            ("ZITI_MGMT_JWT_AUDIENCE", network.oidc_audience.as_str()),
            ("ZITI_MGMT_JWT_JWKS_URL", jwks_url.as_str()),
            ("ZITI_MGMT_PROVISION_AUTH_POLICY", HYDRA_AUTH_POLICY),
        ];
        let (management, policy_dir) = management_with(network, &policy, &auth);
        Self {
            management,
            controller,
            auth_policy_id,
            auth_policy_name,
            owns_auth_policy: false,
            _dirs: (private_dir(), policy_dir),
        }
    }

    /// The client of the gateway's side, over this server's TLS.
    pub fn client(&self) -> ManagementClient {
        let ca = self.management.ca_pem().expect("TLS made by the support");
        let config = ManagementConfig::new(format!("https://{}", self.management.grpc))
            .with_tls(TlsMaterial::with_ca(ca.as_bytes().to_vec()));
        ManagementClient::new(config).expect("client")
    }

    pub async fn cleanup(&self, identity_ids: &[&str]) {
        for id in identity_ids {
            self.controller.delete(id).await;
        }
        if self.owns_auth_policy {
            self.controller.delete_auth_policy(&self.auth_policy_id).await;
        }
    }
}

/// A JWT-SVID for `principal` minted by the network's SPIRE for [`AUDIENCE`] and `roles`
/// as further audiences.
pub fn token(network: &ZitiNetwork, principal: &str, roles: &[&str]) -> String {
    let mut command = Command::new(network.spire_bin_dir.join("spire-server"));
    command.args(["jwt", "mint", "-socketPath"]).arg(&network.spire_server_socket);
    command.args(["-spiffeID", principal, "-ttl", "300s", "-audience", AUDIENCE]);
    for role in roles {
        command.args(["-audience", role]);
    }
    let output = command.output().expect("run spire-server jwt mint");
    assert!(output.status.success(), "jwt mint: {}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "not a JWT");
    token
}

/// A principal (SPIFFE ID) of this test run only, so that reruns start afresh.
pub fn principal(network: &ZitiNetwork, name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos();
    network.spiffe_id(&format!("idp-test/{name}-{nanos}"))
}

/// How long the idle clean-up may take to notice in the tests.
pub const IDLE_WAIT: Duration = Duration::from_secs(30);
