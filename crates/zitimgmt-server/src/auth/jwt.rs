//! The `jwt` caller-authentication method: an `authorization: Bearer <jwt>` verified
//! against a JWKS (signature, issuer, audience, expiry), the principal being the value
//! of a configured claim.
//!
//! Only asymmetric algorithms are accepted (RS*, PS*, ES256, ES384, EdDSA), each only
//! with a key of its type: `alg=none` and HS* are refused before any key is looked at,
//! so a public key can never serve as an HMAC secret. The JWKS (a file, or an https URL
//! such as an IdP's or SPIRE's bundle endpoint) is loaded on the first verification and
//! cached; a file is re-read when it changed, and a token naming an unknown key id
//! makes the JWKS be fetched again, at most once per [`MIN_REFETCH_INTERVAL`], so that
//! a flood of bad tokens cannot hammer the IdP. Keys not meant for JWT signatures
//! (`use` other than `sig`, or SPIRE's `jwt-svid`; symmetric keys) are ignored.
//!
//! Errors name the problem and never carry the token or key material.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How far `exp` and `nbf` may be off to allow for clock skew between the issuer and
/// this server; a token is refused at most this long after it expired.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// A token naming a key id the cached JWKS does not have makes the JWKS be fetched
/// again, but no sooner than this after the last fetch.
pub const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// How long fetching a JWKS over HTTP may take, connecting included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// A JWKS larger than this is refused (real ones are a few KiB).
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// A bearer token longer than this is refused unparsed.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// How much of a token's `alg` or `kid` an error shows.
const MAX_SHOWN_CHARS: usize = 64;

/// How the `jwt` method verifies bearer tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// The `iss` a token must carry, e.g. `https://spire.ziti-gateway.test`.
    pub issuer: String,
    /// The value `aud` must contain, e.g. `ziti-management`.
    pub audience: String,
    /// The claim whose value is the principal, e.g. `sub`; it must be a string.
    pub principal_claim: String,
    /// Where the keys come from.
    pub jwks: JwksSource,
}

/// Where the JWKS is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwksSource {
    /// A file, re-read when it changes.
    File(PathBuf),
    /// An https URL (http only to a loopback host), e.g. SPIRE's bundle endpoint.
    Url {
        /// Where to GET it.
        url: reqwest::Url,
        /// PEM certificates to trust for it instead of the system roots.
        ca_pem: Option<Vec<u8>>,
    },
}

/// Why a bearer token was refused, or the JWKS could not be had.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// The settings cannot work.
    #[error("invalid JWT settings: {what} {reason}")]
    Settings {
        /// Which setting.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Not a JWS in compact form.
    #[error("the bearer token is not a well-formed JWT: {reason}")]
    Malformed {
        /// What is wrong.
        reason: &'static str,
    },
    /// `none`, HS* or an unknown algorithm.
    #[error("the bearer token's algorithm {alg:?} is not allowed (only RS*, PS*, ES256, ES384 and EdDSA)")]
    AlgorithmNotAllowed {
        /// The token's `alg` (shortened).
        alg: String,
    },
    /// The token's algorithm is not one the key it names is for.
    #[error("the bearer token's algorithm {alg:?} does not fit the type or `alg` of JWKS key {kid:?}")]
    AlgorithmKeyMismatch {
        /// The token's `alg`.
        alg: String,
        /// The key's id (empty if it has none).
        kid: String,
    },
    /// The token has no `kid`, and the JWKS more than one key to choose from.
    #[error("the bearer token names no key id (kid) and the JWKS has more than one key")]
    KidRequired,
    /// No key of the JWKS has the token's `kid`, even after fetching it again.
    #[error("the bearer token's signing key {kid:?} is not in the JWKS")]
    UnknownKey {
        /// The token's `kid` (shortened; empty if it has none).
        kid: String,
    },
    /// The signature does not verify with the key the token names.
    #[error("the bearer token's signature does not verify")]
    BadSignature,
    /// `exp` has passed (more than [`LEEWAY`] ago).
    #[error("the bearer token has expired")]
    Expired,
    /// `nbf` is still ahead (more than [`LEEWAY`]).
    #[error("the bearer token is not valid yet (nbf)")]
    NotYetValid,
    /// `aud` does not contain the configured audience.
    #[error("the bearer token is for another audience")]
    WrongAudience,
    /// `iss` is not the configured issuer.
    #[error("the bearer token is from another issuer")]
    WrongIssuer,
    /// A claim every token must have (`exp`, `iss`, `aud`) is missing.
    #[error("the bearer token has no {claim} claim")]
    ClaimMissing {
        /// Which.
        claim: String,
    },
    /// A registered claim has the wrong type, or the payload is not a JSON object.
    #[error("the bearer token's {claim} claim is malformed")]
    ClaimMalformed {
        /// Which (`payload` for the whole).
        claim: String,
    },
    /// The configured principal claim is missing, empty or not a string.
    #[error("the bearer token's principal claim {claim:?} is missing, empty or not a string")]
    PrincipalClaim {
        /// The configured claim.
        claim: String,
    },
    /// The JWKS could not be read or fetched.
    #[error("the JWKS at {location} is unreachable or unreadable: {reason}")]
    JwksUnavailable {
        /// The file or URL (without credentials or query).
        location: String,
        /// Why.
        reason: String,
    },
    /// The JWKS was read but is not a JWKS with a usable key.
    #[error("the JWKS at {location} is not usable: {reason}")]
    JwksInvalid {
        /// The file or URL (without credentials or query).
        location: String,
        /// Why.
        reason: String,
    },
}

