//! The ziti-management client: the identity provider and resolver ports over gRPC.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use domain::ports::{IdentityProvider, IdentityResolver};
use domain::{
    CallerIdentity, IdentityId, IdentityJson, LeasedIdentity, Principal, ProviderError, Renewal, ResolveError,
    ServiceType,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Request, Response, Status};

use crate::config::{BearerTokenSource, ConfigError, ManagementConfig, TlsMaterial};
use crate::expiry::expires_in;
use crate::proto;
use crate::proto::ziti_management_service_client::ZitiManagementServiceClient;
use crate::rotating_tls::{Connector, client_config};
use crate::status::{BrokenAnswer, CallError, Rpc, code_name, provider_error, resolve_error};
use crate::tls::{TlsError, client_tls_config};

/// Why a [`ManagementClient`] could not be built. Nothing here needs the server up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The TLS material (certificates, key) cannot be used.
    #[error("TLS towards ziti-management at {target} cannot be set up")]
    TlsMaterial { target: String, source: TlsError },
    /// The transport refused the TLS set-up.
    #[error("TLS towards ziti-management at {target} cannot be set up")]
    Tls { target: String, source: tonic::transport::Error },
    /// Built outside a tokio runtime.
    #[error("the ziti-management client must be created inside a tokio runtime")]
    NoRuntime,
}

/// A client of ziti-management. Connects lazily, so a server that is down at start-up
/// shows as transient errors on each call (which the policy retries), not as a failure
/// to build. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct ManagementClient {
    inner: ZitiManagementServiceClient<Channel>,
    /// `scheme://authority`, for messages.
    target: Arc<str>,
    request_timeout: Duration,
    bearer_token: Option<Arc<dyn BearerTokenSource>>,
}

impl ManagementClient {
    /// Builds the client from a checked configuration. Must run inside a tokio runtime
    /// (the channel's worker task is spawned here); does no I/O.
    pub fn new(mut config: ManagementConfig) -> Result<Self, ClientError> {
        let uri = config.uri()?;
        let target = match (uri.scheme_str(), uri.authority()) {
            (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
            _ => config.target.clone(),
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ClientError::NoRuntime);
        }
        let mut endpoint = Endpoint::from(uri.clone()).connect_timeout(config.connect_timeout);
        let tls = match config.tls.take() {
            Some(material) => Some(material),
            // An https:// target without material: TLS against the platform's roots.
            None if uri.scheme_str() == Some("https") => Some(Default::default()),
            None => None,
        };
        let tls_material_error = |source| ClientError::TlsMaterial { target: target.clone(), source };
        let channel = match tls {
            Some(TlsMaterial { client_certificate_source: Some(_), client_cert_pem: Some(_), .. }) => {
                return Err(tls_material_error(TlsError::TwoClientIdentities));
            }
            Some(TlsMaterial { client_certificate_source: Some(source), ca_pem, domain_name, .. }) => {
                // TLS is done by the connector; the channel itself speaks to http://.
                let tls_config = client_config(ca_pem.as_deref(), source).map_err(tls_material_error)?;
                let plain = plain_uri(&uri).map_err(|err| {
                    ClientError::Config(ConfigError::InvalidTarget {
                        target: config.target.clone(),
                        reason: err.to_string(),
                    })
                })?;
                let connector = Connector::new(tls_config, domain_name);
                let endpoint = Endpoint::from(plain).connect_timeout(config.connect_timeout);
                endpoint.connect_with_connector_lazy(tower::service_fn(move |uri| connector.clone().connect(uri)))
            }
            Some(material) => {
                let tls_config =
                    client_tls_config(&material).map_err(tls_material_error)?.timeout(config.connect_timeout);
                endpoint = endpoint
                    .tls_config(tls_config)
                    .map_err(|source| ClientError::Tls { target: target.clone(), source })?;
                endpoint.connect_lazy()
            }
            None => endpoint.connect_lazy(),
        };
        let inner = ZitiManagementServiceClient::new(channel).max_decoding_message_size(config.max_response_bytes);
        Ok(Self {
            inner,
            target: target.into(),
            request_timeout: config.request_timeout,
            bearer_token: config.bearer_token,
        })
    }

