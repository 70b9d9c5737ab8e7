use std::net::SocketAddr;
use std::time::Duration;

use figment::Jail;
use rstest::rstest;

use super::*;

/// Loads the configuration from the given environment (and files) in a jail.
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
fn no_environment_gives_plain_tcp_on_loopback() {
    let config = load(&[], &[]).expect("defaults are valid");
    assert_eq!(config.listen_addr, SocketAddr::from(([127, 0, 0, 1], 8080)));
    assert_eq!(config.admin_addr, SocketAddr::from(([127, 0, 0, 1], 9090)));
    assert_eq!(config.overlay, None);
    assert_eq!(config.upstream_url, None);
    assert_eq!(config.log_format, LogFormat::Text);
}

#[test]
fn overlay_defaults_are_the_specs() {
    let config = load(&[("ZITI_ENABLED", "true"), ("ZITI_MANAGEMENT_INSECURE", "true")], &[]).expect("valid");
    let overlay = config.overlay.expect("overlay on");
    assert_eq!(overlay.management_target, "ziti-management:50051");
    assert_eq!(overlay.renewal_interval, Duration::from_secs(120));
    assert_eq!(overlay.service_name, "gateway");
    assert_eq!(overlay.management_tls, None);
    assert!(overlay.controller_pins.is_empty());
    assert_eq!(overlay.identity_source, IdentitySourceConfig::Lease);
    assert_eq!(overlay.identity_store, IdentityStore::File);
}

fn spiffe_env(ca: &str) -> Vec<(&'static str, String)> {
    vec![
        ("ZITI_ENABLED", "true".to_owned()),
        ("ZITI_MANAGEMENT_INSECURE", "true".to_owned()),
        ("ZITI_IDENTITY_SOURCE", "spiffe".to_owned()),
        ("SPIFFE_ENDPOINT_SOCKET", "unix:///run/spire/agent.sock".to_owned()),
        ("ZITI_CONTROLLER_URL", "https://ctrl.example.com:1280".to_owned()),
        ("ZITI_CONTROLLER_CA", ca.to_owned()),
    ]
}

fn load_owned(env: &[(&'static str, String)], files: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: Vec<(&str, &str)> = env.iter().map(|(name, value)| (*name, value.as_str())).collect();
    load(&env, files)
}

#[test]
fn the_spiffe_source_takes_its_workload_api_and_controller_and_keeps_the_key_in_memory() {
    let ca = rcgen_ca_pem();
    let mut env = spiffe_env("ca.pem");
    env.push(("ZITI_SPIFFE_ID", "spiffe://example.org/gateway".to_owned()));
    let overlay = load_owned(&env, &[("ca.pem", &ca)]).expect("valid").overlay.expect("overlay on");
    assert_eq!(
        overlay.identity_source,
        IdentitySourceConfig::Spiffe(SpiffeConfig {
            endpoint: "unix:///run/spire/agent.sock".to_owned(),
            spiffe_id: Some("spiffe://example.org/gateway".to_owned()),
            controller_url: "https://ctrl.example.com:1280".to_owned(),
            controller_ca_pem: ca,
        })
    );
    assert_eq!(overlay.identity_store, IdentityStore::Memory);
}

#[rstest]
#[case::no_socket(
    "SPIFFE_ENDPOINT_SOCKET",
    "SPIFFE_ENDPOINT_SOCKET must be set with ZITI_IDENTITY_SOURCE=spiffe (where the SPIFFE Workload API listens)"
)]
#[case::no_controller(
    "ZITI_CONTROLLER_URL",
    "ZITI_CONTROLLER_URL must be set with ZITI_IDENTITY_SOURCE=spiffe (the controller the X.509-SVID logs in to)"
)]
#[case::no_ca(
    "ZITI_CONTROLLER_CA",
    "ZITI_CONTROLLER_CA must be set with ZITI_IDENTITY_SOURCE=spiffe (the CA bundle that the controller is trusted with)"
)]
fn the_spiffe_source_names_what_is_missing(#[case] unset: &str, #[case] expected: &str) {
    let ca = rcgen_ca_pem();
    let env: Vec<_> = spiffe_env("ca.pem").into_iter().filter(|(name, _)| *name != unset).collect();
    let err = load_owned(&env, &[("ca.pem", &ca)]).expect_err("refused");
    assert_eq!(err.to_string(), expected);
}

