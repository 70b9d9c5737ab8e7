//! The SDK's entry point: one identity logged in to its controller, with channels to
//! edge routers shared by every listener and connection made through it.

mod certify;
mod refresh;
mod routers;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use rustls::ClientConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::channel::{Channel, ChannelSettings};
use crate::controller::{ApiSession, Controller, Service, ServiceSession, SessionType};
use crate::error::Error;
use crate::identity::Identity;

/// Tunables; the defaults suit most hosts.
#[derive(Debug, Clone)]
pub struct ContextOptions {
    /// Per-circuit flow control ("sdk xgress"), asked for on every dial and bind and
    /// used wherever the router agrees: a connection whose reader stops holds up only
    /// itself, and is never cut off for it. Off, or with routers that do not offer it,
    /// connections use the legacy data path (`receive_budget`, `receive_stall_limit`).
    pub flow_control: bool,
    /// With flow control: the most bytes a connection has in flight and unread at the
    /// peer before it waits (the window halves on a loss and grows back), and the unread
    /// received bytes at which it tells the sender to wait (it keeps up to one default
    /// window more, what the sender may still have on the way, before it drops).
    pub flow_window: usize,
    /// Legacy data path: bytes a connection may hold received but unread before the
    /// channel reader waits for it (pushing back on the sender).
    pub receive_budget: usize,
    /// Legacy data path: how long a connection over its budget may make no reading
    /// progress before it is cut off so that the other connections on the channel move on.
    pub receive_stall_limit: Duration,
    /// Refresh the API session at least this often (besides shortly before expiry).
    pub max_refresh_interval: Option<Duration>,
    /// How long to wait for the router to answer a Bind or Connect.
    pub request_timeout: Duration,
    /// Accepted connections a listener queues before refusing new dials.
    pub accept_backlog: usize,
    /// How often to probe each router channel; a router that does not answer within
    /// the interval is taken for dead (listeners then bind again). `None`: no probes.
    pub latency_probe_interval: Option<Duration>,
    /// Log in with the legacy API session (`zt-session`) even when the controller
    /// offers OIDC. By default the legacy login is used only when it does not.
    pub force_legacy_auth: bool,
    /// Ext-jwt identities: renew the API-session certificate (the router client
    /// certificate the controller issues, 12 h on OpenZiti v1.6) at least this often,
    /// besides at three quarters of its lifetime (e.g. to see renewals in tests).
    pub max_certificate_renewal_interval: Option<Duration>,
}

impl Default for ContextOptions {
    fn default() -> Self {
        Self {
            flow_control: true,
            flow_window: crate::channel::xgress::DEFAULT_WINDOW as usize,
            receive_budget: 4 * 1024 * 1024,
            receive_stall_limit: Duration::from_secs(30),
            max_refresh_interval: None,
            request_timeout: Duration::from_secs(35),
            accept_backlog: 128,
            latency_probe_interval: Some(Duration::from_secs(30)),
            force_legacy_auth: false,
            max_certificate_renewal_interval: None,
        }
    }
}

pub(crate) struct Inner {
    /// Swapped, with `router_tls`, when the credentials rotate.
    controller: RwLock<Controller>,
    router_tls: RwLock<Arc<ClientConfig>>,
    /// The controller URLs of the identity logged in with (rotated credentials must
    /// name the same).
    api_urls: Vec<reqwest::Url>,
    pub(crate) options: ContextOptions,
    session: RwLock<Arc<ApiSession>>,
    login_lock: tokio::sync::Mutex<()>,
    routers: routers::Routers,
    dial_sessions: Mutex<HashMap<String, ServiceSession>>,
    refresher: Mutex<Option<JoinHandle<()>>>,
    /// Renews the API-session certificate of an ext-jwt identity.
    renewer: Mutex<Option<JoinHandle<()>>>,
    /// The API-session certificate router channels present (ext-jwt identities).
    router_certificate: watch::Sender<Option<certify::CertificateInfo>>,
    /// Counts API session changes, so that listeners bind again on the new channels.
    renewals: watch::Sender<u64>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZitiContext").field("session", &*self.session()).finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read().unwrap_or_else(PoisonError::into_inner).clone()
}