    /// The server this client talks to, as `scheme://host:port`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Runs one call under the request deadline. The deadline is also sent to the
    /// server (`grpc-timeout`), and enforced here over the whole call, connecting and
    /// reading the answer included.
    ///
    /// `token`, when given, is the call's bearer token instead of the configured source's.
    async fn call<M, R, Fut>(
        &self,
        rpc: Rpc,
        message: M,
        token: Option<&str>,
        send: impl FnOnce(ZitiManagementServiceClient<Channel>, Request<M>) -> Fut,
    ) -> Result<R, Status>
    where
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let mut request = Request::new(message);
        request.set_timeout(self.request_timeout);
        if let Some(token) = token {
            request.metadata_mut().insert("authorization", bearer_value(token)?);
        } else if let Some(source) = &self.bearer_token {
            request.metadata_mut().insert("authorization", bearer(source.as_ref())?);
        }
        tracing::debug!(rpc = rpc.as_str(), target = %self.target, "calling ziti-management");
        let answer = match tokio::time::timeout(self.request_timeout, send(self.inner.clone(), request)).await {
            Ok(answer) => answer.map(Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(format!("no answer within {:?}", self.request_timeout))),
        };
        if let Err(status) = &answer {
            let code = code_name(status.code());
            tracing::debug!(rpc = rpc.as_str(), target = %self.target, code, "ziti-management call failed");
        }
        answer
    }
}

/// The `authorization` value for the source's current token. A token that cannot be
/// read now is a transient failure: a rotating file may be mid-replacement.
fn bearer(source: &dyn BearerTokenSource) -> Result<MetadataValue<Ascii>, Status> {
    let token =
        source.token().map_err(|reason| Status::unavailable(format!("no bearer token to present: {reason}")))?;
    MetadataValue::try_from(format!("Bearer {}", token.trim()))
        .map_err(|_| Status::unavailable("the bearer token is not printable ASCII"))
}

/// The `authorization` value for a token given to one call (never shown in the error).
fn bearer_value(token: &str) -> Result<MetadataValue<Ascii>, Status> {
    let token = token.trim();
    if token.is_empty() {
        return Err(Status::invalid_argument("the bearer token is empty"));
    }
    MetadataValue::try_from(format!("Bearer {token}"))
        .map_err(|_| Status::invalid_argument("the bearer token is not printable ASCII"))
}

/// The caller's own OpenZiti identity, as `ProvisionIdentity` made it exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionedIdentity {
    /// The identity's id on the controller.
    pub ziti_identity_id: String,
    /// Its name.
    pub name: String,
    /// Its external id: the token's principal claim, which the controller matches on login.
    pub external_id: String,
    /// The role attributes it has now (without `#`).
    pub role_attributes: Vec<String>,
    /// Whether this call created it (else it updated it).
    pub created: bool,
}

impl ManagementClient {
    /// Asks ziti-management to make the caller's own identity exist, the caller being
    /// named by `token`, its identity provider's JWT (sent as `authorization: Bearer`
    /// for this call only, never logged). Call [`CallError::status`] for the code:
    /// PERMISSION_DENIED when the server does not take the token as an IdP token,
    /// FAILED_PRECONDITION when an identity with that external id exists that
    /// ziti-management did not provision, UNIMPLEMENTED when it does not provision.
    pub async fn provision_identity(&self, token: &str) -> Result<ProvisionedIdentity, CallError> {
        let rpc = Rpc::ProvisionIdentity;
        let answer = self
            .call(rpc, proto::ProvisionIdentityRequest {}, Some(token), |mut client, request| async move {
                client.provision_identity(request).await
            })
            .await
            .map_err(|status| CallError::new(rpc, status, &self.target))?;
        tracing::debug!(
            rpc = rpc.as_str(),
            identity = %answer.ziti_identity_id,
            created = answer.created,
            "provisioned the caller's identity"
        );
        Ok(ProvisionedIdentity {
            ziti_identity_id: answer.ziti_identity_id,
            name: answer.name,
            external_id: answer.external_id,
            role_attributes: answer.role_attributes,
            created: answer.created,
        })
    }
}

/// The same authority over `http://`, for a channel whose connector does the TLS.
fn plain_uri(uri: &Uri) -> Result<Uri, tonic::codegen::http::Error> {
    let authority = uri.authority().map(|authority| authority.as_str()).unwrap_or_default();
    Uri::builder().scheme("http").authority(authority).path_and_query("/").build()
}

