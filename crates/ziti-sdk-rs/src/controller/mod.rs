//! The controller's Edge Client API: login (OIDC, or the legacy login when the
//! controller does not advertise OIDC) with the client certificate or an external IdP's
//! JWT, API session refresh, API-session certificates, services and sessions.

mod certificates;
mod jwt;
mod legacy;
mod oidc;
mod services;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;
use zeroize::Zeroizing;

pub(crate) use jwt::claims;
pub(crate) use services::ServiceSession;
pub use services::{Service, SessionType};

use crate::error::Error;
use crate::identity::{ExtJwt, Identity};

const CLIENT_API: &str = "edge/client/v1/";
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// How the API session was obtained, which decides how it is presented and refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthMode {
    Oidc,
    Legacy,
}

/// An API session: the token the controller and routers accept for this identity.
#[derive(Clone)]
pub(crate) struct ApiSession {
    pub(crate) mode: AuthMode,
    /// The OIDC access token, or the legacy `zt-session` token.
    pub(crate) token: Zeroizing<String>,
    pub(crate) refresh_token: Option<Zeroizing<String>>,
    pub(crate) expires_at: SystemTime,
    pub(crate) identity_id: String,
    pub(crate) identity_name: String,
    pub(crate) api_session_id: String,
}

impl fmt::Debug for ApiSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiSession")
            .field("mode", &self.mode)
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("identity_id", &self.identity_id)
            .field("identity_name", &self.identity_name)
            .field("api_session_id", &self.api_session_id)
            .finish()
    }
}

impl ApiSession {
    /// When to refresh: a quarter of the lifetime (at most a minute) before expiry.
    pub(crate) fn refresh_due(&self, now: SystemTime) -> Duration {
        let left = self.expires_at.duration_since(now).unwrap_or_default();
        left.saturating_sub((left / 4).min(Duration::from_secs(60)))
    }
}

/// What a login presents: the client certificate (over TLS), or an external JWT.
#[derive(Debug, Clone)]
pub(crate) enum Credential {
    Certificate,
    ExtJwt(ExtJwt),
}

/// An HTTP client for one controller, presenting the identity's certificate (an ext-jwt
/// identity presents none, and its token at login).
#[derive(Debug, Clone)]
pub(crate) struct Controller {
    http: reqwest::Client,
    base: Url,
    mode: AuthMode,
    credential: Credential,
    /// The identity's CAs (`id.ca`), which routers' certificates chain to.
    ca: std::sync::Arc<[rustls_pki_types::CertificateDer<'static>]>,
}

fn credential_of(identity: &Identity) -> Credential {
    identity.ext_jwt().map_or(Credential::Certificate, |ext| Credential::ExtJwt(ext.clone()))
}

#[derive(Deserialize)]
struct Envelope<T> {
    data: T,
}

#[derive(Deserialize)]
struct ApiErrorBody {
    error: ApiError,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct Version {
    #[serde(default)]
    capabilities: Vec<String>,
}

impl Controller {
    /// Builds the client and asks the controller which login it offers (OIDC when
    /// advertised, unless `force_legacy`).
    pub(crate) async fn connect(identity: &Identity, force_legacy: bool) -> Result<Controller, Error> {
        let http = http_client(identity)?;
        let mut last_err = None;
        for base in identity.api_urls() {
            let mut controller = Controller {
                http: http.clone(),
                base: base.clone(),
                mode: AuthMode::Legacy,
                credential: credential_of(identity),
                ca: identity.ca_certificates().into(),
            };
            match controller.get(&format!("{CLIENT_API}version"), None).await {
                Ok(response) => {
                    let version: Envelope<Version> = response.json().await?;
                    if !force_legacy && version.data.capabilities.iter().any(|c| c == "OIDC_AUTH") {
                        controller.mode = AuthMode::Oidc;
                    }
                    return Ok(controller);
                }
                Err(err) => last_err = Some(err),
            }
        }
        Err(last_err.unwrap_or_else(|| Error::Protocol("identity names no controller".to_owned())))
    }

    pub(crate) fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The same controller and login method, presenting `identity`'s credential.
    pub(crate) fn with_identity(&self, identity: &Identity) -> Result<Controller, Error> {
        Ok(Controller {
            http: http_client(identity)?,
            base: self.base.clone(),
            mode: self.mode,
            credential: credential_of(identity),
            ca: identity.ca_certificates().into(),
        })
    }

    /// A client for a plain-HTTP stand-in controller (unit tests).
    #[cfg(test)]
    pub(crate) fn for_tests(base: Url, mode: AuthMode) -> Controller {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).timeout(HTTP_TIMEOUT);
        Controller {
            http: http.build().unwrap(),
            base,
            mode,
            credential: Credential::Certificate,
            ca: Vec::new().into(),
        }
    }