#[rstest]
#[case::store_file(&[("GATEWAY_IDENTITY_STORE", "file")], "GATEWAY_IDENTITY_STORE=file cannot be used with ZITI_IDENTITY_SOURCE=spiffe")]
#[case::bad_source(&[("ZITI_IDENTITY_SOURCE", "spire")], "ZITI_IDENTITY_SOURCE=\"spire\" is invalid: expected lease")]
#[case::bad_socket(&[("SPIFFE_ENDPOINT_SOCKET", "/run/agent.sock")], "SPIFFE_ENDPOINT_SOCKET=\"/run/agent.sock\" is invalid: expected unix:///")]
#[case::bad_id(&[("ZITI_SPIFFE_ID", "example.org/gateway")], "ZITI_SPIFFE_ID=\"example.org/gateway\" is invalid: expected a SPIFFE ID")]
fn bad_spiffe_settings_are_refused_naming_the_variable(#[case] set: &[(&'static str, &str)], #[case] expected: &str) {
    let ca = rcgen_ca_pem();
    let mut env = spiffe_env("ca.pem");
    for (name, value) in set {
        env.retain(|(existing, _)| existing != name);
        env.push((name, (*value).to_owned()));
    }
    let err = load_owned(&env, &[("ca.pem", &ca)]).expect_err("refused");
    assert!(err.to_string().starts_with(expected), "{err}");
}

#[rstest]
#[case::memory("memory", IdentityStore::Memory)]
#[case::file("FILE", IdentityStore::File)]
fn the_lease_source_stores_its_identity_as_asked(#[case] value: &str, #[case] expected: IdentityStore) {
    let env = [("ZITI_ENABLED", "true"), ("ZITI_MANAGEMENT_INSECURE", "true"), ("GATEWAY_IDENTITY_STORE", value)];
    let overlay = load(&env, &[]).expect("valid").overlay.expect("overlay on");
    assert_eq!(overlay.identity_store, expected);
    assert_eq!(overlay.identity_source, IdentitySourceConfig::Lease);
}

#[test]
fn plaintext_to_the_default_target_is_refused_naming_what_to_set() {
    let err = load(&[("ZITI_ENABLED", "true")], &[]).expect_err("cleartext to a remote host");
    assert_eq!(err, ConfigError::PlaintextManagement { target: "ziti-management:50051".to_owned() });
    let message = err.to_string();
    for named in [
        "ZITI_MANAGEMENT_GRPC_TARGET=\"ziti-management:50051\"",
        "ZITI_MANAGEMENT_TLS_CA",
        "ZITI_MANAGEMENT_INSECURE=true",
    ] {
        assert!(message.contains(named), "{named} not in: {message}");
    }
}

