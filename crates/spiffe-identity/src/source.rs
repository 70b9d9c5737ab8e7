//! [`SpiffeIdentitySource`]: the identity-source port over the Workload API.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use domain::ports::IdentityProvider;
use domain::{IdentityId, LeasedIdentity, ProviderError, Renewal, ServiceType};
use spiffe::{X509Source, X509Svid};
use tokio::sync::OnceCell;

use crate::credential::Svid;

/// Where the SVID comes from and which controller it is for.
#[derive(Clone)]
pub struct SpiffeSettings {
    /// The Workload API endpoint (`SPIFFE_ENDPOINT_SOCKET`, e.g. `unix:///run/spire/agent.sock`).
    pub endpoint: String,
    /// The SVID to use when the Workload API gives several; `None`: its default (first) one.
    pub spiffe_id: Option<String>,
    /// The controller to log in to (`https://host:port`).
    pub controller_url: String,
    /// The CA bundle the controller is trusted with (PEM).
    pub controller_ca_pem: String,
    /// How long one attempt to reach the Workload API and get an SVID may take.
    pub attempt_timeout: Duration,
}

impl std::fmt::Debug for SpiffeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpiffeSettings")
            .field("endpoint", &self.endpoint)
            .field("spiffe_id", &self.spiffe_id)
            .field("controller_url", &self.controller_url)
            .finish_non_exhaustive()
    }
}

/// The workload's X.509-SVID as its OpenZiti identity. A "lease" here is the SVID's
/// lifetime: keeping it hands out the current SVID, which the agent rotates at about
/// half its lifetime; when no valid SVID comes before the one in use expires, the lease
/// is lost (the gateway goes unready) until the Workload API gives one again.
pub struct SpiffeIdentitySource {
    settings: SpiffeSettings,
    /// Connected on first use, then kept up to date by the `spiffe` crate (it
    /// reconnects by itself when the agent goes away and comes back).
    source: OnceCell<Arc<X509Source>>,
    /// The serial of the last SVID handed out, to log each rotation once.
    last_serial: Mutex<Option<String>>,
}

impl std::fmt::Debug for SpiffeIdentitySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpiffeIdentitySource").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// Why the Workload API gave no usable SVID. Never carries key material.
#[derive(Debug, thiserror::Error)]
enum WorkloadApiProblem {
    #[error(
        "the SPIFFE Workload API at {endpoint} gave no X.509-SVID within {waited:?} (is the agent running, and is this workload registered?)"
    )]
    NoAnswer { endpoint: String, waited: Duration },
    #[error("the SPIFFE Workload API at {endpoint} cannot be used")]
    Unusable {
        endpoint: String,
        #[source]
        source: spiffe::X509SourceError,
    },
    #[error("the SPIFFE Workload API at {endpoint} gives this workload no X.509-SVID for {wanted}")]
    NotIssued { endpoint: String, wanted: String },
    #[error("the SPIFFE Workload API at {endpoint} has given no X.509-SVID newer than the one in use")]
    NoFreshSvid {
        endpoint: String,
        #[source]
        source: spiffe::X509SourceError,
    },
    #[error("the workload's SPIFFE ID is now {now}, not {held}")]
    OtherIdentity { held: String, now: String },
    #[error("the X.509-SVID from the Workload API cannot be used")]
    Svid(#[source] crate::credential::SvidError),
}

impl SpiffeIdentitySource {
    /// A source that connects to the Workload API when first asked.
    pub fn new(settings: SpiffeSettings) -> Self {
        Self { settings, source: OnceCell::new(), last_serial: Mutex::new(None) }
    }

