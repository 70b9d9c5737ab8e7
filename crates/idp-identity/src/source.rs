//! [`IdpIdentitySource`]: the identity-source port over an IdP token.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use domain::ports::IdentityProvider;
use domain::{IdentityId, IdentityJson, LeasedIdentity, ProviderError, Renewal, ServiceType};
use tokio::sync::Mutex;

use crate::token::{IdpToken, TokenError, TokenSource};

/// The controller the token logs in to.
#[derive(Clone)]
pub struct IdpSettings {
    /// `ZITI_CONTROLLER_URL` (`https://host:port`).
    pub controller_url: String,
    /// The PEM of `ZITI_CONTROLLER_CA`.
    pub controller_ca_pem: String,
}

impl fmt::Debug for IdpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdpSettings").field("controller_url", &self.controller_url).finish_non_exhaustive()
    }
}

/// The port for asking that the token's OpenZiti identity exist before it logs in
/// (ziti-management's `ProvisionIdentity`).
#[async_trait]
pub trait IdentityProvisioner: Send + Sync + fmt::Debug {
    /// Makes sure the identity whose external id the token names exists; returns its
    /// name, for the log.
    async fn provision(&self, token: &IdpToken) -> Result<String, ProviderError>;
}

/// The gateway's OpenZiti identity as the one an IdP token names. A "lease" here is
/// the token's lifetime: keeping it hands out the current token, and a new one from
/// the [`TokenSource`] once half of the one in use is spent; when no token can be had
/// before the one in use expires, the lease is lost until one comes again. The SDK
/// logs in with the token and keeps its OpenZiti session (refreshed on its own) and
/// the router certificate it obtains; a newer token is used for the next login.
pub struct IdpIdentitySource {
    settings: IdpSettings,
    tokens: Arc<dyn TokenSource>,
    provisioner: Option<Arc<dyn IdentityProvisioner>>,
    held: Mutex<Option<IdpToken>>,
}

impl fmt::Debug for IdpIdentitySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdpIdentitySource")
            .field("settings", &self.settings)
            .field("tokens", &self.tokens.describe())
            .field("provisions", &self.provisioner.is_some())
            .finish_non_exhaustive()
    }
}

/// Why the source has no identity to give. Never carries the token.
#[derive(Debug, thiserror::Error)]
enum IdpProblem {
    #[error("no IdP token from {origin}")]
    NoToken {
        origin: String,
        #[source]
        source: TokenError,
    },
    #[error("the IdP token now names {now}, not {held}")]
    OtherIdentity { held: String, now: String },
    #[error("cannot write the identity document ({0})")]
    Document(String),
}

impl IdpIdentitySource {
    /// A source that asks `tokens` when it needs a token.
    pub fn new(settings: IdpSettings, tokens: Arc<dyn TokenSource>) -> Self {
        Self { settings, tokens, provisioner: None, held: Mutex::new(None) }
    }

    /// The same source, asking `provisioner` for the identity before each first login.
    #[must_use]
    pub fn with_provisioner(self, provisioner: Arc<dyn IdentityProvisioner>) -> Self {
        Self { provisioner: Some(provisioner), ..self }
    }

    /// The token to use now: the one held while less than half spent, else a new one
    /// (or, when none comes, the one held for as long as it is valid).
    async fn current(&self) -> Result<IdpToken, ProviderError> {
        let mut held = self.held.lock().await;
        let now = SystemTime::now();
        if let Some(token) = held.as_ref().filter(|token| !token.half_spent(now)) {
            return Ok(token.clone());
        }
        match self.tokens.token().await {
            Ok(token) => {
                tracing::info!(
                    subject = %token.subject,
                    expires_in_secs = token.left(now).as_secs(),
                    renewed = held.is_some(),
                    "IdP token from {}",
                    self.tokens.describe()
                );
                *held = Some(token.clone());
                Ok(token)
            }
            Err(source) => {
                if let Some(token) = held.as_ref().filter(|token| !token.left(now).is_zero()) {
                    tracing::warn!(err = %source, left_secs = token.left(now).as_secs(), "no new IdP token yet; keeping the one in use");
                    return Ok(token.clone());
                }
                let transient = source.is_transient();
                let problem = Box::new(IdpProblem::NoToken { origin: self.tokens.describe(), source });
                Err(if transient { ProviderError::Transient(problem) } else { ProviderError::Fatal(problem) })
            }
        }
    }