#[rstest]
#[case::http_remote(&[("ZITI_MANAGEMENT_GRPC_TARGET", "http://10.0.0.7:50051")], false)]
#[case::host_port_remote(&[("ZITI_MANAGEMENT_GRPC_TARGET", "mgmt.example:50051")], false)]
#[case::remote_with_tls(&[("ZITI_MANAGEMENT_GRPC_TARGET", "mgmt.example:50051"), ("ZITI_MANAGEMENT_TLS_CA", "/ca.pem")], true)]
#[case::https_remote(&[("ZITI_MANAGEMENT_GRPC_TARGET", "https://mgmt.example:50051")], true)]
#[case::loopback_v4(&[("ZITI_MANAGEMENT_GRPC_TARGET", "http://127.0.0.1:50051")], true)]
#[case::loopback_v6(&[("ZITI_MANAGEMENT_GRPC_TARGET", "[::1]:50051")], true)]
#[case::localhost(&[("ZITI_MANAGEMENT_GRPC_TARGET", "localhost:50051")], true)]
#[case::remote_opted_in(&[("ZITI_MANAGEMENT_GRPC_TARGET", "http://10.0.0.7:50051"), ("ZITI_MANAGEMENT_INSECURE", "true")], true)]
#[case::remote_opted_out(&[("ZITI_MANAGEMENT_GRPC_TARGET", "http://10.0.0.7:50051"), ("ZITI_MANAGEMENT_INSECURE", "false")], false)]
fn plaintext_goes_only_to_loopback_unless_opted_in(#[case] env: &[(&str, &str)], #[case] accepted: bool) {
    let mut all = vec![("ZITI_ENABLED", "true")];
    all.extend_from_slice(env);
    let outcome = load(&all, &[]);
    assert_eq!(outcome.is_ok(), accepted, "{outcome:?}");
    if let Err(err) = outcome {
        assert!(matches!(err, ConfigError::PlaintextManagement { .. }), "{err:?}");
    }
}

#[test]
fn plaintext_to_a_remote_host_is_fine_with_the_overlay_off() {
    assert!(load(&[("ZITI_MANAGEMENT_GRPC_TARGET", "http://10.0.0.7:50051")], &[]).is_ok());
}

#[test]
fn controller_pins_are_read_and_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    let certified = rcgen::generate_simple_self_signed(vec!["ctrl".to_owned()]).expect("cert");
    std::fs::write(&ca, certified.cert.pem()).expect("write");
    let ca = ca.to_string_lossy().into_owned();
    let on = [("ZITI_ENABLED", "true"), ("ZITI_MANAGEMENT_GRPC_TARGET", "127.0.0.1:50051")];
    let pinned = [on[0], on[1], ("ZITI_CONTROLLER_URL", "https://ctrl.example:1280"), ("ZITI_CONTROLLER_CA", &ca)];
    let overlay = load(&pinned, &[]).expect("valid").overlay.expect("overlay on");
    let expected = ziti_transport::ControllerPins::none()
        .with_controller("https://ctrl.example:1280")
        .and_then(|pins| pins.with_ca_pem(certified.cert.pem().as_bytes()))
        .expect("pins");
    assert_eq!(overlay.controller_pins, expected);

    let not_a_ca = dir.path().join("empty.pem");
    std::fs::write(&not_a_ca, "nothing").expect("write");
    let not_a_ca = not_a_ca.to_string_lossy().into_owned();
    for (variable, value, problem) in [
        ("ZITI_CONTROLLER_URL", "http://ctrl.example:1280", "https://"),
        ("ZITI_CONTROLLER_CA", "/nonexistent/ca.pem", "cannot read the file"),
        ("ZITI_CONTROLLER_CA", not_a_ca.as_str(), "no readable certificate"),
    ] {
        let err = load(&[on[0], on[1], (variable, value)], &[]).expect_err("bad pin");
        let message = err.to_string();
        assert!(message.starts_with(variable) && message.contains(problem), "{message}");
    }
}

#[rstest]
#[case("true", true)]
#[case("TRUE", true)]
#[case("True", true)]
#[case("1", true)]
#[case("false", false)]
#[case("FALSE", false)]
#[case("0", false)]
fn ziti_enabled_accepts_booleans_in_any_case(#[case] value: &str, #[case] enabled: bool) {
    let config = load(&[("ZITI_ENABLED", value), ("ZITI_MANAGEMENT_INSECURE", "true")], &[]).expect("valid");
    assert_eq!(config.overlay.is_some(), enabled);
}

