//! One X.509-SVID as an OpenZiti identity document: controller URL, the SVID chain
//! (leaf and intermediates: the controller needs the intermediate to reach the trusted
//! root), its key and the controller's CA bundle, all inline, in zeroizing memory.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use domain::IdentityJson;
use x509_cert::der::Decode as _;
use zeroize::Zeroizing;

/// Why an SVID cannot be used as an identity. Never carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SvidError {
    /// The Workload API gave an SVID with no certificate.
    #[error("the X.509-SVID has no certificate")]
    NoCertificate,
    /// Its leaf certificate is not valid X.509.
    #[error("the X.509-SVID's leaf certificate is not valid X.509 ({0})")]
    Certificate(String),
}

/// What the gateway needs of one SVID: who it names, until when, its serial (for
/// the log), and the identity document to log in with.
pub struct Svid {
    /// The SPIFFE ID (the leaf's URI SAN).
    pub spiffe_id: String,
    /// The leaf's serial number, in hex.
    pub serial: String,
    /// The leaf's not-after.
    pub expires_at: SystemTime,
    /// The OpenZiti identity JSON; holds the key.
    pub identity: IdentityJson,
}

impl fmt::Debug for Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Svid")
            .field("spiffe_id", &self.spiffe_id)
            .field("serial", &self.serial)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Svid {
    /// Builds the identity of `chain` (DER, leaf first) and `key` (PKCS#8 DER) for the
    /// controller at `controller_url`, trusting `controller_ca` (PEM).
    pub fn new(
        spiffe_id: String,
        chain: &[&[u8]],
        key: &[u8],
        controller_url: &str,
        controller_ca: &str,
    ) -> Result<Self, SvidError> {
        let leaf = chain.first().ok_or(SvidError::NoCertificate)?;
        let leaf = x509_cert::Certificate::from_der(leaf).map_err(|err| SvidError::Certificate(err.to_string()))?;
        let serial = leaf.tbs_certificate.serial_number.as_bytes().iter().map(|byte| format!("{byte:02x}")).collect();
        let expires_at = UNIX_EPOCH + leaf.tbs_certificate.validity.not_after.to_unix_duration();
        let mut cert_pem = String::new();
        for cert in chain {
            cert_pem.push_str(pem("CERTIFICATE", cert).as_str());
        }
        let key_pem = Zeroizing::new(format!("pem:{}", pem("PRIVATE KEY", key).as_str()));
        let document = Document {
            zt_api: controller_url,
            id: Material { cert: &format!("pem:{cert_pem}"), key: &key_pem, ca: &format!("pem:{controller_ca}") },
        };
        // Serialized straight into the zeroizing buffer: no other copy of the key is made.
        let bytes = serde_json::to_vec(&document).map_err(|err| SvidError::Certificate(err.to_string()))?;
        let identity = IdentityJson::new(bytes);
        Ok(Self { spiffe_id, serial, expires_at, identity })
    }

    /// How long it has left at `now` (zero once expired).
    pub fn left(&self, now: SystemTime) -> Duration {
        self.expires_at.duration_since(now).unwrap_or_default()
    }
}

#[derive(serde::Serialize)]
struct Document<'a> {
    #[serde(rename = "ztAPI")]
    zt_api: &'a str,
    id: Material<'a>,
}

#[derive(serde::Serialize)]
struct Material<'a> {
    cert: &'a str,
    key: &'a str,
    ca: &'a str,
}

/// PEM of one DER item, 64 columns. The base64 buffer is zeroized (it may be a key).
fn pem(label: &str, der: &[u8]) -> Zeroizing<String> {
    let encoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der));
    let mut out = Zeroizing::new(String::with_capacity(encoded.len() + encoded.len() / 64 + 64));
    out.push_str(&format!("-----BEGIN {label}-----\n"));
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn leaf() -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names =
            vec![rcgen::SanType::URI(rcgen::string::Ia5String::try_from("spiffe://td.test/gateway").unwrap())];
        params.not_after = rcgen::date_time_ymd(2030, 1, 2);
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x0a, 0x1b]));
        (params.self_signed(&key).unwrap(), key)
    }

    #[test]
    fn the_identity_holds_the_chain_key_and_controller_ca_and_debug_shows_no_key() {
        let (cert, key) = leaf();
        let key_der = key.serialize_der();
        let svid = Svid::new(
            "spiffe://td.test/gateway".to_owned(),
            &[cert.der().as_ref(), cert.der().as_ref()],
            &key_der,
            "https://127.0.0.1:1280",
            "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert_eq!(svid.serial, "0a1b");
        assert_eq!(svid.expires_at, UNIX_EPOCH + Duration::from_secs(1_893_542_400));

        let json: serde_json::Value = serde_json::from_slice(svid.identity.as_bytes()).unwrap();
        assert_eq!(json["ztAPI"], "https://127.0.0.1:1280");
        let cert_pem = json["id"]["cert"].as_str().unwrap();
        assert_eq!(cert_pem.matches("-----BEGIN CERTIFICATE-----").count(), 2, "the chain, leaf and intermediate");
        assert!(cert_pem.contains(pem("CERTIFICATE", cert.der()).as_str()));
        assert_eq!(json["id"]["key"].as_str().unwrap(), format!("pem:{}", key.serialize_pem()));
        assert!(json["id"]["ca"].as_str().unwrap().starts_with("pem:-----BEGIN CERTIFICATE-----"));

        let shown = format!("{svid:?}");
        assert!(!shown.contains("PRIVATE KEY") && !shown.contains(&key.serialize_pem()[30..60]), "{shown}");
    }

    #[test]
    fn an_svid_without_a_certificate_is_refused() {
        let refused = Svid::new("spiffe://td.test/x".to_owned(), &[], b"key", "https://c", "ca").unwrap_err();
        assert_eq!(refused.to_string(), "the X.509-SVID has no certificate");
    }
}
