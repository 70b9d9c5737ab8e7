//! Identities provisioned from identity-provider tokens: a caller authenticated by the
//! `jwt` method asks that its own OpenZiti identity exist, so that it can then log in
//! to the controller with the same token (ext-jwt) without anyone preparing it.
//!
//! The identity's external id is the token's principal claim (what the controller's
//! ext-jwt signer matches), its auth policy the configured one, and its role
//! attributes the values of a configured claim (an array, or a space-separated string
//! such as OAuth2's `scope`) that the policy's `[provision]` table allows. It is tagged:
//!
//! | tag | value |
//! |---|---|
//! | `zitiMgmtProvisioned` | `true`: this server provisioned it, and may update or delete it |
//! | `zitiMgmtProvisionedAt` | when it was last provisioned, fixed-width UTC RFC 3339 (as the lease expiry) |
//!
//! An identity with the same external id that this server did not provision is never
//! touched. Provisioned identities nobody used for the idle time are deleted by the
//! [`crate::reaper`].

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Map, Value};
use thiserror::Error;
use tokio::sync::OnceCell;

use crate::config::ProvisionSettings;
use crate::controller::{Controller, ControllerError, ExternalIdentity, Identity};
use crate::lease::{format_expiry, parse_expiry};

pub const PROVISIONED_TAG: &str = "zitiMgmtProvisioned";
pub const PROVISIONED_AT_TAG: &str = "zitiMgmtProvisionedAt";

/// Prefixed to the external id to name a provisioned identity: names are unique on
/// the controller, and the prefix keeps them apart from hand-made ones.
const NAME_PREFIX: &str = "idp:";

/// Why an identity could not be provisioned.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// An identity with this external id exists that this server did not provision.
    #[error(
        "an identity with external id {external_id:?} exists that ziti-management did not provision; it is left \
         untouched (an operator manages it)"
    )]
    NotProvisioned { external_id: String, id: String },
    /// The identity's name is taken by one with another external id.
    #[error("an identity named {name:?} exists with another external id; it is left untouched")]
    NameTaken { name: String },
    /// The configured auth policy does not exist on the controller.
    #[error("the controller has no auth policy named {name:?} (ZITI_MGMT_PROVISION_AUTH_POLICY)")]
    NoAuthPolicy { name: String },
    #[error(transparent)]
    Controller(#[from] ControllerError),
}

/// What was provisioned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    pub id: String,
    pub name: String,
    pub external_id: String,
    pub role_attributes: Vec<String>,
    /// Created by this call (else updated).
    pub created: bool,
    /// Values of the roles claim not in the allow-list, hence not applied.
    pub refused_roles: Vec<String>,
}

/// The roles claim's values, split by the allow-list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleMapping {
    /// Allowed values, in the claim's order, without repeats.
    pub applied: Vec<String>,
    /// The others.
    pub refused: Vec<String>,
}

/// Maps the values of `claim` (an array of strings, or one space-separated string)
/// through `allowed`. A missing claim grants nothing; a claim of another type grants
/// nothing and is reported whole as refused.
pub fn map_roles(claims: &Map<String, Value>, claim: &str, allowed: &[String]) -> RoleMapping {
    let values: Vec<String> = match claims.get(claim) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) => text.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            })
            .collect(),
        Some(other) => vec![other.to_string()],
    };
    let mut mapping = RoleMapping::default();
    for value in values {
        let list = if allowed.contains(&value) { &mut mapping.applied } else { &mut mapping.refused };
        if !list.contains(&value) {
            list.push(value);
        }
    }
    mapping
}

/// Whether this server provisioned the identity with these tags.
pub fn is_provisioned(tags: &Map<String, Value>) -> bool {
    tags.get(PROVISIONED_TAG) == Some(&Value::Bool(true))
}

/// When the identity was last provisioned.
pub fn provisioned_at(tags: &Map<String, Value>) -> Option<SystemTime> {
    tags.get(PROVISIONED_AT_TAG)?.as_str().and_then(parse_expiry)
}

/// ZitiQL for provisioned identities last provisioned before `before`.
pub fn idle_filter(before: SystemTime) -> String {
    format!("tags.{PROVISIONED_TAG} = true and tags.{PROVISIONED_AT_TAG} < \"{}\"", format_expiry(before))
}

/// Creates and updates provisioned identities on the controller.
#[derive(Debug)]
pub struct Provisioner {
    controller: Arc<Controller>,
    settings: ProvisionSettings,
    /// The auth policy's id, looked up once.
    auth_policy_id: OnceCell<String>,
}

impl Provisioner {
    pub fn new(controller: Arc<Controller>, settings: ProvisionSettings) -> Self {
        Self { controller, settings, auth_policy_id: OnceCell::new() }
    }

    /// The configured auth policy's id, looked up on the first call.
    pub async fn auth_policy_id(&self) -> Result<&str, ProvisionError> {
        let id = self
            .auth_policy_id
            .get_or_try_init(|| async {
                let name = &self.settings.auth_policy;
                self.controller
                    .auth_policy_id(name)
                    .await?
                    .ok_or_else(|| ProvisionError::NoAuthPolicy { name: name.clone() })
            })
            .await?;
        Ok(id)
    }

