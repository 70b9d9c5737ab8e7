//! API-session certificates: a client certificate the controller issues for the current
//! API session from our CSR (`POST current-api-session/certificates`). Routers accept it
//! for that API session only (its SAN names it); an identity without a certificate of
//! its own (ext-jwt) presents it on router channels.

use std::time::SystemTime;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;
use serde_json::json;

use super::{ApiSession, CLIENT_API, Controller, Envelope};
use crate::error::Error;

/// A certificate the controller issued for one API session.
#[derive(Debug, Clone)]
pub(crate) struct SessionCertificate {
    /// The controller's id for it (also in its SAN).
    pub(crate) id: String,
    /// The certificate, then the intermediates up to the controller's CA.
    pub(crate) chain: Vec<CertificateDer<'static>>,
    /// The controller's CA bundle (`cas`).
    pub(crate) cas: Vec<CertificateDer<'static>>,
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
}

#[derive(Deserialize)]
struct Created {
    #[serde(default)]
    id: String,
    certificate: String,
    #[serde(default)]
    cas: String,
}

impl Controller {
    /// Asks for a certificate for `session` signing the public key of `csr_pem`.
    pub(crate) async fn session_certificate(
        &self,
        session: &ApiSession,
        csr_pem: &str,
    ) -> Result<SessionCertificate, Error> {
        let path = format!("{CLIENT_API}current-api-session/certificates");
        let response = self.post_json(&path, &json!({ "csr": csr_pem }), Some(session)).await?;
        let created: Envelope<Created> = response.json().await?;
        parse(created.data)
    }
}

fn parse(created: Created) -> Result<SessionCertificate, Error> {
    let bad = |what: &str| Error::Protocol(format!("API-session certificate: {what}"));
    let chain = CertificateDer::pem_slice_iter(created.certificate.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad("`certificate` is not PEM"))?;
    let leaf = chain
        .first()
        .and_then(|der| <x509_cert::Certificate as x509_cert::der::Decode>::from_der(der.as_ref()).ok())
        .ok_or_else(|| bad("`certificate` holds no X.509 certificate"))?;
    let cas = CertificateDer::pem_slice_iter(created.cas.as_bytes()).filter_map(Result::ok).collect();
    let validity = leaf.tbs_certificate.validity;
    Ok(SessionCertificate {
        id: created.id,
        chain,
        cas,
        not_before: validity.not_before.to_system_time(),
        not_after: validity.not_after.to_system_time(),
    })
}
