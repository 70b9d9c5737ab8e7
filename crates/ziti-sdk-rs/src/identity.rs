//! The standard OpenZiti identity file: `ztAPI`/`ztAPIs` and `id.{cert,key,ca}`, each
//! value inline (`pem:...`) or a reference (`file://...`); or, for an identity whose
//! credential is an external IdP's JWT, `ztAPI`, `id.ca` and `extJwt`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::error::IdentityError;

/// A loaded identity: controller URLs, trusted CAs, and a credential: a certificate
/// chain with its private key, or an external IdP's JWT (an "ext-jwt" identity, which
/// logs in with the token and gets its router certificate from the controller).
///
/// The key and the token live in zeroizing memory and `Debug` never shows them.
pub struct Identity {
    api_urls: Vec<reqwest::Url>,
    ca: Vec<CertificateDer<'static>>,
    credential: Credential,
}

enum Credential {
    Certificate { cert_chain: Vec<CertificateDer<'static>>, key: Zeroizing<PrivateKeyDer<'static>>, leaf: Leaf },
    ExtJwt(ExtJwt),
}

/// An external IdP's JWT and what the SDK reads from it (unverified: the controller
/// verifies it against the IdP's keys).
#[derive(Clone)]
pub(crate) struct ExtJwt {
    pub(crate) token: Zeroizing<String>,
    /// The `sub` claim, for logs and errors (not secret).
    pub(crate) subject: String,
    pub(crate) expires_at: SystemTime,
}

/// What logs and rotation need from the leaf certificate (nothing secret).
struct Leaf {
    serial: String,
    not_after: SystemTime,
    not_after_text: String,
}

#[derive(Deserialize)]
struct RawIdentity {
    #[serde(rename = "ztAPI")]
    zt_api: Option<String>,
    #[serde(rename = "ztAPIs")]
    zt_apis: Option<Vec<String>>,
    id: Option<RawMaterial>,
    #[serde(rename = "extJwt")]
    ext_jwt: Option<Zeroizing<String>>,
}

#[derive(Deserialize)]
struct RawMaterial {
    cert: Option<String>,
    key: Option<Zeroizing<String>>,
    ca: Option<String>,
}

