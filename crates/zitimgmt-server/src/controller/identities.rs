//! Identities on the management API: create, read, find, retag, delete, list; and
//! auth policies by name.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Controller, ControllerError, expect_success, json};

/// What a new identity is created with. Its enrollment is a one-time token (OTT).
#[derive(Debug, Clone)]
pub struct NewIdentity<'a> {
    pub name: &'a str,
    pub role_attributes: &'a [String],
    pub tags: Map<String, Value>,
}

/// An identity as the management API shows it (the fields this server uses).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub role_attributes: Option<Vec<String>>,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub tags: Option<Map<String, Value>>,
    /// Whether the identity is logged in to the controller now.
    #[serde(default)]
    pub has_api_session: bool,
    #[serde(default)]
    pub auth_policy_id: Option<String>,
    #[serde(default)]
    enrollment: Option<Enrollment>,
}

/// An identity that logs in with its identity provider's token (ext-jwt): no
/// enrollment, matched by its external id.
#[derive(Debug, Clone)]
pub struct ExternalIdentity<'a> {
    pub name: &'a str,
    pub external_id: &'a str,
    pub auth_policy_id: &'a str,
    pub role_attributes: &'a [String],
    pub tags: Map<String, Value>,
}

#[derive(Clone, Deserialize)]
struct Enrollment {
    #[serde(default)]
    ott: Option<Ott>,
}

#[derive(Clone, Deserialize)]
struct Ott {
    /// The token (the enrollment JWT's `jti`): a secret until used.
    token: String,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Enrollment(<redacted>)")
    }
}

impl Identity {
    /// The pending one-time enrollment token, if any.
    pub fn ott_token(&self) -> Option<&str> {
        self.enrollment.as_ref()?.ott.as_ref().map(|ott| ott.token.as_str())
    }

    pub fn tags(&self) -> Map<String, Value> {
        self.tags.clone().unwrap_or_default()
    }
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct IdentityPage {
    pub identities: Vec<Identity>,
    /// How many identities match the filter in all.
    pub total: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    is_admin: bool,
    role_attributes: &'a [String],
    tags: &'a Map<String, Value>,
    enrollment: OttRequest,
}

#[derive(Serialize)]
struct OttRequest {
    ott: bool,
}

#[derive(Deserialize)]
struct Created {
    id: String,
}

#[derive(Deserialize)]
struct ListAnswer {
    data: Vec<Identity>,
    meta: ListMeta,
}

#[derive(Deserialize)]
struct ListMeta {
    pagination: Pagination,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pagination {
    total_count: u64,
}

impl Controller {
    /// Creates the identity (with a pending OTT enrollment); returns its id.
    pub async fn create_identity(&self, new: &NewIdentity<'_>) -> Result<String, ControllerError> {
        const WHAT: &str = "create identity";
        let body = CreateBody {
            name: new.name,
            kind: "Default",
            is_admin: false,
            role_attributes: new.role_attributes,
            tags: &new.tags,
            enrollment: OttRequest { ott: true },
        };
        let response = self.send(WHAT, |http| http.post(self.management(&["identities"])).json(&body)).await?;
        let created: Created = json(WHAT, response).await?;
        Ok(created.id)
    }

    /// Creates an identity without enrollment that logs in by external JWT; returns its id.
    pub async fn create_external_identity(&self, new: &ExternalIdentity<'_>) -> Result<String, ControllerError> {
        const WHAT: &str = "create external identity";
        let body = serde_json::json!({
            "name": new.name,
            "type": "Default",
            "isAdmin": false,
            "externalId": new.external_id,
            "authPolicyId": new.auth_policy_id,
            "roleAttributes": new.role_attributes,
            "tags": new.tags,
        });
        let response = self.send(WHAT, |http| http.post(self.management(&["identities"])).json(&body)).await?;
        let created: Created = json(WHAT, response).await?;
        Ok(created.id)
    }

    /// Sets the auth policy, role attributes and whole tags map of an identity.
    pub async fn update_external_identity(
        &self,
        id: &str,
        auth_policy_id: &str,
        role_attributes: &[String],
        tags: &Map<String, Value>,
    ) -> Result<(), ControllerError> {
        const WHAT: &str = "update external identity";
        let body =
            serde_json::json!({ "authPolicyId": auth_policy_id, "roleAttributes": role_attributes, "tags": tags });
        let response = self.send(WHAT, |http| http.patch(self.management(&["identities", id])).json(&body)).await?;
        expect_success(WHAT, response).await.map(drop)
    }

