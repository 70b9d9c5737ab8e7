//! Builds the ziti-management client from the configuration (reading the TLS files).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use gateway_bin::config::{ManagementTls, OverlayConfig};
use zitimgmt_grpc::{ManagementClient, ManagementConfig, TlsMaterial};

pub fn connect(overlay: &OverlayConfig) -> Result<Arc<ManagementClient>> {
    let mut config = ManagementConfig::new(overlay.management_target.clone());
    config.request_timeout = overlay.management_timeout;
    config.allow_plaintext_to_remote = overlay.management_insecure;
    if let Some(tls) = &overlay.management_tls {
        config = config.with_tls(tls_material(tls)?);
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