impl JwtError {
    /// Whether the JWKS could not be had (unreadable, unreachable, or not a usable
    /// JWKS): the caller's token may well be fine, so it should get UNAVAILABLE rather
    /// than UNAUTHENTICATED.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::JwksUnavailable { .. } | Self::JwksInvalid { .. })
    }
}

/// What a verified token says: its principal and all its claims (never the token).
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    /// The value of the configured principal claim.
    pub principal: String,
    /// The token's payload.
    pub claims: serde_json::Map<String, Value>,
}

/// Verifies bearer JWTs against a cached JWKS. Cheap to clone (the cache is shared).
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    issuer: String,
    audience: String,
    principal_claim: String,
    source: Source,
    cache: Mutex<Cache>,
}

enum Source {
    File(PathBuf),
    Url { url: reqwest::Url, client: reqwest::Client },
}

#[derive(Default)]
struct Cache {
    keys: Option<Vec<Arc<VerifyKey>>>,
    /// When the JWKS was last loaded or tried: paces loads after a failure and
    /// re-fetches for unknown key ids.
    loaded_at: Option<Instant>,
    /// The failure of the last load while no keys are cached, repeated until the next
    /// try is due.
    failure: Option<JwtError>,
    /// What the file looked like when read.
    stamp: Option<FileStamp>,
}

/// A file's identity and version: replacing it (rename) or rewriting it changes this.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

/// A usable key of the JWKS.
struct VerifyKey {
    kid: Option<String>,
    kind: KeyKind,
    /// The JWK's own `alg`, if it names one.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    /// Whether a token signed with `alg` can have been signed by a key of this kind.
    fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::{ES256, ES384, EdDSA, PS256, PS384, PS512, RS256, RS384, RS512};
        match self {
            Self::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            Self::P256 => alg == ES256,
            Self::P384 => alg == ES384,
            Self::Ed25519 => alg == EdDSA,
        }
    }
}