#[rstest]
#[case("ZITI_ENABLED", "maybe", "expected true, false, 1 or 0")]
#[case("ZITI_ENABLED", "yes", "expected true, false, 1 or 0")]
#[case("ZITI_LEASE_RENEWAL_INTERVAL", "abc", "expected a duration")]
#[case("ZITI_LEASE_RENEWAL_INTERVAL", "0", "greater than zero")]
#[case("ZITI_LEASE_RENEWAL_INTERVAL", "0s", "greater than zero")]
#[case("ZITI_LEASE_RENEWAL_INTERVAL", "5m", "below the lease TTL")]
#[case("ZITI_LEASE_RENEWAL_INTERVAL", "10m", "below the lease TTL")]
#[case("ZITI_MANAGEMENT_GRPC_TARGET", "ziti-management", "expected host:port")]
#[case("ZITI_MANAGEMENT_GRPC_TARGET", "host:99999", "expected host:port")]
#[case("ZITI_SERVICE_NAME", "", "must not be empty")]
#[case("ZITI_ENROLLMENT_TIMEOUT", "0s", "greater than zero")]
#[case("GATEWAY_LISTEN_ADDR", "localhost", "expected an IP address and port")]
#[case("GATEWAY_ADMIN_ADDR", "127.0.0.1", "expected an IP address and port")]
#[case("GATEWAY_UPSTREAM_URL", "not a url", "not a valid URL")]
#[case("GATEWAY_UPSTREAM_URL", "/relative", "absolute http://")]
#[case("GATEWAY_LOG_FORMAT", "xml", "expected text or json")]
#[case("GATEWAY_IDENTITY_DIR", "/no/such/dir", "not an existing directory")]
#[case("GATEWAY_MAX_CONNECTIONS", "0", "greater than zero")]
#[case("GATEWAY_MAX_CONNECTIONS", "-1", "expected a whole number")]
#[case("GATEWAY_MAX_CONNECTIONS", "2000000", "from 1 to 1000000")]
#[case("ZITI_RESOLVE_MAX_CONCURRENT", "0", "greater than zero")]
#[case("ZITI_RESOLVE_MAX_CONCURRENT", "many", "expected a whole number")]
#[case("GATEWAY_UNVERIFIED_CALLERS", "trust", "expected anonymous, claim or reject")]
#[case("GATEWAY_UNVERIFIED_CALLERS", "", "expected anonymous, claim or reject")]
#[case("GATEWAY_FORWARDED_HOSTS", "api.example.com,user@evil", "is not a host or host:port")]
#[case("GATEWAY_FORWARDED_HOSTS", "api example", "is not a host or host:port")]
fn bad_values_name_the_variable_and_the_problem(
    #[case] variable: &str,
    #[case] value: &str,
    #[case] problem: &str,
    #[values(true, false)] overlay: bool,
) {
    let enabled = if overlay { "true" } else { "false" };
    let err = load(&[("ZITI_ENABLED", enabled), (variable, value)], &[]).err().map(|e| e.to_string());
    let err = err.unwrap_or_else(|| panic!("{variable}={value} was accepted"));
    // Checked with the overlay on and off; the bad ZITI_ENABLED cases replace the flag.
    assert!(err.starts_with(&format!("{variable}=")), "{err}");
    assert!(err.contains(&format!("{value:?}")), "{err}");
    assert!(err.contains(problem), "{err}");
}

#[rstest]
#[case(&[("ZITI_IDENTITY_FILE", "/etc/ziti/gateway.json")])]
#[case(&[("ZITI_IDENTITY_FILE", "/etc/ziti/gateway.json"), ("ZITI_ENABLED", "false")])]
fn identity_file_without_overlay_is_refused(#[case] env: &[(&str, &str)]) {
    let err = load(env, &[]).expect_err("must refuse");
    assert_eq!(err, ConfigError::IdentityFileWithoutOverlay);
    let message = err.to_string();
    assert!(message.contains("ZITI_IDENTITY_FILE") && message.contains("ZITI_ENABLED=true"), "{message}");
}

#[test]
fn identity_file_with_overlay_is_ignored_but_flagged() {
    let env = [("ZITI_ENABLED", "1"), ("ZITI_IDENTITY_FILE", "/old.json"), ("ZITI_MANAGEMENT_INSECURE", "true")];
    let config = load(&env, &[]).expect("valid");
    assert!(config.overlay.is_some());
    assert!(config.ignored_identity_file);
}