    async fn source(&self) -> Result<&Arc<X509Source>, ProviderError> {
        let endpoint = &self.settings.endpoint;
        self.source
            .get_or_try_init(|| async {
                let mut builder =
                    X509Source::builder().endpoint(endpoint).initial_sync_timeout(self.settings.attempt_timeout);
                if let Some(wanted) = self.settings.spiffe_id.clone() {
                    builder = builder.picker(ById(wanted));
                }
                match builder.build().await {
                    Ok(source) => Ok(Arc::new(source)),
                    Err(spiffe::X509SourceError::InitialSyncTimeout) => {
                        Err(ProviderError::Transient(Box::new(WorkloadApiProblem::NoAnswer {
                            endpoint: endpoint.clone(),
                            waited: self.settings.attempt_timeout,
                        })))
                    }
                    Err(spiffe::X509SourceError::NoSuitableSvid) => {
                        // A registration entry may be added later: try again.
                        Err(ProviderError::Transient(Box::new(WorkloadApiProblem::NotIssued {
                            endpoint: endpoint.clone(),
                            wanted: self.settings.spiffe_id.clone().unwrap_or_else(|| "this workload".to_owned()),
                        })))
                    }
                    Err(source) => Err(ProviderError::Transient(Box::new(WorkloadApiProblem::Unusable {
                        endpoint: endpoint.clone(),
                        source,
                    }))),
                }
            })
            .await
    }

    /// The current SVID as an identity; logs it when it is new.
    async fn current(&self) -> Result<Svid, ProviderError> {
        let source = self.source().await?;
        let svid = source.svid().map_err(|source| {
            ProviderError::Transient(Box::new(WorkloadApiProblem::NoFreshSvid {
                endpoint: self.settings.endpoint.clone(),
                source,
            }))
        })?;
        let svid = self.identity(&svid)?;
        let mut last = self.last_serial.lock().unwrap_or_else(PoisonError::into_inner);
        if last.as_deref() != Some(svid.serial.as_str()) {
            tracing::info!(
                spiffe_id = %svid.spiffe_id,
                serial = %svid.serial,
                expires_in_secs = svid.left(SystemTime::now()).as_secs(),
                rotated = last.is_some(),
                "X.509-SVID from the Workload API"
            );
            *last = Some(svid.serial.clone());
        }
        Ok(svid)
    }

    fn identity(&self, svid: &X509Svid) -> Result<Svid, ProviderError> {
        let chain: Vec<&[u8]> = svid.cert_chain().iter().map(|cert| cert.as_bytes()).collect();
        Svid::new(
            svid.spiffe_id().to_string(),
            &chain,
            svid.private_key().as_bytes(),
            &self.settings.controller_url,
            &self.settings.controller_ca_pem,
        )
        .map_err(|err| ProviderError::Transient(Box::new(WorkloadApiProblem::Svid(err))))
    }
}

#[async_trait]
impl IdentityProvider for SpiffeIdentitySource {
    async fn request_identity(&self, _service: ServiceType) -> Result<LeasedIdentity, ProviderError> {
        let svid = self.current().await?;
        let expires_in = Some(svid.left(SystemTime::now()));
        Ok(LeasedIdentity { id: IdentityId::new(svid.spiffe_id), identity_json: svid.identity, expires_in })
    }

    async fn extend_lease(&self, id: &IdentityId) -> Result<Renewal, ProviderError> {
        let svid = self.current().await?;
        if svid.spiffe_id != id.as_str() {
            // Another registration now applies: that is another OpenZiti identity.
            return Err(ProviderError::LeaseGone(Box::new(WorkloadApiProblem::OtherIdentity {
                held: id.to_string(),
                now: svid.spiffe_id,
            })));
        }
        let expires_in = Some(svid.left(SystemTime::now()));
        Ok(Renewal::with_credential(svid.identity, expires_in))
    }

    /// An SVID is not given back: it expires by itself.
    async fn release(&self, _id: &IdentityId) -> Result<(), ProviderError> {
        Ok(())
    }
}

/// Picks the SVID with a given SPIFFE ID.
#[derive(Debug)]
pub(crate) struct ById(pub(crate) String);

impl spiffe::x509_source::SvidPicker for ById {
    fn pick_svid(&self, svids: &[Arc<X509Svid>]) -> Option<usize> {
        svids.iter().position(|svid| svid.spiffe_id().to_string() == self.0)
    }
}
