//! The gateway whose identity is an identity provider's token (`ZITI_IDENTITY_SOURCE=jwt`),
//! with the network's real ORY Hydra as the IdP and the controller trusting it as an
//! external JWT signer (`cargo xtask ziti-up`): it serves, keeps serving as its tokens
//! expire and are replaced, and refuses clearly what cannot work.

use std::time::{Duration, Instant};

use workspace_tests::network::ZitiNetwork;

use super::{Gateway, TunnelProxy, one_at_a_time, run_to_exit, support, ten_clients_looping};

fn jwt_env(network: &ZitiNetwork) -> Vec<(&'static str, String)> {
    let mut env: Vec<_> = network.oidc_env().into_iter().collect();
    env.push(("ZITI_IDENTITY_SOURCE", "jwt".to_owned()));
    env
}

fn borrowed<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(name, value)| (*name, value.as_str())).collect()
}

fn assert_no_secrets(log: &str, secrets: &[&str]) {
    assert!(!log.contains("eyJ"), "a JWT in the log:\n{log}");
    for secret in secrets {
        assert!(!log.contains(secret), "a secret in the log");
    }
    assert!(!log.contains("-----BEGIN"), "key or certificate material in the log");
}

#[test]
fn a_gateway_whose_identity_is_an_idp_token_serves_as_the_identity_its_claim_names() {
    let _one = one_at_a_time();
    let network = ZitiNetwork::from_env();
    let mut env = jwt_env(&network);
    env.push(("RUST_LOG", "debug".to_owned()));
    let mut gateway = Gateway::start(&network, &borrowed(&env));
    gateway.wait_ready(Duration::from_secs(60));
    let proxy = TunnelProxy::start(&network);

    let body = proxy.get_ok("/idp", Duration::from_secs(30));
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["transport"], "overlay", "{json}");
    let log = gateway.log();
    assert_eq!(gateway.leases(), ["gateway-idp"], "the lease is the token's subject:\n{log}");
    assert!(
        log.lines().any(|line| line.contains("service bound on the overlay") && line.contains("identity=gateway-idp")),
        "bound as the identity whose external id the token names:\n{log}"
    );
    assert!(log.contains("IdP token from client gateway-idp"), "{log}");
    assert!(!gateway.identity_dir.path().read_dir().unwrap().any(|_| true), "nothing written");

    let (status, _) = gateway.terminate();
    assert!(status.success(), "{}", gateway.log());
    let secret = std::fs::read_to_string(&network.oidc_client_secret_file).unwrap();
    assert_no_secrets(&gateway.log(), &[secret.trim()]);
}

#[test]
fn idp_tokens_replaced_over_three_lifetimes_fail_no_request_of_ten_clients() {
    let _one = one_at_a_time();
    let network = ZitiNetwork::from_env();
    let env = jwt_env(&network);
    let mut gateway = Gateway::start(&network, &borrowed(&env));
    gateway.wait_ready(Duration::from_secs(60));
    let proxy = TunnelProxy::start(&network);
    proxy.get_ok("/before", Duration::from_secs(30));
    let tokens = |gateway: &Gateway| gateway.log().lines().filter(|line| line.contains("IdP token from")).count();
    let lifetime = first_token_lifetime(&gateway.log());
    let first_expiry = Instant::now() + lifetime;

    let started = Instant::now();
    // Three token lifetimes: past the third token's expiry, with the fourth in use.
    let deadline = started + lifetime * 7 / 2;
    let (ok, failed) = ten_clients_looping(&proxy.addr, || {
        let now = Instant::now();
        now >= deadline || (now >= first_expiry + lifetime * 2 + Duration::from_secs(10) && tokens(&gateway) >= 4)
    });
    let log = gateway.log();
    eprintln!(
        "OpenZiti {}: {} IdP tokens over {:.0} s, {ok} requests answered 200, {failed} failed",
        network.version,
        tokens(&gateway),
        started.elapsed().as_secs_f64()
    );
    for line in log.lines().filter(|line| line.contains("IdP token from") || line.contains("credential rotated")) {
        eprintln!("  {line}");
    }
    assert!(started.elapsed() >= lifetime * 3, "ran at least three token lifetimes of {lifetime:?}");
    assert!(tokens(&gateway) >= 4, "fewer than four tokens:\n{log}");
    assert_eq!(failed, 0, "requests failed while tokens expired and were replaced");
    assert!(ok > 100, "only {ok} requests");
    assert_eq!(gateway.leases().len(), 1, "the identity was lost and enrolled again:\n{log}");
    let (status, _) = gateway.terminate();
    assert!(status.success(), "{}", gateway.log());
}

