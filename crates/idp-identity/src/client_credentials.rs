//! [`ClientCredentials`]: tokens from the OAuth2 client-credentials grant, at the
//! token endpoint the IdP's OIDC discovery document names. The client secret is read
//! from its file for every grant (so a rotated secret is used at once) and never kept.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use oauth2::basic::BasicClient;
use oauth2::{ClientId, ClientSecret, RequestTokenError, Scope, TokenResponse, TokenUrl};
use reqwest::Url;
use serde::Deserialize;
use tokio::sync::OnceCell;
use zeroize::Zeroizing;

use crate::token::{IdpToken, TokenError, TokenSource};

/// Where and as whom to ask for tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCredentialsSettings {
    /// `ZITI_OIDC_ISSUER`: the IdP's issuer URL; its discovery document names the token endpoint.
    pub issuer: Url,
    /// `ZITI_OIDC_CLIENT_ID`.
    pub client_id: String,
    /// `ZITI_OIDC_CLIENT_SECRET_FILE`.
    pub secret_file: PathBuf,
    /// `ZITI_OIDC_AUDIENCE`: the audience the controller's ext-jwt signer expects.
    pub audience: String,
    /// `ZITI_OIDC_SCOPES`: scopes to ask for (may be empty).
    pub scopes: Vec<String>,
    /// How long one request to the IdP may take.
    pub timeout: Duration,
}

/// The client-credentials grant against one IdP.
#[derive(Debug)]
pub struct ClientCredentials {
    settings: ClientCredentialsSettings,
    http: reqwest::Client,
    token_endpoint: OnceCell<TokenUrl>,
}

#[derive(Deserialize)]
struct Discovery {
    token_endpoint: String,
}

impl ClientCredentials {
    /// The grant with these settings; nothing is asked of the IdP until a token is.
    pub fn new(settings: ClientCredentialsSettings) -> Result<Self, TokenError> {
        // No redirects: a redirected token request would carry the secret elsewhere.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .build()
            .map_err(|err| TokenError::Unreachable { issuer: settings.issuer.to_string(), source: Box::new(err) })?;
        Ok(Self { settings, http, token_endpoint: OnceCell::new() })
    }

    fn issuer(&self) -> String {
        self.settings.issuer.as_str().trim_end_matches('/').to_owned()
    }

    fn unreachable(&self, err: impl std::error::Error + Send + Sync + 'static) -> TokenError {
        TokenError::Unreachable { issuer: self.issuer(), source: Box::new(err) }
    }

    /// The token endpoint, from the discovery document (asked once).
    async fn token_endpoint(&self) -> Result<&TokenUrl, TokenError> {
        self.token_endpoint
            .get_or_try_init(|| async {
                let url = format!("{}/.well-known/openid-configuration", self.issuer());
                let response = self.http.get(&url).send().await.map_err(|err| self.unreachable(err))?;
                let response = response.error_for_status().map_err(|err| self.unreachable(err))?;
                let discovery: Discovery = response.json().await.map_err(|err| self.unreachable(err))?;
                TokenUrl::new(discovery.token_endpoint).map_err(|err| self.unreachable(err))
            })
            .await
    }

    fn secret(&self) -> Result<Zeroizing<String>, TokenError> {
        let path = &self.settings.secret_file;
        let secret = std::fs::read_to_string(path)
            .map(Zeroizing::new)
            .map_err(|err| TokenError::Secret { path: path.display().to_string(), reason: err.to_string() })?;
        let trimmed = Zeroizing::new(secret.trim().to_owned());
        if trimmed.is_empty() {
            return Err(TokenError::Secret { path: path.display().to_string(), reason: "it is empty".to_owned() });
        }
        Ok(trimmed)
    }
}

#[async_trait]
impl TokenSource for ClientCredentials {
    async fn token(&self) -> Result<IdpToken, TokenError> {
        let endpoint = self.token_endpoint().await?.clone();
        let secret = self.secret()?;
        let client = BasicClient::new(ClientId::new(self.settings.client_id.clone()))
            .set_client_secret(ClientSecret::new(secret.to_string()))
            .set_token_uri(endpoint);
        let request = client
            .exchange_client_credentials()
            .add_extra_param("audience", self.settings.audience.clone())
            .add_scopes(self.settings.scopes.iter().cloned().map(Scope::new));
        let answer = request.request_async(&self.http).await.map_err(|err| match err {
            RequestTokenError::ServerResponse(refusal) => TokenError::Refused {
                issuer: self.issuer(),
                client_id: self.settings.client_id.clone(),
                reason: match refusal.error_description() {
                    Some(description) => format!("{} ({description})", refusal.error()),
                    None => refusal.error().to_string(),
                },
            },
            RequestTokenError::Request(err) => self.unreachable(err),
            RequestTokenError::Parse(err, _) => {
                TokenError::Malformed { origin: self.describe(), reason: err.to_string() }
            }
            RequestTokenError::Other(reason) => {
                TokenError::Refused { issuer: self.issuer(), client_id: self.settings.client_id.clone(), reason }
            }
        })?;
        IdpToken::parse(Zeroizing::new(answer.access_token().secret().clone()), &self.describe())
    }

    fn describe(&self) -> String {
        format!("client {} at {}", self.settings.client_id, self.issuer())
    }
}