    /// The identity document for the SDK: the controller, its CA and the token.
    fn identity(&self, token: &IdpToken) -> Result<IdentityJson, ProviderError> {
        let document = Document {
            zt_api: &self.settings.controller_url,
            id: Material { ca: &format!("pem:{}", self.settings.controller_ca_pem) },
            ext_jwt: token.expose(),
        };
        serde_json::to_vec(&document)
            .map(IdentityJson::new)
            .map_err(|err| ProviderError::Fatal(Box::new(IdpProblem::Document(err.to_string()))))
    }
}

#[derive(serde::Serialize)]
struct Document<'a> {
    #[serde(rename = "ztAPI")]
    zt_api: &'a str,
    id: Material<'a>,
    #[serde(rename = "extJwt")]
    ext_jwt: &'a str,
}

#[derive(serde::Serialize)]
struct Material<'a> {
    ca: &'a str,
}

#[async_trait]
impl IdentityProvider for IdpIdentitySource {
    async fn request_identity(&self, _service: ServiceType) -> Result<LeasedIdentity, ProviderError> {
        let token = self.current().await?;
        if let Some(provisioner) = &self.provisioner {
            let name = provisioner.provision(&token).await?;
            tracing::info!(identity = %name, subject = %token.subject, "identity provisioned by ziti-management");
        }
        let expires_in = Some(token.left(SystemTime::now()));
        Ok(LeasedIdentity {
            id: IdentityId::new(token.subject.clone()),
            identity_json: self.identity(&token)?,
            expires_in,
        })
    }

    async fn extend_lease(&self, id: &IdentityId) -> Result<Renewal, ProviderError> {
        let token = self.current().await?;
        if token.subject != id.as_str() {
            // The token now names someone else: that is another OpenZiti identity.
            return Err(ProviderError::LeaseGone(Box::new(IdpProblem::OtherIdentity {
                held: id.to_string(),
                now: token.subject.clone(),
            })));
        }
        let expires_in = Some(token.left(SystemTime::now()));
        Ok(Renewal::with_credential(self.identity(&token)?, expires_in))
    }

    /// A token is not given back: it expires by itself.
    async fn release(&self, _id: &IdentityId) -> Result<(), ProviderError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Mutex as StdMutex;
    use std::time::Duration;

    use zeroize::Zeroizing;

    use super::*;
    use crate::token::tests::{jwt, now_secs};