fn write<T>(lock: &RwLock<T>, value: T) -> T {
    std::mem::replace(&mut *lock.write().unwrap_or_else(PoisonError::into_inner), value)
}

/// Whether two lists name the same controllers (in any order).
fn same_controllers(a: &[reqwest::Url], b: &[reqwest::Url]) -> bool {
    a.iter().all(|url| b.contains(url)) && b.iter().all(|url| a.contains(url))
}

fn url_list(urls: &[reqwest::Url]) -> String {
    urls.iter().map(reqwest::Url::as_str).collect::<Vec<_>>().join(", ")
}

/// A logged-in identity. Cheap to clone; the API session is refreshed in the
/// background while any clone, listener or connection is alive.
#[derive(Debug, Clone)]
pub struct ZitiContext {
    pub(crate) inner: Arc<Inner>,
}

impl ZitiContext {
    /// Loads an identity file and logs in.
    pub async fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::new(Identity::from_file(path)?).await
    }

    /// Logs in with `identity` using default options.
    pub async fn new(identity: Identity) -> Result<Self, Error> {
        Self::with_options(identity, ContextOptions::default()).await
    }

    /// Logs in with `identity` using `options`: finds the controller's login method,
    /// logs in and starts keeping the API session fresh.
    pub async fn with_options(identity: Identity, options: ContextOptions) -> Result<Self, Error> {
        let controller = Controller::connect(&identity, options.force_legacy_auth).await?;
        let router_tls = crate::tls::client_config(&identity, &[])?;
        let (session, certified) = log_in(&controller, &options).await?;
        tracing::debug!(identity = %session.identity_name, mode = ?controller.mode(), "logged in to the controller");
        let inner = Arc::new(Inner::new(controller, router_tls, identity.api_urls().to_vec(), options, session));
        inner.adopt(certified);
        let task = tokio::spawn(refresh::keep_fresh(Arc::downgrade(&inner)));
        *lock(&inner.refresher) = Some(task);
        let task = tokio::spawn(certify::keep_certified(Arc::downgrade(&inner)));
        *lock(&inner.renewer) = Some(task);
        Ok(Self { inner })
    }

    /// This identity's name, as the controller knows it.
    pub fn identity_name(&self) -> String {
        self.inner.session().identity_name.clone()
    }

    /// This identity's id.
    pub fn identity_id(&self) -> String {
        self.inner.session().identity_id.clone()
    }

    /// The current API session's id (it changes when the SDK has to log in again).
    pub fn api_session_id(&self) -> String {
        self.inner.session().api_session_id.clone()
    }

    /// When the current API session expires (it is refreshed before then).
    pub fn session_expires_at(&self) -> std::time::SystemTime {
        self.inner.session().expires_at
    }

    /// For an ext-jwt identity, the controller's id for the API-session certificate new
    /// router channels present (it changes when the certificate is renewed, and with each
    /// new login); `None` for an identity with a certificate of its own.
    pub fn api_session_certificate_id(&self) -> Option<String> {
        self.inner.router_certificate.borrow().as_ref().map(|info| info.id.clone())
    }

    /// Looks a service up by name, as this identity sees it.
    pub async fn service(&self, name: &str) -> Result<Service, Error> {
        let first = self.inner.session();
        match self.inner.controller().service(name, &first).await {
            Err(Error::SessionExpired) => {
                let session = self.inner.relogin(&first).await?;
                self.inner.controller().service(name, &session).await
            }
            other => other,
        }
    }

    /// Presents new credentials from now on (e.g. a rotated SPIFFE X.509-SVID; call it
    /// before the current certificate expires, see
    /// [`Identity::certificate_expires_at`]): logs in with `identity`'s certificate at
    /// once (a new API session), then uses it for the controller and for new router
    /// channels, and refreshes the new session from then on.
    ///
    /// A new IdP token for an ext-jwt context (an ext-jwt `identity` whose token has
    /// the same subject as the current one) is only kept for the logins to come: the
    /// API session is refreshed without it (the refresh-token grant), so logging in now
    /// would only churn the API session, its router channels and binds at every token
    /// renewal. The controller sees the token at the next login (a refused refresh, or
    /// an expired session). Another subject, or a change between certificate and
    /// ext-jwt, logs in at once as for a certificate.
    ///
    /// Make-before-break: connections on the old session's router channels carry on;
    /// each listener binds again on a new channel before it ends its old bind; an old
    /// channel closes once no connection is left on it (or when the old session's token
    /// expires, at the latest 5 minutes after the update).
    ///
    /// `identity` must name the same controller URLs ([`Error::OtherController`]). If
    /// it is refused, or the login with it fails, nothing changes: the context goes on
    /// with its current credentials and session, and the error is returned.
    pub async fn update_identity(&self, identity: Identity) -> Result<(), Error> {
        let inner = &self.inner;
        if !same_controllers(identity.api_urls(), &inner.api_urls) {
            return Err(Error::OtherController {
                current: url_list(&inner.api_urls),
                offered: url_list(identity.api_urls()),
            });
        }
        let controller = inner.controller().with_identity(&identity)?;
        let router_tls = crate::tls::client_config(&identity, &[])?;
        let (serial, not_after) = identity.credential_summary();
        // No relogin with the old credential in between.
        let _guard = inner.login_lock.lock().await;
        let current = inner.controller();
        if let (Some(new), Some(old)) = (controller.ext_jwt(), current.ext_jwt())
            && new.subject == old.subject
        {
            write(&inner.controller, controller);
            tracing::info!(credential = serial, expires_at = not_after, "new IdP token kept for the next login");
            return Ok(());
        }
        let (session, certified) = log_in(&controller, &inner.options).await.inspect_err(|err| {
            tracing::warn!(%err, credential = serial, "logging in with the new credentials failed; keeping the current session");
        })?;
        write(&inner.controller, controller);
        // Before the session: whoever sees the new session also sees the new certificate.
        write(&inner.router_tls, router_tls);
        inner.adopt(certified);
        let (session, _) = inner.install(session);
        tracing::info!(
            api_session = %session.api_session_id,
            credential = serial,
            credential_not_after = not_after,
            "credentials rotated: logged in with the new credentials"
        );
        Ok(())
    }
}

