//! OpenZiti trusting an identity provider's JWTs: an ext-jwt signer (the IdP's issuer
//! and JWKS), and an auth policy that admits only that signer's tokens. Identities that
//! log in with them are made by [`crate::third_party_ca::external_id_identity`], their
//! external id being the value of the signer's claim (e.g. the token's `sub`).
//!
//! Works through the `ziti` CLI of OpenZiti v1.6 and v2, as [`crate::third_party_ca`]
//! does: entities are looked up by name with `list … -j` after being made.

use std::process::Command;

use serde_json::Value;

use crate::ProvisionError;
use crate::third_party_ca::{check_name, find_by_name, id_of, unexpected};

/// The auth policy that `cargo xtask ziti-up` puts IdP identities on (only the network
/// IdP's JWTs, no certificate, no password), and that tests reuse for theirs.
pub const IDP_AUTH_POLICY: &str = "idp-jwt";

const LIST_SIGNERS: &str = "edge list ext-jwt-signers";
const LIST_POLICIES: &str = "edge list auth-policies";

/// An external JWT signer: OpenZiti logs in whoever presents a JWT of `issuer`, signed
/// by a key of `jwks_url`, for `audience`, as the identity whose external id is the
/// token's `claims_property`.
#[derive(Debug, Clone, Copy)]
pub struct ExtJwtSigner<'a> {
    /// Its name on the controller.
    pub name: &'a str,
    /// The tokens' `iss`.
    pub issuer: &'a str,
    /// Where the controller fetches the signing keys (again when a new `kid` shows up).
    pub jwks_url: &'a str,
    /// The `aud` the tokens must carry.
    pub audience: &'a str,
    /// The claim matched against identities' external ids, e.g. `sub`.
    pub claims_property: &'a str,
}

impl ExtJwtSigner<'_> {
    /// Creates the signer (enabled, matching external ids), or brings one of that name
    /// to these settings; returns its id. `ziti` makes a `ziti` CLI command logged in to
    /// the controller as an admin.
    pub fn register(&self, ziti: impl Fn() -> Command) -> Result<String, ProvisionError> {
        check_name(self.name)?;
        match find_by_name(&ziti, "ext-jwt-signers", LIST_SIGNERS, self.name)? {
            Some(existing) if self.matches(&existing) => return id_of(&existing, LIST_SIGNERS),
            Some(_) => crate::run(
                ziti()
                    .args(["edge", "update", "ext-jwt-signer", self.name, "--issuer", self.issuer])
                    .args(["--jwks-endpoint", self.jwks_url, "--audience", self.audience])
                    .args(["--claims-property", self.claims_property]),
                "edge update ext-jwt-signer",
            )?,
            None => crate::run(
                ziti()
                    .args(["edge", "create", "ext-jwt-signer", self.name, self.issuer])
                    .args(["--jwks-endpoint", self.jwks_url, "--audience", self.audience])
                    .args(["--claims-property", self.claims_property]),
                "edge create ext-jwt-signer",
            )?,
        }
        match find_by_name(&ziti, "ext-jwt-signers", LIST_SIGNERS, self.name)? {
            Some(signer) if self.matches(&signer) => id_of(&signer, LIST_SIGNERS),
            Some(_) => Err(unexpected(LIST_SIGNERS, format!("the ext-jwt signer {:?} kept other settings", self.name))),
            None => Err(unexpected(
                LIST_SIGNERS,
                format!("the ext-jwt signer {:?} is missing after creating it", self.name),
            )),
        }
    }

    fn matches(&self, signer: &Value) -> bool {
        signer["issuer"] == self.issuer
            && signer["jwksEndpoint"] == self.jwks_url
            && signer["audience"] == self.audience
            && signer["claimsProperty"] == self.claims_property
            && signer["useExternalId"] == Value::Bool(true)
            && signer["enabled"] == Value::Bool(true)
    }
}