/// How long the gateway's first IdP token had to live when it came, from its log.
fn first_token_lifetime(log: &str) -> Duration {
    let line = log.lines().find(|line| line.contains("IdP token from")).unwrap_or_else(|| panic!("no token:\n{log}"));
    let secs = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("expires_in_secs="))
        .and_then(|secs| secs.parse().ok())
        .unwrap_or_else(|| panic!("no expires_in_secs in {line}"));
    assert!(secs > 0, "a token already spent: {line}");
    Duration::from_secs(secs)
}

#[test]
fn a_token_the_controller_refuses_stops_the_start_naming_why() {
    let _one = one_at_a_time();
    let network = ZitiNetwork::from_env();
    // A client that no identity has as its external id.
    let client = network.idp_client("gateway-idp-stranger", &[]);
    let secret_file = client.secret_file().to_string_lossy().into_owned();
    let mut env = jwt_env(&network);
    env.retain(|(name, _)| !matches!(*name, "ZITI_OIDC_CLIENT_ID" | "ZITI_OIDC_CLIENT_SECRET_FILE"));
    env.push(("ZITI_OIDC_CLIENT_ID", client.client_id().to_owned()));
    env.push(("ZITI_OIDC_CLIENT_SECRET_FILE", secret_file));
    let gateway = Gateway::start(&network, &borrowed(&env));
    let (status, log) = run_to_exit(gateway, Duration::from_secs(60));

    assert_eq!(status.code(), Some(1), "{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.contains("the controller refused the identity provider's token for gateway-idp-stranger"),
        "the refusal is named: {last}\n{log}"
    );
    assert_no_secrets(&log, &[client.secret()]);
}

#[test]
fn a_token_for_another_audience_is_refused_by_the_controller() {
    let _one = one_at_a_time();
    let network = ZitiNetwork::from_env();
    let client = network.idp_client_for("gateway-idp-elsewhere", &["elsewhere"], &[]);
    let _identity = network.idp_identity("gateway-idp-elsewhere", client.client_id(), &["gateway-hosts"]);
    let secret_file = client.secret_file().to_string_lossy().into_owned();
    let mut env = jwt_env(&network);
    env.retain(|(name, _)| {
        !matches!(*name, "ZITI_OIDC_CLIENT_ID" | "ZITI_OIDC_CLIENT_SECRET_FILE" | "ZITI_OIDC_AUDIENCE")
    });
    env.extend([
        ("ZITI_OIDC_CLIENT_ID", client.client_id().to_owned()),
        ("ZITI_OIDC_CLIENT_SECRET_FILE", secret_file),
        ("ZITI_OIDC_AUDIENCE", "elsewhere".to_owned()),
    ]);
    let gateway = Gateway::start(&network, &borrowed(&env));
    let (status, log) = run_to_exit(gateway, Duration::from_secs(60));

    assert_eq!(status.code(), Some(1), "{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(last.contains("refused the identity provider's token"), "{last}\n{log}");
}

#[test]
fn an_expired_or_foreign_token_file_is_refused_clearly() {
    let _one = one_at_a_time();
    let network = ZitiNetwork::from_env();
    let dir = tempfile::tempdir().unwrap();
    // A token of the network's client, its lifetime over: refused before any login.
    let expired =
        forged_token(&serde_json::json!({"sub": "gateway-idp", "iat": 1_700_000_000u64, "exp": 1_700_000_120u64}));
    let path = dir.path().join("expired.jwt");
    std::fs::write(&path, &expired).unwrap();
    let mut env = jwt_env(&network);
    env.retain(|(name, _)| !name.starts_with("ZITI_OIDC_"));
    env.push(("ZITI_JWT_FILE", path.to_string_lossy().into_owned()));
    env.push(("ZITI_ENROLLMENT_TIMEOUT", "3s".to_owned()));
    let (status, log) = run_to_exit(Gateway::start(&network, &borrowed(&env)), Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(last.contains("expired") && last.contains("expired.jwt"), "{last}\n{log}");
    assert!(!log.contains(&expired), "the token is not logged");

    // A valid-looking token signed by a key that is not Hydra's: the controller refuses it.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let foreign = forged_token(&serde_json::json!({
        "sub": "gateway-idp", "iss": network.oidc_issuer, "aud": ["openziti"], "iat": now, "exp": now + 300
    }));
    let path = dir.path().join("foreign.jwt");
    std::fs::write(&path, &foreign).unwrap();
    let mut env = jwt_env(&network);
    env.retain(|(name, _)| !name.starts_with("ZITI_OIDC_"));
    env.push(("ZITI_JWT_FILE", path.to_string_lossy().into_owned()));
    let (status, log) = run_to_exit(Gateway::start(&network, &borrowed(&env)), Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(last.contains("refused the identity provider's token for gateway-idp"), "{last}\n{log}");
}

