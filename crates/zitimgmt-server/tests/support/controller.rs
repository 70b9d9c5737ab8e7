//! The controller as an operator sees it: the management API with the admin's
//! password, written here independently of the server's own client.

use std::time::{Duration, Instant};

use serde_json::Value;
use workspace_tests::network::ZitiNetwork;

#[derive(Debug, Clone)]
pub struct ControllerView {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl ControllerView {
    pub async fn login(network: &ZitiNetwork) -> Self {
        let ca = std::fs::read(&network.ctrl_ca).expect("read the network's CA");
        let mut builder = reqwest::Client::builder().use_rustls_tls().tls_built_in_root_certs(false);
        for cert in reqwest::Certificate::from_pem_bundle(&ca).expect("CA PEM") {
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.timeout(Duration::from_secs(20)).build().expect("client");
        let base = network.ctrl_url.trim_end_matches('/').to_owned();
        let answer: Value = http
            .post(format!("{base}/edge/management/v1/authenticate?method=password"))
            .json(&serde_json::json!({"username": network.admin_user, "password": network.admin_password}))
            .send()
            .await
            .expect("login")
            .error_for_status()
            .expect("login accepted")
            .json()
            .await
            .expect("login JSON");
        let token = answer["data"]["token"].as_str().expect("token").to_owned();
        Self { http, base, token }
    }

    /// The identity with this id, `None` when the controller has none.
    pub async fn identity(&self, id: &str) -> Option<Value> {
        let response = self
            .http
            .get(format!("{}/edge/management/v1/identities/{id}", self.base))
            .header("zt-session", &self.token)
            .send()
            .await
            .expect("get identity");
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        let answer: Value = response.error_for_status().expect("get identity").json().await.expect("JSON");
        Some(answer["data"].clone())
    }

    /// Identities matching a ZitiQL filter (first 500).
    pub async fn identities(&self, filter: &str) -> Vec<Value> {
        let answer: Value = self
            .http
            .get(format!("{}/edge/management/v1/identities", self.base))
            .query(&[("filter", filter), ("limit", "500")])
            .header("zt-session", &self.token)
            .send()
            .await
            .expect("list identities")
            .error_for_status()
            .expect("list identities")
            .json()
            .await
            .expect("JSON");
        answer["data"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until the identity is gone; returns how long that took, `None` if it
    /// was still there after `within`.
    pub async fn wait_gone(&self, id: &str, within: Duration) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < within {
            if self.identity(id).await.is_none() {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        None
    }

    /// Creates an identity that ziti-management did not issue; returns its id.
    pub async fn create_identity(&self, name: &str, external_id: &str, attributes: &[&str]) -> String {
        let body = serde_json::json!({
            "name": name, "type": "Default", "isAdmin": false,
            "externalId": external_id, "roleAttributes": attributes,
        });
        let answer = self.post("identities", &body).await;
        answer["data"]["id"].as_str().expect("id").to_owned()
    }

    /// Creates an admin identity with a password (updb) login; returns its id.
    pub async fn create_admin(&self, username: &str, password: &str) -> String {
        let body = serde_json::json!({ "name": username, "type": "Default", "isAdmin": true });
        let id = self.post("identities", &body).await["data"]["id"].as_str().expect("id").to_owned();
        let body =
            serde_json::json!({ "method": "updb", "identityId": id, "username": username, "password": password });
        self.post("authenticators", &body).await;
        id
    }

    /// Ends every API session of the identity (as an expiry or an operator would);
    /// returns how many there were.
    pub async fn end_api_sessions(&self, identity_id: &str) -> usize {
        let answer: Value = self
            .http
            .get(format!("{}/edge/management/v1/api-sessions", self.base))
            .query(&[("filter", format!("identity = \"{identity_id}\""))])
            .header("zt-session", &self.token)
            .send()
            .await
            .expect("list api sessions")
            .error_for_status()
            .expect("list api sessions")
            .json()
            .await
            .expect("JSON");
        let sessions = answer["data"].as_array().cloned().unwrap_or_default();
        for session in &sessions {
            let id = session["id"].as_str().expect("session id");
            self.http
                .delete(format!("{}/edge/management/v1/api-sessions/{id}", self.base))
                .header("zt-session", &self.token)
                .send()
                .await
                .expect("delete api session")
                .error_for_status()
                .expect("delete api session");
        }
        sessions.len()
    }

    /// Creates an auth policy allowing password (updb) and external-JWT logins; returns its id.
    pub async fn create_auth_policy(&self, name: &str) -> String {
        let body = serde_json::json!({
            "name": name,
            "primary": {
                "cert": { "allowed": false, "allowExpiredCerts": false },
                "extJwt": { "allowed": true, "allowedSigners": [] },
                "updb": {
                    "allowed": true, "lockoutDurationMinutes": 0, "maxAttempts": 0, "minPasswordLength": 5,
                    "requireMixedCase": false, "requireNumberChar": false, "requireSpecialChar": false
                }
            },
            "secondary": { "requireTotp": false }
        });
        self.post("auth-policies", &body).await["data"]["id"].as_str().expect("id").to_owned()
    }

    /// The id of the auth policy named `name`.
    pub async fn auth_policy_id(&self, name: &str) -> String {
        let answer: Value = self
            .http
            .get(format!("{}/edge/management/v1/auth-policies", self.base))
            .query(&[("filter", format!("name = \"{name}\""))])
            .header("zt-session", &self.token)
            .send()
            .await
            .expect("list auth policies")
            .error_for_status()
            .expect("list auth policies")
            .json()
            .await
            .expect("JSON");
        answer["data"][0]["id"].as_str().unwrap_or_else(|| panic!("no auth policy {name}: {answer}")).to_owned()
    }

    /// Logs in on the client API with an IdP token (ext-jwt), as the SDK's legacy
    /// flow does; returns the id of the identity the controller matched.
    pub async fn log_in_with_idp_token(&self, token: &str) -> String {
        let answer: Value = self
            .http
            .post(format!("{}/edge/client/v1/authenticate?method=ext-jwt", self.base))
            .bearer_auth(token)
            .json(&serde_json::json!({}))
            .send()
            .await
            .expect("ext-jwt login")
            .error_for_status()
            .expect("ext-jwt login accepted")
            .json()
            .await
            .expect("JSON");
        answer["data"]["identity"]["id"].as_str().expect("the identity logged in").to_owned()
    }

    /// Deletes an auth policy; ignores failures (cleanup).
    pub async fn delete_auth_policy(&self, id: &str) {
        self.http
            .delete(format!("{}/edge/management/v1/auth-policies/{id}", self.base))
            .header("zt-session", &self.token)
            .send()
            .await
            .ok();
    }

    /// Gives the identity a password login and logs in with it on the client API, as
    /// a user of the identity would: the identity then has an API session.
    pub async fn log_in_with_password(&self, identity_id: &str, username: &str, password: &str) {
        let body = serde_json::json!({ "method": "updb", "identityId": identity_id, "username": username, "password": password });
        self.post("authenticators", &body).await;
        self.http
            .post(format!("{}/edge/client/v1/authenticate?method=password", self.base))
            .json(&serde_json::json!({ "username": username, "password": password }))
            .send()
            .await
            .expect("client login")
            .error_for_status()
            .expect("client login accepted");
    }

    async fn post(&self, collection: &str, body: &Value) -> Value {
        self.http
            .post(format!("{}/edge/management/v1/{collection}", self.base))
            .header("zt-session", &self.token)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|err| panic!("create in {collection}: {err}"))
            .error_for_status()
            .unwrap_or_else(|err| panic!("create in {collection}: {err}"))
            .json()
            .await
            .expect("JSON")
    }

    /// Deletes an identity (cleanup after a failed test); ignores "gone already".
    pub async fn delete(&self, id: &str) {
        self.http
            .delete(format!("{}/edge/management/v1/identities/{id}", self.base))
            .header("zt-session", &self.token)
            .send()
            .await
            .ok();
    }
}

/// Whether the identity has been enrolled (its certificate authenticator exists).
pub fn is_enrolled(identity: &Value) -> bool {
    identity["authenticators"]["cert"].is_object()
}
