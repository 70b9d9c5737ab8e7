//! Reading claims from controller-issued JWTs. The SDK does not verify signatures: it
//! only schedules refreshes and names itself from its own tokens; routers and the
//! controller do the verifying.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
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

/// Decodes the payload of a compact JWT.
pub(crate) fn claims(token: &str) -> Result<Claims, Error> {
    let payload = token.split('.').nth(1).ok_or_else(|| Error::Protocol("token is not a JWT".to_owned()))?;
    let json = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| Error::Protocol("token payload is not base64url".to_owned()))?;
    serde_json::from_slice(&json).map_err(|_| Error::Protocol("token payload is not JSON claims".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
