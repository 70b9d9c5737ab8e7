//! Turns [`TlsMaterial`] into tonic's client TLS settings, checking the PEM first so
//! that unusable material stops start-up instead of failing every handshake.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::config::TlsMaterial;

/// TLS material that cannot work. Never carries key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("the {what} PEM is unreadable: {reason}")]
    UnreadableCertificate { what: &'static str, reason: String },
    #[error("the {what} PEM holds no certificate")]
    NoCertificate { what: &'static str },
    #[error("the client key PEM holds no readable private key")]
    UnreadableKey,
    #[error("mTLS needs both a client certificate and its key, but only the {present} is set")]
    HalfClientIdentity { present: &'static str },
    #[error("give a fixed client certificate or a rotating one (an X.509-SVID), not both")]
    TwoClientIdentities,
}

/// Builds the client TLS settings: the given CA(s) or else the platform's roots, and
/// the client identity when both its parts are present.
pub(crate) fn client_tls_config(material: &TlsMaterial) -> Result<ClientTlsConfig, TlsError> {
    let mut config = ClientTlsConfig::new();
    config = match &material.ca_pem {
        Some(ca) => {
            check_certificates("CA", ca)?;
            config.ca_certificate(Certificate::from_pem(ca))
        }
        None => config.with_enabled_roots(),
    };
    match (&material.client_cert_pem, &material.client_key_pem) {
        (Some(cert), Some(key)) => {
            check_certificates("client certificate", cert)?;
            PrivateKeyDer::from_pem_slice(key).map_err(|_| TlsError::UnreadableKey)?;
            config = config.identity(Identity::from_pem(cert, key.as_slice()));
        }
        (Some(_), None) => return Err(TlsError::HalfClientIdentity { present: "certificate" }),
        (None, Some(_)) => return Err(TlsError::HalfClientIdentity { present: "key" }),
        (None, None) => {}
    }
    if let Some(domain) = &material.domain_name {
        config = config.domain_name(domain.clone());
    }
    Ok(config)
}

fn check_certificates(what: &'static str, pem: &[u8]) -> Result<(), TlsError> {
    let mut found = false;
    for certificate in CertificateDer::pem_slice_iter(pem) {
        certificate.map_err(|error| TlsError::UnreadableCertificate { what, reason: error.to_string() })?;
        found = true;
    }
    if found { Ok(()) } else { Err(TlsError::NoCertificate { what }) }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_without_a_certificate_is_refused() {
        let error = client_tls_config(&TlsMaterial::with_ca("not a certificate")).expect_err("no cert");
        assert_eq!(error, TlsError::NoCertificate { what: "CA" });
    }

    #[test]
    fn half_a_client_identity_is_refused() {
        let material = TlsMaterial { client_cert_pem: Some(b"x".to_vec()), ..TlsMaterial::default() };
        let error = client_tls_config(&material).expect_err("half");
        assert_eq!(error, TlsError::HalfClientIdentity { present: "certificate" });
    }
}
