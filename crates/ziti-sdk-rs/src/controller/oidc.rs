//! OIDC login with the client certificate or an external IdP's JWT (authorization code +
//! PKCE, client `native`; `method=ext-jwt` for the JWT), and the refresh-token grant.
//! Redirects are read, never followed.

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use reqwest::{Response, StatusCode, Url, header};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{ApiSession, AuthMode, Controller, Credential, claims, epoch};
use crate::error::Error;

const CLIENT_ID: &str = "native";
/// Nothing listens here: the code is read from the redirect's Location.
const REDIRECT_URI: &str = "http://localhost:8080/auth/callback";

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Zeroizing<String>,
    #[serde(default)]
    refresh_token: Option<Zeroizing<String>>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    id_token: Option<String>,
}

fn random_text(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut raw);
    URL_SAFE_NO_PAD.encode(raw)
}

fn login_error(step: &str, detail: impl std::fmt::Display) -> Error {
    Error::LoginRejected(format!("{step}: {detail}"))
}

/// A 5xx or 429 answer: the controller is unavailable for now, which says nothing
/// about this identity (a transient [`Error::Controller`], never a refusal).
fn unavailable(step: &str, response: &Response) -> Option<Error> {
    let status = response.status();
    (status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS).then(|| Error::Controller {
        what: format!("OIDC {step}"),
        status: status.as_u16(),
        message: status.canonical_reason().unwrap_or_default().to_owned(),
    })
}

/// The redirect target of a 3xx answer, resolved against the request URL.
fn location(response: &Response) -> Option<Url> {
    let value = response.headers().get(header::LOCATION)?.to_str().ok()?;
    response.url().join(value).ok()
}

fn query_value(url: &Url, key: &str) -> Option<String> {
    url.query_pairs().find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
}

pub(super) async fn login(controller: &Controller) -> Result<ApiSession, Error> {
    let verifier = Zeroizing::new(random_text(32));
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let state = random_text(16);
    let nonce = random_text(16);

    // 1. Authorize: presenting the certificate routes us to the cert login; an ext-jwt
    // login asks for its method (without it the controller offers the password login).
    let (step, login_path) = match &controller.credential {
        Credential::Certificate => ("certificate login", "oidc/login/cert"),
        Credential::ExtJwt(_) => ("ext-jwt login", "oidc/login/ext-jwt"),
    };
    let authorize = controller.url("oidc/authorize")?;
    let mut request = controller.http.get(authorize);
    if let Credential::ExtJwt(_) = controller.credential {
        request = request.query(&[("method", "ext-jwt")]);
    }
    let response = request
        .query(&[
            ("client_id", CLIENT_ID),
            ("response_type", "code"),
            ("scope", "openid offline_access"),
            ("state", &state),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("redirect_uri", REDIRECT_URI),
            ("nonce", &nonce),
        ])
        .send()
        .await?;
    let auth_request_id = auth_request_id(controller, response).await?;

    // 2. Prove the certificate (this request presents it over TLS), or present the JWT.
    let mut request = controller
        .http
        .post(controller.url(login_path)?)
        .header(header::ACCEPT, "application/json")
        .form(&[("id", auth_request_id.as_str())]);
    if let Credential::ExtJwt(ext) = &controller.credential {
        request = request.bearer_auth(ext.token.as_str());
    }
    let response = request.send().await?;
    if let Some(err) = unavailable(step, &response) {
        return Err(err);
    }
    if matches!(response.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        let why = match &controller.credential {
            Credential::Certificate => "the controller does not accept this certificate".to_owned(),
            Credential::ExtJwt(ext) => controller.ext_jwt_refused(ext),
        };
        return Err(login_error(step, why));
    }
    if response.headers().contains_key("totp-required") {
        return Err(login_error(step, "the identity requires TOTP, which this SDK does not support"));
    }
    let callback =
        location(&response).ok_or_else(|| login_error(step, format!("unexpected answer {}", response.status())))?;

    // 3. The callback redirects to our redirect URI with the code.
    let response = controller.http.get(callback).send().await?;
    if let Some(err) = unavailable("callback", &response) {
        return Err(err);
    }
    let redirect = location(&response)
        .ok_or_else(|| login_error("callback", format!("unexpected answer {}", response.status())))?;
    if query_value(&redirect, "state").as_deref() != Some(state.as_str()) {
        return Err(login_error("callback", "state mismatch"));
    }
    let code = Zeroizing::new(query_value(&redirect, "code").ok_or_else(|| login_error("callback", "no code"))?);

    // 4. Exchange the code.
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", CLIENT_ID),
        ("code_verifier", verifier.as_str()),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT_URI),
    ];
    let tokens = token_request(controller, &form).await?;
    let id_nonce = tokens.id_token.as_deref().map(claims).transpose()?.and_then(|c| c.nonce);
    if id_nonce.is_some_and(|n| n != nonce) {
        return Err(login_error("token", "id token nonce mismatch"));
    }
    session_from(tokens, None)
}

