//! The SDK's typed errors. Messages never contain key material or tokens.

use std::path::PathBuf;

/// What is wrong with an identity file. Each variant names the JSON field at fault;
/// none carries the field's content, so a bad key is never echoed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read identity file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("identity file is not valid identity JSON (line {line}, column {column})")]
    Json { line: usize, column: usize },
    #[error("identity file has no `{0}`")]
    Missing(&'static str),
    #[error("identity file field `{field}` {problem}")]
    Field { field: &'static str, problem: String },
}

/// Everything the SDK reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("service `{0}` not found (or this identity has no policy for it)")]
    ServiceNotFound(String),
    #[error("identity is not authorized to {action} service `{service}`")]
    NotAuthorized { service: String, action: &'static str },
    #[error("no edge router reachable for service `{service}` (tried: {tried})")]
    NoRouterReachable { service: String, tried: String },
    #[error("API session expired or revoked, and logging in again failed")]
    SessionExpired,
    #[error("edge router {router} rejected this identity's session (closed the channel after hello)")]
    IdentityRejected { router: String },
    #[error("controller rejected the login: {0}")]
    LoginRejected(String),
    #[error("controller answered {status} to {what}: {message}")]
    Controller { what: String, status: u16, message: String },
    #[error("hosting service `{service}` failed: {reason}")]
    BindFailed { service: String, reason: String },
    #[error("dialing service `{service}` failed: {reason}")]
    DialFailed { service: String, reason: String },
    #[error("edge router channel to {router} closed")]
    ChannelClosed { router: String },
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("end-to-end encryption failed: {0}")]
    Crypto(&'static str),
    #[error("HTTP request to the controller failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Whether the failure may pass by itself, so retrying (with backoff) is right: the
    /// controller answered 5xx or 429 or could not be reached (connect, TLS, timeout), or
    /// a router channel broke. A refusal ([`Error::LoginRejected`],
    /// [`Error::SessionExpired`]) is not.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Controller { status, .. } => *status >= 500 || *status == 429,
            Error::Http(err) => err.is_connect() || err.is_timeout() || err.is_request() || err.is_body(),
            Error::Timeout(_) | Error::Io(_) | Error::ChannelClosed { .. } | Error::NoRouterReachable { .. } => true,
            _ => false,
        }
    }
}

/// Shorthand for SDK results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
