//! Reading claims from JWTs (the controller's, and an ext-jwt identity's IdP token).
//! The SDK does not verify signatures: it only schedules refreshes and names itself
//! from its tokens; routers and the controller do the verifying.

use serde::Deserialize;

use crate::error::Error;

/// The claims the SDK uses.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Claims {
    #[serde(default)]
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    #[serde(default)]
    pub exp: Option<u64>,
    /// The identity name (id tokens).
    #[serde(default)]
    pub name: Option<String>,
    /// The API session id.
    #[serde(default)]
    pub z_asid: Option<String>,
    #[serde(default)]
    pub nonce: Option<String>,
}

/// Decodes the payload of a compact JWT (with `jsonwebtoken`, unverified).
pub(crate) fn claims(token: &str) -> Result<Claims, Error> {
    use jsonwebtoken::errors::ErrorKind;
    // The error names the kind only: its message could quote the token.
    jsonwebtoken::dangerous::insecure_decode_claims(token).map_err(|err| {
        Error::Protocol(match err.kind() {
            ErrorKind::InvalidToken => "token is not a JWT".to_owned(),
            ErrorKind::Base64(_) => "token payload is not base64url".to_owned(),
            _ => "token payload is not JSON claims".to_owned(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    #[test]
    fn reads_claims_and_rejects_garbage() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"abc","exp":1700000000,"z_asid":"s1","name":"n"}"#);
        let claims = claims(&format!("e30.{payload}.sig")).unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.exp, claims.z_asid.as_deref()),
            ("abc", Some(1_700_000_000), Some("s1"))
        );
        assert_eq!(claims.name.as_deref(), Some("n"));
        assert!(super::claims("opaque-legacy-token").is_err());
        assert!(super::claims("a.!!!.c").is_err());
    }
}