/// Step 1's answer: a redirect naming the auth request, or a page carrying its id in a header.
async fn auth_request_id(controller: &Controller, response: Response) -> Result<String, Error> {
    if let Some(err) = unavailable("authorize", &response) {
        return Err(err);
    }
    let status = response.status();
    let target = location(&response);
    if let Some(id) = target.as_ref().and_then(|url| query_value(url, "authRequestID")) {
        return Ok(id);
    }
    let response = match target {
        Some(url) => controller.http.get(url).send().await?,
        None => response,
    };
    if let Some(err) = unavailable("authorize", &response) {
        return Err(err);
    }
    response
        .headers()
        .get("auth-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| login_error("authorize", format!("no auth request id (status {status})")))
}

async fn token_request(controller: &Controller, form: &[(&str, &str)]) -> Result<TokenResponse, Error> {
    let response = controller.http.post(controller.url("oidc/oauth/token")?).form(form).send().await?;
    let status = response.status();
    if let Some(Error::Controller { what, status, .. }) = unavailable("token", &response) {
        let text: String = response.text().await.unwrap_or_default().chars().take(200).collect();
        return Err(Error::Controller { what, status, message: text });
    }
    if !status.is_success() {
        // Anything else (`invalid_grant`, 401, 403, ...) refuses this grant for good.
        let text: String = response.text().await.unwrap_or_default().chars().take(200).collect();
        return Err(login_error("token", format!("{status}: {text}")));
    }
    Ok(response.json().await?)
}

fn session_from(tokens: TokenResponse, previous: Option<&ApiSession>) -> Result<ApiSession, Error> {
    let access = claims(&tokens.access_token)?;
    let identity_name = match tokens.id_token.as_deref().map(claims).transpose()?.and_then(|c| c.name) {
        Some(name) => name,
        None => previous.map(|p| p.identity_name.clone()).unwrap_or_else(|| access.sub.clone()),
    };
    let expires_at = match (access.exp, tokens.expires_in) {
        (Some(exp), _) => epoch(exp),
        (None, Some(seconds)) => SystemTime::now() + Duration::from_secs(seconds),
        (None, None) => return Err(Error::Protocol("access token without expiry".to_owned())),
    };
    Ok(ApiSession {
        mode: AuthMode::Oidc,
        api_session_id: access.z_asid.clone().unwrap_or_default(),
        identity_id: access.sub,
        identity_name,
        refresh_token: tokens.refresh_token.or_else(|| previous.and_then(|p| p.refresh_token.clone())),
        token: tokens.access_token,
        expires_at,
    })
}

pub(super) async fn refresh(controller: &Controller, session: &ApiSession) -> Result<ApiSession, Error> {
    let refresh_token = session.refresh_token.as_ref().ok_or(Error::SessionExpired)?;
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh_token.as_str()), ("client_id", CLIENT_ID)];
    let tokens = token_request(controller, &form).await?;
    session_from(tokens, Some(session))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_controller::{FakeController, Reply, logged_in_session as session};

    const TOKEN: &str = "/oidc/oauth/token";

    async fn controller() -> (FakeController, Controller) {
        let fake = FakeController::start().await;
        let controller = Controller::for_tests(fake.base(), AuthMode::Oidc);
        (fake, controller)
    }

    #[tokio::test]
    async fn a_refresh_answered_with_a_server_error_or_429_is_transient_not_a_refusal() {
        let (fake, controller) = controller().await;
        for status in [500u16, 502, 503, 429] {
            fake.script(TOKEN, [Reply::status(status)]);
            let err = refresh(&controller, &session()).await.unwrap_err();
            assert!(matches!(err, Error::Controller { status: s, .. } if s == status), "{status}: {err:?}");
            assert!(err.is_transient(), "{status}: {err:?}");
        }
    }

    #[tokio::test]
    async fn a_refresh_refused_with_invalid_grant_401_or_403_is_a_refusal() {
        let (fake, controller) = controller().await;
        let invalid_grant = Reply::json(400, serde_json::json!({ "error": "invalid_grant" }));
        for reply in [invalid_grant, Reply::status(401), Reply::status(403)] {
            fake.script(TOKEN, [reply]);
            let err = refresh(&controller, &session()).await.unwrap_err();
            assert!(matches!(err, Error::LoginRejected(_)), "{err:?}");
            assert!(!err.is_transient());
        }
    }

    #[tokio::test]
    async fn an_unreachable_controller_is_transient() {
        let (fake, controller) = controller().await;
        drop(fake);
        let err = refresh(&controller, &session()).await.unwrap_err();
        assert!(matches!(err, Error::Http(_)) && err.is_transient(), "{err:?}");
    }

    /// Scripts a login that succeeds, with API session `s2`.
    fn script_login(fake: &FakeController) {
        fake.script("/oidc/authorize", [Reply::redirect("/oidc/login/cert?authRequestID=ar1")]);
        fake.script("/oidc/login/cert", [Reply::redirect("/oidc/callback?id=ar1")]);
        fake.script("/oidc/callback", [Reply::redirect("http://localhost:8080/auth/callback?code=c1&state={state}")]);
        fake.script(TOKEN, [Reply::tokens("s2")]);
    }

    #[tokio::test]
    async fn a_login_answered_503_at_any_step_is_transient_and_401_is_a_refusal() {
        let (fake, controller) = controller().await;
        script_login(&fake);
        assert_eq!(login(&controller).await.unwrap().api_session_id, "s2");
        for step in ["/oidc/authorize", "/oidc/login/cert", "/oidc/callback", TOKEN] {
            script_login(&fake);
            fake.script(step, [Reply::status(503)]);
            let err = login(&controller).await.unwrap_err();
            assert!(matches!(err, Error::Controller { status: 503, .. }) && err.is_transient(), "{step}: {err:?}");
        }
        script_login(&fake);
        fake.script("/oidc/login/cert", [Reply::status(401)]);
        let err = login(&controller).await.unwrap_err();
        assert!(matches!(err, Error::LoginRejected(_)), "{err:?}");
    }
}