    /// The same, logging in with `ext` (unit tests).
    #[cfg(test)]
    pub(crate) fn with_ext_jwt_for_tests(mut self, ext: ExtJwt) -> Controller {
        self.credential = Credential::ExtJwt(ext);
        self
    }

    /// The external JWT this client logs in with, for an ext-jwt identity.
    pub(crate) fn ext_jwt(&self) -> Option<&ExtJwt> {
        match &self.credential {
            Credential::ExtJwt(ext) => Some(ext),
            Credential::Certificate => None,
        }
    }

    /// The identity's CAs.
    pub(crate) fn ca(&self) -> &[rustls_pki_types::CertificateDer<'static>] {
        &self.ca
    }

    /// Logs in with the identity's certificate or external JWT.
    pub(crate) async fn login(&self) -> Result<ApiSession, Error> {
        match self.mode {
            AuthMode::Oidc => oidc::login(self).await,
            AuthMode::Legacy => legacy::login(self).await,
        }
    }

    /// Why the controller refused `ext`, without the token: it gives no reason (it
    /// logs it), so name the likely ones.
    pub(crate) fn ext_jwt_refused(&self, ext: &ExtJwt) -> String {
        let expired = if ext.expires_at <= SystemTime::now() { "; the token has expired" } else { "" };
        format!(
            "the controller at {} refused the IdP token for subject `{}`{expired} (expired, wrong issuer or audience, \
             a signer the identity's auth policy does not allow, or no identity with that external id; the \
             controller's log says which)",
            self.base, ext.subject
        )
    }

    /// Extends `session` (OIDC refresh grant, or a legacy session touch).
    pub(crate) async fn refresh(&self, session: &ApiSession) -> Result<ApiSession, Error> {
        match session.mode {
            AuthMode::Oidc => oidc::refresh(self, session).await,
            AuthMode::Legacy => legacy::refresh(self, session).await,
        }
    }

    /// Asks the controller whether it still accepts `session` (an authenticated read):
    /// [`Error::SessionExpired`] when it does not.
    pub(crate) async fn check_session(&self, session: &ApiSession) -> Result<(), Error> {
        self.get(&format!("{CLIENT_API}current-identity"), Some(session)).await.map(drop)
    }

    fn url(&self, path: &str) -> Result<Url, Error> {
        self.base.join(path).map_err(|_| Error::Protocol(format!("bad controller path {path}")))
    }

    /// Adds the API session's credentials to a request.
    fn authorize(request: RequestBuilder, session: Option<&ApiSession>) -> RequestBuilder {
        match session {
            Some(s) if s.mode == AuthMode::Oidc => request.bearer_auth(s.token.as_str()),
            Some(s) => request.header("zt-session", s.token.as_str()),
            None => request,
        }
    }

    pub(crate) async fn get(&self, path: &str, session: Option<&ApiSession>) -> Result<Response, Error> {
        let request = Self::authorize(self.http.get(self.url(path)?), session);
        checked(path, request.send().await?).await
    }

    pub(crate) async fn post_json<T: serde::Serialize + ?Sized>(
        &self,
        path: &str,
        body: &T,
        session: Option<&ApiSession>,
    ) -> Result<Response, Error> {
        let request = Self::authorize(self.http.post(self.url(path)?).json(body), session);
        checked(path, request.send().await?).await
    }
}

/// An HTTP client that trusts the identity's CAs and presents its certificate.
fn http_client(identity: &Identity) -> Result<reqwest::Client, Error> {
    let tls = crate::tls::client_config(identity, &[b"http/1.1"])?;
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        // OIDC answers are redirects whose Location is the result: never follow them.
        .redirect(reqwest::redirect::Policy::none())
        .timeout(HTTP_TIMEOUT)
        .build()?)
}

/// Turns controller error answers into typed errors: 401 means the API session is gone.
async fn checked(what: &str, response: Response) -> Result<Response, Error> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    if status == StatusCode::UNAUTHORIZED {
        return Err(Error::SessionExpired);
    }
    let text = response.text().await.unwrap_or_default();
    let (code, message) = match serde_json::from_str::<ApiErrorBody>(&text) {
        Ok(body) => (body.error.code, body.error.message),
        Err(_) => (String::new(), text.chars().take(200).collect()),
    };
    Err(Error::Controller {
        what: what.split('?').next().unwrap_or(what).to_owned(),
        status: status.as_u16(),
        message: if code.is_empty() { message } else { format!("{code}: {message}") },
    })
}

/// Seconds since the epoch to a time.
pub(crate) fn epoch(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

#[cfg(test)]
#[path = "ext_jwt_tests.rs"]
pub(crate) mod ext_jwt_tests;