#[test]
fn file_overrides_defaults_and_env_overrides_file() {
    let file = "ziti_enabled = true\nziti_management_insecure = true\nziti_lease_renewal_interval = \"90s\"\nziti_service_name = \"from-file\"\n";
    let config =
        load(&[("GATEWAY_CONFIG_FILE", "gateway.toml"), ("ZITI_SERVICE_NAME", "from-env")], &[("gateway.toml", file)])
            .expect("valid");
    let overlay = config.overlay.expect("enabled by the file");
    assert_eq!(overlay.renewal_interval, Duration::from_secs(90));
    assert_eq!(overlay.service_name, "from-env");
}

#[test]
fn unknown_key_in_the_file_is_an_error() {
    let err = load(&[("GATEWAY_CONFIG_FILE", "gateway.toml")], &[("gateway.toml", "ziti_enabeld = true\n")])
        .expect_err("typo must be caught");
    assert!(err.to_string().contains("ziti_enabeld"), "{err}");
}

#[test]
fn missing_config_file_is_an_error() {
    let err = load(&[("GATEWAY_CONFIG_FILE", "nowhere.toml")], &[]).expect_err("must fail");
    assert!(err.to_string().contains("nowhere.toml"), "{err}");
}

#[test]
fn client_cert_without_key_is_refused() {
    let err = load(&[("ZITI_ENABLED", "true"), ("ZITI_MANAGEMENT_TLS_CERT", "/c.pem")], &[]).expect_err("must fail");
    assert_eq!(err, ConfigError::HalfClientIdentity);
}

#[test]
fn edge_limits_and_policies_default_safely() {
    let config = load(&[("ZITI_ENABLED", "true"), ("ZITI_MANAGEMENT_INSECURE", "true")], &[]).expect("valid");
    assert_eq!(config.max_connections, 1024);
    assert!(config.forwarded_hosts.is_empty(), "no x-forwarded-host unless hosts are listed");
    let overlay = config.overlay.expect("overlay on");
    assert_eq!(overlay.resolve_max_concurrent, 32);
    assert_eq!(overlay.unverified_callers, domain::UnverifiedCallers::Anonymous);
}

#[rstest]
#[case("anonymous", domain::UnverifiedCallers::Anonymous)]
#[case("Claim", domain::UnverifiedCallers::Claim)]
#[case("REJECT", domain::UnverifiedCallers::Reject)]
fn unverified_callers_takes_each_policy_in_any_case(#[case] value: &str, #[case] policy: domain::UnverifiedCallers) {
    let env = [("ZITI_ENABLED", "true"), ("ZITI_MANAGEMENT_INSECURE", "true"), ("GATEWAY_UNVERIFIED_CALLERS", value)];
    let config = load(&env, &[]).expect("valid");
    assert_eq!(config.overlay.map(|overlay| overlay.unverified_callers), Some(policy));
}

#[test]
fn edge_limits_and_forwarded_hosts_are_read() {
    let config = load(
        &[
            ("GATEWAY_MAX_CONNECTIONS", "50"),
            ("GATEWAY_FORWARDED_HOSTS", " API.example.com , ,api.example.com:8443"),
            ("ZITI_RESOLVE_MAX_CONCURRENT", "4"),
            ("ZITI_ENABLED", "true"),
            ("ZITI_MANAGEMENT_INSECURE", "true"),
        ],
        &[],
    )
    .expect("valid");
    assert_eq!(config.max_connections, 50);
    assert_eq!(config.forwarded_hosts, ["api.example.com", "api.example.com:8443"]);
    assert_eq!(config.overlay.map(|overlay| overlay.resolve_max_concurrent), Some(4));
}

