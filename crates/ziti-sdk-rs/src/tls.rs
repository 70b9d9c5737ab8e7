//! TLS client settings: trust only the identity's CAs and always present its certificate
//! (the controller binds access tokens to it, routers check it against the token).

use std::sync::Arc;

use rustls::ClientConfig;
use rustls::RootCertStore;

use crate::error::{Error, IdentityError};
use crate::identity::Identity;

/// A rustls client configuration for `identity`, offering the given ALPN protocols.
pub(crate) fn client_config(identity: &Identity, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, Error> {
    let mut roots = RootCertStore::empty();
    for ca in identity.ca() {
        roots.add(ca.clone()).map_err(|err| IdentityError::Field {
            field: "id.ca",
            problem: format!("holds a certificate that cannot be trusted: {err}"),
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(identity.cert_chain().to_vec(), identity.key())
        .map_err(|err| match err {
            rustls::Error::InconsistentKeys(_) => Error::Identity(IdentityError::Field {
                field: "id.key",
                problem: "does not match the certificate in id.cert".to_owned(),
            }),
            other => Error::Tls(other),
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