/// Logs in, and for an ext-jwt identity gets the new API session's router certificate.
async fn log_in(
    controller: &Controller,
    options: &ContextOptions,
) -> Result<(ApiSession, Option<certify::Certified>), Error> {
    let session = controller.login().await?;
    let certified = certify::certify(controller, &session, options.max_certificate_renewal_interval).await?;
    Ok((session, certified))
}

impl Inner {
    pub(crate) fn new(
        controller: Controller,
        router_tls: Arc<ClientConfig>,
        api_urls: Vec<reqwest::Url>,
        options: ContextOptions,
        session: ApiSession,
    ) -> Inner {
        Inner {
            controller: RwLock::new(controller),
            router_tls: RwLock::new(router_tls),
            api_urls,
            options,
            routers: routers::Routers::new(&session.api_session_id),
            session: RwLock::new(Arc::new(session)),
            login_lock: tokio::sync::Mutex::new(()),
            dial_sessions: Mutex::default(),
            refresher: Mutex::default(),
            renewer: Mutex::default(),
            router_certificate: watch::Sender::new(None),
            renewals: watch::Sender::new(0),
        }
    }

    /// The controller client, presenting the current certificate.
    pub(crate) fn controller(&self) -> Controller {
        read(&self.controller)
    }

    fn router_tls(&self) -> Arc<ClientConfig> {
        read(&self.router_tls)
    }

    /// Changes each time the API session is replaced (a new login): binds made with the
    /// old one should be made again on new channels.
    pub(crate) fn renewals(&self) -> watch::Receiver<u64> {
        self.renewals.subscribe()
    }

