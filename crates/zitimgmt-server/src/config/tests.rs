use std::net::SocketAddr;
use std::time::Duration;

use figment::Jail;
use rstest::rstest;

use super::*;

const URL: (&str, &str) = ("ZITI_MGMT_CONTROLLER_URL", "https://127.0.0.1:1280");
const PASSWORD: (&str, &str) = ("ZITI_MGMT_ADMIN_PASSWORD", "007");

#[allow(clippy::result_large_err)] // figment's own error type, in tests only
fn load(env: &[(&str, &str)], files: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut outcome = None;
    Jail::expect_with(|jail| {
        jail.clear_env();
        for (name, contents) in files {
            jail.create_file(name, contents)?;
        }
        for (name, value) in env {
            jail.set_env(name, value);
        }
        outcome = Some(Config::load());
        Ok(())
    });
    outcome.unwrap_or(Err(ConfigError::Source("jail did not run".to_owned())))
}

#[test]
fn defaults_are_the_specs() {
    let config = load(&[URL, PASSWORD], &[]).expect("valid");
    assert_eq!(config.controller_url.as_str(), "https://127.0.0.1:1280/");
    assert_eq!(config.admin_user, "admin");
    assert_eq!(config.admin_password.expose(), "007", "passwords are taken verbatim, not as numbers");
    assert_eq!(config.lease_ttl, Duration::from_secs(300));
    assert_eq!(config.reaper_interval, Duration::from_secs(30));
    assert_eq!(config.gateway_role_attributes, ["gateway-hosts"]);
    assert_eq!(config.grpc_addr, SocketAddr::from(([127, 0, 0, 1], 50051)));
    assert_eq!(config.admin_addr, SocketAddr::from(([127, 0, 0, 1], 9191)));
    assert!(config.controller_ca_pem.is_none() && config.grpc_tls.is_none());
}

#[test]
fn the_environment_overrides_the_file() {
    let file = "ziti_mgmt_controller_url = \"https://ctrl.example:443\"\nziti_mgmt_lease_ttl = \"1m\"\nziti_mgmt_admin_password = \"from-file\"\n";
    let config = load(
        &[
            ("ZITI_MGMT_CONFIG_FILE", "mgmt.toml"),
            ("ZITI_MGMT_LEASE_TTL", "10s"),
            ("ZITI_MGMT_GATEWAY_ROLE_ATTRIBUTES", "a, b"),
        ],
        &[("mgmt.toml", file)],
    )
    .expect("valid");
    assert_eq!(config.controller_url.host_str(), Some("ctrl.example"));
    assert_eq!(config.lease_ttl, Duration::from_secs(10));
    assert_eq!(config.admin_password.expose(), "from-file");
    assert_eq!(config.gateway_role_attributes, ["a", "b"]);
}

#[test]
fn unknown_file_keys_are_errors() {
    let err = load(&[URL, PASSWORD, ("ZITI_MGMT_CONFIG_FILE", "mgmt.toml")], &[("mgmt.toml", "lease_ttl = \"1m\"\n")])
        .expect_err("unknown key");
    assert!(err.to_string().contains("lease_ttl"), "{err}");
}

#[test]
fn a_password_file_loses_its_trailing_newline() {
    let config = load(&[URL, ("ZITI_MGMT_ADMIN_PASSWORD_FILE", "pw")], &[("pw", "s3cret\n")]).expect("valid");
    assert_eq!(config.admin_password.expose(), "s3cret");
    assert!(!format!("{config:?}").contains("s3cret"), "Debug shows the password");
}