impl Identity {
    /// Reads and validates an identity file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, IdentityError> {
        let path = path.as_ref();
        let bytes = read_secret(path)?;
        Self::from_json(&bytes)
    }

    /// Parses and validates identity JSON held in memory.
    pub fn from_json(bytes: &[u8]) -> Result<Self, IdentityError> {
        Self::parse_json(bytes, Values::InlineOrFile)
    }

    /// Like [`Identity::from_json`], for identity JSON handed out by someone else (a
    /// lease, a rotation): every value must be inline (`pem:` or bare PEM); one that
    /// names a local file (`file://`) is refused, never read.
    pub fn from_inline_json(bytes: &[u8]) -> Result<Self, IdentityError> {
        Self::parse_json(bytes, Values::InlineOnly)
    }

    fn parse_json(bytes: &[u8], values: Values) -> Result<Self, IdentityError> {
        let raw: RawIdentity = serde_json::from_slice(bytes)
            .map_err(|err| IdentityError::Json { line: err.line(), column: err.column() })?;
        let mut api_urls = Vec::new();
        for url in raw.zt_api.iter().chain(raw.zt_apis.iter().flatten()) {
            let parsed = parse_api_url(url)?;
            if !api_urls.contains(&parsed) {
                api_urls.push(parsed);
            }
        }
        if api_urls.is_empty() {
            return Err(IdentityError::Missing("ztAPI"));
        }
        let id = raw.id.ok_or(IdentityError::Missing("id"))?;
        if let Some(token) = raw.ext_jwt {
            if id.cert.is_some() || id.key.is_some() {
                return Err(IdentityError::Field {
                    field: "extJwt",
                    problem: "is given together with id.cert/id.key; an identity has one or the other".to_owned(),
                });
            }
            let ca_pem = load_value("id.ca", id.ca.as_deref(), values)?;
            return Self::ext_jwt_parts(api_urls, &ca_pem, token);
        }
        let cert_pem = load_value("id.cert", id.cert.as_deref(), values)?;
        let ca_pem = load_value("id.ca", id.ca.as_deref(), values)?;
        let key_pem = load_value("id.key", id.key.as_ref().map(|key| key.as_str()), values)?;
        Self::from_parts(api_urls, &cert_pem, &key_pem, &ca_pem)
    }

    /// An identity from PEM held in memory (e.g. a SPIFFE X.509-SVID): the controller's
    /// client API URLs, the certificate chain (leaf first, then the intermediates the
    /// controller needs to reach a CA it trusts), the leaf's private key (PKCS#8, SEC1 or
    /// PKCS#1) and the CAs that sign the controller's and routers' certificates. Errors
    /// name the part at fault with the identity file's field names (`ztAPI`, `id.cert`,
    /// `id.key`, `id.ca`).
    pub fn from_pem(
        api_urls: &[impl AsRef<str>],
        cert_chain_pem: &[u8],
        key_pem: &[u8],
        ca_pem: &[u8],
    ) -> Result<Self, IdentityError> {
        let mut urls = Vec::new();
        for url in api_urls {
            let parsed = parse_api_url(url.as_ref())?;
            if !urls.contains(&parsed) {
                urls.push(parsed);
            }
        }
        if urls.is_empty() {
            return Err(IdentityError::Missing("ztAPI"));
        }
        Self::from_parts(urls, cert_chain_pem, key_pem, ca_pem)
    }

    fn from_parts(
        api_urls: Vec<reqwest::Url>,
        cert_pem: &[u8],
        key_pem: &[u8],
        ca_pem: &[u8],
    ) -> Result<Self, IdentityError> {
        let cert_chain = certificates("id.cert", cert_pem)?;
        let ca = certificates("id.ca", ca_pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|err| IdentityError::Field {
            field: "id.key",
            problem: format!("holds no usable private key ({})", pem_problem(&err)),
        })?;
        let key = Zeroizing::new(key);
        // Refuse keys rustls cannot sign with now, rather than at the first TLS handshake.
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|_| IdentityError::Field {
            field: "id.key",
            problem: "is not an EC (P-256/P-384), RSA or Ed25519 key".to_owned(),
        })?;
        let leaf = leaf_summary(&cert_chain)?;
        Ok(Self { api_urls, ca, credential: Credential::Certificate { cert_chain, key, leaf } })
    }

    /// An identity whose credential is an external IdP's JWT (OpenZiti "ext-jwt"): the
    /// controller's client API URL, the CAs that sign the controller's and routers'
    /// certificates, and the token. The controller must trust the IdP (an ext-jwt
    /// signer) and know an identity whose external id matches the token's claim. The
    /// SDK logs in with the token and asks the controller for a short-lived client
    /// certificate for the routers; it never fetches tokens itself: give it a new one
    /// with [`crate::ZitiContext::update_identity`] before this one expires
    /// ([`Identity::certificate_expires_at`]), for the logins to come.
    ///
    /// The token must be a JWT with an `exp` claim; it is not verified here. Errors
    /// name the field (`ztAPI`, `id.ca`, `extJwt`) and never quote the token.
    pub fn from_ext_jwt(api_url: reqwest::Url, ca_pem: &[u8], token: Zeroizing<String>) -> Result<Self, IdentityError> {
        let api_urls = vec![parse_api_url(api_url.as_str())?];
        Self::ext_jwt_parts(api_urls, ca_pem, token)
    }

    fn ext_jwt_parts(
        api_urls: Vec<reqwest::Url>,
        ca_pem: &[u8],
        token: Zeroizing<String>,
    ) -> Result<Self, IdentityError> {
        let ca = certificates("id.ca", ca_pem)?;
        let token = Zeroizing::new(token.trim().to_owned());
        let claims = crate::controller::claims(&token).map_err(|_| IdentityError::Field {
            field: "extJwt",
            problem: "is not a JWT (three base64url parts with JSON claims)".to_owned(),
        })?;
        let exp = claims.exp.ok_or_else(|| IdentityError::Field {
            field: "extJwt",
            problem: "has no expiry (`exp` claim)".to_owned(),
        })?;
        let ext = ExtJwt { token, subject: claims.sub, expires_at: crate::controller::epoch(exp) };
        Ok(Self { api_urls, ca, credential: Credential::ExtJwt(ext) })
    }

    /// The controller's client API URLs, `ztAPI` first.
    pub fn api_urls(&self) -> &[reqwest::Url] {
        &self.api_urls
    }

    /// When the credential expires: the certificate's (the chain's leaf) not-after, or
    /// the external JWT's `exp`. Present a new one before then
    /// ([`crate::ZitiContext::update_identity`]).
    pub fn certificate_expires_at(&self) -> SystemTime {
        match &self.credential {
            Credential::Certificate { leaf, .. } => leaf.not_after,
            Credential::ExtJwt(ext) => ext.expires_at,
        }
    }

    /// Whether the credential is an external IdP's JWT rather than a certificate.
    pub fn is_ext_jwt(&self) -> bool {
        matches!(self.credential, Credential::ExtJwt(_))
    }

    /// What logs name the credential by: the leaf's serial number (hex) and not-after
    /// time, or the JWT's subject and expiry.
    pub(crate) fn credential_summary(&self) -> (String, String) {
        match &self.credential {
            Credential::Certificate { leaf, .. } => (leaf.serial.clone(), leaf.not_after_text.clone()),
            Credential::ExtJwt(ext) => (format!("ext-jwt subject {}", ext.subject), epoch_text(ext.expires_at)),
        }
    }

    /// The client certificate chain and key, for a certificate identity.
    pub(crate) fn client_certificate(&self) -> Option<(&[CertificateDer<'static>], PrivateKeyDer<'static>)> {
        match &self.credential {
            Credential::Certificate { cert_chain, key, .. } => Some((cert_chain, key.clone_key())),
            Credential::ExtJwt(_) => None,
        }
    }

    /// The external JWT, for an ext-jwt identity.
    pub(crate) fn ext_jwt(&self) -> Option<&ExtJwt> {
        match &self.credential {
            Credential::ExtJwt(ext) => Some(ext),
            Credential::Certificate { .. } => None,
        }
    }

    /// The CAs this identity trusts for the controller and the routers (`id.ca`).
    pub fn ca_certificates(&self) -> &[CertificateDer<'static>] {
        &self.ca
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("Identity");
        out.field("api_urls", &self.api_urls.iter().map(reqwest::Url::as_str).collect::<Vec<_>>());
        match &self.credential {
            Credential::Certificate { cert_chain, .. } => {
                out.field("cert_chain_len", &cert_chain.len()).field("key", &"<redacted>");
            }
            Credential::ExtJwt(ext) => {
                out.field("ext_jwt", &"<redacted>")
                    .field("ext_jwt_subject", &ext.subject)
                    .field("ext_jwt_expires_at", &ext.expires_at);
            }
        }
        out.field("ca_len", &self.ca.len()).finish()
    }
}