    /// Makes the identity of the caller with this principal claim value exist, with
    /// the role attributes its token's `claims` map to.
    pub async fn provision(
        &self,
        external_id: &str,
        claims: &Map<String, Value>,
    ) -> Result<Provisioned, ProvisionError> {
        let roles = map_roles(claims, &self.settings.roles_claim, &self.settings.role_attributes);
        let auth_policy_id = self.auth_policy_id().await?.to_owned();
        let name = format!("{NAME_PREFIX}{external_id}");
        if let Some(existing) = self.controller.identity_by_external_id(external_id).await? {
            return self.update(existing, external_id, &auth_policy_id, roles).await;
        }
        let new = ExternalIdentity {
            name: &name,
            external_id,
            auth_policy_id: &auth_policy_id,
            role_attributes: &roles.applied,
            tags: stamp(Map::new()),
        };
        match self.controller.create_external_identity(&new).await {
            Ok(id) => Ok(Provisioned {
                id,
                name,
                external_id: external_id.to_owned(),
                role_attributes: roles.applied,
                created: true,
                refused_roles: roles.refused,
            }),
            // Another call for the same caller created it meanwhile (the name is unique),
            // or the name is someone else's.
            Err(ControllerError::Rejected { status, .. }) if status.is_client_error() => {
                match self.controller.identity_by_external_id(external_id).await? {
                    Some(existing) => self.update(existing, external_id, &auth_policy_id, roles).await,
                    None => Err(ProvisionError::NameTaken { name }),
                }
            }
            Err(err) => Err(err.into()),
        }
    }

    async fn update(
        &self,
        existing: Identity,
        external_id: &str,
        auth_policy_id: &str,
        roles: RoleMapping,
    ) -> Result<Provisioned, ProvisionError> {
        let tags = existing.tags();
        if !is_provisioned(&tags) {
            return Err(ProvisionError::NotProvisioned { external_id: external_id.to_owned(), id: existing.id });
        }
        // The whole map is replaced: keep every other tag as it was.
        self.controller.update_external_identity(&existing.id, auth_policy_id, &roles.applied, &stamp(tags)).await?;
        Ok(Provisioned {
            id: existing.id,
            name: existing.name,
            external_id: external_id.to_owned(),
            role_attributes: roles.applied,
            created: false,
            refused_roles: roles.refused,
        })
    }
}

/// `tags` marked as provisioned now.
fn stamp(mut tags: Map<String, Value>) -> Map<String, Value> {
    tags.insert(PROVISIONED_TAG.to_owned(), Value::Bool(true));
    tags.insert(PROVISIONED_AT_TAG.to_owned(), Value::String(format_expiry(SystemTime::now())));
    tags
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::json;

    use super::*;

    fn claims(value: Value) -> Map<String, Value> {
        let mut claims = Map::new();
        claims.insert("scp".to_owned(), value);
        claims
    }

    fn allowed() -> Vec<String> {
        vec!["gateway-hosts".to_owned(), "gateway-clients".to_owned()]
    }

    #[test]
    fn an_array_claim_is_mapped_through_the_allow_list() {
        let mapping = map_roles(
            &claims(json!(["gateway-hosts", "admin", "gateway-hosts", "gateway-clients"])),
            "scp",
            &allowed(),
        );
        assert_eq!(mapping.applied, ["gateway-hosts", "gateway-clients"]);
        assert_eq!(mapping.refused, ["admin"]);
    }

    #[test]
    fn a_space_separated_string_claim_is_mapped_too() {
        let mapping = map_roles(&claims(json!("openid  gateway-clients")), "scp", &allowed());
        assert_eq!(mapping.applied, ["gateway-clients"]);
        assert_eq!(mapping.refused, ["openid"]);
    }

    #[test]
    fn a_missing_or_odd_claim_grants_nothing() {
        assert_eq!(map_roles(&Map::new(), "scp", &allowed()), RoleMapping::default());
        let mapping = map_roles(&claims(json!({"gateway-hosts": true})), "scp", &allowed());
        assert!(mapping.applied.is_empty(), "{mapping:?}");
        assert_eq!(mapping.refused.len(), 1);
        let mapping = map_roles(&claims(json!(["gateway-hosts", 7])), "scp", &allowed());
        assert_eq!((mapping.applied, mapping.refused), (vec!["gateway-hosts".to_owned()], vec!["7".to_owned()]));
    }

    #[test]
    fn the_tags_say_provisioned_and_when_in_fixed_width() {
        let tags = stamp(Map::new());
        assert!(is_provisioned(&tags));
        let at = tags[PROVISIONED_AT_TAG].as_str().expect("a string");
        assert_eq!(at.len(), "2026-11-22T10:00:00.000Z".len(), "{at}");
        assert!(provisioned_at(&tags).is_some());
        let mut other = Map::new();
        other.insert(PROVISIONED_TAG.to_owned(), json!("true"));
        assert!(!is_provisioned(&other), "only the boolean counts");
        let before = UNIX_EPOCH + Duration::from_secs(1_795_341_600);
        assert_eq!(
            idle_filter(before),
            "tags.zitiMgmtProvisioned = true and tags.zitiMgmtProvisionedAt < \"2026-11-22T10:00:00.000Z\""
        );
        for name in [PROVISIONED_TAG, PROVISIONED_AT_TAG] {
            assert!(name.chars().all(|c| c.is_ascii_alphabetic()), "{name}");
        }
    }
}
