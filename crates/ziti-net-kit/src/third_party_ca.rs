//! OpenZiti trusting a third-party CA (e.g. SPIRE's root) whose certificates name
//! identities by their SPIFFE ID, and identities that log in with such certificates.
//!
//! Works through the `ziti` CLI of OpenZiti v1.6 and v2. Its `-j` output is read only
//! from `list` commands: `create ca -j` and `create auth-policy -j` crash after the
//! entity is made (v1.6.20), so each entity is looked up by name after creating it.
//! Listings of identities carry one-time enrollment tokens: CLI output is parsed, never
//! quoted in an error.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::{ProvisionError, file_error, run, run_output};

/// The cert-only auth policy that `cargo xtask ziti-up` puts SPIFFE identities on (and
/// that tests reuse for theirs).
pub const SPIFFE_AUTH_POLICY: &str = "spiffe-cert-only";

/// Registers `root_cert` as a third-party CA whose certificates authenticate identities
/// by their SPIFFE ID (externalIdClaim: SAN_URI, matcher SCHEME, criteria "spiffe",
/// parser NONE), auth enabled, no auto/OTT enrollment; then verifies it with `root_key`
/// (proof of possession). Idempotent: an existing verified CA of that name is kept.
///
/// An existing CA of that name holding another certificate is replaced (an unverified
/// one of the same certificate is verified). `ziti` makes a `ziti` CLI command logged
/// in to the controller as an admin.
pub fn register_spiffe_ca(
    ziti: impl Fn() -> Command,
    name: &str,
    root_cert: &Path,
    root_key: &Path,
) -> Result<(), ProvisionError> {
    check_name(name)?;
    let pem = std::fs::read_to_string(root_cert).map_err(|source| file_error(root_cert, source))?;
    if let Some(existing) = find_by_name(&ziti, "cas", "edge list cas", name)? {
        let same_cert = existing["certPem"].as_str().is_some_and(|found| same_pem(found, &pem));
        if same_cert && existing["isVerified"] == Value::Bool(true) {
            return Ok(());
        }
        if !same_cert {
            run(ziti().args(["edge", "delete", "ca", name]), "edge delete ca")?;
        }
    }
    if find_by_name(&ziti, "cas", "edge list cas", name)?.is_none() {
        run(
            ziti()
                .args(["edge", "create", "ca", name])
                .arg(root_cert)
                .args(["--auth", "--location", "SAN_URI", "--matcher", "SCHEME"])
                .args(["--matcher-criteria", "spiffe", "--parser", "NONE"]),
            "edge create ca",
        )?;
    }
    run(
        ziti().args(["edge", "verify", "ca", name, "--cacert"]).arg(root_cert).arg("--cakey").arg(root_key),
        "edge verify ca",
    )?;
    match find_by_name(&ziti, "cas", "edge list cas", name)? {
        Some(ca) if ca["isVerified"] == Value::Bool(true) => Ok(()),
        _ => Err(ProvisionError::Unexpected {
            step: "edge verify ca",
            reason: format!("the CA {name:?} is still not verified"),
        }),
    }
}

/// An auth policy that admits only certificates (primary cert allowed) and refuses
/// expired ones; returns its id (reuses one of that name).
///
/// A reused policy must have exactly those settings, else this fails naming it (the
/// controller's `Default` policy, for one, accepts expired certificates).
pub fn cert_only_auth_policy(ziti: impl Fn() -> Command, name: &str) -> Result<String, ProvisionError> {
    check_name(name)?;
    let step = "edge list auth-policies";
    let policy = match find_by_name(&ziti, "auth-policies", step, name)? {
        Some(policy) => policy,
        None => {
            run(
                ziti().args(["edge", "create", "auth-policy", name, "--primary-cert-allowed"]),
                "edge create auth-policy",
            )?;
            find_by_name(&ziti, "auth-policies", step, name)?
                .ok_or_else(|| unexpected(step, format!("the auth policy {name:?} is missing after creating it")))?
        }
    };
    let primary = &policy["primary"];
    let cert_only = primary["cert"]["allowed"] == Value::Bool(true)
        && primary["cert"]["allowExpiredCerts"] == Value::Bool(false)
        && primary["updb"]["allowed"] == Value::Bool(false)
        && primary["extJwt"]["allowed"] == Value::Bool(false);
    if !cert_only {
        return Err(unexpected(step, format!("the auth policy {name:?} exists but is not certificate-only")));
    }
    id_of(&policy, step)
}

