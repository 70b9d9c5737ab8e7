//! TLS towards ziti-management with a client certificate that changes over time (a
//! rotating X.509-SVID): tonic's TLS settings take one fixed client identity, so this
//! path does the handshake itself, and each new connection presents the certificate
//! current at that moment.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use hyper_util::rt::TokioIo;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tonic::codegen::http::Uri;

use crate::tls::TlsError;

/// A client certificate and its key, as the source has them now.
pub struct ClientCertificate {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificate").field("chain", &self.chain.len()).finish_non_exhaustive()
    }
}

/// The port for a client certificate that may change, e.g. the workload's X.509-SVID
/// from the SPIFFE Workload API. Asked once per new connection.
pub trait ClientCertificateSource: Send + Sync + fmt::Debug {
    /// The current certificate, or `None` when there is none now (the connection then
    /// goes without one and the server decides).
    fn current(&self) -> Option<ClientCertificate>;
}

/// Presents the source's current certificate, re-signing only when it changed.
struct SourceResolver {
    source: Arc<dyn ClientCertificateSource>,
    provider: Arc<CryptoProvider>,
    last: Mutex<Option<Arc<CertifiedKey>>>,
}

impl fmt::Debug for SourceResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceResolver").field("source", &self.source).finish_non_exhaustive()
    }
}

impl ResolvesClientCert for SourceResolver {
    fn resolve(&self, _root_hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        let Some(current) = self.source.current() else {
            tracing::warn!("no client certificate available; connecting to ziti-management without one");
            return None;
        };
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = last.as_ref()
            && key.cert == current.chain
        {
            return Some(key.clone());
        }
        match CertifiedKey::from_der(current.chain, current.key, &self.provider) {
            Ok(key) => {
                let key = Arc::new(key);
                *last = Some(key.clone());
                tracing::debug!("presenting a new client certificate to ziti-management");
                Some(key)
            }
            Err(err) => {
                tracing::warn!(%err, "the client certificate is unusable; connecting without one");
                None
            }
        }
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The rustls settings: the CA(s) given or the platform's roots, the rotating client
/// certificate, and HTTP/2.
pub(crate) fn client_config(
    ca_pem: Option<&[u8]>,
    source: Arc<dyn ClientCertificateSource>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for certificate in CertificateDer::pem_slice_iter(pem) {
                let certificate = certificate
                    .map_err(|err| TlsError::UnreadableCertificate { what: "CA", reason: err.to_string() })?;
                roots
                    .add(certificate)
                    .map_err(|err| TlsError::UnreadableCertificate { what: "CA", reason: err.to_string() })?;
            }
            if roots.is_empty() {
                return Err(TlsError::NoCertificate { what: "CA" });
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = Arc::new(SourceResolver { source, provider: provider.clone(), last: Mutex::new(None) });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError::UnreadableCertificate { what: "TLS settings", reason: err.to_string() })?
        .with_root_certificates(roots)
        .with_client_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Connects TCP, then TLS, for the channel: the channel's URI is `http://host:port`
/// and TLS is done here, verifying `server_name` (or the host) on the certificate.
#[derive(Debug, Clone)]
pub(crate) struct Connector {
    config: Arc<ClientConfig>,
    server_name: Option<String>,
}

impl Connector {
    pub(crate) fn new(config: Arc<ClientConfig>, server_name: Option<String>) -> Self {
        Self { config, server_name }
    }

    pub(crate) async fn connect(
        self,
        uri: Uri,
    ) -> std::io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>> {
        let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_owned());
        let host = uri.host().ok_or_else(|| invalid("the target has no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().ok_or_else(|| invalid("the target has no port"))?;
        let name = self.server_name.clone().unwrap_or_else(|| host.clone());
        let name = ServerName::try_from(name).map_err(|_| invalid("the TLS server name is invalid"))?;
        let tcp = TcpStream::connect((host.as_str(), port)).await?;
        tcp.set_nodelay(true)?;
        let tls = tokio_rustls::TlsConnector::from(self.config).connect(name, tcp).await?;
        Ok(TokioIo::new(tls))
    }
}