#[async_trait]
impl IdentityProvider for ManagementClient {
    async fn request_identity(&self, service: ServiceType) -> Result<LeasedIdentity, ProviderError> {
        let rpc = Rpc::RequestServiceIdentity;
        let service_type = match service {
            ServiceType::Gateway => proto::ServiceType::Gateway,
        };
        let message = proto::RequestServiceIdentityRequest { service_type: service_type.into() };
        let answer =
            self.call(rpc, message, None, |mut client, request| async move {
                client.request_service_identity(request).await
            })
            .await
            .map_err(|status| provider_error(rpc, status, &self.target))?;
        // Never Debug-print `answer`: prost's Debug would show the identity's private key.
        let proto::RequestServiceIdentityResponse { ziti_identity_id, identity_json, lease_expires_at } = answer;
        // Wrapped at once, so the secret is wiped on every path from here on.
        let identity_json = IdentityJson::new(identity_json);
        if ziti_identity_id.is_empty() {
            return Err(self.broken(rpc, "the answer has an empty ziti_identity_id"));
        }
        // An empty (or otherwise unusable) identity_json is passed on with its lease id:
        // the installer rejects it and the policy releases the lease, so nothing is lost.
        let expires_in = expires_in(lease_expires_at, SystemTime::now()).map_err(|reason| self.broken(rpc, &reason))?;
        tracing::debug!(
            rpc = rpc.as_str(),
            lease = %ziti_identity_id,
            identity_bytes = identity_json.len(),
            ?expires_in,
            "leased an identity"
        );
        Ok(LeasedIdentity { id: IdentityId::new(ziti_identity_id), identity_json, expires_in })
    }

    async fn extend_lease(&self, id: &IdentityId) -> Result<Renewal, ProviderError> {
        let rpc = Rpc::ExtendIdentityLease;
        let message = proto::ExtendIdentityLeaseRequest { ziti_identity_id: id.as_str().to_owned() };
        let answer = self
            .call(rpc, message, None, |mut client, request| async move { client.extend_identity_lease(request).await })
            .await
            .map_err(|status| provider_error(rpc, status, &self.target))?;
        let expires_in =
            expires_in(answer.lease_expires_at, SystemTime::now()).map_err(|reason| self.broken(rpc, &reason))?;
        tracing::debug!(rpc = rpc.as_str(), lease = %id, ?expires_in, "extended the lease");
        Ok(Renewal::extended(expires_in))
    }

    async fn release(&self, id: &IdentityId) -> Result<(), ProviderError> {
        let rpc = Rpc::ReleaseServiceIdentity;
        let message = proto::ReleaseServiceIdentityRequest { ziti_identity_id: id.as_str().to_owned() };
        let answer =
            self.call(rpc, message, None, |mut client, request| async move {
                client.release_service_identity(request).await
            })
            .await;
        match answer {
            Ok(_) => {
                tracing::debug!(rpc = rpc.as_str(), lease = %id, "released the lease");
                Ok(())
            }
            // The RPC is optional: the lease then simply runs out.
            Err(status) if status.code() == Code::Unimplemented => {
                tracing::debug!(rpc = rpc.as_str(), lease = %id, "the server cannot release leases; it will expire");
                Ok(())
            }
            // Already gone is what releasing wants.
            Err(status) if status.code() == Code::NotFound => {
                tracing::debug!(rpc = rpc.as_str(), lease = %id, "the lease was already gone");
                Ok(())
            }
            Err(status) => Err(provider_error(rpc, status, &self.target)),
        }
    }
}

impl ManagementClient {
    /// A well-formed answer that cannot be used: the server is broken, retrying won't help.
    fn broken(&self, rpc: Rpc, reason: &str) -> ProviderError {
        ProviderError::Fatal(Box::new(BrokenAnswer { rpc, reason: reason.to_owned(), target: self.target.to_string() }))
    }
}

#[async_trait]
impl IdentityResolver for ManagementClient {
    async fn resolve(&self, caller: &CallerIdentity) -> Result<Principal, ResolveError> {
        let rpc = Rpc::ResolveIdentity;
        let id = caller.id.as_deref().filter(|id| !id.is_empty());
        let name = caller.name.as_deref().filter(|name| !name.is_empty());
        let message = match (id, name) {
            (Some(id), _) => proto::ResolveIdentityRequest { ziti_identity_id: id.to_owned(), ..Default::default() },
            (None, Some(name)) => {
                proto::ResolveIdentityRequest { ziti_identity_name: name.to_owned(), ..Default::default() }
            }
            // Nothing to look up: an anonymous caller is unknown.
            (None, None) => return Err(ResolveError::NotFound),
        };
        let answer = self
            .call(rpc, message, None, |mut client, request| async move { client.resolve_identity(request).await })
            .await
            .map_err(|status| resolve_error(status, &self.target))?;
        let principal = [answer.principal, answer.name].into_iter().find(|candidate| !candidate.is_empty());
        let Some(principal) = principal else {
            let reason = "the answer names no principal".to_owned();
            return Err(ResolveError::Unavailable(Arc::new(BrokenAnswer {
                rpc,
                reason,
                target: self.target.to_string(),
            })));
        };
        tracing::debug!(rpc = rpc.as_str(), caller_id = ?id, caller_name = ?name, %principal, "resolved a caller");
        Ok(Principal { name: principal, role_attributes: answer.role_attributes })
    }
}