#[test]
fn with_the_idp_down_at_start_the_gateway_retries_within_the_enrollment_timeout_then_exits_non_zero() {
    let _one = one_at_a_time();
    let network = ZitiNetwork::from_env();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut env = jwt_env(&network);
    env.retain(|(name, _)| *name != "ZITI_OIDC_ISSUER");
    env.push(("ZITI_OIDC_ISSUER", format!("http://{closed}")));
    env.push(("ZITI_ENROLLMENT_TIMEOUT", "5s".to_owned()));
    let started = Instant::now();
    let (status, log) = run_to_exit(Gateway::start(&network, &borrowed(&env)), Duration::from_secs(60));
    let took = started.elapsed();

    assert_eq!(status.code(), Some(1), "{log}");
    assert!(took >= Duration::from_secs(5) && took < Duration::from_secs(30), "took {took:?}:\n{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(last.contains(&format!("http://{closed}")) && last.contains("cannot be reached"), "{last}\n{log}");
}

/// A JWT with `claims` whose signature no IdP made (the controller cannot verify it).
fn forged_token(claims: &serde_json::Value) -> String {
    use base64::Engine as _;
    let encode = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = encode(br#"{"alg":"RS256","typ":"JWT","kid":"not-hydras"}"#);
    let payload = encode(claims.to_string().as_bytes());
    format!("{header}.{payload}.{}", encode(&[7u8; 256]))
}

/// A ziti-management of the test's own that provisions identities from the network's
/// Hydra tokens (the `jwt` method, plain gRPC on loopback), granting at most
/// `gateway-hosts` from the tokens' `scp` claim. Killed on drop.
struct ProvisioningManagement {
    child: std::process::Child,
    target: String,
    _dir: tempfile::TempDir,
}

impl ProvisioningManagement {
    fn start(network: &ZitiNetwork) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.toml");
        std::fs::write(&policy, "[provision]\nrole_attributes = [\"gateway-hosts\"]\n").unwrap();
        let grpc = format!("127.0.0.1:{}", super::free_port());
        let admin = format!("127.0.0.1:{}", super::free_port());
        let jwks = network.hydra().jwks_url();
        let child = std::process::Command::new(&network.management_bin)
            .env_clear()
            .envs([
                ("ZITI_MGMT_CONTROLLER_URL", network.ctrl_url.as_str()),
                ("ZITI_MGMT_CONTROLLER_CA", &network.ctrl_ca.to_string_lossy()),
                ("ZITI_MGMT_ADMIN_USER", network.admin_user.as_str()),
                ("ZITI_MGMT_ADMIN_PASSWORD", network.admin_password.as_str()),
                ("ZITI_MGMT_GRPC_ADDR", grpc.as_str()),
                ("ZITI_MGMT_ADMIN_ADDR", admin.as_str()),
                ("ZITI_MGMT_AUTH_METHODS", "jwt"),
                ("ZITI_MGMT_JWT_ISSUER", network.oidc_issuer.as_str()),
                ("ZITI_MGMT_JWT_AUDIENCE", network.oidc_audience.as_str()),
                ("ZITI_MGMT_JWT_JWKS_URL", jwks.as_str()),
                ("ZITI_MGMT_PROVISION_AUTH_POLICY", "idp-jwt"),
                ("ZITI_MGMT_POLICY_FILE", &policy.to_string_lossy()),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !support::blocking_get(&admin, "/readyz").is_ok_and(|(status, _)| status == 200) {
            assert!(Instant::now() < deadline, "the provisioning ziti-management is not ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, target: format!("http://{grpc}"), _dir: dir }
    }
}

impl Drop for ProvisioningManagement {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The controller's identity `name`, as JSON (`None` when there is none).
fn identity_named(network: &ZitiNetwork, name: &str) -> Option<serde_json::Value> {
    let out = network.ziti().args(["edge", "list", "identities", &format!("name=\"{name}\""), "-j"]).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["data"][0].as_object().map(|identity| serde_json::Value::Object(identity.clone()))
}

/// Deletes the identity `name` when dropped.
struct DeleteOnDrop<'a>(&'a ZitiNetwork, String);

impl Drop for DeleteOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.ziti().args(["edge", "delete", "identity", &self.1]).output();
    }
}

/// A gateway for `client`'s tokens with `scopes`, provisioned by `management`.
fn provisioned_gateway_env(
    network: &ZitiNetwork,
    client: &workspace_tests::network::IdpClient,
    scopes: &str,
    management: &ProvisioningManagement,
) -> Vec<(&'static str, String)> {
    let mut env = jwt_env(network);
    env.retain(|(name, _)| !matches!(*name, "ZITI_OIDC_CLIENT_ID" | "ZITI_OIDC_CLIENT_SECRET_FILE"));
    env.extend([
        ("ZITI_OIDC_CLIENT_ID", client.client_id().to_owned()),
        ("ZITI_OIDC_CLIENT_SECRET_FILE", client.secret_file().to_string_lossy().into_owned()),
        ("ZITI_OIDC_SCOPES", scopes.to_owned()),
        ("ZITI_IDP_PROVISION", "true".to_owned()),
        ("ZITI_MANAGEMENT_GRPC_TARGET", management.target.clone()),
    ]);
    env
}

#[test]
fn a_brand_new_idp_client_is_provisioned_by_ziti_management_and_serves_with_only_the_allowed_roles() {
    let _one = one_at_a_time();
    let network = ZitiNetwork::from_env();
    let management = ProvisioningManagement::start(&network);
    let client_id = format!("gw-provisioned-{}", std::process::id());
    let client = network.idp_client(&client_id, &["gateway-hosts", "ops-admin"]);
    let name = format!("idp:{client_id}");
    let _cleanup = DeleteOnDrop(&network, name.clone());
    assert!(identity_named(&network, &name).is_none(), "no identity prepared by hand");

    let env = provisioned_gateway_env(&network, &client, "gateway-hosts ops-admin", &management);
    let mut gateway = Gateway::start(&network, &borrowed(&env));
    gateway.wait_ready(Duration::from_secs(60));
    let proxy = TunnelProxy::start(&network);
    let body = proxy.get_ok("/provisioned", Duration::from_secs(30));
    assert!(body.contains("\"transport\":\"overlay\""), "{body}");

    let identity = identity_named(&network, &name).expect("the identity was provisioned");
    assert_eq!(identity["externalId"], client_id.as_str(), "{identity}");
    assert_eq!(identity["roleAttributes"], serde_json::json!(["gateway-hosts"]), "ops-admin is not in the allow-list");
    assert!(gateway.log().contains("ziti-management provisioned the identity"), "{}", gateway.log());
    let (status, _) = gateway.terminate();
    assert!(status.success(), "{}", gateway.log());
    assert_no_secrets(&gateway.log(), &[client.secret()]);
}

#[test]
fn without_the_scope_that_grants_bind_the_provisioned_gateway_stops_naming_the_missing_permission() {
    let _one = one_at_a_time();
    let network = ZitiNetwork::from_env();
    let management = ProvisioningManagement::start(&network);
    let client_id = format!("gw-no-bind-{}", std::process::id());
    let client = network.idp_client(&client_id, &[]);
    let _cleanup = DeleteOnDrop(&network, format!("idp:{client_id}"));

    let env = provisioned_gateway_env(&network, &client, "", &management);
    let (status, log) = run_to_exit(Gateway::start(&network, &borrowed(&env)), Duration::from_secs(60));

    assert_eq!(status.code(), Some(1), "{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.contains("not authorized") || last.contains("no policy"),
        "the missing permission is named: {last}\n{log}"
    );
    let identity = identity_named(&network, &format!("idp:{client_id}")).expect("provisioned");
    let roles = identity["roleAttributes"].as_array().cloned().unwrap_or_default();
    assert!(roles.is_empty(), "no role attribute without the scope: {identity}");
}
