//! The `spiffe` method: callers present an X.509-SVID as their TLS client
//! certificate. The chain is verified during the handshake against the trust bundle
//! of the one configured trust domain (from the Workload API, rotating, or from a
//! bundle file); a certificate of another trust domain ends the handshake. A caller
//! without a certificate still connects (it may use another method) and is answered
//! `UNAUTHENTICATED` at the call.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use spiffe::{TrustDomain, X509Source};
use thiserror::Error;

use super::Principal;

/// How long start-up waits for the Workload API's first answer.
const WORKLOAD_API_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the trust bundle of the callers' trust domain comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BundleSource {
    /// The SPIFFE Workload API at this endpoint (`unix:///path`); follows rotation.
    WorkloadApi(String),
    /// A PEM file of the trust domain's X.509 authorities, read at start.
    File(PathBuf),
}

/// The `spiffe` method's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeSettings {
    /// The one trust domain whose X.509-SVIDs are accepted.
    pub trust_domain: String,
    /// Where its trust bundle comes from.
    pub bundle: BundleSource,
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SpiffeError {
    /// `ZITI_MGMT_SPIFFE_TRUST_DOMAIN` is not a trust domain name.
    #[error("{0:?} is not a SPIFFE trust domain")]
    TrustDomain(String),
    /// The Workload API did not answer in time.
    #[error("the SPIFFE Workload API at {endpoint} gave no trust bundle within {WORKLOAD_API_TIMEOUT:?}")]
    WorkloadApiTimeout { endpoint: String },
    /// The Workload API cannot be used (no socket, refused).
    #[error("the SPIFFE Workload API at {endpoint} cannot be used")]
    WorkloadApi {
        endpoint: String,
        #[source]
        source: spiffe::X509SourceError,
    },
    /// The Workload API knows no bundle for the trust domain.
    #[error("the SPIFFE Workload API at {endpoint} has no trust bundle for {trust_domain}")]
    NoBundle { endpoint: String, trust_domain: String },
    /// The bundle file is unreadable or holds no certificate.
    #[error("cannot read the trust bundle file {path}: {problem}")]
    BundleFile { path: PathBuf, problem: String },
}

/// The trust bundle, kept current.
enum Bundles {
    WorkloadApi(X509Source),
    Fixed(Vec<CertificateDer<'static>>),
}

impl Bundles {
    fn authorities(&self, trust_domain: &TrustDomain) -> Option<Authorities> {
        match self {
            Self::WorkloadApi(source) => {
                let bundle = source.try_bundle_for_trust_domain(trust_domain)?;
                let certificates =
                    bundle.authorities().iter().map(|cert| CertificateDer::from(cert.as_bytes().to_vec())).collect();
                Some(Authorities { certificates })
            }
            Self::Fixed(certificates) => Some(Authorities { certificates: certificates.clone() }),
        }
    }
}

/// A bundle's authorities and the chain verifier built from them.
type ChainVerifier = (Vec<CertificateDer<'static>>, Arc<dyn ClientCertVerifier>);

struct Authorities {
    certificates: Vec<CertificateDer<'static>>,
}

/// Verifies client certificates as X.509-SVIDs of one trust domain.
pub struct SpiffeClientVerifier {
    trust_domain: TrustDomain,
    bundles: Bundles,
    provider: Arc<CryptoProvider>,
    /// The chain verifier for the bundle last seen; rebuilt when the bundle changes.
    current: Mutex<Option<ChainVerifier>>,
}

impl fmt::Debug for SpiffeClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeClientVerifier").field("trust_domain", &self.trust_domain).finish_non_exhaustive()
    }
}

impl SpiffeClientVerifier {
    /// Connects to the bundle's source and waits for the bundle.
    pub async fn start(settings: &SpiffeSettings, provider: Arc<CryptoProvider>) -> Result<Self, SpiffeError> {
        let trust_domain = TrustDomain::new(&settings.trust_domain)
            .map_err(|_| SpiffeError::TrustDomain(settings.trust_domain.clone()))?;
        let bundles = match &settings.bundle {
            BundleSource::WorkloadApi(endpoint) => {
                let built = X509Source::builder().endpoint(endpoint).initial_sync_timeout(WORKLOAD_API_TIMEOUT).build();
                let source = match built.await {
                    Ok(source) => source,
                    Err(spiffe::X509SourceError::InitialSyncTimeout) => {
                        return Err(SpiffeError::WorkloadApiTimeout { endpoint: endpoint.clone() });
                    }
                    Err(source) => return Err(SpiffeError::WorkloadApi { endpoint: endpoint.clone(), source }),
                };
                if source.try_bundle_for_trust_domain(&trust_domain).is_none() {
                    return Err(SpiffeError::NoBundle {
                        endpoint: endpoint.clone(),
                        trust_domain: settings.trust_domain.clone(),
                    });
                }
                Bundles::WorkloadApi(source)
            }
            BundleSource::File(path) => Bundles::Fixed(read_bundle(path)?),
        };
        Ok(Self { trust_domain, bundles, provider, current: Mutex::new(None) })
    }

    /// The chain verifier for the current bundle.
    fn chain_verifier(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        let authorities = self.bundles.authorities(&self.trust_domain).ok_or_else(|| {
            rustls::Error::General(format!("no trust bundle for {} at the moment", self.trust_domain))
        })?;
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((seen, verifier)) = current.as_ref()
            && *seen == authorities.certificates
        {
            return Ok(verifier.clone());
        }
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(authorities.certificates.iter().cloned());
        if added == 0 {
            return Err(rustls::Error::General(format!("the trust bundle of {} is empty", self.trust_domain)));
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|err| rustls::Error::General(format!("unusable trust bundle: {err}")))?;
        tracing::info!(trust_domain = %self.trust_domain, authorities = added, "SPIFFE trust bundle (re)loaded");
        *current = Some((authorities.certificates, verifier.clone()));
        Ok(verifier)
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    /// A caller may come with a JWT, or none at all; it is refused at the call then.
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let id = spiffe::cert::spiffe_id_from_der(end_entity)
            .map_err(|err| rustls::Error::General(format!("the client certificate is no X.509-SVID: {err}")))?;
        if !id.is_member_of(&self.trust_domain) {
            return Err(rustls::Error::General(format!(
                "the client's SPIFFE ID is of trust domain {}, not {}",
                id.trust_domain_name(),
                self.trust_domain
            )));
        }
        self.chain_verifier()?.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The principal of a client certificate that the handshake has verified.
pub fn principal_of(end_entity: &CertificateDer<'_>) -> Option<Principal> {
    spiffe::cert::spiffe_id_from_der(end_entity).ok().map(|id| Principal::Spiffe(id.to_string()))
}

fn read_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, SpiffeError> {
    let problem = |problem: String| SpiffeError::BundleFile { path: path.to_owned(), problem };
    let pem = std::fs::read(path).map_err(|err| problem(err.to_string()))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| problem(format!("not PEM certificates ({err})")))?;
    if certificates.is_empty() {
        return Err(problem("it holds no PEM CERTIFICATE".to_owned()));
    }
    Ok(certificates)
}
