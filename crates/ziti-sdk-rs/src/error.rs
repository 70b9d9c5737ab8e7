//! The SDK's typed errors. Messages never contain key material or tokens.

use std::path::PathBuf;

/// What is wrong with an identity file. Each variant names the JSON field at fault;
/// none carries the field's content, so a bad key is never echoed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The identity file could not be read.
    #[error("cannot read identity file {path}: {source}")]
    Read {
        /// The file named.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// The file is not JSON, or not shaped like an identity.
    #[error("identity file is not valid identity JSON (line {line}, column {column})")]
    Json {
        /// The line of the first error.
        line: usize,
        /// The column of the first error.
        column: usize,
    },
    /// A required field (named) is absent.
    #[error("identity file has no `{0}`")]
    Missing(&'static str),
    /// A field is present but unusable.
    #[error("identity file field `{field}` {problem}")]
    Field {
        /// The JSON field at fault (e.g. `id.key`).
        field: &'static str,
        /// What is wrong with it, without its content.
        problem: String,
    },
}

/// Everything the SDK reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The identity could not be loaded.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("service `{0}` not found (or this identity has no policy for it)")]
    /// No service of that name (carried) is visible to this identity.
    ServiceNotFound(String),
    #[error("identity is not authorized to {action} service `{service}`")]
    /// The identity has no policy to bind or dial the service.
    NotAuthorized {
        /// The service's name.
        service: String,
        /// `"bind"` or `"dial"`.
        action: &'static str,
    },
    #[error("no edge router reachable for service `{service}` (tried: {tried})")]
    /// None of the edge routers offered for the service could be reached.
    NoRouterReachable {
        /// The service's name.
        service: String,
        /// Each router address tried with why it failed, comma-separated.
        tried: String,
    },
    /// The API session ended and a new login did not succeed.
    #[error("API session expired or revoked, and logging in again failed")]
    SessionExpired,
    #[error("edge router {router} rejected this identity's session (closed the channel after hello)")]
    /// An edge router refused this identity's session during the hello.
    IdentityRejected {
        /// The router's address.
        router: String,
    },
    /// [`crate::ZitiContext::update_identity`] was given an identity for other
    /// controllers than the context's; nothing was changed.
    #[error("the new identity names controller(s) {offered}, but this context is logged in to {current}")]
    OtherController {
        /// The context's controller URLs, comma-separated.
        current: String,
        /// The new identity's controller URLs, comma-separated.
        offered: String,
    },
    #[error("controller rejected the login: {0}")]
    /// The controller refused the certificate login; carries why.
    LoginRejected(String),
    #[error("controller answered {status} to {what}: {message}")]
    /// The controller answered a request with an error status.
    Controller {
        /// The request, in words.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The controller's error code and message.
        message: String,
    },
    #[error("hosting service `{service}` failed: {reason}")]
    /// Hosting the service failed (the router refused the Bind, or the listener stopped).
    BindFailed {
        /// The service's name.
        service: String,
        /// The router's or the SDK's reason.
        reason: String,
    },
    #[error("the edge router does not know the service session for `{service}` (yet): {reason}")]
    /// The router refused a Bind because it does not know its session (error code 3),
    /// as a router does for a moment after a login before the controller told it of
    /// the new session; binding again with a new service session succeeds then.
    SessionNotKnown {
        /// The service's name.
        service: String,
        /// The router's reason.
        reason: String,
    },
    #[error("dialing service `{service}` failed: {reason}")]
    /// The router or the host refused the dial.
    DialFailed {
        /// The service's name.
        service: String,
        /// The router's or host's reason.
        reason: String,
    },
    #[error("edge router channel to {router} closed")]
    /// The channel to an edge router closed under the operation.
    ChannelClosed {
        /// The router's address.
        router: String,
    },
    /// A step (named) took too long.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The controller or a router answered something this SDK does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// End-to-end encryption could not be set up or a message did not decrypt.
    #[error("end-to-end encryption failed: {0}")]
    Crypto(&'static str),
    /// An HTTP request to the controller failed (connect, TLS, timeout, body).
    #[error("HTTP request to the controller failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The TLS configuration for the identity could not be built.
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    /// A socket or file operation failed.
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
            Error::Timeout(_)
            | Error::Io(_)
            | Error::ChannelClosed { .. }
            | Error::NoRouterReachable { .. }
            | Error::SessionNotKnown { .. } => true,
            _ => false,
        }
    }
}

/// Shorthand for SDK results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