/// An identity with no enrollment whose externalId is `external_id`, on
/// `auth_policy_id`, with `role_attributes`; returns its id (an existing one of that
/// name is updated/reused).
///
/// It logs in only as its auth policy allows: with a certificate of a third-party CA
/// whose external-id claim yields `external_id` (see [`register_spiffe_ca`]), or with a
/// JWT of an ext-jwt signer whose claim does (see [`crate::ext_jwt`]).
pub fn external_id_identity(
    ziti: impl Fn() -> Command,
    name: &str,
    external_id: &str,
    auth_policy_id: &str,
    role_attributes: &[&str],
) -> Result<String, ProvisionError> {
    check_name(name)?;
    let roles = role_attributes.join(",");
    let step = "edge list identities";
    if find_by_name(&ziti, "identities", step, name)?.is_some() {
        run(
            ziti().args(["edge", "update", "identity", name, "--external-id", external_id]).args([
                "--auth-policy",
                auth_policy_id,
                "--role-attributes",
                &roles,
            ]),
            "edge update identity",
        )?;
    } else {
        let mut command = ziti();
        command
            .args(["edge", "create", "identity", name, "--external-id", external_id])
            .args(["--auth-policy", auth_policy_id]);
        if !roles.is_empty() {
            command.args(["--role-attributes", &roles]);
        }
        run(&mut command, "edge create identity")?;
    }
    let identity = find_by_name(&ziti, "identities", step, name)?
        .ok_or_else(|| unexpected(step, format!("the identity {name:?} is missing after creating it")))?;
    let id = id_of(&identity, step)?;
    // The CLI gives every new identity a one-time enrollment; an identity of a
    // third-party CA must not be enrollable by whoever obtains that token.
    let enrollments = list(&ziti, "enrollments", "edge list enrollments", &format!("identity=\"{id}\""))?;
    for enrollment in enrollments {
        let enrollment_id = id_of(&enrollment, "edge list enrollments")?;
        // An id may begin with '-'; after `--` the CLI does not take it for a flag.
        run(ziti().args(["edge", "delete", "enrollment", "--", &enrollment_id]), "edge delete enrollment")?;
    }
    Ok(id)
}

/// The one entity of `kind` (e.g. `cas`) named `name`, if any.
pub(crate) fn find_by_name(
    ziti: &impl Fn() -> Command,
    kind: &str,
    step: &'static str,
    name: &str,
) -> Result<Option<Value>, ProvisionError> {
    let found = list(ziti, kind, step, &format!("name=\"{name}\""))?;
    Ok(found.into_iter().find(|entity| entity["name"] == name))
}

/// `ziti edge list KIND FILTER -j`'s entities.
pub(crate) fn list(
    ziti: &impl Fn() -> Command,
    kind: &str,
    step: &'static str,
    filter: &str,
) -> Result<Vec<Value>, ProvisionError> {
    let output = run_output(ziti().args(["edge", "list", kind, filter, "-j"]), step)?;
    let mut json: Value = serde_json::from_slice(&output)
        .map_err(|err| unexpected(step, format!("its output is not the expected JSON ({err})")))?;
    match json["data"].take() {
        Value::Array(entities) => Ok(entities),
        _ => Err(unexpected(step, "its output has no `data` list".to_owned())),
    }
}

pub(crate) fn id_of(entity: &Value, step: &'static str) -> Result<String, ProvisionError> {
    entity["id"].as_str().map(str::to_owned).ok_or_else(|| unexpected(step, "an entity without an id".to_owned()))
}

/// Names go into the CLI's filter language inside double quotes.
pub(crate) fn check_name(name: &str) -> Result<(), ProvisionError> {
    if name.is_empty() || name.contains(['"', '\\']) || name.chars().any(char::is_control) {
        return Err(ProvisionError::InvalidName { name: name.to_owned() });
    }
    Ok(())
}

/// Whether two PEM texts hold the same certificate (the controller re-wraps lines).
fn same_pem(a: &str, b: &str) -> bool {
    let squash = |pem: &str| pem.split_whitespace().collect::<String>();
    squash(a) == squash(b)
}

pub(crate) fn unexpected(step: &'static str, reason: String) -> ProvisionError {
    ProvisionError::Unexpected { step, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `ziti` answering every command with `stdout` and exit code `code`.
    fn fake(stdout: &'static str, code: i32) -> impl Fn() -> Command {
        move || {
            let mut command = Command::new("sh");
            command.args(["-c", &format!("printf '%s' '{stdout}'; exit {code}"), "ziti"]);
            command
        }
    }

    #[test]
    fn names_that_would_break_the_filter_are_refused() {
        for bad in ["", "a\"b", "a\\b", "a\nb"] {
            let err = cert_only_auth_policy(fake("{\"data\":[]}", 0), bad).unwrap_err();
            assert!(matches!(err, ProvisionError::InvalidName { .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_reused_policy_that_accepts_expired_certificates_is_refused() {
        let listing = r#"{"data":[{"id":"p1","name":"Default","primary":{"cert":{"allowed":true,"allowExpiredCerts":true},"updb":{"allowed":false},"extJwt":{"allowed":false}}}]}"#;
        let err = cert_only_auth_policy(fake(listing, 0), "Default").unwrap_err();
        assert!(err.to_string().contains("not certificate-only"), "{err}");
    }

    #[test]
    fn a_reused_cert_only_policy_gives_its_id() {
        let listing = r#"{"data":[{"id":"p1","name":"certs","primary":{"cert":{"allowed":true,"allowExpiredCerts":false},"updb":{"allowed":false},"extJwt":{"allowed":false}}}]}"#;
        assert_eq!(cert_only_auth_policy(fake(listing, 0), "certs").unwrap(), "p1");
    }

    #[test]
    fn output_that_is_not_json_is_reported_without_quoting_it() {
        let err = external_id_identity(fake("secret-token", 0), "gw", "spiffe://td/gw", "p1", &[]).unwrap_err();
        assert!(
            err.to_string().contains("not the expected JSON") && !err.to_string().contains("secret-token"),
            "{err}"
        );
    }

    #[test]
    fn pem_line_wrapping_does_not_matter() {
        assert!(same_pem(
            "-----BEGIN X-----\nAAAA\nBBBB\n-----END X-----\n",
            "-----BEGIN X-----\r\nAAAABBBB\n-----END X-----"
        ));
        assert!(!same_pem("-----BEGIN X-----\nAAAA\n-----END X-----", "-----BEGIN X-----\nAAAB\n-----END X-----"));
    }
}
