//! Service lookup and service sessions (Bind/Dial tokens plus the routers to use).

use std::fmt;

use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use super::{ApiSession, CLIENT_API, Controller, Envelope};
use crate::error::Error;

/// A service as this identity sees it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// The controller's id for the service.
    pub id: String,
    /// The service's name.
    pub name: String,
    /// `"Bind"` and/or `"Dial"`.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Whether connections to the service must be end-to-end encrypted.
    #[serde(default)]
    pub encryption_required: bool,
}

impl Service {
    /// Whether this identity may open `kind` sessions for the service.
    pub fn can(&self, kind: SessionType) -> bool {
        self.permissions.iter().any(|p| p == kind.as_str())
    }
}

/// Whether a session hosts (Bind) or reaches (Dial) a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionType {
    /// Hosting the service.
    Bind,
    /// Connecting to the service.
    Dial,
}

impl SessionType {
    /// The name the controller uses for it (`"Bind"`, `"Dial"`).
    pub fn as_str(self) -> &'static str {
        match self {
            SessionType::Bind => "Bind",
            SessionType::Dial => "Dial",
        }
    }

    pub(crate) fn verb(self) -> &'static str {
        match self {
            SessionType::Bind => "bind",
            SessionType::Dial => "dial",
        }
    }
}

/// An edge router offered for a session.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EdgeRouter {
    #[serde(default)]
    pub(crate) is_online: bool,
    #[serde(default)]
    supported_protocols: std::collections::HashMap<String, String>,
}

impl EdgeRouter {
    /// The router's TLS edge address as `host:port`, when it offers one.
    pub(crate) fn tls_address(&self) -> Option<String> {
        let url = self.supported_protocols.get("tls")?;
        let address = url.strip_prefix("tls://").or_else(|| url.strip_prefix("tls:"))?;
        Some(address.to_owned())
    }
}

/// A Bind or Dial service session.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceSession {
    pub(crate) id: String,
    pub(crate) token: Zeroizing<String>,
    #[serde(default)]
    pub(crate) edge_routers: Vec<EdgeRouter>,
}

impl fmt::Debug for ServiceSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceSession")
            .field("id", &self.id)
            .field("token", &"<redacted>")
            .field("edge_routers", &self.edge_routers)
            .finish()
    }
}

impl Controller {
    /// Looks a service up by exact name. Services without a policy for this identity
    /// are invisible, so they are "not found" too.
    pub(crate) async fn service(&self, name: &str, session: &ApiSession) -> Result<Service, Error> {
        let filter = format!("name=\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""));
        let mut url = self.url(&format!("{CLIENT_API}services"))?;
        url.query_pairs_mut().append_pair("filter", &filter).append_pair("limit", "10");
        let response =
            self.get(&format!("{CLIENT_API}services?{}", url.query().unwrap_or_default()), Some(session)).await?;
        let services: Envelope<Vec<Service>> = response.json().await?;
        services.data.into_iter().find(|s| s.name == name).ok_or_else(|| Error::ServiceNotFound(name.to_owned()))
    }

    /// Creates a Bind or Dial session for `service`.
    pub(crate) async fn create_session(
        &self,
        service: &Service,
        kind: SessionType,
        session: &ApiSession,
    ) -> Result<ServiceSession, Error> {
        let body = json!({ "serviceId": service.id, "type": kind.as_str() });
        let response = match self.post_json(&format!("{CLIENT_API}sessions"), &body, Some(session)).await {
            Ok(response) => response,
            Err(Error::Controller { status: 404, .. }) => {
                // No service policy of this type: the controller hides the service.
                return Err(Error::NotAuthorized { service: service.name.clone(), action: kind.verb() });
            }
            Err(Error::Controller { message, .. }) if message.contains("NO_EDGE_ROUTERS_AVAILABLE") => {
                return Err(Error::NoRouterReachable { service: service.name.clone(), tried: "none offered".into() });
            }
            Err(err) => return Err(err),
        };
        let created: Envelope<ServiceSession> = response.json().await?;
        Ok(created.data)
    }
}
