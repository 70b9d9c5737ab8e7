use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;

const ISSUER: &str = "https://idp.example.test";
const AUDIENCE: &str = "ziti-management";
const SUBJECT: &str = "spiffe://example.test/gateway";

/// A signing key made for the test and its public JWK.
struct TestKey {
    alg: Algorithm,
    kid: Option<String>,
    encoding: EncodingKey,
    jwk: Value,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn ec_key(alg: Algorithm, kid: Option<&str>) -> TestKey {
    let (rcgen_alg, crv, coordinate) = match alg {
        Algorithm::ES256 => (&rcgen::PKCS_ECDSA_P256_SHA256, "P-256", 32),
        Algorithm::ES384 => (&rcgen::PKCS_ECDSA_P384_SHA384, "P-384", 48),
        other => unreachable!("not an EC algorithm: {other:?}"),
    };
    let pair = rcgen::KeyPair::generate_for(rcgen_alg).unwrap();
    // Uncompressed SEC1 point: 0x04 || x || y.
    let point = pair.public_key_raw();
    let mut jwk = json!({
        "kty": "EC", "crv": crv, "use": "sig",
        "x": b64(&point[1..=coordinate]), "y": b64(&point[1 + coordinate..]),
    });
    if let Some(kid) = kid {
        jwk["kid"] = json!(kid);
    }
    TestKey { alg, kid: kid.map(str::to_owned), encoding: EncodingKey::from_ec_der(&pair.serialize_der()), jwk }
}

fn ed_key(kid: &str) -> TestKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let jwk = json!({ "kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(pair.public_key_raw()) });
    TestKey {
        alg: Algorithm::EdDSA,
        kid: Some(kid.to_owned()),
        encoding: EncodingKey::from_ed_der(&pair.serialize_der()),
        jwk,
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Claims that pass: right issuer and audience, five minutes left.
fn claims() -> Value {
    json!({ "iss": ISSUER, "aud": [AUDIENCE], "sub": SUBJECT, "iat": now(), "exp": now() + 300 })
}

fn sign(key: &TestKey, claims: &Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = key.kid.clone();
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

fn write_jwks(path: &Path, keys: &[&TestKey]) {
    let jwks = json!({ "keys": keys.iter().map(|key| key.jwk.clone()).collect::<Vec<_>>() });
    write_replacing(path, &jwks.to_string());
}

/// Writes beside `path` and renames over it, as a rotating issuer would.
fn write_replacing(path: &Path, text: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, path).unwrap();
}

fn settings(jwks: JwksSource) -> JwtSettings {
    JwtSettings { issuer: ISSUER.to_owned(), audience: AUDIENCE.to_owned(), principal_claim: "sub".to_owned(), jwks }
}

/// A verifier of a JWKS file holding `keys`, and the file's directory.
fn verifier_of(keys: &[&TestKey]) -> (JwtVerifier, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    write_jwks(&path, keys);
    (JwtVerifier::new(settings(JwksSource::File(path))).unwrap(), dir)
}

/// The error `token` is refused with, checked not to repeat the token.
async fn refused(verifier: &JwtVerifier, token: &str) -> JwtError {
    let err = verifier.verify(token).await.expect_err("the token must be refused");
    let message = err.to_string();
    for part in token.split('.').filter(|part| part.len() > 8) {
        assert!(!message.contains(part), "the error repeats the token: {message}");
    }
    err
}

#[tokio::test]
async fn a_valid_token_gives_the_principal_claim() {
    let key = ec_key(Algorithm::ES256, Some("k1"));
    let (verifier, _dir) = verifier_of(&[&key]);
    assert_eq!(verifier.verify(&sign(&key, &claims())).await.unwrap(), SUBJECT);
}

#[tokio::test]
async fn verify_claims_gives_the_principal_and_every_claim_and_refuses_as_verify_does() {
    let key = ec_key(Algorithm::ES256, Some("k1"));
    let (verifier, _dir) = verifier_of(&[&key]);
    let mut with_scopes = claims();
    with_scopes["scp"] = json!(["gateway-hosts", "other"]);
    let verified = verifier.verify_claims(&sign(&key, &with_scopes)).await.unwrap();
    assert_eq!(verified.principal, SUBJECT);
    assert_eq!(verified.claims.get("scp"), Some(&json!(["gateway-hosts", "other"])));
    assert_eq!(verified.claims.get("iss"), Some(&json!(ISSUER)));
    let mut expired = with_scopes;
    expired["exp"] = json!(now() - 3600);
    let err = verifier.verify_claims(&sign(&key, &expired)).await.unwrap_err();
    assert!(matches!(err, JwtError::Expired), "{err:?}");
}

#[tokio::test]
async fn es384_and_eddsa_keys_are_accepted_too() {
    let p384 = ec_key(Algorithm::ES384, Some("p384"));
    let ed = ed_key("ed");
    let (verifier, _dir) = verifier_of(&[&p384, &ed]);
    assert_eq!(verifier.verify(&sign(&p384, &claims())).await.unwrap(), SUBJECT);
    assert_eq!(verifier.verify(&sign(&ed, &claims())).await.unwrap(), SUBJECT);
}

#[tokio::test]
async fn the_principal_is_the_configured_claim() {
    let key = ec_key(Algorithm::ES256, Some("k1"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    write_jwks(&path, &[&key]);
    let verifier =
        JwtVerifier::new(JwtSettings { principal_claim: "email".to_owned(), ..settings(JwksSource::File(path)) })
            .unwrap();
    let mut with_email = claims();
    with_email["email"] = json!("ops@example.test");
    assert_eq!(verifier.verify(&sign(&key, &with_email)).await.unwrap(), "ops@example.test");
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let key = ec_key(Algorithm::ES256, Some("k1"));
    let (verifier, _dir) = verifier_of(&[&key]);
    let mut expired = claims();
    expired["exp"] = json!(now() - LEEWAY.as_secs() as i64 - 10);
    assert!(matches!(refused(&verifier, &sign(&key, &expired)).await, JwtError::Expired));
}

#[tokio::test]
async fn a_token_without_exp_is_refused() {
    let key = ec_key(Algorithm::ES256, Some("k1"));
    let (verifier, _dir) = verifier_of(&[&key]);
    let mut forever = claims();
    forever.as_object_mut().unwrap().remove("exp");
    let err = refused(&verifier, &sign(&key, &forever)).await;
    assert!(matches!(&err, JwtError::ClaimMissing { claim } if claim == "exp"), "{err:?}");
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let key = ec_key(Algorithm::ES256, Some("k1"));
    let (verifier, _dir) = verifier_of(&[&key]);
    let mut other = claims();
    other["aud"] = json!(["someone-else"]);
    assert!(matches!(refused(&verifier, &sign(&key, &other)).await, JwtError::WrongAudience));
}

#[tokio::test]
async fn a_token_from_another_issuer_is_refused() {
    let key = ec_key(Algorithm::ES256, Some("k1"));
    let (verifier, _dir) = verifier_of(&[&key]);
    let mut other = claims();
    other["iss"] = json!("https://evil.example.test");
    assert!(matches!(refused(&verifier, &sign(&key, &other)).await, JwtError::WrongIssuer));
}

#[tokio::test]
async fn a_token_signed_by_a_key_not_in_the_jwks_is_refused() {
    let trusted = ec_key(Algorithm::ES256, Some("k1"));
    let (verifier, _dir) = verifier_of(&[&trusted]);
    let stranger = ec_key(Algorithm::ES256, Some("k2"));
    let err = refused(&verifier, &sign(&stranger, &claims())).await;
    assert!(matches!(&err, JwtError::UnknownKey { kid } if kid == "k2"), "{err:?}");
    assert!(!err.is_unavailable());
}

#[tokio::test]
async fn a_token_signed_by_another_key_under_a_known_kid_is_refused() {
    let trusted = ec_key(Algorithm::ES256, Some("k1"));
    let (verifier, _dir) = verifier_of(&[&trusted]);
    let impostor = ec_key(Algorithm::ES256, Some("k1"));
    assert!(matches!(refused(&verifier, &sign(&impostor, &claims())).await, JwtError::BadSignature));
}

#[tokio::test]
async fn alg_none_is_refused() {
    let key = ec_key(Algorithm::ES256, Some("k1"));
    let (verifier, _dir) = verifier_of(&[&key]);
    let header = b64(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
    let token = format!("{header}.{}.", b64(claims().to_string().as_bytes()));
    let err = refused(&verifier, &token).await;
    assert!(matches!(&err, JwtError::AlgorithmNotAllowed { alg } if alg == "none"), "{err:?}");
}

#[tokio::test]
async fn hs256_with_the_public_key_as_secret_is_refused() {
    let key = ec_key(Algorithm::ES256, Some("k1"));
    let (verifier, _dir) = verifier_of(&[&key]);
    // Algorithm confusion: HMAC keyed with what the server knows as a public key.
    let secret = key.jwk.to_string();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".to_owned());
    let token =
        jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(secret.as_bytes()).unwrap()).unwrap();
    let err = refused(&verifier, &token).await;
    assert!(matches!(&err, JwtError::AlgorithmNotAllowed { alg } if alg == "HS256"), "{err:?}");
}

#[tokio::test]
async fn an_algorithm_not_fitting_the_key_type_is_refused() {
    let p256 = ec_key(Algorithm::ES256, Some("k1"));
    let (verifier, _dir) = verifier_of(&[&p256]);
    // A P-384 signature presented as from the P-256 key.
    let p384 = ec_key(Algorithm::ES384, Some("k1"));
    let err = refused(&verifier, &sign(&p384, &claims())).await;
    assert!(matches!(&err, JwtError::AlgorithmKeyMismatch { alg, .. } if alg == "ES384"), "{err:?}");
}

#[tokio::test]
async fn a_missing_principal_claim_is_refused() {
    let key = ec_key(Algorithm::ES256, Some("k1"));
    let (verifier, _dir) = verifier_of(&[&key]);
    let mut no_sub = claims();
    no_sub.as_object_mut().unwrap().remove("sub");
    let err = refused(&verifier, &sign(&key, &no_sub)).await;
    assert!(matches!(&err, JwtError::PrincipalClaim { claim } if claim == "sub"), "{err:?}");
    let mut number_sub = claims();
    number_sub["sub"] = json!(42);
    let err = refused(&verifier, &sign(&key, &number_sub)).await;
    assert!(matches!(&err, JwtError::PrincipalClaim { claim } if claim == "sub"), "{err:?}");
}

#[tokio::test]
async fn a_token_without_kid_is_refused_when_the_jwks_has_several_keys() {
    let first = ec_key(Algorithm::ES256, None);
    let second = ec_key(Algorithm::ES256, Some("k2"));
    let (verifier, _dir) = verifier_of(&[&first, &second]);
    assert!(matches!(refused(&verifier, &sign(&first, &claims())).await, JwtError::KidRequired));
}

#[tokio::test]
async fn a_token_without_kid_is_accepted_when_the_jwks_has_one_key() {
    let only = ec_key(Algorithm::ES256, None);
    let (verifier, _dir) = verifier_of(&[&only]);
    assert_eq!(verifier.verify(&sign(&only, &claims())).await.unwrap(), SUBJECT);
}

#[tokio::test]
async fn a_replaced_jwks_file_is_read_again() {
    let old = ec_key(Algorithm::ES256, Some("k1"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    write_jwks(&path, &[&old]);
    let verifier = JwtVerifier::new(settings(JwksSource::File(path.clone()))).unwrap();
    assert_eq!(verifier.verify(&sign(&old, &claims())).await.unwrap(), SUBJECT);

    // The same key id, a new key: only the file's change can reveal it.
    let new = ec_key(Algorithm::ES256, Some("k1"));
    let new_token = sign(&new, &claims());
    assert!(matches!(refused(&verifier, &new_token).await, JwtError::BadSignature));
    write_jwks(&path, &[&new]);
    assert_eq!(verifier.verify(&new_token).await.unwrap(), SUBJECT);
    assert!(matches!(refused(&verifier, &sign(&old, &claims())).await, JwtError::BadSignature));
}

#[tokio::test]
async fn a_broken_rewrite_of_the_jwks_file_keeps_the_keys_read_before() {
    let key = ec_key(Algorithm::ES256, Some("k1"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    write_jwks(&path, &[&key]);
    let verifier = JwtVerifier::new(settings(JwksSource::File(path.clone()))).unwrap();
    let token = sign(&key, &claims());
    assert_eq!(verifier.verify(&token).await.unwrap(), SUBJECT);
    write_replacing(&path, "{\"keys\": [");
    assert_eq!(verifier.verify(&token).await.unwrap(), SUBJECT);
}

#[tokio::test]
async fn a_spiffe_bundle_yields_its_jwt_svid_keys_only() {
    let jwt_key = ec_key(Algorithm::ES256, Some("jwt-authority"));
    let x509_root = ec_key(Algorithm::ES256, None);
    let mut jwt_jwk = jwt_key.jwk.clone();
    jwt_jwk["use"] = json!("jwt-svid");
    let mut x509_jwk = x509_root.jwk.clone();
    x509_jwk["use"] = json!("x509-svid");
    x509_jwk["x5c"] = json!(["MIIBkTCCATegAwIBAgIBADAK"]);
    // As `spire-server bundle show -format spiffe` prints it, plus a key of an unknown type.
    let bundle = json!({
        "keys": [x509_jwk, jwt_jwk, { "kty": "future", "use": "sig", "kid": "odd" }],
        "spiffe_sequence": 3,
        "spiffe_refresh_hint": 300,
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bundle.json");
    write_replacing(&path, &bundle.to_string());
    let verifier = JwtVerifier::new(settings(JwksSource::File(path))).unwrap();
    assert_eq!(verifier.verify(&sign(&jwt_key, &claims())).await.unwrap(), SUBJECT);
    // The X.509 root is the only key without a kid; were it kept, it would verify this.
    let by_root = sign(&x509_root, &claims());
    assert!(matches!(refused(&verifier, &by_root).await, JwtError::BadSignature));
}

#[tokio::test]
async fn an_unreadable_jwks_file_makes_the_verifier_unavailable() {
    let key = ec_key(Algorithm::ES256, Some("k1"));
    let dir = tempfile::tempdir().unwrap();
    let verifier = JwtVerifier::new(settings(JwksSource::File(dir.path().join("missing.json")))).unwrap();
    let err = refused(&verifier, &sign(&key, &claims())).await;
    assert!(matches!(err, JwtError::JwksUnavailable { .. }), "{err:?}");
    assert!(err.is_unavailable());
}

#[tokio::test]
async fn a_jwks_without_a_usable_key_makes_the_verifier_unavailable() {
    let key = ec_key(Algorithm::ES256, Some("k1"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    // A shared secret is never a verification key.
    write_replacing(&path, r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"k1"}]}"#);
    let verifier = JwtVerifier::new(settings(JwksSource::File(path))).unwrap();
    let err = refused(&verifier, &sign(&key, &claims())).await;
    assert!(matches!(err, JwtError::JwksInvalid { .. }), "{err:?}");
    assert!(err.is_unavailable());
    assert!(!err.to_string().contains("c2VjcmV0"), "{err}");
}

#[test]
fn a_jwks_url_must_be_https_unless_loopback() {
    let url = |text: &str| JwksSource::Url { url: text.parse().unwrap(), ca_pem: None };
    for bad in ["http://idp.example.test/jwks", "ftp://127.0.0.1/jwks", "https://user:pw@idp.example.test/jwks"] {
        let err = JwtVerifier::new(settings(url(bad))).unwrap_err();
        assert!(matches!(err, JwtError::Settings { what: "JWKS URL", .. }), "{bad}: {err:?}");
    }
    for good in
        ["https://idp.example.test/jwks", "http://127.0.0.1:8081/jwks", "http://[::1]/jwks", "http://localhost/"]
    {
        JwtVerifier::new(settings(url(good))).unwrap_or_else(|err| panic!("{good}: {err}"));
    }
}

#[test]
fn empty_settings_are_refused() {
    let path = JwksSource::File("/nonexistent/jwks.json".into());
    let empty_issuer = JwtSettings { issuer: String::new(), ..settings(path.clone()) };
    assert!(matches!(JwtVerifier::new(empty_issuer), Err(JwtError::Settings { what: "issuer", .. })));
    let empty_claim = JwtSettings { principal_claim: " ".to_owned(), ..settings(path) };
    assert!(matches!(JwtVerifier::new(empty_claim), Err(JwtError::Settings { what: "principal claim", .. })));
}

/// Serves `body` as the JWKS over plain HTTP on loopback, counting the requests.
fn serve_jwks(body: String) -> (reqwest::Url, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap()).parse().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&requests);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buf = [0_u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            counted.fetch_add(1, Ordering::SeqCst);
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (url, requests)
}

#[tokio::test]
async fn unknown_key_ids_refetch_the_jwks_at_most_once_per_interval() {
    let key = ec_key(Algorithm::ES256, Some("k1"));
    let (url, requests) = serve_jwks(json!({ "keys": [key.jwk] }).to_string());
    let verifier = JwtVerifier::new(settings(JwksSource::Url { url, ca_pem: None })).unwrap();
    assert_eq!(verifier.verify(&sign(&key, &claims())).await.unwrap(), SUBJECT);
    assert_eq!(requests.load(Ordering::SeqCst), 1, "the first verification fetches the JWKS");

    // The first unknown kid would be allowed a re-fetch, but the JWKS was fetched just now.
    let stranger = ec_key(Algorithm::ES256, Some("k2"));
    for _ in 0..20 {
        assert!(matches!(refused(&verifier, &sign(&stranger, &claims())).await, JwtError::UnknownKey { .. }));
    }
    assert_eq!(requests.load(Ordering::SeqCst), 1, "a flood of unknown kids fetched the JWKS again");

    tokio::time::pause();
    tokio::time::advance(MIN_REFETCH_INTERVAL).await;
    tokio::time::resume();
    for _ in 0..20 {
        assert!(matches!(refused(&verifier, &sign(&stranger, &claims())).await, JwtError::UnknownKey { .. }));
    }
    assert_eq!(requests.load(Ordering::SeqCst), 2, "after the interval, one re-fetch and no more");
    assert_eq!(verifier.verify(&sign(&key, &claims())).await.unwrap(), SUBJECT);
}

#[tokio::test]
async fn a_jwks_url_that_does_not_answer_makes_the_verifier_unavailable() {
    let key = ec_key(Algorithm::ES256, Some("k1"));
    // A port just released: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/jwks.json").parse().unwrap();
    let verifier = JwtVerifier::new(settings(JwksSource::Url { url, ca_pem: None })).unwrap();
    let err = refused(&verifier, &sign(&key, &claims())).await;
    assert!(matches!(err, JwtError::JwksUnavailable { .. }), "{err:?}");
    assert!(err.is_unavailable());
    assert!(err.to_string().contains("refused"), "the cause is not named: {err}");
}
