use rstest::rstest;

use super::*;

struct Material {
    cert: String,
    key: String,
    ca: String,
}

fn material(alg: &'static rcgen::SignatureAlgorithm) -> Material {
    let ca_key = rcgen::KeyPair::generate_for(alg).unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = rcgen::CertificateParams::new(vec!["client".to_owned()]).unwrap().signed_by(&key, &issuer).unwrap();
    Material { cert: cert.pem(), key: key.serialize_pem(), ca: ca.pem() }
}

fn json(api: &str, cert: &str, key: &str, ca: &str) -> Vec<u8> {
    serde_json::json!({ "ztAPI": api, "id": { "cert": cert, "key": key, "ca": ca } }).to_string().into_bytes()
}

fn inline(m: &Material) -> Vec<u8> {
    json(
        "https://127.0.0.1:1280/edge/client/v1",
        &format!("pem:{}", m.cert),
        &format!("pem:{}", m.key),
        &format!("pem:{}", m.ca),
    )
}

#[rstest]
#[case::p256(&rcgen::PKCS_ECDSA_P256_SHA256)]
#[case::p384(&rcgen::PKCS_ECDSA_P384_SHA384)]
#[case::ed25519(&rcgen::PKCS_ED25519)]
fn inline_pem_identity_loads(#[case] alg: &'static rcgen::SignatureAlgorithm) {
    let identity = Identity::from_json(&inline(&material(alg))).unwrap();
    assert_eq!(identity.api_urls()[0].as_str(), "https://127.0.0.1:1280/");
    assert_eq!(identity.client_certificate().unwrap().0.len(), 1);
    assert_eq!(identity.ca_certificates().len(), 1);
    crate::tls::client_config(&identity, &[]).expect("usable for TLS");
}

#[test]
fn file_references_and_extra_controllers_are_read() {
    let m = material(&rcgen::PKCS_ECDSA_P256_SHA256);
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [("cert.pem", &m.cert), ("key.pem", &m.key), ("ca.pem", &m.ca)] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let url = |name: &str| format!("file://{}", dir.path().join(name).display());
    let mut value: serde_json::Value = serde_json::from_slice(&json(
        "https://ctrl.example:443/edge/client/v1",
        &url("cert.pem"),
        &url("key.pem"),
        &url("ca.pem"),
    ))
    .unwrap();
    value["ztAPIs"] = serde_json::json!(["https://ctrl.example:443/edge/client/v1", "https://other.example:8441"]);
    let file = dir.path().join("identity.json");
    std::fs::write(&file, value.to_string()).unwrap();
    let identity = Identity::from_file(&file).unwrap();
    let urls: Vec<_> = identity.api_urls().iter().map(|u| u.as_str().to_owned()).collect();
    assert_eq!(urls, ["https://ctrl.example/", "https://other.example:8441/"]);
}

#[test]
fn debug_never_shows_the_key() {
    let m = material(&rcgen::PKCS_ECDSA_P256_SHA256);
    let shown = format!("{:?}", Identity::from_json(&inline(&m)).unwrap());
    let key_line = m.key.lines().nth(1).unwrap();
    assert!(!shown.contains(key_line));
    assert!(shown.contains("<redacted>"), "{shown}");
}

