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
    let mut env = vec![URL, PASSWORD];
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
    ];
    let files = [("cert.pem", pem.cert.pem()), ("key.pem", pem.signing_key.serialize_pem())];
    let files: Vec<(&str, &str)> = files.iter().map(|(name, text)| (*name, text.as_str())).collect();
    let config = load(&env, &files).expect("TLS on every interface is fine");
    assert!(!config.serves_plaintext_on_network());
}