    /// The identity with this external id, if any (the controller keeps them unique).
    pub async fn identity_by_external_id(&self, external_id: &str) -> Result<Option<Identity>, ControllerError> {
        let filter = format!("externalId = {}", zitiql_string(external_id));
        let page = self.list_identities_as("find identity by external id", &filter, 1, 0).await?;
        Ok(page.identities.into_iter().next())
    }

    /// The id of the auth policy with exactly this name, if any.
    pub async fn auth_policy_id(&self, name: &str) -> Result<Option<String>, ControllerError> {
        const WHAT: &str = "find auth policy by name";
        #[derive(Deserialize)]
        struct AuthPolicy {
            id: String,
        }
        let filter = format!("name = {}", zitiql_string(name));
        let query = [("filter", filter.as_str()), ("limit", "1")];
        let response = self.send(WHAT, |http| http.get(self.management(&["auth-policies"])).query(&query)).await?;
        let policies: Vec<AuthPolicy> = json(WHAT, response).await?;
        Ok(policies.into_iter().next().map(|policy| policy.id))
    }

    pub async fn identity(&self, id: &str) -> Result<Identity, ControllerError> {
        const WHAT: &str = "get identity";
        let response = self.send(WHAT, |http| http.get(self.management(&["identities", id]))).await?;
        json(WHAT, response).await
    }

    /// The identity with exactly this name.
    pub async fn identity_by_name(&self, name: &str) -> Result<Identity, ControllerError> {
        const WHAT: &str = "find identity by name";
        let filter = format!("name = {}", zitiql_string(name));
        let page = self.list_identities_as(WHAT, &filter, 1, 0).await?;
        page.identities.into_iter().next().ok_or(ControllerError::NotFound { what: WHAT })
    }

    /// Replaces the identity's whole tags map (the API has no per-tag update).
    pub async fn set_tags(&self, id: &str, tags: &Map<String, Value>) -> Result<(), ControllerError> {
        const WHAT: &str = "update identity tags";
        let body = serde_json::json!({ "tags": tags });
        let response = self.send(WHAT, |http| http.patch(self.management(&["identities", id])).json(&body)).await?;
        expect_success(WHAT, response).await.map(drop)
    }

    pub async fn delete_identity(&self, id: &str) -> Result<(), ControllerError> {
        const WHAT: &str = "delete identity";
        let response = self.send(WHAT, |http| http.delete(self.management(&["identities", id]))).await?;
        expect_success(WHAT, response).await.map(drop)
    }

    /// One page of the identities matching a ZitiQL filter (`limit` at most 500).
    pub async fn list_identities(
        &self,
        filter: &str,
        limit: u32,
        offset: u64,
    ) -> Result<IdentityPage, ControllerError> {
        self.list_identities_as("list identities", filter, limit, offset).await
    }

    async fn list_identities_as(
        &self,
        what: &'static str,
        filter: &str,
        limit: u32,
        offset: u64,
    ) -> Result<IdentityPage, ControllerError> {
        let (limit, offset) = (limit.to_string(), offset.to_string());
        let query = [("filter", filter), ("limit", &limit), ("offset", &offset)];
        let response = self.send(what, |http| http.get(self.management(&["identities"])).query(&query)).await?;
        let response = expect_success(what, response).await?;
        let bytes = response.bytes().await.map_err(|err| ControllerError::unreachable(what, err))?;
        let answer: ListAnswer = serde_json::from_slice(&bytes)
            .map_err(|err| ControllerError::Malformed { what, problem: err.to_string() })?;
        Ok(IdentityPage { identities: answer.data, total: answer.meta.pagination.total_count })
    }
}

/// A ZitiQL string literal: double quotes, with `\` and `"` escaped.
pub fn zitiql_string(value: &str) -> String {
    let mut literal = String::with_capacity(value.len() + 2);
    literal.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\') {
            literal.push('\\');
        }
        literal.push(c);
    }
    literal.push('"');
    literal
}

#[cfg(test)]
mod tests {
    use super::zitiql_string;

    #[test]
    fn zitiql_strings_escape_quotes_and_backslashes() {
        assert_eq!(zitiql_string("gateway-1"), r#""gateway-1""#);
        assert_eq!(zitiql_string(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
