//! Builds the ziti-management client from the configuration: reads the TLS files,
//! and brings the credentials the gateway presents (its X.509-SVID, a token file).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use domain::ProviderError;
use gateway_bin::config::{ManagementCredentials, ManagementTls, OverlayConfig};
use idp_identity::{IdentityProvisioner, IdpToken};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use spiffe_identity::SvidCertificates;
use zitimgmt_grpc::{
    BearerTokenSource, ClientCertificate, ClientCertificateSource, ManagementClient, ManagementConfig, TlsMaterial,
    Zeroizing,
};

pub async fn connect(overlay: &OverlayConfig, svid_timeout: Duration) -> Result<Arc<ManagementClient>> {
    let mut config = ManagementConfig::new(overlay.management_target.clone());
    config.request_timeout = overlay.management_timeout;
    config.allow_plaintext_to_remote = overlay.management_insecure;
    if let Some(tls) = &overlay.management_tls {
        config = config.with_tls(tls_material(tls)?);
    }
    let credentials: &ManagementCredentials = &overlay.management_credentials;
    if let Some(path) = &credentials.token_file {
        config.bearer_token = Some(Arc::new(TokenFile(path.clone())));
    }
    if let Some(endpoint) = &credentials.svid_endpoint {
        let tls = config.uri()?.scheme_str() == Some("https");
        if tls {
            let svids = SvidCertificates::connect(endpoint, credentials.spiffe_id.as_deref(), svid_timeout)
                .await
                .context("cannot present the X.509-SVID to ziti-management")?;
            let material = config.tls.take().unwrap_or_default();
            config = config.with_tls(material.with_client_certificate_source(Arc::new(Svid(svids))));
            tracing::info!(endpoint = %endpoint, "presenting the workload's X.509-SVID to ziti-management");
        } else {
            tracing::debug!("ziti-management is reached in plain text: the X.509-SVID is not presented");
        }
    }
    if config.is_plaintext_to_remote()? {
        tracing::warn!(
            target = %overlay.management_target,
            "INSECURE: ZITI_MANAGEMENT_INSECURE=true, so ziti-management is reached in plain text over the \
             network; the leased identity and its private key can be read by anyone on the path"
        );
    }
    Ok(Arc::new(ManagementClient::new(config)?))
}

fn tls_material(tls: &ManagementTls) -> Result<TlsMaterial> {
    let mut material = TlsMaterial::default();
    if let Some(ca) = &tls.ca_file {
        material.ca_pem = Some(read("ZITI_MANAGEMENT_TLS_CA", ca)?);
    }
    if let (Some(cert), Some(key)) = (&tls.client_cert_file, &tls.client_key_file) {
        material = material
            .with_client_identity(read("ZITI_MANAGEMENT_TLS_CERT", cert)?, read("ZITI_MANAGEMENT_TLS_KEY", key)?);
    }
    if let Some(domain) = &tls.domain_name {
        material = material.with_domain_name(domain.clone());
    }
    Ok(material)
}

fn read(variable: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{variable}: cannot read {}", path.display()))
}

/// The workload's X.509-SVID as the client certificate towards ziti-management.
#[derive(Debug)]
struct Svid(SvidCertificates);

impl ClientCertificateSource for Svid {
    fn current(&self) -> Option<ClientCertificate> {
        let svid = self.0.current()?;
        Some(ClientCertificate {
            chain: svid.chain.into_iter().map(CertificateDer::from).collect(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(svid.key.to_vec())),
        })
    }
}

/// `ZITI_MANAGEMENT_TOKEN_FILE`, re-read for every call: the Kubernetes projected
/// service-account token is replaced in place before it expires.
#[derive(Debug)]
struct TokenFile(PathBuf);

impl BearerTokenSource for TokenFile {
    fn token(&self) -> Result<Zeroizing<String>, String> {
        let token = std::fs::read_to_string(&self.0)
            .map(Zeroizing::new)
            .map_err(|err| format!("cannot read ZITI_MANAGEMENT_TOKEN_FILE {}: {err}", self.0.display()))?;
        if token.trim().is_empty() {
            return Err(format!("ZITI_MANAGEMENT_TOKEN_FILE {} is empty", self.0.display()));
        }
        Ok(Zeroizing::new(token.trim().to_owned()))
    }
}

/// ziti-management's `ProvisionIdentity`: makes the IdP token's OpenZiti identity
/// exist before the gateway logs in with the token (`ZITI_IDP_PROVISION`).
#[derive(Debug)]
pub struct Provisioner(pub Arc<ManagementClient>);

#[async_trait::async_trait]
impl IdentityProvisioner for Provisioner {
    async fn provision(&self, token: &IdpToken) -> Result<String, ProviderError> {
        let provisioned = self.0.provision_identity(token.expose()).await.map_err(ProviderError::from)?;
        tracing::info!(
            identity = %provisioned.name,
            created = provisioned.created,
            role_attributes = ?provisioned.role_attributes,
            "ziti-management provisioned the identity the IdP token names"
        );
        Ok(provisioned.name)
    }
}