#[test]
fn management_tls_is_collected() {
    let config = load(
        &[
            ("ZITI_ENABLED", "true"),
            ("ZITI_MANAGEMENT_TLS_CA", "/ca.pem"),
            ("ZITI_MANAGEMENT_TLS_CERT", "/c.pem"),
            ("ZITI_MANAGEMENT_TLS_KEY", "/k.pem"),
        ],
        &[],
    )
    .expect("valid");
    let tls = config.overlay.and_then(|o| o.management_tls).expect("tls set");
    assert_eq!(tls.ca_file.as_deref(), Some(std::path::Path::new("/ca.pem")));
    assert_eq!(tls.client_key_file.as_deref(), Some(std::path::Path::new("/k.pem")));
}

/// A CA certificate's PEM.
fn rcgen_ca_pem() -> String {
    rcgen::generate_simple_self_signed(vec!["ctrl".to_owned()]).expect("cert").cert.pem()
}

#[test]
fn the_workload_api_makes_the_svid_the_client_certificate_towards_ziti_management() {
    let on = [("ZITI_ENABLED", "true"), ("ZITI_MANAGEMENT_TLS_CA", "/ca.pem")];
    let socket = ("SPIFFE_ENDPOINT_SOCKET", "unix:///run/spire/agent.sock");
    let config = load(&[on[0], on[1], socket, ("ZITI_SPIFFE_ID", "spiffe://td.test/gateway")], &[]).expect("valid");
    let credentials = config.overlay.expect("overlay").management_credentials;
    assert_eq!(credentials.svid_endpoint.as_deref(), Some("unix:///run/spire/agent.sock"));
    assert_eq!(credentials.spiffe_id.as_deref(), Some("spiffe://td.test/gateway"));

    let fixed = [("ZITI_MANAGEMENT_TLS_CERT", "/c.pem"), ("ZITI_MANAGEMENT_TLS_KEY", "/k.pem")];
    let config = load(&[on[0], on[1], socket, fixed[0], fixed[1]], &[]).expect("valid");
    let credentials = config.overlay.expect("overlay").management_credentials;
    assert_eq!(credentials.svid_endpoint, None, "a fixed client certificate wins");
}

#[test]
fn a_token_file_must_hold_a_token_and_is_named_when_it_does_not() {
    let on = [("ZITI_ENABLED", "true"), ("ZITI_MANAGEMENT_TLS_CA", "/ca.pem")];
    let config =
        load(&[on[0], on[1], ("ZITI_MANAGEMENT_TOKEN_FILE", "token")], &[("token", "eyJ.token\n")]).expect("valid");
    let credentials = config.overlay.expect("overlay").management_credentials;
    assert_eq!(credentials.token_file.as_deref(), Some(std::path::Path::new("token")));

    let err = load(&[on[0], on[1], ("ZITI_MANAGEMENT_TOKEN_FILE", "empty")], &[("empty", "\n")]).expect_err("empty");
    assert!(
        err.to_string().contains("ZITI_MANAGEMENT_TOKEN_FILE=\"empty\"") && err.to_string().contains("empty"),
        "{err}"
    );
    let err = load(&[on[0], on[1], ("ZITI_MANAGEMENT_TOKEN_FILE", "/nonexistent")], &[]).expect_err("missing");
    assert!(err.to_string().contains("cannot read the token file"), "{err}");
    assert!(!err.to_string().contains("eyJ"), "{err}");
}

/// The settings of a gateway whose identity is an IdP token, with the controller given.
fn jwt_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("ZITI_ENABLED", "true"),
        ("ZITI_MANAGEMENT_INSECURE", "true"),
        ("ZITI_IDENTITY_SOURCE", "jwt"),
        ("ZITI_CONTROLLER_URL", "https://127.0.0.1:1280"),
        ("ZITI_CONTROLLER_CA", "ca.pem"),
    ]
}

fn jwt_files() -> Vec<(&'static str, String)> {
    vec![("ca.pem", rcgen_ca_pem()), ("token", "eyJ.x.y\n".to_owned()), ("secret", "s3cret\n".to_owned())]
}

fn load_jwt(extra: &[(&'static str, &'static str)]) -> Result<Config, ConfigError> {
    let mut env = jwt_env();
    env.extend_from_slice(extra);
    let files = jwt_files();
    let files: Vec<(&str, &str)> = files.iter().map(|(name, text)| (*name, text.as_str())).collect();
    load(&env, &files)
}