    pub(crate) fn session(&self) -> Arc<ApiSession> {
        self.session.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Replaces the API session. A new API session id retires every router channel
    /// (routers refuse UpdateToken across API sessions: new work needs new channels,
    /// while the connections on the old ones carry on), drops every cached service
    /// token, and tells listeners to bind again.
    pub(crate) fn install(&self, session: ApiSession) -> (Arc<ApiSession>, bool) {
        let session = Arc::new(session);
        let previous = write(&self.session, session.clone());
        let same = previous.api_session_id == session.api_session_id;
        if !same {
            lock(&self.dial_sessions).clear();
            self.routers.retire_all(&session.api_session_id, &previous);
            self.renewals.send_modify(|count| *count += 1);
        }
        (session, same)
    }

    /// Logs in afresh unless another task already replaced `stale`.
    pub(crate) async fn relogin(&self, stale: &ApiSession) -> Result<Arc<ApiSession>, Error> {
        let _guard = self.login_lock.lock().await;
        let current = self.session();
        if current.token.as_str() != stale.token.as_str() {
            return Ok(current);
        }
        let (session, certified) = log_in(&self.controller(), &self.options).await.map_err(|err| {
            tracing::warn!(%err, "logging in again failed");
            match err {
                // The credential is no longer accepted: the session cannot come back.
                Error::LoginRejected(_) | Error::SessionExpired => Error::SessionExpired,
                transient => transient,
            }
        })?;
        // Before the session: whoever sees the new session also sees its certificate.
        self.adopt(certified);
        Ok(self.install(session).0)
    }

    /// A service session (Dial tokens are cached and reused; the flag says so),
    /// logging in again once if the API session is gone.
    pub(crate) async fn service_session(
        &self,
        service: &Service,
        kind: SessionType,
    ) -> Result<(ServiceSession, bool), Error> {
        if kind == SessionType::Dial
            && let Some(cached) = lock(&self.dial_sessions).get(&service.id)
        {
            return Ok((cached.clone(), true));
        }
        let first = self.session();
        let controller = self.controller();
        let session = match controller.create_session(service, kind, &first).await {
            Err(Error::SessionExpired) => {
                let fresh = self.relogin(&first).await?;
                self.controller().create_session(service, kind, &fresh).await?
            }
            other => other?,
        };
        if kind == SessionType::Dial {
            lock(&self.dial_sessions).insert(service.id.clone(), session.clone());
        }
        Ok((session, false))
    }

    /// Forgets a cached Dial token the router refused.
    pub(crate) fn forget_dial_session(&self, service: &Service) {
        lock(&self.dial_sessions).remove(&service.id);
    }

    /// A channel to one of the session's routers (an open one if possible).
    pub(crate) async fn channel_for(&self, service: &str, session: &ServiceSession) -> Result<Channel, Error> {
        let api = self.session();
        let settings = ChannelSettings {
            budget: self.options.receive_budget,
            stall: self.options.receive_stall_limit,
            probe_interval: self.options.latency_probe_interval,
        };
        self.routers.channel_for(service, session, &api, self.router_tls(), settings).await
    }

    /// A channel to the router at `address`.
    pub(crate) async fn channel_to(&self, service: &str, address: &str) -> Result<Channel, Error> {
        let api = self.session();
        let settings = ChannelSettings {
            budget: self.options.receive_budget,
            stall: self.options.receive_stall_limit,
            probe_interval: self.options.latency_probe_interval,
        };
        self.routers.channel_to(service, address, &api, self.router_tls(), settings).await
    }

    pub(crate) fn close_channels(&self) {
        self.routers.close_all();
    }

    pub(crate) fn channels(&self) -> Vec<Channel> {
        self.routers.open_channels()
    }

    /// Channels of earlier API sessions still open for the connections on them.
    #[cfg(test)]
    pub(crate) fn retired_channels(&self) -> Vec<Channel> {
        self.routers.retired_channels()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in [lock(&self.refresher).take(), lock(&self.renewer).take()].into_iter().flatten() {
            task.abort();
        }
        self.routers.close_all();
    }
}

#[cfg(test)]
#[path = "update_tests.rs"]
mod update_tests;
