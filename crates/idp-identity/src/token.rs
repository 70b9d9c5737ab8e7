//! The IdP token and the port that supplies it.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::Deserialize;
use zeroize::Zeroizing;

/// Why no token could be had. Never carries the token or a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token file cannot be read.
    #[error("cannot read the token file {path}: {reason}")]
    File { path: String, reason: String },
    /// The client secret file cannot be read.
    #[error("cannot read the client secret file {path}: {reason}")]
    Secret { path: String, reason: String },
    /// The IdP cannot be reached (or answered with a server error): try again.
    #[error("the identity provider at {issuer} cannot be reached")]
    Unreachable {
        issuer: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The IdP refused to issue a token (bad client id or secret, unknown audience).
    #[error("the identity provider at {issuer} refused to issue a token to client {client_id}: {reason}")]
    Refused { issuer: String, client_id: String, reason: String },
    /// What was read is not a JWT with an expiry.
    #[error("the token from {origin} is not a JWT with an expiry ({reason})")]
    Malformed { origin: String, reason: String },
    /// The token has expired already.
    #[error("the token from {origin} expired {ago:?} ago")]
    Expired { origin: String, ago: Duration },
}

impl TokenError {
    /// Whether trying again later may help (the IdP down, a file being replaced).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::File { .. } | Self::Expired { .. })
    }
}

/// One IdP JWT: its value (secret), who it names and its lifetime.
#[derive(Clone)]
pub struct IdpToken {
    value: Zeroizing<String>,
    /// The `sub` claim.
    pub subject: String,
    /// When it was issued (`iat`, else when it was read).
    pub issued_at: SystemTime,
    /// Its `exp`.
    pub expires_at: SystemTime,
}

impl fmt::Debug for IdpToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdpToken")
            .field("subject", &self.subject)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Claims {
    exp: u64,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    sub: Option<String>,
}

impl IdpToken {
    /// Reads the claims the gateway schedules by. The signature is not checked here:
    /// the controller checks it, against the IdP's keys; this side only needs to know
    /// when to ask for the next one.
    pub fn parse(value: Zeroizing<String>, origin: &str) -> Result<Self, TokenError> {
        let malformed = |reason: String| TokenError::Malformed { origin: origin.to_owned(), reason };
        let claims: Claims =
            jsonwebtoken::dangerous::insecure_decode_claims(value.trim()).map_err(|err| malformed(err.kind_name()))?;
        let expires_at = UNIX_EPOCH + Duration::from_secs(claims.exp);
        let now = SystemTime::now();
        if let Ok(ago) = now.duration_since(expires_at) {
            return Err(TokenError::Expired { origin: origin.to_owned(), ago });
        }
        let issued_at = claims.iat.map_or(now, |iat| UNIX_EPOCH + Duration::from_secs(iat)).min(now);
        let value = Zeroizing::new(value.trim().to_owned());
        Ok(Self { value, subject: claims.sub.unwrap_or_default(), issued_at, expires_at })
    }

    /// The token itself. Secret: never log it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// How long it has left at `now`.
    pub fn left(&self, now: SystemTime) -> Duration {
        self.expires_at.duration_since(now).unwrap_or_default()
    }

    /// Whether more than half its lifetime is spent at `now`: time for the next one.
    pub fn half_spent(&self, now: SystemTime) -> bool {
        let lifetime = self.expires_at.duration_since(self.issued_at).unwrap_or_default();
        now >= self.issued_at + lifetime / 2
    }
}

/// A short, stable name of a jsonwebtoken error (its message could quote input).
trait KindName {
    fn kind_name(&self) -> String;
}

impl KindName for jsonwebtoken::errors::Error {
    fn kind_name(&self) -> String {
        use jsonwebtoken::errors::ErrorKind;
        match self.kind() {
            ErrorKind::InvalidToken => "not three base64url parts".to_owned(),
            ErrorKind::Base64(_) => "not base64url".to_owned(),
            ErrorKind::Json(_) => "its claims are not JSON with a numeric exp".to_owned(),
            ErrorKind::Utf8(_) => "not UTF-8".to_owned(),
            _ => "unreadable".to_owned(),
        }
    }
}

/// The port: where the IdP token comes from.
#[async_trait]
pub trait TokenSource: Send + Sync + fmt::Debug {
    /// A token valid now. Called when none is held or the one held is half spent.
    async fn token(&self) -> Result<IdpToken, TokenError>;

    /// What the token is for, in logs and errors (a path, an issuer and client id).
    fn describe(&self) -> String;
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// A JWT with these claims; the signature part is junk, as nothing here checks it.
    pub(crate) fn jwt(claims: serde_json::Value) -> String {
        use base64::Engine as _;
        let encode = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        format!("{}.{}.c2ln", encode(br#"{"alg":"RS256","typ":"JWT"}"#), encode(claims.to_string().as_bytes()))
    }

    pub(crate) fn now_secs() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn a_token_is_read_for_its_subject_and_lifetime_and_debug_hides_it() {
        let now = now_secs();
        let value = jwt(serde_json::json!({"sub": "gateway-idp", "iat": now - 10, "exp": now + 110}));
        let token = IdpToken::parse(Zeroizing::new(format!("{value}\n")), "test").unwrap();
        assert_eq!(token.subject, "gateway-idp");
        assert_eq!(token.expose(), value, "trimmed");
        assert!(!token.half_spent(SystemTime::now()));
        assert!(token.half_spent(SystemTime::now() + Duration::from_secs(51)));
        assert!(!format!("{token:?}").contains(&value[..20]));
    }

    #[test]
    fn garbage_and_expired_tokens_are_refused_without_quoting_them() {
        let err = IdpToken::parse(Zeroizing::new("not-a-jwt-SECRET".to_owned()), "the file t").unwrap_err();
        assert!(matches!(err, TokenError::Malformed { .. }), "{err:?}");
        assert!(!err.to_string().contains("SECRET"), "{err}");
        let now = now_secs();
        let expired = jwt(serde_json::json!({"sub": "x", "exp": now - 5}));
        let err = IdpToken::parse(Zeroizing::new(expired), "the file t").unwrap_err();
        assert!(matches!(err, TokenError::Expired { .. }), "{err:?}");
        let no_exp = jwt(serde_json::json!({"sub": "x"}));
        let err = IdpToken::parse(Zeroizing::new(no_exp), "the file t").unwrap_err();
        assert!(err.to_string().contains("numeric exp"), "{err}");
    }
}