enum Expect {
    Json,
    Missing(&'static str),
    Field(&'static str),
}

#[rstest]
#[case::not_json(b"{not json".to_vec(), Expect::Json)]
#[case::no_api(br#"{"id":{}}"#.to_vec(), Expect::Missing("ztAPI"))]
#[case::plain_http(json("http://127.0.0.1:1280", "pem:x", "pem:x", "pem:x"), Expect::Field("ztAPI"))]
#[case::no_id(br#"{"ztAPI":"https://h:1"}"#.to_vec(), Expect::Missing("id"))]
#[case::empty_cert(json("https://h:1", "", "pem:x", "pem:x"), Expect::Missing("id.cert"))]
#[case::unknown_scheme(json("https://h:1", "pem:x", "vault:secret", "pem:x"), Expect::Field("id.key"))]
#[case::missing_file(json("https://h:1", "file:///nonexistent/cert.pem", "pem:x", "pem:x"), Expect::Field("id.cert"))]
fn bad_files_name_the_field(#[case] bytes: Vec<u8>, #[case] expect: Expect) {
    let err = Identity::from_json(&bytes).unwrap_err();
    match (expect, &err) {
        (Expect::Json, IdentityError::Json { .. }) => {}
        (Expect::Missing(want), IdentityError::Missing(got)) if want == *got => {}
        (Expect::Field(want), IdentityError::Field { field, .. }) if want == *field => {}
        _ => panic!("unexpected error: {err}"),
    }
}

#[test]
fn bad_keys_are_refused_without_echoing_them() {
    let m = material(&rcgen::PKCS_ECDSA_P256_SHA256);
    let secret = "c2VjcmV0LWtleS1ieXRlcw";
    let broken = format!("pem:-----BEGIN PRIVATE KEY-----\n{secret}!!\n-----END PRIVATE KEY-----\n");
    for key in [broken, format!("pem:{}", m.cert), "pem:just text".to_owned()] {
        let bytes = json("https://h:1", &format!("pem:{}", m.cert), &key, &format!("pem:{}", m.ca));
        let err = Identity::from_json(&bytes).unwrap_err();
        assert!(matches!(err, IdentityError::Field { field: "id.key", .. }), "{err}");
        assert!(!err.to_string().contains(secret), "{err}");
    }
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_refused() {
    let (a, b) = (material(&rcgen::PKCS_ECDSA_P256_SHA256), material(&rcgen::PKCS_ECDSA_P256_SHA256));
    let mixed = json("https://h:1", &format!("pem:{}", a.cert), &format!("pem:{}", b.key), &format!("pem:{}", a.ca));
    let identity = Identity::from_json(&mixed).unwrap();
    let err = crate::tls::client_config(&identity, &[]).unwrap_err();
    assert!(matches!(err, crate::Error::Identity(IdentityError::Field { field: "id.key", .. })), "{err}");
}

#[test]
fn from_pem_takes_a_chain_key_and_ca_held_in_memory() {
    let m = material(&rcgen::PKCS_ECDSA_P256_SHA256);
    let chain = format!("{}{}", m.cert, m.ca);
    let identity =
        Identity::from_pem(&["https://ctrl.example:1280/"], chain.as_bytes(), m.key.as_bytes(), m.ca.as_bytes())
            .unwrap();
    assert_eq!(identity.api_urls()[0].as_str(), "https://ctrl.example:1280/");
    assert_eq!(identity.client_certificate().unwrap().0.len(), 2, "leaf and intermediate are both presented");
    assert!(identity.certificate_expires_at() > std::time::SystemTime::now());
    crate::tls::client_config(&identity, &[]).expect("usable for TLS");
}

#[test]
fn from_pem_names_the_part_at_fault_without_quoting_it() {
    let m = material(&rcgen::PKCS_ECDSA_P256_SHA256);
    let other = material(&rcgen::PKCS_ECDSA_P256_SHA256);
    let no_url: [&str; 0] = [];
    let err = Identity::from_pem(&no_url, m.cert.as_bytes(), m.key.as_bytes(), m.ca.as_bytes()).unwrap_err();
    assert!(matches!(err, IdentityError::Missing("ztAPI")), "{err}");
    let err = Identity::from_pem(&["https://c:1/"], m.cert.as_bytes(), b"not a key", m.ca.as_bytes()).unwrap_err();
    assert!(matches!(err, IdentityError::Field { field: "id.key", .. }), "{err}");
    // A key of another certificate is caught when TLS is set up.
    let mismatched = Identity::from_pem(&["https://c:1/"], m.cert.as_bytes(), other.key.as_bytes(), m.ca.as_bytes());
    let err = crate::tls::client_config(&mismatched.unwrap(), &[]).unwrap_err();
    assert!(err.to_string().contains("id.key"), "{err}");
    assert!(!err.to_string().contains("PRIVATE"), "{err}");
}

#[test]
fn handed_out_identity_json_must_hold_its_material_inline() {
    let m = material(&rcgen::PKCS_ECDSA_P256_SHA256);
    let identity = Identity::from_inline_json(&inline(&m)).unwrap();
    assert_eq!(identity.ca_certificates().len(), 1);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key.pem"), &m.key).unwrap();
    let key = format!("file://{}", dir.path().join("key.pem").display());
    let naming_a_file = json("https://127.0.0.1:1280", &format!("pem:{}", m.cert), &key, &format!("pem:{}", m.ca));
    assert!(Identity::from_json(&naming_a_file).is_ok(), "an identity file may name its key file");
    let refused = Identity::from_inline_json(&naming_a_file).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "identity file field `id.key` names a local file; it must hold its PEM inline (`pem:`)"
    );
}

/// An unsigned IdP-style JWT for `sub` with expiry `exp` (seconds since the epoch).
fn idp_jwt(sub: &str, exp: u64) -> String {
    use base64::Engine;
    let claims = serde_json::json!({ "iss": "http://127.0.0.1:4444", "sub": sub, "aud": ["openziti"], "exp": exp });
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("eyJhbGciOiJSUzI1NiJ9.{payload}.c2lnbmF0dXJlLW5vdC1jaGVja2Vk")
}

fn ext_jwt_json(ca: &str, token: &str) -> Vec<u8> {
    serde_json::json!({ "ztAPI": "https://127.0.0.1:1280", "id": { "ca": ca }, "extJwt": token })
        .to_string()
        .into_bytes()
}

#[test]
fn an_ext_jwt_identity_loads_from_inline_json_and_answers_with_the_tokens_expiry() {
    let m = material(&rcgen::PKCS_ECDSA_P256_SHA256);
    let token = idp_jwt("gateway-idp", 2_000_000_000);
    let json = ext_jwt_json(&format!("pem:{}", m.ca), &token);

    for identity in [Identity::from_inline_json(&json).unwrap(), Identity::from_json(&json).unwrap()] {
        assert!(identity.is_ext_jwt());
        assert_eq!(identity.api_urls()[0].as_str(), "https://127.0.0.1:1280/");
        assert_eq!(identity.ca_certificates().len(), 1);
        assert!(identity.client_certificate().is_none(), "no certificate of its own");
        assert_eq!(
            identity.certificate_expires_at(),
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(2_000_000_000)
        );
        assert_eq!(identity.ext_jwt().unwrap().token.as_str(), token);
    }
}

#[test]
fn from_ext_jwt_builds_the_same_identity() {
    let m = material(&rcgen::PKCS_ECDSA_P256_SHA256);
    let token = idp_jwt("gateway-idp", 2_000_000_000);
    let api = reqwest::Url::parse("https://ctrl.example:1280/edge/client/v1").unwrap();

    let identity = Identity::from_ext_jwt(api, m.ca.as_bytes(), Zeroizing::new(token.clone())).unwrap();

    assert_eq!(identity.api_urls()[0].as_str(), "https://ctrl.example:1280/");
    assert_eq!(identity.ext_jwt().unwrap().subject, "gateway-idp");
    let plain_http = reqwest::Url::parse("http://ctrl.example:1280").unwrap();
    let err = Identity::from_ext_jwt(plain_http, m.ca.as_bytes(), Zeroizing::new(token)).unwrap_err();
    assert!(err.to_string().contains("ztAPI"), "{err}");
}

#[test]
fn debug_of_an_ext_jwt_identity_never_shows_the_token() {
    let m = material(&rcgen::PKCS_ECDSA_P256_SHA256);
    let token = idp_jwt("gateway-idp", 2_000_000_000);
    let identity = Identity::from_inline_json(&ext_jwt_json(&format!("pem:{}", m.ca), &token)).unwrap();

    let debug = format!("{identity:?} {:?}", identity.ext_jwt().unwrap());

    let payload = token.split('.').nth(1).unwrap();
    assert!(!debug.contains(payload) && !debug.contains("c2lnbmF0dXJl"), "{debug}");
    assert!(debug.contains("<redacted>") && debug.contains("gateway-idp"), "{debug}");
}

#[test]
fn bad_ext_jwt_identities_are_refused_naming_the_field_never_the_token() {
    let m = material(&rcgen::PKCS_ECDSA_P256_SHA256);
    let ca = format!("pem:{}", m.ca);
    let secret = "sEcReT-oPaQuE-tOkEn-value";
    let no_exp = {
        use base64::Engine;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"sub":"gateway-idp"}"#);
        format!("e30.{payload}.{secret}")
    };
    let with_cert = serde_json::json!({
        "ztAPI": "https://127.0.0.1:1280",
        "id": { "ca": ca, "cert": format!("pem:{}", m.cert), "key": format!("pem:{}", m.key) },
        "extJwt": idp_jwt("gateway-idp", 2_000_000_000)
    })
    .to_string();
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (ext_jwt_json(&ca, secret), "extJwt", "not a JWT"),
        (ext_jwt_json(&ca, &no_exp), "extJwt", "no expiry"),
        (with_cert.into_bytes(), "extJwt", "one or the other"),
        (ext_jwt_json("file:///etc/ziti/ca.pem", &idp_jwt("gateway-idp", 2_000_000_000)), "id.ca", "local file"),
    ];
    for (json, field, problem) in cases {
        let err = Identity::from_inline_json(&json).unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(text.contains(field) && text.contains(problem), "{text}");
        assert!(!text.contains(secret), "the token leaked: {text}");
    }
    let no_ca = serde_json::json!({ "ztAPI": "https://127.0.0.1:1280", "id": {}, "extJwt": idp_jwt("x", 1) });
    let err = Identity::from_inline_json(no_ca.to_string().as_bytes()).unwrap_err();
    assert!(matches!(err, IdentityError::Missing("id.ca")), "{err:?}");
}