    /// Hands out the tokens it is given, in order; then fails as the IdP being down.
    #[derive(Debug, Default)]
    struct Scripted(StdMutex<Vec<Result<String, &'static str>>>, StdMutex<usize>);

    #[async_trait]
    impl TokenSource for Scripted {
        async fn token(&self) -> Result<IdpToken, TokenError> {
            *self.1.lock().unwrap() += 1;
            let next = self.0.lock().unwrap().pop();
            match next {
                Some(Ok(value)) => IdpToken::parse(Zeroizing::new(value), "script"),
                Some(Err(reason)) => Err(TokenError::Refused {
                    issuer: "idp".to_owned(),
                    client_id: "c".to_owned(),
                    reason: reason.to_owned(),
                }),
                None => Err(TokenError::Unreachable { issuer: "idp".to_owned(), source: "down".into() }),
            }
        }

        fn describe(&self) -> String {
            "the script".to_owned()
        }
    }

    fn settings() -> IdpSettings {
        IdpSettings { controller_url: "https://127.0.0.1:1280".to_owned(), controller_ca_pem: "CA-PEM".to_owned() }
    }

    fn scripted(tokens: Vec<Result<String, &'static str>>) -> (IdpIdentitySource, Arc<Scripted>) {
        let mut tokens = tokens;
        tokens.reverse();
        let script = Arc::new(Scripted(StdMutex::new(tokens), StdMutex::new(0)));
        (IdpIdentitySource::new(settings(), script.clone()), script)
    }

    #[tokio::test]
    async fn the_identity_document_carries_the_controller_its_ca_and_the_token() {
        let now = now_secs();
        let token = jwt(serde_json::json!({"sub": "gateway-idp", "iat": now, "exp": now + 120}));
        let (source, _) = scripted(vec![Ok(token.clone())]);
        let leased = source.request_identity(ServiceType::Gateway).await.unwrap();
        assert_eq!(leased.id.as_str(), "gateway-idp");
        let document: serde_json::Value = serde_json::from_slice(leased.identity_json.as_bytes()).unwrap();
        assert_eq!(document["ztAPI"], "https://127.0.0.1:1280");
        assert_eq!(document["id"]["ca"], "pem:CA-PEM");
        assert_eq!(document["extJwt"], token.as_str());
        assert!(leased.expires_in.unwrap() <= Duration::from_secs(120));
        assert!(!format!("{source:?}").contains(&token[..16]));
    }

    #[tokio::test]
    async fn a_new_token_is_asked_for_only_once_the_one_held_is_half_spent() {
        let now = now_secs();
        let fresh = jwt(serde_json::json!({"sub": "gw", "iat": now, "exp": now + 120}));
        let (source, script) = scripted(vec![Ok(fresh.clone())]);
        let id = source.request_identity(ServiceType::Gateway).await.unwrap().id;
        source.extend_lease(&id).await.unwrap();
        assert_eq!(*script.1.lock().unwrap(), 1, "a fresh token is kept");

        let half_spent = jwt(serde_json::json!({"sub": "gw", "iat": now - 70, "exp": now + 50}));
        let next = jwt(serde_json::json!({"sub": "gw", "iat": now, "exp": now + 121}));
        let (source, script) = scripted(vec![Ok(half_spent), Ok(next.clone())]);
        let id = source.request_identity(ServiceType::Gateway).await.unwrap().id;
        let renewal = source.extend_lease(&id).await.unwrap();
        assert_eq!(*script.1.lock().unwrap(), 2, "a half-spent token is replaced");
        let document: serde_json::Value = serde_json::from_slice(renewal.credential.unwrap().as_bytes()).unwrap();
        assert_eq!(document["extJwt"], next.as_str(), "the renewal carries the new token");
    }

    #[tokio::test]
    async fn with_the_idp_down_the_token_held_is_kept_while_valid_and_none_at_start_is_transient() {
        let now = now_secs();
        let half_spent = jwt(serde_json::json!({"sub": "gw", "iat": now - 70, "exp": now + 50}));
        let (source, _) = scripted(vec![Ok(half_spent.clone())]);
        let id = source.request_identity(ServiceType::Gateway).await.unwrap().id;
        let renewal = source.extend_lease(&id).await.expect("the IdP is down, the token still valid");
        let document: serde_json::Value = serde_json::from_slice(renewal.credential.unwrap().as_bytes()).unwrap();
        assert_eq!(document["extJwt"], half_spent.as_str());

        let (down, _) = scripted(vec![]);
        let err = down.request_identity(ServiceType::Gateway).await.unwrap_err();
        assert!(matches!(err, ProviderError::Transient(_)), "{err:?}");
        let (refusing, _) = scripted(vec![Err("invalid_client")]);
        let err = refusing.request_identity(ServiceType::Gateway).await.unwrap_err();
        assert!(matches!(err, ProviderError::Fatal(_)), "a refused client is not retried: {err:?}");
    }

    #[tokio::test]
    async fn a_token_naming_someone_else_ends_the_lease() {
        let now = now_secs();
        let first = jwt(serde_json::json!({"sub": "gw", "iat": now - 70, "exp": now + 50}));
        let other = jwt(serde_json::json!({"sub": "someone-else", "iat": now, "exp": now + 120}));
        let (source, _) = scripted(vec![Ok(first), Ok(other)]);
        let id = source.request_identity(ServiceType::Gateway).await.unwrap().id;
        let err = source.extend_lease(&id).await.unwrap_err();
        assert!(matches!(err, ProviderError::LeaseGone(_)), "{err:?}");
    }
}