impl fmt::Debug for ExtJwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExtJwt")
            .field("token", &"<redacted>")
            .field("subject", &self.subject)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A time as RFC 3339 (UTC), for logs.
fn epoch_text(time: SystemTime) -> String {
    x509_cert::der::DateTime::from_system_time(time).map_or_else(|_| format!("{time:?}"), |t| t.to_string())
}

fn read_secret(path: &Path) -> Result<Zeroizing<Vec<u8>>, IdentityError> {
    std::fs::read(path).map(Zeroizing::new).map_err(|source| IdentityError::Read { path: path.to_owned(), source })
}

/// The base URL of the controller (`https://host:port`); paths such as
/// `/edge/client/v1` are re-added by the controller client.
fn parse_api_url(url: &str) -> Result<reqwest::Url, IdentityError> {
    let problem = |problem: &str| IdentityError::Field { field: "ztAPI", problem: problem.to_owned() };
    let mut parsed = reqwest::Url::parse(url).map_err(|_| problem("is not a URL"))?;
    if parsed.scheme() != "https" {
        return Err(problem("is not an https URL"));
    }
    if parsed.host_str().is_none() {
        return Err(problem("has no host"));
    }
    parsed.set_path("");
    parsed.set_query(None);
    parsed.set_fragment(None);
    Ok(parsed)
}