#[rstest]
#[case(&[URL], "ZITI_MGMT_ADMIN_PASSWORD or ZITI_MGMT_ADMIN_PASSWORD_FILE is required")]
#[case(&[PASSWORD], "ZITI_MGMT_CONTROLLER_URL is required")]
#[case(&[URL, PASSWORD, ("ZITI_MGMT_ADMIN_PASSWORD_FILE", "/nonexistent")], "ZITI_MGMT_ADMIN_PASSWORD_FILE=\"/nonexistent\"")]
#[case(&[("ZITI_MGMT_CONTROLLER_URL", "http://ctrl:1280"), PASSWORD], "ZITI_MGMT_CONTROLLER_URL=\"http://ctrl:1280\"")]
#[case(&[("ZITI_MGMT_CONTROLLER_URL", "https://ctrl:1280/edge"), PASSWORD], "ZITI_MGMT_CONTROLLER_URL=\"https://ctrl:1280/edge\"")]
#[case(&[URL, PASSWORD, ("ZITI_MGMT_LEASE_TTL", "0s")], "ZITI_MGMT_LEASE_TTL=\"0s\"")]
#[case(&[URL, PASSWORD, ("ZITI_MGMT_REAPER_INTERVAL", "often")], "ZITI_MGMT_REAPER_INTERVAL=\"often\"")]
#[case(&[URL, PASSWORD, ("ZITI_MGMT_GATEWAY_ROLE_ATTRIBUTES", "a,,b")], "ZITI_MGMT_GATEWAY_ROLE_ATTRIBUTES=\"a,,b\"")]
#[case(&[URL, PASSWORD, ("ZITI_MGMT_GRPC_ADDR", "anywhere")], "ZITI_MGMT_GRPC_ADDR=\"anywhere\"")]
#[case(&[URL, PASSWORD, ("ZITI_MGMT_CONTROLLER_CA", "/nonexistent.pem")], "ZITI_MGMT_CONTROLLER_CA=\"/nonexistent.pem\"")]
#[case(&[URL, PASSWORD, ("ZITI_MGMT_TLS_CERT", "/nonexistent.pem")], "ZITI_MGMT_TLS_CERT=\"/nonexistent.pem\"")]
#[case(&[URL, PASSWORD, ("ZITI_MGMT_ADMIN_USER", "")], "ZITI_MGMT_ADMIN_USER=\"\"")]
fn bad_values_name_the_variable_and_value(#[case] env: &[(&str, &str)], #[case] named: &str) {
    let err = load(env, &[]).expect_err("invalid");
    assert!(err.to_string().contains(named), "{err}");
}

#[test]
fn both_password_sources_are_refused_without_echoing_the_password() {
    let err = load(&[URL, PASSWORD, ("ZITI_MGMT_ADMIN_PASSWORD_FILE", "pw")], &[("pw", "other")]).expect_err("both");
    assert_eq!(err, ConfigError::TwoPasswords);
    assert!(!err.to_string().contains("007"));
}

#[test]
fn the_controller_ca_must_hold_a_certificate() {
    let err =
        load(&[URL, PASSWORD, ("ZITI_MGMT_CONTROLLER_CA", "ca.pem")], &[("ca.pem", "hello")]).expect_err("no PEM");
    assert!(err.to_string().contains("holds no PEM CERTIFICATE"), "{err}");
}

#[rstest]
#[case::default_loopback(None, None, true)]
#[case::other_loopback(Some("127.1.2.3:50051"), None, true)]
#[case::ipv6_loopback(Some("[::1]:50051"), None, true)]
#[case::every_interface(Some("0.0.0.0:50051"), None, false)]
#[case::every_ipv6_interface(Some("[::]:50051"), None, false)]
#[case::private_address(Some("10.0.0.7:50051"), None, false)]
#[case::opted_in(Some("0.0.0.0:50051"), Some("true"), true)]
#[case::opted_out(Some("0.0.0.0:50051"), Some("false"), false)]
fn plaintext_is_served_only_on_loopback_unless_opted_in(
    #[case] addr: Option<&str>,
    #[case] insecure: Option<&str>,
    #[case] accepted: bool,
) {
    // Callers without credentials are accepted here: this is about the transport.
    let mut env = vec![URL, PASSWORD, ("ZITI_MGMT_ALLOW_UNAUTHENTICATED", "true")];
    env.extend(addr.map(|addr| ("ZITI_MGMT_GRPC_ADDR", addr)));
    env.extend(insecure.map(|insecure| ("ZITI_MGMT_INSECURE", insecure)));
    let outcome = load(&env, &[]);
    assert_eq!(outcome.is_ok(), accepted, "{outcome:?}");
    match outcome {
        Ok(config) => assert_eq!(config.serves_plaintext_on_network(), insecure == Some("true")),
        Err(err) => {
            assert!(matches!(err, ConfigError::PlaintextOnNetwork { .. }), "{err:?}");
            let message = err.to_string();
            for named in ["ZITI_MGMT_GRPC_ADDR=", "ZITI_MGMT_TLS_CERT", "ZITI_MGMT_TLS_KEY", "ZITI_MGMT_INSECURE=true"]
            {
                assert!(message.contains(named), "{named} not in: {message}");
            }
        }
    }
}

