//! The workload's X.509-SVID as a TLS client certificate, e.g. towards ziti-management
//! when it authenticates callers by SPIFFE ID. The Workload API keeps it current; each
//! new connection takes the SVID of the moment.

use std::time::Duration;

use spiffe::X509Source;
use zeroize::Zeroizing;

use crate::source::ById;

/// The SVID of the moment, as DER: leaf first, and its PKCS#8 private key.
pub struct CurrentSvid {
    /// Its SPIFFE ID.
    pub spiffe_id: String,
    /// The certificate chain, DER, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// The leaf's private key, PKCS#8 DER.
    pub key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for CurrentSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CurrentSvid").field("spiffe_id", &self.spiffe_id).finish_non_exhaustive()
    }
}

/// Why the Workload API gives no SVID to present. Never carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SvidCertificateError {
    /// No answer in time: no agent, or the workload is not registered.
    #[error(
        "the SPIFFE Workload API at {endpoint} gave no X.509-SVID within {waited:?} (is the agent running, and is this workload registered?)"
    )]
    NoAnswer { endpoint: String, waited: Duration },
    /// The workload has no SVID (of the SPIFFE ID asked for).
    #[error("the SPIFFE Workload API at {endpoint} gives this workload no X.509-SVID for {wanted}")]
    NotIssued { endpoint: String, wanted: String },
    /// The Workload API cannot be used.
    #[error("the SPIFFE Workload API at {endpoint} cannot be used")]
    Unusable {
        endpoint: String,
        #[source]
        source: spiffe::X509SourceError,
    },
}

/// The workload's X.509-SVIDs from the Workload API, as client certificates.
pub struct SvidCertificates {
    source: X509Source,
}

impl std::fmt::Debug for SvidCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SvidCertificates").finish_non_exhaustive()
    }
}

impl SvidCertificates {
    /// Connects to the Workload API at `endpoint` and waits up to `waited` for the
    /// first SVID (`spiffe_id` picks one when the workload has several).
    pub async fn connect(
        endpoint: &str,
        spiffe_id: Option<&str>,
        waited: Duration,
    ) -> Result<Self, SvidCertificateError> {
        let mut builder = X509Source::builder().endpoint(endpoint).initial_sync_timeout(waited);
        if let Some(wanted) = spiffe_id {
            builder = builder.picker(ById(wanted.to_owned()));
        }
        let endpoint = endpoint.to_owned();
        match builder.build().await {
            Ok(source) => Ok(Self { source }),
            Err(spiffe::X509SourceError::InitialSyncTimeout) => {
                Err(SvidCertificateError::NoAnswer { endpoint, waited })
            }
            Err(spiffe::X509SourceError::NoSuitableSvid) => Err(SvidCertificateError::NotIssued {
                endpoint,
                wanted: spiffe_id.unwrap_or("this workload").to_owned(),
            }),
            Err(source) => Err(SvidCertificateError::Unusable { endpoint, source }),
        }
    }

    /// The SVID of the moment, or `None` while the Workload API has none.
    pub fn current(&self) -> Option<CurrentSvid> {
        let svid = self.source.try_svid()?;
        Some(CurrentSvid {
            spiffe_id: svid.spiffe_id().to_string(),
            chain: svid.cert_chain().iter().map(|cert| cert.as_bytes().to_vec()).collect(),
            key: Zeroizing::new(svid.private_key().as_bytes().to_vec()),
        })
    }
}