#[test]
fn the_jwt_source_takes_a_token_file_or_the_client_credentials_and_keeps_it_in_memory() {
    let config = load_jwt(&[("ZITI_JWT_FILE", "token")]).expect("a token file");
    let overlay = config.overlay.expect("overlay");
    assert_eq!(overlay.identity_store, IdentityStore::Memory);
    let IdentitySourceConfig::Jwt(jwt) = overlay.identity_source else { panic!("not the jwt source") };
    assert_eq!(jwt.token, JwtTokenConfig::File(std::path::PathBuf::from("token")));
    assert_eq!(jwt.controller_url, "https://127.0.0.1:1280");

    let config = load_jwt(&[
        ("ZITI_OIDC_ISSUER", "http://127.0.0.1:4444/"),
        ("ZITI_OIDC_CLIENT_ID", "gateway-idp"),
        ("ZITI_OIDC_CLIENT_SECRET_FILE", "secret"),
        ("ZITI_OIDC_AUDIENCE", "openziti"),
        ("ZITI_OIDC_SCOPES", "gateway-hosts gateway-clients"),
    ])
    .expect("client credentials");
    let IdentitySourceConfig::Jwt(jwt) = config.overlay.expect("overlay").identity_source else { panic!("jwt") };
    let JwtTokenConfig::ClientCredentials { client_id, scopes, .. } = jwt.token else { panic!("client credentials") };
    assert_eq!(client_id, "gateway-idp");
    assert_eq!(scopes, ["gateway-hosts", "gateway-clients"]);
}

#[rstest]
#[case::no_token(&[], "ZITI_JWT_FILE or ZITI_OIDC_ISSUER must be set with ZITI_IDENTITY_SOURCE=jwt")]
#[case::both(&[("ZITI_JWT_FILE", "token"), ("ZITI_OIDC_ISSUER", "https://idp.example")], "not both")]
#[case::half_a_client(&[("ZITI_OIDC_ISSUER", "https://idp.example"), ("ZITI_OIDC_CLIENT_ID", "c")], "ZITI_OIDC_CLIENT_SECRET_FILE must be set")]
#[case::secret_over_http(&[("ZITI_OIDC_ISSUER", "http://idp.example")], "ZITI_OIDC_ISSUER=\"http://idp.example\" is invalid: expected an https:// URL")]
#[case::missing_secret_file(&[("ZITI_OIDC_CLIENT_SECRET_FILE", "/nonexistent")], "ZITI_OIDC_CLIENT_SECRET_FILE=\"/nonexistent\" is invalid: cannot read the file")]
#[case::token_on_disk(&[("ZITI_JWT_FILE", "token"), ("GATEWAY_IDENTITY_STORE", "file")], "GATEWAY_IDENTITY_STORE=file cannot be used with ZITI_IDENTITY_SOURCE=jwt")]
fn bad_jwt_settings_are_named(#[case] extra: &[(&'static str, &'static str)], #[case] named: &str) {
    let err = load_jwt(extra).expect_err("invalid");
    assert!(err.to_string().contains(named), "{named:?} not in: {err}");
    assert!(!err.to_string().contains("s3cret"), "{err}");
}

#[test]
fn the_jwt_source_needs_the_controller() {
    let files = jwt_files();
    let files: Vec<(&str, &str)> = files.iter().map(|(name, text)| (*name, text.as_str())).collect();
    let env = [
        ("ZITI_ENABLED", "true"),
        ("ZITI_MANAGEMENT_INSECURE", "true"),
        ("ZITI_IDENTITY_SOURCE", "jwt"),
        ("ZITI_JWT_FILE", "token"),
    ];
    let err = load(&env, &files).expect_err("no controller");
    assert!(err.to_string().contains("ZITI_CONTROLLER_URL must be set with ZITI_IDENTITY_SOURCE=jwt"), "{err}");
}
