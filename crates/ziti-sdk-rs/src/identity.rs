//! The standard OpenZiti identity file: `ztAPI`/`ztAPIs` and `id.{cert,key,ca}`, each
//! value inline (`pem:...`) or a reference (`file://...`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::error::IdentityError;

/// A loaded identity: controller URLs, certificate chain, private key and trusted CAs.
///
/// The key lives in zeroizing memory and `Debug` never shows it.
pub struct Identity {
    api_urls: Vec<reqwest::Url>,
    cert_chain: Vec<CertificateDer<'static>>,
    key: Zeroizing<PrivateKeyDer<'static>>,
    ca: Vec<CertificateDer<'static>>,
    leaf: Leaf,
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
        Ok(Self { api_urls, cert_chain, key, ca, leaf })
    }

    /// The controller's client API URLs, `ztAPI` first.
    pub fn api_urls(&self) -> &[reqwest::Url] {
        &self.api_urls
    }

    /// When the certificate (the chain's leaf) expires: present a new one before then
    /// ([`crate::ZitiContext::update_identity`]).
    pub fn certificate_expires_at(&self) -> SystemTime {
        self.leaf.not_after
    }

    /// The leaf's serial number (hex) and not-after time, for logs.
    pub(crate) fn certificate_summary(&self) -> (&str, &str) {
        (&self.leaf.serial, &self.leaf.not_after_text)
    }

    pub(crate) fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.cert_chain
    }

    pub(crate) fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    /// The CAs this identity trusts for the controller and the routers (`id.ca`).
    pub fn ca_certificates(&self) -> &[CertificateDer<'static>] {
        &self.ca
    }

    pub(crate) fn ca(&self) -> &[CertificateDer<'static>] {
        &self.ca
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("api_urls", &self.api_urls.iter().map(reqwest::Url::as_str).collect::<Vec<_>>())
            .field("cert_chain_len", &self.cert_chain.len())
            .field("key", &"<redacted>")
            .field("ca_len", &self.ca.len())
            .finish()
    }
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