/// An auth policy admitting only JWTs of the ext-jwt signer `signer_id` (no
/// certificates, no passwords); returns its id (reuses one of that name).
///
/// A reused policy must have exactly those settings, else this fails naming it.
pub fn ext_jwt_only_auth_policy(
    ziti: impl Fn() -> Command,
    name: &str,
    signer_id: &str,
) -> Result<String, ProvisionError> {
    check_name(name)?;
    let policy = match find_by_name(&ziti, "auth-policies", LIST_POLICIES, name)? {
        Some(policy) => policy,
        None => {
            crate::run(
                ziti()
                    .args(["edge", "create", "auth-policy", name, "--primary-ext-jwt-allowed"])
                    .args(["--primary-ext-jwt-allowed-signers", signer_id]),
                "edge create auth-policy",
            )?;
            find_by_name(&ziti, "auth-policies", LIST_POLICIES, name)?.ok_or_else(|| {
                unexpected(LIST_POLICIES, format!("the auth policy {name:?} is missing after creating it"))
            })?
        }
    };
    let primary = &policy["primary"];
    let only_that_signer = primary["extJwt"]["allowed"] == Value::Bool(true)
        && primary["extJwt"]["allowedSigners"] == serde_json::json!([signer_id])
        && primary["cert"]["allowed"] == Value::Bool(false)
        && primary["updb"]["allowed"] == Value::Bool(false);
    if !only_that_signer {
        return Err(unexpected(
            LIST_POLICIES,
            format!("the auth policy {name:?} exists but does not admit only the ext-jwt signer {signer_id}"),
        ));
    }
    id_of(&policy, LIST_POLICIES)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `ziti` answering every command with `stdout`.
    fn fake(stdout: &'static str) -> impl Fn() -> Command {
        move || {
            let mut command = Command::new("sh");
            command.args(["-c", &format!("printf '%s' '{stdout}'"), "ziti"]);
            command
        }
    }

    const SIGNER: ExtJwtSigner<'static> = ExtJwtSigner {
        name: "hydra",
        issuer: "http://127.0.0.1:4444",
        jwks_url: "http://127.0.0.1:4444/.well-known/jwks.json",
        audience: "openziti",
        claims_property: "sub",
    };

    #[test]
    fn a_signer_with_these_settings_is_reused() {
        let listing = r#"{"data":[{"id":"s1","name":"hydra","issuer":"http://127.0.0.1:4444","jwksEndpoint":"http://127.0.0.1:4444/.well-known/jwks.json","audience":"openziti","claimsProperty":"sub","useExternalId":true,"enabled":true}]}"#;
        assert_eq!(SIGNER.register(fake(listing)).unwrap(), "s1");
    }

    #[test]
    fn a_signer_that_keeps_other_settings_is_reported() {
        let listing = r#"{"data":[{"id":"s1","name":"hydra","issuer":"http://127.0.0.1:9999","jwksEndpoint":"x","audience":"openziti","claimsProperty":"sub","useExternalId":true,"enabled":true}]}"#;
        let err = SIGNER.register(fake(listing)).unwrap_err();
        assert!(err.to_string().contains("kept other settings"), "{err}");
    }

    #[test]
    fn a_reused_policy_that_also_admits_certificates_is_refused() {
        let listing = r#"{"data":[{"id":"p1","name":"idp-jwt","primary":{"cert":{"allowed":true},"updb":{"allowed":false},"extJwt":{"allowed":true,"allowedSigners":["s1"]}}}]}"#;
        let err = ext_jwt_only_auth_policy(fake(listing), "idp-jwt", "s1").unwrap_err();
        assert!(err.to_string().contains("does not admit only the ext-jwt signer s1"), "{err}");
    }

    #[test]
    fn a_reused_policy_of_another_signer_is_refused() {
        let listing = r#"{"data":[{"id":"p1","name":"idp-jwt","primary":{"cert":{"allowed":false},"updb":{"allowed":false},"extJwt":{"allowed":true,"allowedSigners":["s2"]}}}]}"#;
        assert!(ext_jwt_only_auth_policy(fake(listing), "idp-jwt", "s1").is_err());
    }

    #[test]
    fn a_reused_policy_of_only_that_signer_gives_its_id() {
        let listing = r#"{"data":[{"id":"p1","name":"idp-jwt","primary":{"cert":{"allowed":false},"updb":{"allowed":false},"extJwt":{"allowed":true,"allowedSigners":["s1"]}}}]}"#;
        assert_eq!(ext_jwt_only_auth_policy(fake(listing), "idp-jwt", "s1").unwrap(), "p1");
    }

    #[test]
    fn names_that_would_break_the_filter_are_refused() {
        let signer = ExtJwtSigner { name: "a\"b", ..SIGNER };
        assert!(matches!(signer.register(fake("{\"data\":[]}")), Err(ProvisionError::InvalidName { .. })));
    }
}