#[test]
fn tls_makes_any_address_acceptable() {
    let pem = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let env = [
        URL,
        PASSWORD,
        ("ZITI_MGMT_GRPC_ADDR", "0.0.0.0:50051"),
        ("ZITI_MGMT_TLS_CERT", "cert.pem"),
        ("ZITI_MGMT_TLS_KEY", "key.pem"),
        ("ZITI_MGMT_ALLOW_UNAUTHENTICATED", "true"),
    ];
    let files = [("cert.pem", pem.cert.pem()), ("key.pem", pem.signing_key.serialize_pem())];
    let files: Vec<(&str, &str)> = files.iter().map(|(name, text)| (*name, text.as_str())).collect();
    let config = load(&env, &files).expect("TLS on every interface is fine");
    assert!(!config.serves_plaintext_on_network());
}

/// A TLS certificate and key, and a JWKS and policy file, for the auth settings.
fn auth_files() -> Vec<(&'static str, String)> {
    let pem = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    vec![
        ("cert.pem", pem.cert.pem()),
        ("key.pem", pem.signing_key.serialize_pem()),
        ("jwks.json", r#"{"keys":[]}"#.to_owned()),
        (
            "spiffe-policy.toml",
            "[[allow]]\nspiffe_id = \"spiffe://td.test/gateway\"\nservice_types = [\"gateway\"]\nrole_attributes = [\"gw\"]\n"
                .to_owned(),
        ),
        ("jwt-policy.toml", "[[allow]]\njwt_claim = \"ci\"\nservice_types = [\"gateway\"]\n".to_owned()),
        ("provision-policy.toml", "[provision]\nrole_attributes = [\"gateway-hosts\", \"gateway-clients\"]\n".to_owned()),
        ("bad-policy.toml", "[[allow]]\nspiffe_id = \"spiffe://td.test/gateway\"\n\nservice_types = [\"gatway\"]\n".to_owned()),
    ]
}

const TLS: [(&str, &str); 2] = [("ZITI_MGMT_TLS_CERT", "cert.pem"), ("ZITI_MGMT_TLS_KEY", "key.pem")];
const SPIFFE: [(&str, &str); 4] = [
    ("ZITI_MGMT_AUTH_METHODS", "spiffe"),
    ("ZITI_MGMT_SPIFFE_TRUST_DOMAIN", "td.test"),
    ("ZITI_MGMT_SPIFFE_ENDPOINT_SOCKET", "unix:///run/spire/agent.sock"),
    ("ZITI_MGMT_POLICY_FILE", "spiffe-policy.toml"),
];

fn load_auth(env: &[(&'static str, &'static str)]) -> Result<Config, ConfigError> {
    let files = auth_files();
    let files: Vec<(&str, &str)> = files.iter().map(|(name, text)| (*name, text.as_str())).collect();
    let mut all = vec![URL, PASSWORD];
    all.extend_from_slice(env);
    load(&all, &files)
}

#[test]
fn by_default_callers_without_credentials_are_served_on_loopback_only() {
    let config = load_auth(&[]).expect("the default: none, on loopback");
    assert!(config.auth.none && config.auth.spiffe.is_none() && config.auth.jwt.is_none());
    assert!(config.policy.grant(&crate::auth::Principal::Anonymous, "gateway").is_some());

    let err = load_auth(&[("ZITI_MGMT_GRPC_ADDR", "0.0.0.0:50051"), TLS[0], TLS[1]]).expect_err("none on the network");
    assert!(matches!(err, ConfigError::UnauthenticatedOnNetwork { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("ZITI_MGMT_ALLOW_UNAUTHENTICATED=true") && message.contains("0.0.0.0:50051"), "{message}");

    let config = load_auth(&[
        ("ZITI_MGMT_GRPC_ADDR", "0.0.0.0:50051"),
        TLS[0],
        TLS[1],
        ("ZITI_MGMT_ALLOW_UNAUTHENTICATED", "true"),
    ])
    .expect("the explicit override");
    assert!(config.serves_unauthenticated_on_network());
}

#[test]
fn the_spiffe_method_needs_tls_a_trust_domain_a_bundle_and_a_policy() {
    let config = load_auth(&[SPIFFE[0], SPIFFE[1], SPIFFE[2], SPIFFE[3], TLS[0], TLS[1]]).expect("complete");
    let spiffe = config.auth.spiffe.expect("spiffe on");
    assert_eq!(spiffe.trust_domain, "td.test");
    assert!(!config.auth.none, "only the methods named");

    let err = load_auth(&[SPIFFE[0], SPIFFE[1], SPIFFE[2], SPIFFE[3]]).expect_err("no TLS");
    assert_eq!(err, ConfigError::SpiffeNeedsTls);
    let err = load_auth(&[SPIFFE[0], SPIFFE[2], SPIFFE[3], TLS[0], TLS[1]]).expect_err("no trust domain");
    assert_eq!(err.to_string(), "ZITI_MGMT_SPIFFE_TRUST_DOMAIN is required with ZITI_MGMT_AUTH_METHODS=spiffe");
    let err = load_auth(&[SPIFFE[0], SPIFFE[1], SPIFFE[3], TLS[0], TLS[1]]).expect_err("no bundle");
    assert!(err.to_string().contains("ZITI_MGMT_SPIFFE_ENDPOINT_SOCKET or ZITI_MGMT_SPIFFE_BUNDLE_FILE"), "{err}");
    let err = load_auth(&[SPIFFE[0], SPIFFE[1], SPIFFE[2], TLS[0], TLS[1]]).expect_err("no policy");
    assert_eq!(err.to_string(), "ZITI_MGMT_POLICY_FILE is required with ZITI_MGMT_AUTH_METHODS=spiffe");
}

#[rstest]
#[case::unknown_method(&[("ZITI_MGMT_AUTH_METHODS", "spiffe,mtls")], "ZITI_MGMT_AUTH_METHODS=\"spiffe,mtls\" is invalid: unknown method \"mtls\"")]
#[case::twice(&[("ZITI_MGMT_AUTH_METHODS", "none,none")], "none is named twice")]
#[case::setting_of_a_disabled_method(&[("ZITI_MGMT_JWT_ISSUER", "https://idp")], "ZITI_MGMT_JWT_ISSUER is set, but ZITI_MGMT_AUTH_METHODS does not include jwt")]
#[case::jwt_without_jwks(&[("ZITI_MGMT_AUTH_METHODS", "jwt"), ("ZITI_MGMT_JWT_ISSUER", "https://idp"), ("ZITI_MGMT_JWT_AUDIENCE", "zm")], "ZITI_MGMT_JWT_JWKS_URL or ZITI_MGMT_JWT_JWKS_FILE is required")]
#[case::jwks_over_http_to_another_host(&[("ZITI_MGMT_AUTH_METHODS", "jwt"), ("ZITI_MGMT_JWT_ISSUER", "https://idp"), ("ZITI_MGMT_JWT_AUDIENCE", "zm"), ("ZITI_MGMT_JWT_JWKS_URL", "http://idp.example/jwks")], "ZITI_MGMT_JWT_JWKS_URL=\"http://idp.example/jwks\" is invalid")]
#[case::policy_naming_a_disabled_method(&[SPIFFE[0], SPIFFE[1], SPIFFE[2], TLS[0], TLS[1], ("ZITI_MGMT_POLICY_FILE", "jwt-policy.toml")], "the policy jwt-policy.toml has jwt rules, but ZITI_MGMT_AUTH_METHODS does not include jwt")]
#[case::role_attributes_beside_a_policy(&[SPIFFE[0], SPIFFE[1], SPIFFE[2], SPIFFE[3], TLS[0], TLS[1], ("ZITI_MGMT_GATEWAY_ROLE_ATTRIBUTES", "x")], "ZITI_MGMT_GATEWAY_ROLE_ATTRIBUTES cannot be used with ZITI_MGMT_POLICY_FILE")]
#[case::policy_error_names_its_line(&[SPIFFE[0], SPIFFE[1], SPIFFE[2], TLS[0], TLS[1], ("ZITI_MGMT_POLICY_FILE", "bad-policy.toml")], "line 4")]
fn bad_auth_settings_are_named(#[case] env: &[(&'static str, &'static str)], #[case] named: &str) {
    let err = load_auth(env).expect_err("invalid");
    assert!(err.to_string().contains(named), "{named:?} not in: {err}");
}

#[test]
fn the_jwt_method_takes_a_jwks_file_and_defaults_the_claim_to_sub() {
    let env = [
        ("ZITI_MGMT_AUTH_METHODS", "jwt"),
        ("ZITI_MGMT_JWT_ISSUER", "https://idp.example"),
        ("ZITI_MGMT_JWT_AUDIENCE", "ziti-management"),
        ("ZITI_MGMT_JWT_JWKS_FILE", "jwks.json"),
        ("ZITI_MGMT_POLICY_FILE", "jwt-policy.toml"),
    ];
    let config = load_auth(&env).expect("complete");
    let jwt = config.auth.jwt.expect("jwt on");
    assert_eq!(jwt.principal_claim, DEFAULT_PRINCIPAL_CLAIM);
    assert_eq!((jwt.issuer.as_str(), jwt.audience.as_str()), ("https://idp.example", "ziti-management"));
}

const JWT_PROVISION: [(&str, &str); 5] = [
    ("ZITI_MGMT_AUTH_METHODS", "jwt"),
    ("ZITI_MGMT_JWT_ISSUER", "https://idp.example"),
    ("ZITI_MGMT_JWT_AUDIENCE", "openziti"),
    ("ZITI_MGMT_JWT_JWKS_FILE", "jwks.json"),
    ("ZITI_MGMT_POLICY_FILE", "provision-policy.toml"),
];

#[test]
fn provisioning_takes_the_auth_policy_the_roles_claim_the_idle_time_and_the_policy_table() {
    let mut env = JWT_PROVISION.to_vec();
    env.push(("ZITI_MGMT_PROVISION_AUTH_POLICY", "idp-jwt"));
    let provision = load_auth(&env).expect("complete").provision.expect("provisioning on");
    assert_eq!(
        provision,
        ProvisionSettings {
            auth_policy: "idp-jwt".to_owned(),
            roles_claim: DEFAULT_PROVISION_ROLES_CLAIM.to_owned(),
            idle: DEFAULT_PROVISION_IDLE,
            role_attributes: vec!["gateway-hosts".to_owned(), "gateway-clients".to_owned()],
        }
    );
    assert_eq!((provision.roles_claim.as_str(), provision.idle), ("scp", Duration::from_secs(86_400)));

    env.extend([("ZITI_MGMT_PROVISION_ROLES_CLAIM", "scope"), ("ZITI_MGMT_PROVISION_IDLE", "90s")]);
    let provision = load_auth(&env).expect("complete").provision.expect("provisioning on");
    assert_eq!((provision.roles_claim.as_str(), provision.idle), ("scope", Duration::from_secs(90)));

    let config = load_auth(&[
        ("ZITI_MGMT_POLICY_FILE", "jwt-policy.toml"),
        JWT_PROVISION[0],
        JWT_PROVISION[1],
        JWT_PROVISION[2],
        JWT_PROVISION[3],
    ])
    .expect("no provisioning");
    assert!(config.provision.is_none());
}

#[rstest]
#[case::table_without_auth_policy(&[], "provisioning needs both ZITI_MGMT_PROVISION_AUTH_POLICY and a [provision] table in ZITI_MGMT_POLICY_FILE: the policy's [provision] table is given, ZITI_MGMT_PROVISION_AUTH_POLICY is not")]
#[case::auth_policy_without_table(&[("ZITI_MGMT_PROVISION_AUTH_POLICY", "idp-jwt"), ("ZITI_MGMT_POLICY_FILE", "jwt-policy.toml")], "provisioning needs both ZITI_MGMT_PROVISION_AUTH_POLICY and a [provision] table in ZITI_MGMT_POLICY_FILE: ZITI_MGMT_PROVISION_AUTH_POLICY is given, the policy's [provision] table is not")]
#[case::roles_claim_without_auth_policy(&[("ZITI_MGMT_PROVISION_ROLES_CLAIM", "scp")], "ZITI_MGMT_PROVISION_ROLES_CLAIM is set, but provisioning is off")]
#[case::idle_without_auth_policy(&[("ZITI_MGMT_PROVISION_IDLE", "1h")], "ZITI_MGMT_PROVISION_IDLE is set, but provisioning is off")]
#[case::zero_idle(&[("ZITI_MGMT_PROVISION_AUTH_POLICY", "idp-jwt"), ("ZITI_MGMT_PROVISION_IDLE", "0s")], "ZITI_MGMT_PROVISION_IDLE=\"0s\" is invalid: must be greater than zero")]
#[case::empty_auth_policy(&[("ZITI_MGMT_PROVISION_AUTH_POLICY", "")], "ZITI_MGMT_PROVISION_AUTH_POLICY=\"\" is invalid")]
fn bad_provisioning_settings_are_named(#[case] extra: &[(&'static str, &'static str)], #[case] named: &str) {
    let mut env = JWT_PROVISION.to_vec();
    env.extend_from_slice(extra);
    let err = load_auth(&env).expect_err("invalid");
    assert!(err.to_string().contains(named), "{named:?} not in: {err}");
}

#[test]
fn provisioning_needs_the_jwt_method() {
    let env = [
        SPIFFE[0],
        SPIFFE[1],
        SPIFFE[2],
        TLS[0],
        TLS[1],
        ("ZITI_MGMT_POLICY_FILE", "provision-policy.toml"),
        ("ZITI_MGMT_PROVISION_AUTH_POLICY", "idp-jwt"),
    ];
    assert_eq!(load_auth(&env).expect_err("no jwt method"), ConfigError::ProvisionNeedsJwt);
}