/// The algorithms a token may use: asymmetric only.
fn allowed(alg: Algorithm) -> bool {
    !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .field("principal_claim", &self.inner.principal_claim)
            .field("jwks", &self.inner.source.location())
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Checks the settings (non-empty issuer, audience and claim; an https URL, or http
    /// to a loopback host; a parsable `ca_pem`). Nothing is read yet: the JWKS is
    /// loaded on the first [`JwtVerifier::verify`].
    pub fn new(settings: JwtSettings) -> Result<Self, JwtError> {
        let JwtSettings { issuer, audience, principal_claim, jwks } = settings;
        for (what, value) in [("issuer", &issuer), ("audience", &audience), ("principal claim", &principal_claim)] {
            if value.trim().is_empty() {
                return Err(JwtError::Settings { what, reason: "is empty".to_owned() });
            }
        }
        let source = match jwks {
            JwksSource::File(path) => {
                if path.as_os_str().is_empty() {
                    return Err(JwtError::Settings { what: "JWKS file", reason: "is empty".to_owned() });
                }
                Source::File(path)
            }
            JwksSource::Url { url, ca_pem } => {
                let client = http_client(&url, ca_pem.as_deref())?;
                Source::Url { url, client }
            }
        };
        Ok(Self {
            inner: Arc::new(Inner { issuer, audience, principal_claim, source, cache: Mutex::new(Cache::default()) }),
        })
    }

    /// Verifies `token` (the JWT alone, without `Bearer `) and returns the value of the
    /// principal claim.
    pub async fn verify(&self, token: &str) -> Result<String, JwtError> {
        self.verify_claims(token).await.map(|verified| verified.principal)
    }

    /// Verifies `token` as [`JwtVerifier::verify`] does and returns the principal with
    /// all the token's claims (for provisioning, which maps a claim to role attributes).
    pub async fn verify_claims(&self, token: &str) -> Result<VerifiedToken, JwtError> {
        let header = TokenHeader::parse(token)?;
        let key = self.key_for(&header).await?;
        if !key.kind.fits(header.alg) || key.alg.is_some_and(|alg| alg != header.alg) {
            return Err(JwtError::AlgorithmKeyMismatch {
                alg: format!("{:?}", header.alg),
                kid: key.kid.as_deref().map(shown).unwrap_or_default(),
            });
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&[&self.inner.issuer]);
        validation.set_audience(&[&self.inner.audience]);
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key.key, &validation)
            .map_err(validation_error)?;
        let principal = match data.claims.get(&self.inner.principal_claim) {
            Some(Value::String(value)) if !value.is_empty() => value.clone(),
            _ => return Err(JwtError::PrincipalClaim { claim: self.inner.principal_claim.clone() }),
        };
        Ok(VerifiedToken { principal, claims: data.claims })
    }

    /// The key the token names, loading or re-loading the JWKS as needed.
    async fn key_for(&self, header: &TokenHeader) -> Result<Arc<VerifyKey>, JwtError> {
        let mut cache = self.inner.cache.lock().await;
        self.refresh(&mut cache).await?;
        if let Some(key) = select(&cache, header)? {
            return Ok(key);
        }
        // A key id we do not know: the issuer may have rotated its keys.
        if cache.loaded_at.is_none_or(|at| at.elapsed() >= MIN_REFETCH_INTERVAL) {
            self.load(&mut cache).await?;
            if let Some(key) = select(&cache, header)? {
                return Ok(key);
            }
        }
        Err(JwtError::UnknownKey { kid: header.kid.as_deref().map(shown).unwrap_or_default() })
    }

    /// Loads the JWKS if none is cached (no sooner than [`MIN_REFETCH_INTERVAL`] after
    /// a failed load), or re-reads the file if it changed.
    async fn refresh(&self, cache: &mut Cache) -> Result<(), JwtError> {
        if cache.keys.is_none() {
            if let (Some(failure), Some(at)) = (&cache.failure, cache.loaded_at)
                && at.elapsed() < MIN_REFETCH_INTERVAL
            {
                return Err(failure.clone());
            }
            return self.load(cache).await;
        }
        if let Source::File(path) = &self.inner.source {
            // A stat per verification, done inline: cheaper than a blocking-pool hop.
            let stamp = std::fs::metadata(path).ok().map(|meta| stamp_of(&meta));
            // A file that vanished (mid-replacement) keeps the keys read last.
            if stamp.is_some()
                && stamp != cache.stamp
                && let Err(err) = self.load(cache).await
            {
                tracing::warn!(error = %err, "the changed JWKS file is not usable; keeping the keys read before");
            }
        }
        Ok(())
    }

    /// Reads or fetches the JWKS into the cache. A failure keeps the keys cached
    /// before; with none cached, it is remembered and returned until the next try.
    async fn load(&self, cache: &mut Cache) -> Result<(), JwtError> {
        cache.loaded_at = Some(Instant::now());
        let location = self.inner.source.location();
        let loaded = match &self.inner.source {
            Source::File(path) => read_file(path, &location),
            Source::Url { url, client } => fetch(client, url, &location).await.map(|bytes| (bytes, None)),
        }
        .and_then(|(bytes, stamp)| parse_jwks(&bytes, &location).map(|keys| (keys, stamp)));
        match loaded {
            Ok((keys, stamp)) => {
                tracing::debug!(jwks = %location, keys = keys.len(), "JWKS loaded");
                cache.keys = Some(keys.into_iter().map(Arc::new).collect());
                cache.stamp = stamp;
                cache.failure = None;
                Ok(())
            }
            Err(err) => {
                if cache.keys.is_none() {
                    cache.failure = Some(err.clone());
                }
                Err(err)
            }
        }
    }
}

/// The key `header` names among the cached ones: by `kid`, or the only key when the
/// token has no `kid` (or the JWKS's only key has none).
fn select(cache: &Cache, header: &TokenHeader) -> Result<Option<Arc<VerifyKey>>, JwtError> {
    let Some(keys) = &cache.keys else { return Ok(None) };
    let position = match (&header.kid, keys.len()) {
        (Some(kid), _) => keys
            .iter()
            .position(|key| key.kid.as_deref() == Some(kid.as_str()))
            .or_else(|| (keys.len() == 1 && keys[0].kid.is_none()).then_some(0)),
        (None, 1) => Some(0),
        (None, 0) => None,
        (None, _) => return Err(JwtError::KidRequired),
    };
    Ok(position.map(|index| Arc::clone(&keys[index])))
}

