//! Router certificates for identities without one of their own (ext-jwt): after each
//! login, a new EC P-256 key and CSR, and the controller's API-session certificate for
//! it; renewed at three quarters of its lifetime (or sooner, see
//! [`super::ContextOptions::max_certificate_renewal_interval`]). New router channels use
//! the newest certificate; channels already open keep theirs (routers check a client
//! certificate only when the channel opens).

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use rustls::ClientConfig;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::time::Instant;

use super::Inner;
use crate::backoff::Backoff;
use crate::controller::{ApiSession, Controller};
use crate::error::Error;

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// The router TLS settings with a new API-session certificate, and what renewing it needs.
pub(crate) struct Certified {
    pub(crate) tls: Arc<ClientConfig>,
    pub(crate) info: CertificateInfo,
}

/// The current API-session certificate (nothing secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CertificateInfo {
    pub(crate) id: String,
    pub(crate) api_session_id: String,
    pub(crate) not_after: SystemTime,
    pub(crate) renew_at: Instant,
}

/// When to renew a certificate valid for `lifetime`: at three quarters of it, or after
/// `max_interval` if that comes first.
pub(crate) fn renewal_delay(lifetime: Duration, max_interval: Option<Duration>) -> Duration {
    let due = lifetime / 4 * 3;
    max_interval.map_or(due, |max| due.min(max))
}

/// For an ext-jwt identity, a new key and API-session certificate for `session`;
/// `None` for an identity that presents its own certificate.
pub(crate) async fn certify(
    controller: &Controller,
    session: &ApiSession,
    max_interval: Option<Duration>,
) -> Result<Option<Certified>, Error> {
    if controller.ext_jwt().is_none() {
        return Ok(None);
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|_| Error::Crypto("generating the API-session key failed"))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, session.identity_id.as_str());
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|_| Error::Crypto("making the API-session certificate request failed"))?;
    let certificate = controller.session_certificate(session, &csr).await?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let tls = crate::tls::session_config(controller.ca(), &certificate.cas, certificate.chain, key)?;
    let lifetime = certificate.not_after.duration_since(certificate.not_before).unwrap_or_default();
    let info = CertificateInfo {
        id: certificate.id,
        api_session_id: session.api_session_id.clone(),
        not_after: certificate.not_after,
        renew_at: Instant::now() + renewal_delay(lifetime, max_interval),
    };
    tracing::info!(
        certificate = %info.id,
        api_session = %info.api_session_id,
        not_after = ?info.not_after,
        "new API-session certificate for router channels"
    );
    Ok(Some(Certified { tls, info }))
}

/// Renews the API-session certificate when due, for as long as the context lives.
pub(super) async fn keep_certified(inner: Weak<Inner>) {
    let Some(mut changes) = inner.upgrade().map(|inner| inner.router_certificate.subscribe()) else { return };
    let mut retry = Backoff::new(FIRST_RETRY, MAX_RETRY);
    let mut failed = false;
    loop {
        let current = changes.borrow_and_update().clone();
        let Some(current) = current else {
            // A certificate identity: nothing to renew unless it becomes an ext-jwt one.
            if changes.changed().await.is_err() {
                return;
            }
            continue;
        };
        let wait = if failed { retry.next_delay() } else { current.renew_at.saturating_duration_since(Instant::now()) };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            changed = changes.changed() => {
                // A login made a new one: schedule from it.
                if changed.is_err() {
                    return;
                }
                failed = false;
                retry.reset();
                continue;
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        match inner.renew_certificate(&current).await {
            Ok(()) => {
                failed = false;
                retry.reset();
            }
            Err(err) => {
                tracing::warn!(%err, certificate = %current.id, "renewing the API-session certificate failed; retrying");
                failed = true;
            }
        }
    }
}

impl Inner {
    /// Takes a new router certificate (or, with `None`, keeps presenting the identity's).
    pub(crate) fn adopt(&self, certified: Option<Certified>) {
        let info = certified.map(|certified| {
            super::write(&self.router_tls, certified.tls);
            certified.info
        });
        self.router_certificate.send_replace(info);
    }

    /// Replaces `current` with a new certificate for the current API session, unless a
    /// login already replaced it.
    async fn renew_certificate(&self, current: &CertificateInfo) -> Result<(), Error> {
        let _guard = self.login_lock.lock().await;
        if self.router_certificate.borrow().as_ref() != Some(current) {
            return Ok(());
        }
        let session = self.session();
        let certified = certify(&self.controller(), &session, self.options.max_certificate_renewal_interval).await?;
        self.adopt(certified);
        Ok(())
    }
}

#[cfg(test)]
#[path = "certify_tests.rs"]
mod tests;
