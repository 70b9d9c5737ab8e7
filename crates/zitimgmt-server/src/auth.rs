//! Who is calling: the principal a call was authenticated as, by one of the methods
//! the server is configured with (`spiffe` mTLS, a `jwt` bearer token, or `none`).
//!
//! The principal decides what the caller may ask for (the [`crate::policy`]) and is
//! recorded on every lease it is issued, so that only it can extend or release it.

pub mod jwt;
pub mod spiffe;

use std::sync::Arc;

use thiserror::Error;
use tonic::Request;
use tonic::metadata::MetadataMap;

use self::jwt::{JwtError, JwtVerifier};

/// The methods a server accepts, in the order a call is checked: a bearer token
/// when one is sent, else a verified client certificate, else nothing at all.
#[derive(Debug, Clone)]
pub struct Authenticator {
    jwt: Option<JwtVerifier>,
    /// Client certificates were verified at the handshake (see [`spiffe`]).
    spiffe: bool,
    anonymous: bool,
}

/// Why a call is not authenticated. Never carries the token.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("no credentials: present an X.509-SVID as the client certificate or a bearer token")]
    NoCredentials,
    #[error("the authorization metadata is not `Bearer <token>`")]
    MalformedAuthorization,
    #[error("bearer tokens are not accepted by this server")]
    BearerNotAccepted,
    #[error("the bearer token is refused: {0}")]
    Token(#[source] JwtError),
}

impl AuthError {
    /// Whether this server, not the caller, is at fault (the JWKS cannot be fetched).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Token(err) if err.is_unavailable())
    }
}

impl Authenticator {
    /// The methods enabled: `jwt` with its verifier, `spiffe` (certificates verified
    /// at the handshake), and `anonymous` (the `none` method).
    pub fn new(jwt: Option<JwtVerifier>, spiffe: bool, anonymous: bool) -> Self {
        Self { jwt, spiffe, anonymous }
    }

    /// The principal of a call.
    pub async fn authenticate<T>(&self, request: &Request<T>) -> Result<Principal, AuthError> {
        self.authenticate_caller(request).await.map(|caller| caller.principal)
    }

    /// The principal of a call, with the verified claims of its bearer token when it
    /// was authenticated by one.
    pub async fn authenticate_caller<T>(&self, request: &Request<T>) -> Result<Caller, AuthError> {
        if let Some(token) = bearer(request.metadata())? {
            let Some(verifier) = &self.jwt else { return Err(AuthError::BearerNotAccepted) };
            let verified = verifier.verify_claims(token).await.map_err(AuthError::Token)?;
            return Ok(Caller {
                principal: Principal::Jwt(verified.principal),
                claims: Some(Arc::new(verified.claims)),
            });
        }
        let principal = if self.spiffe
            && let Some(certificates) = request.peer_certs()
            && let Some(principal) = certificates.first().and_then(spiffe::principal_of)
        {
            principal
        } else if self.anonymous {
            Principal::Anonymous
        } else {
            return Err(AuthError::NoCredentials);
        };
        Ok(Caller { principal, claims: None })
    }
}

/// An authenticated call's caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who is calling.
    pub principal: Principal,
    /// The claims of the verified bearer token, for a [`Principal::Jwt`] caller only.
    pub claims: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
}

/// The bearer token of `authorization`, if the call sent one.
fn bearer(metadata: &MetadataMap) -> Result<Option<&str>, AuthError> {
    let Some(value) = metadata.get("authorization") else { return Ok(None) };
    let value = value.to_str().map_err(|_| AuthError::MalformedAuthorization)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::MalformedAuthorization)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::MalformedAuthorization);
    }
    Ok(Some(token))
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Principal {
    /// The SPIFFE ID of an X.509-SVID presented over mTLS and verified against the
    /// trust bundle, e.g. `spiffe://ziti-gateway.test/gateway`.
    Spiffe(String),
    /// The value of the configured claim of a bearer JWT verified against the JWKS.
    Jwt(String),
    /// A caller without credentials, admitted by the `none` method.
    Anonymous,
}

impl Principal {
    /// The class, for metrics and logs: `spiffe`, `jwt` or `anonymous`.
    pub fn class(&self) -> &'static str {
        match self {
            Self::Spiffe(_) => "spiffe",
            Self::Jwt(_) => "jwt",
            Self::Anonymous => "anonymous",
        }
    }

    /// The principal as one string, as the holder tag of its leases records it: the
    /// SPIFFE ID, `jwt:<claim value>`, or `anonymous`. The prefixes keep the classes
    /// apart: a JWT whose claim reads like a SPIFFE ID is not that SPIFFE ID.
    pub fn to_tag(&self) -> String {
        match self {
            Self::Spiffe(id) => id.clone(),
            Self::Jwt(value) => format!("jwt:{value}"),
            Self::Anonymous => "anonymous".to_owned(),
        }
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_tag())
    }
}
