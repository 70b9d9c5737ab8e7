//! Issuing a leased identity: create it on the controller with its lease tags, make
//! a key and CSR here, redeem the one-time token, and hand back a standard OpenZiti
//! identity JSON. Whatever fails after the identity exists deletes it again.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use serde::Serialize;
use thiserror::Error;
use tokio::sync::oneshot;
use zeroize::Zeroizing;

use crate::ca_bundle::{CaBundle, CaBundleError};
use crate::controller::{Controller, ControllerError, NewIdentity};
use crate::lease::new_lease_tags;

/// What is issued: the service type's name (in identity names and tags), the role
/// attributes the policy grants, and the principal it is issued to (its holder).
#[derive(Debug, Clone)]
pub struct ServiceProfile {
    pub type_name: &'static str,
    pub role_attributes: Vec<String>,
    /// [`crate::auth::Principal::to_tag`] of the caller; only it may extend or release.
    pub holder: String,
}

/// An enrolled, leased identity. The JSON holds the private key.
pub struct Issued {
    pub id: String,
    pub identity_json: Zeroizing<Vec<u8>>,
    pub expires: SystemTime,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").field("id", &self.id).field("expires", &self.expires).finish_non_exhaustive()
    }
}

#[derive(Debug, Error)]
pub enum EnrollmentError {
    #[error(transparent)]
    Controller(#[from] ControllerError),
    #[error(transparent)]
    CaBundle(#[from] CaBundleError),
    #[error("the controller gave identity {id} no one-time enrollment token")]
    NoToken { id: String },
    #[error("cannot make the identity's key or CSR: {0}")]
    Key(#[from] rcgen::Error),
    #[error("cannot write the identity JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the enrollment task ended without an answer")]
    Interrupted,
}

/// Issues identities. Share it behind an `Arc`.
#[derive(Debug)]
pub struct Enroller {
    controller: Arc<Controller>,
    ca_bundle: CaBundle,
    ttl: Duration,
}

impl Enroller {
    pub fn new(controller: Arc<Controller>, ttl: Duration) -> Self {
        Self { ca_bundle: CaBundle::new(controller.clone()), controller, ttl }
    }

    /// Issues an identity in a task of its own: if the caller goes away mid-way (a
    /// cancelled RPC), the task still finishes and deletes what nobody will receive.
    pub async fn issue_detached(self: &Arc<Self>, profile: ServiceProfile) -> Result<Issued, EnrollmentError> {
        let (answer, answered) = oneshot::channel();
        let enroller = self.clone();
        tokio::spawn(async move {
            let issued = enroller.issue(&profile).await;
            if let Err(Ok(unclaimed)) = answer.send(issued) {
                tracing::info!(identity = %unclaimed.id, "the caller left before its identity was ready; deleting it");
                enroller.delete_quietly(&unclaimed.id).await;
            }
        });
        answered.await.map_err(|_| EnrollmentError::Interrupted)?
    }

    pub async fn issue(&self, profile: &ServiceProfile) -> Result<Issued, EnrollmentError> {
        let name = format!("{}-{}", profile.type_name, uuid::Uuid::new_v4().simple());
        let expires = SystemTime::now() + self.ttl;
        let tags = new_lease_tags(profile.type_name, &profile.holder, expires);
        let new = NewIdentity { name: &name, role_attributes: &profile.role_attributes, tags };
        let id = self.controller.create_identity(&new).await?;
        match self.enroll(&id).await {
            Ok(identity_json) => {
                tracing::info!(identity = %id, %name, "issued an identity");
                Ok(Issued { id, identity_json, expires })
            }
            Err(err) => {
                tracing::warn!(identity = %id, %err, "enrollment failed; deleting the identity");
                self.delete_quietly(&id).await;
                Err(err)
            }
        }
    }

    async fn enroll(&self, id: &str) -> Result<Zeroizing<Vec<u8>>, EnrollmentError> {
        // The token and the (usually cached) CA bundle at once: one round trip less.
        let (identity, ca_pem) = tokio::join!(self.controller.identity(id), self.ca_bundle.pem());
        let identity = identity?;
        let ca_pem = ca_pem?;
        let token = identity.ott_token().ok_or_else(|| EnrollmentError::NoToken { id: id.to_owned() })?;
        // An EC P-256 key and its CSR take well under a millisecond: no need to
        // leave the async runtime for them.
        let (key_pem, csr_pem) = key_and_csr(id)?;
        let chain = self.controller.enroll_ott(token, &csr_pem).await?;
        identity_json(&self.controller.client_api_url(), &chain, &key_pem, &ca_pem)
    }

    /// Deletes an identity that must not outlive a failed issue; if even that fails,
    /// its lease tag still gets it reaped.
    async fn delete_quietly(&self, id: &str) {
        if let Err(err) = self.controller.delete_identity(id).await {
            tracing::warn!(identity = %id, %err, "cannot delete the identity now; the reaper will when its lease runs out");
        }
    }
}

/// A fresh EC P-256 key (PKCS#8 PEM) and a CSR for it with the identity id as CN,
/// as the Go SDK's enroller names its CSRs.
fn key_and_csr(id: &str) -> Result<(Zeroizing<String>, String), rcgen::Error> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, id);
    params.distinguished_name = subject;
    let csr = params.serialize_request(&key)?.pem()?;
    Ok((Zeroizing::new(key.serialize_pem()), csr))
}

#[derive(Serialize)]
struct IdentityFile<'a> {
    #[serde(rename = "ztAPI")]
    zt_api: &'a str,
    id: IdentityMaterial<'a>,
}

#[derive(Serialize)]
struct IdentityMaterial<'a> {
    key: &'a str,
    cert: &'a str,
    ca: &'a str,
}

/// The standard identity JSON: `ztAPI`, and `id.key`, `id.cert`, `id.ca` as `pem:` values.
fn identity_json(
    zt_api: &str,
    chain: &str,
    key_pem: &str,
    ca_pem: &str,
) -> Result<Zeroizing<Vec<u8>>, EnrollmentError> {
    let key = Zeroizing::new(format!("pem:{key_pem}"));
    let (cert, ca) = (format!("pem:{chain}"), format!("pem:{ca_pem}"));
    let file = IdentityFile { zt_api, id: IdentityMaterial { key: &key, cert: &cert, ca: &ca } };
    // Room for JSON escaping up front, so no reallocation leaves key copies behind.
    let mut json = Zeroizing::new(Vec::with_capacity(2 * (zt_api.len() + key.len() + cert.len() + ca.len()) + 64));
    serde_json::to_writer(&mut *json, &file)?;
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csr_names_the_identity_and_the_key_is_pkcs8() {
        let (key, csr) = key_and_csr("AbC123").expect("key and csr");
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        assert_eq!(csr.matches("-----BEGIN").count(), 1, "exactly one PEM block");
    }

    #[test]
    fn identity_json_has_the_standard_shape() {
        let json = identity_json("https://ctrl:1280/edge/client/v1", "CHAIN\n", "KEY\n", "CA\n").expect("json");
        let value: serde_json::Value = serde_json::from_slice(&json).expect("valid JSON");
        assert_eq!(value["ztAPI"], "https://ctrl:1280/edge/client/v1");
        assert_eq!(value["id"]["cert"], "pem:CHAIN\n");
        assert_eq!(value["id"]["key"], "pem:KEY\n");
        assert_eq!(value["id"]["ca"], "pem:CA\n");
    }
}
