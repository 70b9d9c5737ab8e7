//! The controller's CA bundle (`id.ca` of every identity issued), fetched once and
//! kept: it changes only when the controller's PKI is rotated, and fetching it per
//! enrollment would add a round trip to every request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::SignedData;
use thiserror::Error;
use tokio::sync::Mutex;
use x509_cert::der::pem::LineEnding;
use x509_cert::der::{Decode, EncodePem};

use crate::controller::{Controller, ControllerError};

/// A cached bundle is fetched again after this long, to follow a CA rotation.
const REFRESH_AFTER: Duration = Duration::from_secs(60 * 60);

#[derive(Debug, Error)]
pub enum CaBundleError {
    #[error(transparent)]
    Controller(#[from] ControllerError),
    #[error("the controller's CA bundle is not a certs-only PKCS#7: {0}")]
    Malformed(String),
}

/// The CA bundle, fetched on first use and then cached.
#[derive(Debug)]
pub struct CaBundle {
    controller: Arc<Controller>,
    cached: Mutex<Option<(Instant, Arc<str>)>>,
}

impl CaBundle {
    pub fn new(controller: Arc<Controller>) -> Self {
        Self { controller, cached: Mutex::new(None) }
    }

    /// The bundle as PEM certificates. The lock is held while fetching, so that a
    /// burst of first requests makes one fetch.
    pub async fn pem(&self) -> Result<Arc<str>, CaBundleError> {
        let mut cached = self.cached.lock().await;
        if let Some((fetched, pem)) = cached.as_ref()
            && fetched.elapsed() < REFRESH_AFTER
        {
            return Ok(pem.clone());
        }
        let fetched = self.fetch().await;
        match (fetched, cached.as_ref()) {
            (Ok(pem), _) => {
                *cached = Some((Instant::now(), pem.clone()));
                Ok(pem)
            }
            (Err(err), Some((_, stale))) => {
                // A bundle an hour old is still right unless the CA was rotated just now.
                tracing::warn!(%err, "cannot refresh the controller's CA bundle; using the cached one");
                Ok(stale.clone())
            }
            (Err(err), None) => Err(err),
        }
    }

    async fn fetch(&self) -> Result<Arc<str>, CaBundleError> {
        let body = self.controller.ca_bundle_pkcs7().await?;
        Ok(Arc::from(pkcs7_to_pem(&body)?))
    }
}

/// Turns the base64 of a certs-only PKCS#7 (line-wrapped) into concatenated PEM certificates.
pub fn pkcs7_to_pem(base64_body: &str) -> Result<String, CaBundleError> {
    let compact: String = base64_body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|err| CaBundleError::Malformed(format!("not base64 ({err})")))?;
    let info = ContentInfo::from_der(&der).map_err(|err| CaBundleError::Malformed(err.to_string()))?;
    let signed: SignedData =
        info.content.decode_as().map_err(|err| CaBundleError::Malformed(format!("not signed data ({err})")))?;
    let mut pem = String::new();
    for choice in signed.certificates.iter().flat_map(|set| set.0.iter()) {
        if let CertificateChoices::Certificate(certificate) = choice {
            let encoded =
                certificate.to_pem(LineEnding::LF).map_err(|err| CaBundleError::Malformed(err.to_string()))?;
            pem.push_str(&encoded);
        }
    }
    if pem.is_empty() {
        return Err(CaBundleError::Malformed("it holds no certificate".to_owned()));
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_is_not_a_pkcs7_bundle() {
        assert!(matches!(pkcs7_to_pem("not base64!"), Err(CaBundleError::Malformed(_))));
        assert!(matches!(pkcs7_to_pem("AAAA"), Err(CaBundleError::Malformed(_))));
    }
}