/// Whether identity values may name local files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Values {
    InlineOrFile,
    InlineOnly,
}

/// Resolves `pem:...`, `file://...` or bare PEM into PEM bytes (zeroized when dropped).
fn load_value(field: &'static str, value: Option<&str>, values: Values) -> Result<Zeroizing<Vec<u8>>, IdentityError> {
    let value = value.filter(|v| !v.trim().is_empty()).ok_or(IdentityError::Missing(field))?;
    if let Some(pem) = value.strip_prefix("pem:") {
        Ok(Zeroizing::new(pem.as_bytes().to_vec()))
    } else if value.starts_with("file://") && values == Values::InlineOnly {
        Err(IdentityError::Field {
            field,
            problem: "names a local file; it must hold its PEM inline (`pem:`)".to_owned(),
        })
    } else if let Some(path) = value.strip_prefix("file://") {
        read_secret(&PathBuf::from(path)).map_err(|err| match err {
            IdentityError::Read { path, source } => IdentityError::Field {
                field,
                problem: format!("names file {} that cannot be read: {source}", path.display()),
            },
            other => other,
        })
    } else if value.trim_start().starts_with("-----BEGIN") {
        Ok(Zeroizing::new(value.as_bytes().to_vec()))
    } else {
        Err(IdentityError::Field { field, problem: "is neither `pem:...` nor `file://...`".to_owned() })
    }
}

fn certificates(field: &'static str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| IdentityError::Field { field, problem: format!("is not valid PEM ({})", pem_problem(&err)) })?;
    if certs.is_empty() {
        return Err(IdentityError::Field { field, problem: "holds no certificate".to_owned() });
    }
    // Caught here, a broken certificate is named as such, rather than surfacing as a
    // TLS failure on the first connection.
    for (index, cert) in certs.iter().enumerate() {
        if let Err(err) = <x509_cert::Certificate as x509_cert::der::Decode>::from_der(cert.as_ref()) {
            return Err(IdentityError::Field {
                field,
                problem: format!("holds a certificate (#{}) that is not valid X.509 DER ({})", index + 1, err.kind()),
            });
        }
    }
    Ok(certs)
}

fn leaf_summary(chain: &[CertificateDer<'static>]) -> Result<Leaf, IdentityError> {
    let leaf = chain
        .first()
        .and_then(|der| <x509_cert::Certificate as x509_cert::der::Decode>::from_der(der.as_ref()).ok())
        .ok_or(IdentityError::Missing("id.cert"))?;
    let tbs = leaf.tbs_certificate;
    Ok(Leaf {
        serial: tbs.serial_number.as_bytes().iter().map(|b| format!("{b:02x}")).collect(),
        not_after: tbs.validity.not_after.to_system_time(),
        not_after_text: tbs.validity.not_after.to_string(),
    })
}

/// A description of a PEM error that never quotes the input.
fn pem_problem(err: &pem::Error) -> &'static str {
    match err {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line",
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "bad base64",
        pem::Error::NoItemsFound => "no matching PEM section",
        pem::Error::SectionTooLarge => "a section is too large",
        _ => "unreadable",
    }
}

#[cfg(test)]
#[path = "identity_tests.rs"]
mod tests;
