//! The pre-OIDC login (`/authenticate?method=cert`, or `method=ext-jwt` with the
//! external JWT as bearer token; `zt-session` header), used only when the controller
//! does not advertise `OIDC_AUTH`.

use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use super::{ApiSession, AuthMode, CLIENT_API, Controller, Credential, Envelope, checked};
use crate::error::Error;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LegacySession {
    #[serde(default)]
    id: String,
    #[serde(default)]
    token: Option<Zeroizing<String>>,
    #[serde(default)]
    expiration_seconds: Option<u64>,
    #[serde(default)]
    identity: Option<IdentityRef>,
}

#[derive(Deserialize)]
struct IdentityRef {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
}

fn session_from(data: LegacySession, previous: Option<&ApiSession>) -> Result<ApiSession, Error> {
    let token = data
        .token
        .or_else(|| previous.map(|p| p.token.clone()))
        .ok_or_else(|| Error::Protocol("legacy login returned no token".to_owned()))?;
    let identity = data.identity.unwrap_or(IdentityRef { id: String::new(), name: String::new() });
    Ok(ApiSession {
        mode: AuthMode::Legacy,
        token,
        refresh_token: None,
        // Sliding expiry: the controller's default idle timeout is 30 minutes.
        expires_at: SystemTime::now() + Duration::from_secs(data.expiration_seconds.unwrap_or(1800)),
        identity_id: identity.id,
        identity_name: identity.name,
        api_session_id: data.id,
    })
}

pub(super) async fn login(controller: &Controller) -> Result<ApiSession, Error> {
    if let Credential::ExtJwt(ext) = &controller.credential {
        let path = format!("{CLIENT_API}authenticate?method=ext-jwt");
        let request = controller.http.post(controller.url(&path)?).bearer_auth(ext.token.as_str()).json(&json!({}));
        let response = match checked(&path, request.send().await?).await {
            Err(Error::SessionExpired) => {
                return Err(Error::LoginRejected(format!("ext-jwt login: {}", controller.ext_jwt_refused(ext))));
            }
            other => other?,
        };
        let data: Envelope<LegacySession> = response.json().await?;
        return session_from(data.data, None);
    }
    let body = json!({ "sdkInfo": { "type": "ziti-sdk-rs", "version": env!("CARGO_PKG_VERSION") } });
    let path = format!("{CLIENT_API}authenticate?method=cert");
    let response = match controller.post_json(&path, &body, None).await {
        Err(Error::SessionExpired) => {
            return Err(Error::LoginRejected("the controller does not accept this certificate".to_owned()));
        }
        other => other?,
    };
    let data: Envelope<LegacySession> = response.json().await?;
    session_from(data.data, None)
}

/// Touching the current API session extends its sliding expiry.
pub(super) async fn refresh(controller: &Controller, session: &ApiSession) -> Result<ApiSession, Error> {
    let response = controller.get(&format!("{CLIENT_API}current-api-session"), Some(session)).await?;
    let data: Envelope<LegacySession> = response.json().await?;
    session_from(data.data, Some(session))
}
