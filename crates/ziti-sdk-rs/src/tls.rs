//! TLS client settings: trust only the identity's CAs and present its client
//! certificate (the controller binds access tokens to it, routers check it against the
//! token). An ext-jwt identity presents none to the controller, and to routers the
//! API-session certificate the controller issued it.

use std::sync::Arc;

use rustls::ClientConfig;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, IdentityError};
use crate::identity::Identity;

/// A rustls client configuration for `identity`, offering the given ALPN protocols:
/// with its certificate, or without a client certificate for an ext-jwt identity.
pub(crate) fn client_config(identity: &Identity, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, Error> {
    let client = identity.client_certificate().map(|(chain, key)| (chain.to_vec(), key));
    config(identity.ca_certificates(), &[], client, alpn)
}

/// A router client configuration presenting an API-session certificate (chain and
/// key), trusting the identity's CAs and `extra_ca` (the controller's CA bundle sent
/// with the certificate, over a connection verified against the identity's CAs).
pub(crate) fn session_config(
    identity_ca: &[CertificateDer<'static>],
    extra_ca: &[CertificateDer<'static>],
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ClientConfig>, Error> {
    config(identity_ca, extra_ca, Some((chain, key)), &[])
}

fn config(
    ca: &[CertificateDer<'static>],
    extra_ca: &[CertificateDer<'static>],
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, Error> {
    let mut roots = RootCertStore::empty();
    for ca in ca {
        roots.add(ca.clone()).map_err(|err| IdentityError::Field {
            field: "id.ca",
            problem: format!("holds a certificate that cannot be trusted: {err}"),
        })?;
    }
    // Best effort: a bundle entry rustls cannot use as a root is only skipped.
    roots.add_parsable_certificates(extra_ca.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match client {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|err| match err {
            rustls::Error::InconsistentKeys(_) => Error::Identity(IdentityError::Field {
                field: "id.key",
                problem: "does not match the certificate in id.cert".to_owned(),
            }),
            other => Error::Tls(other),
        })?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