impl Source {
    /// The file or URL for errors and logs: a URL without credentials, query or fragment.
    fn location(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Url { url, .. } => format!("{}{}", url.origin().ascii_serialization(), url.path()),
        }
    }
}

/// The client for an https JWKS URL, or http to a loopback host.
fn http_client(url: &reqwest::Url, ca_pem: Option<&[u8]>) -> Result<reqwest::Client, JwtError> {
    let what = "JWKS URL";
    let loopback = url.host_str().is_some_and(|host| {
        host.eq_ignore_ascii_case("localhost")
            || host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    });
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(JwtError::Settings { what, reason: "must be https unless its host is loopback".to_owned() });
        }
        other => return Err(JwtError::Settings { what, reason: format!("has scheme {other:?}, not https") }),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(JwtError::Settings { what, reason: "must not carry credentials".to_owned() });
    }
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        // A redirect could lead to plain http elsewhere: follow none.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(FETCH_TIMEOUT)
        .timeout(FETCH_TIMEOUT);
    if let Some(pem) = ca_pem {
        let certificates = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|_| JwtError::Settings { what: "JWKS CA", reason: "is not PEM certificates".to_owned() })?;
        if certificates.is_empty() {
            return Err(JwtError::Settings { what: "JWKS CA", reason: "holds no certificate".to_owned() });
        }
        builder = builder.tls_built_in_root_certs(false);
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder.build().map_err(|err| JwtError::Settings { what: "JWKS URL", reason: err.to_string() })
}

/// Reads the JWKS file inline: it is small (at most [`MAX_JWKS_BYTES`]) and read only
/// when it changed.
fn read_file(path: &std::path::Path, location: &str) -> Result<(Vec<u8>, Option<FileStamp>), JwtError> {
    let unavailable =
        |err: std::io::Error| JwtError::JwksUnavailable { location: location.to_owned(), reason: err.to_string() };
    // The stamp is taken before reading: a change during the read is seen next time.
    let stamp = stamp_of(&std::fs::metadata(path).map_err(unavailable)?);
    if stamp.len > MAX_JWKS_BYTES as u64 {
        return Err(JwtError::JwksInvalid {
            location: location.to_owned(),
            reason: format!("is larger than {MAX_JWKS_BYTES} bytes"),
        });
    }
    let bytes = std::fs::read(path).map_err(unavailable)?;
    Ok((bytes, Some(stamp)))
}

fn stamp_of(meta: &std::fs::Metadata) -> FileStamp {
    use std::os::unix::fs::MetadataExt as _;
    FileStamp { modified: meta.modified().ok(), len: meta.len(), inode: meta.ino() }
}

