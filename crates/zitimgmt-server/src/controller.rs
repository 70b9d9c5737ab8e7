//! The OpenZiti controller's edge APIs over HTTPS: one pooled client, an admin
//! session that is renewed transparently when the controller forgets it (401), and
//! errors that say whether trying again could help.

mod client_api;
mod identities;

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Certificate, Client, RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use thiserror::Error;
use tokio::sync::{Mutex, RwLock};
use zeroize::Zeroizing;

pub use identities::{ExternalIdentity, Identity, IdentityPage, NewIdentity};

use crate::config::Password;

/// A controller that does not answer a connection attempt in this time is down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bounds every call, so a stuck controller turns into UNAVAILABLE, not a hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Error)]
pub enum ControllerError {
    /// No answer (connection refused, TLS failure, timeout): worth trying again.
    #[error("the controller cannot be reached ({what}): {detail}")]
    Unreachable {
        what: &'static str,
        /// The whole cause chain (reqwest's own message alone says little).
        detail: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the controller rejected the admin credentials of user {user:?}")]
    BadCredentials { user: String },
    #[error("the controller has no such entity ({what})")]
    NotFound { what: &'static str },
    #[error("the controller answered {status} to {what}: {message}")]
    Rejected { what: &'static str, status: StatusCode, message: String },
    #[error("the controller's answer to {what} was not understood: {problem}")]
    Malformed { what: &'static str, problem: String },
    #[error("the controller client cannot be set up: {0}")]
    Setup(String),
}

impl ControllerError {
    /// The controller is down, overloaded or cannot let us in right now.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::BadCredentials { .. } => true,
            Self::Rejected { status, .. } => status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS,
            Self::NotFound { .. } | Self::Malformed { .. } | Self::Setup(_) => false,
        }
    }

    fn unreachable(what: &'static str, err: reqwest::Error) -> Self {
        // Without the URL: an enrollment URL carries the one-time token.
        let source = err.without_url();
        Self::Unreachable { what, detail: service_kit::causes::with_causes(&source), source }
    }
}

/// The admin session token, with a number that tells a stale one from a renewed one.
struct Session {
    token: Zeroizing<String>,
    generation: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("generation", &self.generation).finish_non_exhaustive()
    }
}

/// The controller's edge management and client APIs. Share it behind an `Arc`.
#[derive(Debug)]
pub struct Controller {
    http: Client,
    base: Url,
    user: String,
    password: Password,
    session: RwLock<Option<Arc<Session>>>,
    /// Serialises logins, so a burst of 401s makes one login, not one each.
    login: Mutex<u64>,
}

#[derive(Deserialize)]
struct Envelope<T> {
    data: T,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

impl Controller {
    /// `ca_pem`: the certificates to trust for the controller; `None` = system roots.
    pub fn new(base: Url, ca_pem: Option<&[u8]>, user: String, password: Password) -> Result<Self, ControllerError> {
        let mut builder = Client::builder()
            .use_rustls_tls()
            .https_only(true)
            // A redirect would re-send the admin password or the `zt-session` token to
            // wherever it points: follow none.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true);
        if let Some(pem) = ca_pem {
            let certificates =
                Certificate::from_pem_bundle(pem).map_err(|err| ControllerError::Setup(err.to_string()))?;
            builder = builder.tls_built_in_root_certs(false);
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder.build().map_err(|err| ControllerError::Setup(err.to_string()))?;
        Ok(Self { http, base, user, password, session: RwLock::new(None), login: Mutex::new(0) })
    }

    /// `base` + the given path segments (each percent-encoded).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn management(&self, segments: &[&str]) -> Url {
        let mut all = vec!["edge", "management", "v1"];
        all.extend_from_slice(segments);
        self.url(&all)
    }

    /// Logs in unless a session newer than `stale` exists already; returns the session.
    async fn login(&self, stale: Option<u64>) -> Result<Arc<Session>, ControllerError> {
        let mut generation = self.login.lock().await;
        let current = self.session.read().await.clone();
        if let Some(session) = current.filter(|session| Some(session.generation) != stale) {
            return Ok(session);
        }
        const WHAT: &str = "admin login";
        let mut url = self.management(&["authenticate"]);
        url.set_query(Some("method=password"));
        let body = serde_json::json!({ "username": self.user, "password": self.password.expose() });
        let response =
            self.http.post(url).json(&body).send().await.map_err(|err| ControllerError::unreachable(WHAT, err))?;
        match response.status() {
            StatusCode::UNAUTHORIZED | StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN => {
                *self.session.write().await = None;
                return Err(ControllerError::BadCredentials { user: self.user.clone() });
            }
            _ => {}
        }
        #[derive(Deserialize)]
        struct Token {
            token: String,
        }
        let token: Token = json(WHAT, response).await?;
        *generation += 1;
        let session = Arc::new(Session { token: Zeroizing::new(token.token), generation: *generation });
        *self.session.write().await = Some(session.clone());
        tracing::info!(user = %self.user, "logged in to the controller");
        Ok(session)
    }

    /// Logs in now: at start-up, to find bad credentials before serving.
    pub async fn ensure_session(&self) -> Result<(), ControllerError> {
        self.session().await.map(drop)
    }

    async fn session(&self) -> Result<Arc<Session>, ControllerError> {
        // Bound first: a guard in the match scrutinee would be held across the login.
        let current = self.session.read().await.clone();
        match current {
            Some(session) => Ok(session),
            None => self.login(None).await,
        }
    }

    /// Sends an authenticated management request; on 401 logs in again and retries once.
    async fn send(
        &self,
        what: &'static str,
        request: impl Fn(&Client) -> RequestBuilder,
    ) -> Result<Response, ControllerError> {
        let session = self.session().await?;
        let response = request(&self.http)
            .header("zt-session", session.token.as_str())
            .send()
            .await
            .map_err(|err| ControllerError::unreachable(what, err))?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        tracing::debug!(what, "the controller forgot the admin session; logging in again");
        let session = self.login(Some(session.generation)).await?;
        request(&self.http)
            .header("zt-session", session.token.as_str())
            .send()
            .await
            .map_err(|err| ControllerError::unreachable(what, err))
    }

    /// Checks that the controller answers and the admin session is valid.
    pub async fn check(&self) -> Result<(), ControllerError> {
        const WHAT: &str = "current API session";
        let response = self.send(WHAT, |http| http.get(self.management(&["current-api-session"]))).await?;
        expect_success(WHAT, response).await.map(drop)
    }
}

/// Reads a successful `{"data": ...}` answer, or turns the status into an error.
async fn json<T: DeserializeOwned>(what: &'static str, response: Response) -> Result<T, ControllerError> {
    let response = expect_success(what, response).await?;
    let bytes = response.bytes().await.map_err(|err| ControllerError::unreachable(what, err))?;
    serde_json::from_slice::<Envelope<T>>(&bytes)
        .map(|envelope| envelope.data)
        .map_err(|err| ControllerError::Malformed { what, problem: err.to_string() })
}

async fn expect_success(what: &'static str, response: Response) -> Result<Response, ControllerError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    if status == StatusCode::NOT_FOUND {
        return Err(ControllerError::NotFound { what });
    }
    // The controller's error bodies name the problem and never echo secrets.
    let body = response.bytes().await.unwrap_or_default();
    let message = match serde_json::from_slice::<ErrorEnvelope>(&body) {
        Ok(envelope) => format!("{}: {}", envelope.error.code, envelope.error.message),
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    };
    Err(ControllerError::Rejected { what, status, message })
}