async fn fetch(client: &reqwest::Client, url: &reqwest::Url, location: &str) -> Result<Vec<u8>, JwtError> {
    let unavailable = |reason: String| JwtError::JwksUnavailable { location: location.to_owned(), reason };
    let mut response = client
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|err| unavailable(with_causes(err.without_url())))?;
    let status = response.status();
    if !status.is_success() {
        return Err(unavailable(format!("HTTP status {status}")));
    }
    let too_large = || JwtError::JwksInvalid {
        location: location.to_owned(),
        reason: format!("is larger than {MAX_JWKS_BYTES} bytes"),
    };
    if response.content_length().is_some_and(|len| len > MAX_JWKS_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|err| unavailable(with_causes(err.without_url())))? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An HTTP error with its causes ("error sending request" alone does not say that the
/// connection was refused or timed out).
fn with_causes(err: reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut cause = std::error::Error::source(&err);
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// The usable keys of a JWKS. Each key is judged alone, from the raw JSON: one that is
/// not for JWT signatures, or that this server cannot use, is skipped rather than
/// failing the set (SPIFFE bundles mix X.509 roots with JWT keys).
fn parse_jwks(bytes: &[u8], location: &str) -> Result<Vec<VerifyKey>, JwtError> {
    let invalid = |reason: String| JwtError::JwksInvalid { location: location.to_owned(), reason };
    // serde_json's messages can quote the input: only the position is shown.
    let document: Value = serde_json::from_slice(bytes)
        .map_err(|err| invalid(format!("not JSON (line {}, column {})", err.line(), err.column())))?;
    let raw_keys =
        document.get("keys").and_then(Value::as_array).ok_or_else(|| invalid("has no keys array".to_owned()))?;
    let mut keys = Vec::new();
    for (index, raw) in raw_keys.iter().enumerate() {
        match signing_key(raw) {
            Ok(Some(key)) => keys.push(key),
            Ok(None) => {}
            Err(reason) => {
                let kid = raw.get("kid").and_then(Value::as_str).map(shown);
                tracing::warn!(jwks = %location, index, kid, reason, "JWKS key skipped");
            }
        }
    }
    if keys.is_empty() {
        return Err(invalid("has no usable JWT signing key (RSA, EC P-256/P-384 or Ed25519)".to_owned()));
    }
    Ok(keys)
}

/// `Ok(None)` for a key not meant for JWT signatures, `Err` for one that is but
/// cannot be used.
fn signing_key(raw: &Value) -> Result<Option<VerifyKey>, &'static str> {
    match raw.get("use") {
        None => {}
        // SPIRE marks its JWT-SVID keys `jwt-svid` (and its X.509 roots `x509-svid`).
        Some(Value::String(usage)) if usage == "sig" || usage == "jwt-svid" => {}
        Some(_) => return Ok(None),
    }
    if raw.get("kty").and_then(Value::as_str) == Some("oct") {
        return Ok(None); // A shared secret: never, see `allowed`.
    }
    let jwk: Jwk = serde_json::from_value(raw.clone()).map_err(|_| "not a JWK")?;
    if jwk.common.key_operations.as_ref().is_some_and(|ops| !ops.contains(&KeyOperations::Verify)) {
        return Ok(None);
    }
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyKind::Rsa,
        AlgorithmParameters::EllipticCurve(params) => match params.curve {
            EllipticCurve::P256 => KeyKind::P256,
            EllipticCurve::P384 => KeyKind::P384,
            _ => return Err("its curve is not supported"),
        },
        AlgorithmParameters::OctetKeyPair(params) if params.curve == EllipticCurve::Ed25519 => KeyKind::Ed25519,
        _ => return Err("its key type is not supported"),
    };
    let alg = match raw.get("alg") {
        None => None,
        Some(alg) => {
            let alg = alg.as_str().and_then(|alg| Algorithm::from_str(alg).ok()).ok_or("its alg is not supported")?;
            if !allowed(alg) || !kind.fits(alg) {
                return Err("its alg does not fit its key type");
            }
            Some(alg)
        }
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| "its key parameters are invalid")?;
    Ok(Some(VerifyKey { kid: jwk.common.key_id, kind, alg, key }))
}

/// What verification needs from a token's header, read before any key is chosen.
struct TokenHeader {
    alg: Algorithm,
    kid: Option<String>,
}

impl TokenHeader {
    fn parse(token: &str) -> Result<Self, JwtError> {
        let malformed = |reason| JwtError::Malformed { reason };
        if token.len() > MAX_TOKEN_BYTES {
            return Err(malformed("too long"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(_payload), Some(_signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("not three dot-separated parts"));
        };
        let header = URL_SAFE_NO_PAD.decode(header).map_err(|_| malformed("its header is not base64url"))?;
        let header: Value = serde_json::from_slice(&header).map_err(|_| malformed("its header is not JSON"))?;
        let alg = header.get("alg").and_then(Value::as_str).ok_or_else(|| malformed("its header has no alg"))?;
        let alg = match Algorithm::from_str(alg) {
            Ok(parsed) if allowed(parsed) => parsed,
            _ => return Err(JwtError::AlgorithmNotAllowed { alg: shown(alg) }),
        };
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(malformed("its kid is not a string")),
        };
        Ok(Self { alg, kid })
    }
}

/// An attacker-chosen header value, made safe and short for an error message.
fn shown(value: &str) -> String {
    value.chars().take(MAX_SHOWN_CHARS).map(|c| if c.is_ascii_graphic() { c } else { '?' }).collect()
}

fn validation_error(err: jsonwebtoken::errors::Error) -> JwtError {
    use jsonwebtoken::errors::ErrorKind;
    match err.kind() {
        ErrorKind::InvalidSignature => JwtError::BadSignature,
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidAudience => JwtError::WrongAudience,
        ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(claim) => JwtError::ClaimMissing { claim: claim.clone() },
        ErrorKind::InvalidClaimFormat(claim) => JwtError::ClaimMalformed { claim: claim.clone() },
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => JwtError::ClaimMalformed { claim: "payload".to_owned() },
        ErrorKind::Base64(_) | ErrorKind::InvalidToken => {
            JwtError::Malformed { reason: "a part is not valid base64url" }
        }
        // A key that parsed but cannot verify (e.g. a point off its curve), or an
        // algorithm the key refuses: the signature cannot be verified either way.
        _ => JwtError::BadSignature,
    }
}

#[cfg(test)]
mod tests;
