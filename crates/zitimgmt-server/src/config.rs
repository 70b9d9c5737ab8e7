//! Configuration: defaults < TOML file named by `ZITI_MGMT_CONFIG_FILE` < environment.
//!
//! Every value is validated here (files are read too), so a bad value stops the start
//! with a message that names the variable and its value. The admin password is never
//! echoed, not even when it is the bad value.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use figment::Figment;
use figment::providers::Serialized;
use figment::value::Value;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use service_kit::env::{InvalidValue, layered, parse_bool, parse_non_empty, parse_optional, parse_or, text};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::auth::jwt::{JwksSource, JwtSettings};
use crate::auth::spiffe::{BundleSource, SpiffeSettings};
use crate::policy::{Policy, PolicyError};

/// Every variable the server reads. File keys are the same names in lower case.
pub const VARIABLES: &[&str] = &[
    "ZITI_MGMT_CONTROLLER_URL",
    "ZITI_MGMT_CONTROLLER_CA",
    "ZITI_MGMT_ADMIN_USER",
    "ZITI_MGMT_ADMIN_PASSWORD",
    "ZITI_MGMT_ADMIN_PASSWORD_FILE",
    "ZITI_MGMT_LEASE_TTL",
    "ZITI_MGMT_REAPER_INTERVAL",
    "ZITI_MGMT_GATEWAY_ROLE_ATTRIBUTES",
    "ZITI_MGMT_GRPC_ADDR",
    "ZITI_MGMT_ADMIN_ADDR",
    "ZITI_MGMT_TLS_CERT",
    "ZITI_MGMT_TLS_KEY",
    "ZITI_MGMT_INSECURE",
    "ZITI_MGMT_AUTH_METHODS",
    "ZITI_MGMT_ALLOW_UNAUTHENTICATED",
    "ZITI_MGMT_POLICY_FILE",
    "ZITI_MGMT_SPIFFE_TRUST_DOMAIN",
    "ZITI_MGMT_SPIFFE_ENDPOINT_SOCKET",
    "ZITI_MGMT_SPIFFE_BUNDLE_FILE",
    "ZITI_MGMT_JWT_ISSUER",
    "ZITI_MGMT_JWT_AUDIENCE",
    "ZITI_MGMT_JWT_JWKS_URL",
    "ZITI_MGMT_JWT_JWKS_FILE",
    "ZITI_MGMT_JWT_JWKS_CA",
    "ZITI_MGMT_JWT_PRINCIPAL_CLAIM",
    "ZITI_MGMT_PROVISION_AUTH_POLICY",
    "ZITI_MGMT_PROVISION_ROLES_CLAIM",
    "ZITI_MGMT_PROVISION_IDLE",
];

/// The claim whose values are mapped to provisioned identities' role attributes,
/// unless configured: the scopes granted, as Hydra names them.
pub const DEFAULT_PROVISION_ROLES_CLAIM: &str = "scp";

/// How long a provisioned identity may go unused before it is deleted, unless configured.
pub const DEFAULT_PROVISION_IDLE: Duration = Duration::from_secs(24 * 60 * 60);

/// The claim of a verified JWT that names its principal, unless configured.
pub const DEFAULT_PRINCIPAL_CLAIM: &str = "sub";

/// The file that may hold the same settings (TOML, lower-case keys).
pub const CONFIG_FILE_VARIABLE: &str = "ZITI_MGMT_CONFIG_FILE";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{variable}={value:?} is invalid: {problem}")]
    Invalid { variable: &'static str, value: String, problem: String },
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("set ZITI_MGMT_ADMIN_PASSWORD or ZITI_MGMT_ADMIN_PASSWORD_FILE, not both")]
    TwoPasswords,
    #[error("ZITI_MGMT_ADMIN_PASSWORD is invalid: must not be empty")]
    EmptyPassword,
    #[error("ZITI_MGMT_TLS_CERT and ZITI_MGMT_TLS_KEY must be set together (for gRPC over TLS)")]
    HalfTls,
    #[error(
        "ZITI_MGMT_GRPC_ADDR={addr} is not a loopback address, and without TLS the identities served there \
         (private keys included) would cross the network readable. Set ZITI_MGMT_TLS_CERT and ZITI_MGMT_TLS_KEY \
         to serve TLS, or set ZITI_MGMT_INSECURE=true to accept plain text"
    )]
    PlaintextOnNetwork { addr: SocketAddr },
    #[error("configuration could not be read: {0}")]
    Source(String),
    #[error("{required} is required with ZITI_MGMT_AUTH_METHODS={method}")]
    MethodNeeds { method: &'static str, required: &'static str },
    #[error("{variable} is set, but ZITI_MGMT_AUTH_METHODS does not include {method}")]
    MethodNotEnabled { variable: &'static str, method: &'static str },
    #[error("set {first} or {second}, not both")]
    Either { first: &'static str, second: &'static str },
    #[error(
        "ZITI_MGMT_AUTH_METHODS includes none, and ZITI_MGMT_GRPC_ADDR={addr} is not a loopback address: anyone who \
         can reach it would be handed identities. Authenticate callers (spiffe, jwt), listen on loopback, or set \
         ZITI_MGMT_ALLOW_UNAUTHENTICATED=true to accept it"
    )]
    UnauthenticatedOnNetwork { addr: SocketAddr },
    #[error("the spiffe method is mutual TLS: set ZITI_MGMT_TLS_CERT and ZITI_MGMT_TLS_KEY for the server's side")]
    SpiffeNeedsTls,
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("the policy {path} has {class} rules, but ZITI_MGMT_AUTH_METHODS does not include {method}")]
    PolicyNamesDisabledMethod { path: String, class: &'static str, method: &'static str },
    #[error(
        "ZITI_MGMT_GATEWAY_ROLE_ATTRIBUTES cannot be used with ZITI_MGMT_POLICY_FILE: the policy grants role attributes"
    )]
    RoleAttributesBesidePolicy,
    #[error(
        "provisioning needs both ZITI_MGMT_PROVISION_AUTH_POLICY and a [provision] table in ZITI_MGMT_POLICY_FILE: \
         {given} is given, {missing} is not"
    )]
    ProvisionHalf { given: &'static str, missing: &'static str },
    #[error("{variable} is set, but provisioning is off (set ZITI_MGMT_PROVISION_AUTH_POLICY to turn it on)")]
    ProvisionNotEnabled { variable: &'static str },
    #[error(
        "ZITI_MGMT_PROVISION_AUTH_POLICY is set, but ZITI_MGMT_AUTH_METHODS does not include jwt: provisioning serves callers of the jwt method"
    )]
    ProvisionNeedsJwt,
}

impl From<InvalidValue> for ConfigError {
    fn from(InvalidValue { variable, value, problem }: InvalidValue) -> Self {
        Self::Invalid { variable, value, problem }
    }
}

/// The controller admin's password: zeroed on drop, never printed.
#[derive(Clone)]
pub struct Password(Zeroizing<String>);

impl Password {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// The gRPC listener's certificate chain and key, read at start-up.
#[derive(Clone)]
pub struct GrpcTls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for GrpcTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcTls").field("cert_pem", &self.cert_pem.len()).finish_non_exhaustive()
    }
}

/// Identities provisioned from IdP tokens (`ZITI_MGMT_PROVISION_*` and the policy's `[provision]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionSettings {
    /// The name of the controller auth policy provisioned identities get, e.g. `idp-jwt`.
    pub auth_policy: String,
    /// The claim whose values are mapped to role attributes, e.g. `scp`.
    pub roles_claim: String,
    /// Provisioned identities unused this long are deleted.
    pub idle: Duration,
    /// The role attributes the claim may grant (the policy's `[provision]` table).
    pub role_attributes: Vec<String>,
}

/// How callers are authenticated (`ZITI_MGMT_AUTH_METHODS` and each method's settings).
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    pub spiffe: Option<SpiffeSettings>,
    pub jwt: Option<JwtSettings>,
    /// The `none` method: callers without credentials are the `anonymous` principal.
    pub none: bool,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The controller's edge API root, e.g. `https://127.0.0.1:1280` (no trailing slash).
    pub controller_url: Url,
    /// PEM certificates trusted for the controller; `None` = the system's roots.
    pub controller_ca_pem: Option<Vec<u8>>,
    pub admin_user: String,
    pub admin_password: Password,
    pub lease_ttl: Duration,
    pub reaper_interval: Duration,
    pub gateway_role_attributes: Vec<String>,
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub grpc_tls: Option<GrpcTls>,
    /// `ZITI_MGMT_INSECURE`: plain-text gRPC on an address other machines can reach.
    pub insecure: bool,
    pub auth: AuthConfig,
    /// `ZITI_MGMT_ALLOW_UNAUTHENTICATED`: the `none` method on a non-loopback address.
    pub allow_unauthenticated: bool,
    /// Who may ask for what (`ZITI_MGMT_POLICY_FILE`, or anonymous callers may request
    /// gateway identities when `none` is the only method).
    pub policy: Arc<Policy>,
    /// Identities provisioned from IdP tokens, when enabled.
    pub provision: Option<ProvisionSettings>,
}

impl Config {
    /// Whether gRPC is served in plain text where other machines can reach it (only
    /// possible with [`Config::insecure`]).
    pub fn serves_plaintext_on_network(&self) -> bool {
        self.grpc_tls.is_none() && !self.listens_on_loopback()
    }

    /// Whether callers without credentials are served where other machines can reach
    /// them (only possible with [`Config::allow_unauthenticated`]).
    pub fn serves_unauthenticated_on_network(&self) -> bool {
        self.auth.none && !self.listens_on_loopback()
    }

    fn listens_on_loopback(&self) -> bool {
        self.grpc_addr.ip().to_canonical().is_loopback()
    }
}

/// The raw settings, before validation.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    ziti_mgmt_controller_url: Option<Value>,
    ziti_mgmt_controller_ca: Option<Value>,
    ziti_mgmt_admin_user: Option<Value>,
    ziti_mgmt_admin_password: Option<Value>,
    ziti_mgmt_admin_password_file: Option<Value>,
    ziti_mgmt_lease_ttl: Option<Value>,
    ziti_mgmt_reaper_interval: Option<Value>,
    ziti_mgmt_gateway_role_attributes: Option<Value>,
    ziti_mgmt_grpc_addr: Option<Value>,
    ziti_mgmt_admin_addr: Option<Value>,
    ziti_mgmt_tls_cert: Option<Value>,
    ziti_mgmt_tls_key: Option<Value>,
    ziti_mgmt_insecure: Option<Value>,
    ziti_mgmt_auth_methods: Option<Value>,
    ziti_mgmt_allow_unauthenticated: Option<Value>,
    ziti_mgmt_policy_file: Option<Value>,
    ziti_mgmt_spiffe_trust_domain: Option<Value>,
    ziti_mgmt_spiffe_endpoint_socket: Option<Value>,
    ziti_mgmt_spiffe_bundle_file: Option<Value>,
    ziti_mgmt_jwt_issuer: Option<Value>,
    ziti_mgmt_jwt_audience: Option<Value>,
    ziti_mgmt_jwt_jwks_url: Option<Value>,
    ziti_mgmt_jwt_jwks_file: Option<Value>,
    ziti_mgmt_jwt_jwks_ca: Option<Value>,
    ziti_mgmt_jwt_principal_claim: Option<Value>,
    ziti_mgmt_provision_auth_policy: Option<Value>,
    ziti_mgmt_provision_roles_claim: Option<Value>,
    ziti_mgmt_provision_idle: Option<Value>,
}

impl Config {
    pub fn load() -> Result<Self, ConfigError> {
        Self::from_figment(&Self::figment())
    }

    /// Defaults < `ZITI_MGMT_CONFIG_FILE` (when set) < environment.
    pub fn figment() -> Figment {
        layered(Raw::default(), CONFIG_FILE_VARIABLE, Serialized::defaults(environment()))
    }

    pub fn from_figment(figment: &Figment) -> Result<Self, ConfigError> {
        let raw: Raw = figment.extract().map_err(|err| ConfigError::Source(err.to_string()))?;
        raw.validate()
    }
}

/// The variables as the exact strings set. (figment's `Env` parses values, which
/// would turn a password such as `007` into the number 7.)
fn environment() -> BTreeMap<String, String> {
    VARIABLES
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|value| (name.to_ascii_lowercase(), value)))
        .collect()
}

impl Raw {
    fn validate(self) -> Result<Config, ConfigError> {
        let controller_url = parse_optional("ZITI_MGMT_CONTROLLER_URL", self.ziti_mgmt_controller_url, parse_url)?
            .ok_or(ConfigError::Missing("ZITI_MGMT_CONTROLLER_URL"))?;
        let methods =
            parse_or("ZITI_MGMT_AUTH_METHODS", self.ziti_mgmt_auth_methods, Methods::default(), parse_methods)?;
        let auth = AuthConfig {
            spiffe: spiffe_settings(
                methods.spiffe,
                self.ziti_mgmt_spiffe_trust_domain,
                self.ziti_mgmt_spiffe_endpoint_socket,
                self.ziti_mgmt_spiffe_bundle_file,
            )?,
            jwt: jwt_settings(
                methods.jwt,
                JwtValues {
                    issuer: self.ziti_mgmt_jwt_issuer,
                    audience: self.ziti_mgmt_jwt_audience,
                    jwks_url: self.ziti_mgmt_jwt_jwks_url,
                    jwks_file: self.ziti_mgmt_jwt_jwks_file,
                    jwks_ca: self.ziti_mgmt_jwt_jwks_ca,
                    principal_claim: self.ziti_mgmt_jwt_principal_claim,
                },
            )?,
            none: methods.none,
        };
        let role_attributes_given = self.ziti_mgmt_gateway_role_attributes.is_some();
        let config = Config {
            controller_url,
            controller_ca_pem: parse_optional("ZITI_MGMT_CONTROLLER_CA", self.ziti_mgmt_controller_ca, read_ca)?,
            admin_user: parse_or("ZITI_MGMT_ADMIN_USER", self.ziti_mgmt_admin_user, "admin".into(), parse_non_empty)?,
            admin_password: password(self.ziti_mgmt_admin_password, self.ziti_mgmt_admin_password_file)?,
            lease_ttl: parse_or("ZITI_MGMT_LEASE_TTL", self.ziti_mgmt_lease_ttl, Duration::from_secs(300), positive)?,
            reaper_interval: parse_or(
                "ZITI_MGMT_REAPER_INTERVAL",
                self.ziti_mgmt_reaper_interval,
                Duration::from_secs(30),
                positive,
            )?,
            gateway_role_attributes: parse_or(
                "ZITI_MGMT_GATEWAY_ROLE_ATTRIBUTES",
                self.ziti_mgmt_gateway_role_attributes,
                vec!["gateway-hosts".to_owned()],
                parse_attributes,
            )?,
            grpc_addr: parse_or(
                "ZITI_MGMT_GRPC_ADDR",
                self.ziti_mgmt_grpc_addr,
                SocketAddr::from(([127, 0, 0, 1], 50051)),
                parse_addr,
            )?,
            admin_addr: parse_or(
                "ZITI_MGMT_ADMIN_ADDR",
                self.ziti_mgmt_admin_addr,
                SocketAddr::from(([127, 0, 0, 1], 9191)),
                parse_addr,
            )?,
            grpc_tls: grpc_tls(self.ziti_mgmt_tls_cert, self.ziti_mgmt_tls_key)?,
            insecure: parse_or("ZITI_MGMT_INSECURE", self.ziti_mgmt_insecure, false, parse_bool)?,
            auth,
            allow_unauthenticated: parse_or(
                "ZITI_MGMT_ALLOW_UNAUTHENTICATED",
                self.ziti_mgmt_allow_unauthenticated,
                false,
                parse_bool,
            )?,
            policy: Arc::new(Policy::anonymous_gateway(Vec::new())),
            provision: None,
        };
        if config.serves_plaintext_on_network() && !config.insecure {
            return Err(ConfigError::PlaintextOnNetwork { addr: config.grpc_addr });
        }
        if config.serves_unauthenticated_on_network() && !config.allow_unauthenticated {
            return Err(ConfigError::UnauthenticatedOnNetwork { addr: config.grpc_addr });
        }
        if config.auth.spiffe.is_some() && config.grpc_tls.is_none() {
            return Err(ConfigError::SpiffeNeedsTls);
        }
        let policy_file =
            parse_optional("ZITI_MGMT_POLICY_FILE", self.ziti_mgmt_policy_file, |path| Ok(path.to_owned()))?;
        let policy = match policy_file {
            Some(path) => {
                if role_attributes_given {
                    return Err(ConfigError::RoleAttributesBesidePolicy);
                }
                let policy = Policy::load(Path::new(&path))?;
                check_policy_methods(&policy, &config.auth, &path)?;
                policy
            }
            None if config.auth.spiffe.is_none() && config.auth.jwt.is_none() => {
                Policy::anonymous_gateway(config.gateway_role_attributes.clone())
            }
            None => {
                let method = if config.auth.spiffe.is_some() { "spiffe" } else { "jwt" };
                return Err(ConfigError::MethodNeeds { method, required: "ZITI_MGMT_POLICY_FILE" });
            }
        };
        let provision = provision_settings(
            &policy,
            config.auth.jwt.is_some(),
            self.ziti_mgmt_provision_auth_policy,
            self.ziti_mgmt_provision_roles_claim,
            self.ziti_mgmt_provision_idle,
        )?;
        Ok(Config { policy: Arc::new(policy), provision, ..config })
    }
}

/// Provisioning is on when `ZITI_MGMT_PROVISION_AUTH_POLICY` is set, which needs the
/// `jwt` method and the policy's `[provision]` table (and the reverse).
fn provision_settings(
    policy: &Policy,
    jwt: bool,
    auth_policy: Option<Value>,
    roles_claim: Option<Value>,
    idle: Option<Value>,
) -> Result<Option<ProvisionSettings>, ConfigError> {
    const AUTH_POLICY: &str = "ZITI_MGMT_PROVISION_AUTH_POLICY";
    const TABLE: &str = "the policy's [provision] table";
    let auth_policy = parse_optional(AUTH_POLICY, auth_policy, parse_non_empty)?;
    let Some(auth_policy) = auth_policy else {
        for (variable, value) in
            [("ZITI_MGMT_PROVISION_ROLES_CLAIM", &roles_claim), ("ZITI_MGMT_PROVISION_IDLE", &idle)]
        {
            if value.is_some() {
                return Err(ConfigError::ProvisionNotEnabled { variable });
            }
        }
        if policy.provision().is_some() {
            return Err(ConfigError::ProvisionHalf { given: TABLE, missing: AUTH_POLICY });
        }
        return Ok(None);
    };
    if !jwt {
        return Err(ConfigError::ProvisionNeedsJwt);
    }
    let Some(table) = policy.provision() else {
        return Err(ConfigError::ProvisionHalf { given: AUTH_POLICY, missing: TABLE });
    };
    Ok(Some(ProvisionSettings {
        auth_policy,
        roles_claim: parse_or(
            "ZITI_MGMT_PROVISION_ROLES_CLAIM",
            roles_claim,
            DEFAULT_PROVISION_ROLES_CLAIM.to_owned(),
            parse_non_empty,
        )?,
        idle: parse_or("ZITI_MGMT_PROVISION_IDLE", idle, DEFAULT_PROVISION_IDLE, positive)?,
        role_attributes: table.role_attributes.clone(),
    }))
}

/// The methods of `ZITI_MGMT_AUTH_METHODS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Methods {
    spiffe: bool,
    jwt: bool,
    none: bool,
}

impl Default for Methods {
    /// Callers without credentials, which the default loopback address makes safe.
    fn default() -> Self {
        Self { spiffe: false, jwt: false, none: true }
    }
}

fn parse_methods(value: &str) -> Result<Methods, String> {
    let mut methods = Methods { spiffe: false, jwt: false, none: false };
    for method in value.split(',').map(str::trim) {
        let slot = match method {
            "spiffe" => &mut methods.spiffe,
            "jwt" => &mut methods.jwt,
            "none" => &mut methods.none,
            _ => {
                return Err(format!("unknown method {method:?}; expected a comma-separated list of spiffe, jwt, none"));
            }
        };
        if std::mem::replace(slot, true) {
            return Err(format!("{method} is named twice"));
        }
    }
    Ok(methods)
}

/// Refuses a setting of a method that is not enabled: it would be silently ignored.
fn unused(enabled: bool, method: &'static str, settings: &[(&'static str, &Option<Value>)]) -> Result<(), ConfigError> {
    match settings.iter().find(|(_, value)| value.is_some()) {
        Some((variable, _)) if !enabled => Err(ConfigError::MethodNotEnabled { variable, method }),
        _ => Ok(()),
    }
}

fn spiffe_settings(
    enabled: bool,
    trust_domain: Option<Value>,
    socket: Option<Value>,
    bundle_file: Option<Value>,
) -> Result<Option<SpiffeSettings>, ConfigError> {
    const METHOD: &str = "spiffe";
    unused(
        enabled,
        METHOD,
        &[
            ("ZITI_MGMT_SPIFFE_TRUST_DOMAIN", &trust_domain),
            ("ZITI_MGMT_SPIFFE_ENDPOINT_SOCKET", &socket),
            ("ZITI_MGMT_SPIFFE_BUNDLE_FILE", &bundle_file),
        ],
    )?;
    if !enabled {
        return Ok(None);
    }
    let trust_domain = parse_optional("ZITI_MGMT_SPIFFE_TRUST_DOMAIN", trust_domain, parse_non_empty)?
        .ok_or(ConfigError::MethodNeeds { method: METHOD, required: "ZITI_MGMT_SPIFFE_TRUST_DOMAIN" })?;
    let socket = parse_optional("ZITI_MGMT_SPIFFE_ENDPOINT_SOCKET", socket, parse_endpoint)?;
    let bundle_file = parse_optional("ZITI_MGMT_SPIFFE_BUNDLE_FILE", bundle_file, |path| {
        read_pem(path, "CERTIFICATE").map(|_| PathBuf::from(path))
    })?;
    let bundle = match (socket, bundle_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::Either {
                first: "ZITI_MGMT_SPIFFE_ENDPOINT_SOCKET",
                second: "ZITI_MGMT_SPIFFE_BUNDLE_FILE",
            });
        }
        (Some(endpoint), None) => BundleSource::WorkloadApi(endpoint),
        (None, Some(path)) => BundleSource::File(path),
        (None, None) => {
            return Err(ConfigError::MethodNeeds {
                method: METHOD,
                required: "ZITI_MGMT_SPIFFE_ENDPOINT_SOCKET or ZITI_MGMT_SPIFFE_BUNDLE_FILE",
            });
        }
    };
    Ok(Some(SpiffeSettings { trust_domain, bundle }))
}

fn parse_endpoint(value: &str) -> Result<String, String> {
    if value.strip_prefix("unix://").is_some_and(|path| path.starts_with('/')) {
        Ok(value.to_owned())
    } else {
        Err("expected a Workload API endpoint such as unix:///run/spire/agent.sock".to_owned())
    }
}

struct JwtValues {
    issuer: Option<Value>,
    audience: Option<Value>,
    jwks_url: Option<Value>,
    jwks_file: Option<Value>,
    jwks_ca: Option<Value>,
    principal_claim: Option<Value>,
}

fn jwt_settings(enabled: bool, values: JwtValues) -> Result<Option<JwtSettings>, ConfigError> {
    const METHOD: &str = "jwt";
    unused(
        enabled,
        METHOD,
        &[
            ("ZITI_MGMT_JWT_ISSUER", &values.issuer),
            ("ZITI_MGMT_JWT_AUDIENCE", &values.audience),
            ("ZITI_MGMT_JWT_JWKS_URL", &values.jwks_url),
            ("ZITI_MGMT_JWT_JWKS_FILE", &values.jwks_file),
            ("ZITI_MGMT_JWT_JWKS_CA", &values.jwks_ca),
            ("ZITI_MGMT_JWT_PRINCIPAL_CLAIM", &values.principal_claim),
        ],
    )?;
    if !enabled {
        return Ok(None);
    }
    let required = |variable: &'static str, value: Option<Value>| {
        parse_optional(variable, value, parse_non_empty)?
            .ok_or(ConfigError::MethodNeeds { method: METHOD, required: variable })
    };
    let issuer = required("ZITI_MGMT_JWT_ISSUER", values.issuer)?;
    let audience = required("ZITI_MGMT_JWT_AUDIENCE", values.audience)?;
    let principal_claim = parse_or(
        "ZITI_MGMT_JWT_PRINCIPAL_CLAIM",
        values.principal_claim,
        DEFAULT_PRINCIPAL_CLAIM.to_owned(),
        parse_non_empty,
    )?;
    let url = parse_optional("ZITI_MGMT_JWT_JWKS_URL", values.jwks_url, parse_jwks_url)?;
    let file = parse_optional("ZITI_MGMT_JWT_JWKS_FILE", values.jwks_file, |path| {
        read_file(path).map(|_| PathBuf::from(path))
    })?;
    let ca_pem = parse_optional("ZITI_MGMT_JWT_JWKS_CA", values.jwks_ca, read_ca)?;
    let jwks = match (url, file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::Either { first: "ZITI_MGMT_JWT_JWKS_URL", second: "ZITI_MGMT_JWT_JWKS_FILE" });
        }
        (Some(url), None) => JwksSource::Url { url, ca_pem },
        (None, Some(path)) if ca_pem.is_none() => JwksSource::File(path),
        (None, Some(_)) => {
            return Err(ConfigError::MethodNeeds {
                method: METHOD,
                required: "ZITI_MGMT_JWT_JWKS_URL (for ZITI_MGMT_JWT_JWKS_CA)",
            });
        }
        (None, None) => {
            return Err(ConfigError::MethodNeeds {
                method: METHOD,
                required: "ZITI_MGMT_JWT_JWKS_URL or ZITI_MGMT_JWT_JWKS_FILE",
            });
        }
    };
    Ok(Some(JwtSettings { issuer, audience, principal_claim, jwks }))
}

/// The JWKS is fetched over https, or plain http to this machine only.
fn parse_jwks_url(value: &str) -> Result<Url, String> {
    let url =
        Url::parse(value).map_err(|err| format!("expected a URL such as https://idp.example/jwks.json ({err})"))?;
    let loopback = url.host_str().is_some_and(is_loopback_host);
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        _ => Err("expected an https:// URL (http:// only to this machine)".to_owned()),
    }
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// A policy naming a class of callers that no enabled method can produce is a mistake.
fn check_policy_methods(policy: &Policy, auth: &AuthConfig, path: &str) -> Result<(), ConfigError> {
    for class in policy.classes() {
        let (enabled, method) = match class {
            "spiffe" => (auth.spiffe.is_some(), "spiffe"),
            "jwt" => (auth.jwt.is_some(), "jwt"),
            _ => (auth.none, "none"),
        };
        if !enabled {
            return Err(ConfigError::PolicyNamesDisabledMethod { path: path.to_owned(), class, method });
        }
    }
    Ok(())
}

fn password(value: Option<Value>, file: Option<Value>) -> Result<Password, ConfigError> {
    let value = text(value).map(Zeroizing::new);
    let file = parse_optional("ZITI_MGMT_ADMIN_PASSWORD_FILE", file, read_password_file)?;
    let password = match (value, file) {
        (Some(_), Some(_)) => return Err(ConfigError::TwoPasswords),
        (None, None) => return Err(ConfigError::Missing("ZITI_MGMT_ADMIN_PASSWORD or ZITI_MGMT_ADMIN_PASSWORD_FILE")),
        (Some(password), None) | (None, Some(password)) => password,
    };
    if password.is_empty() {
        return Err(ConfigError::EmptyPassword);
    }
    Ok(Password(password))
}

fn grpc_tls(cert: Option<Value>, key: Option<Value>) -> Result<Option<GrpcTls>, ConfigError> {
    let cert = parse_optional("ZITI_MGMT_TLS_CERT", cert, |path| read_pem(path, "CERTIFICATE"))?;
    let key = parse_optional("ZITI_MGMT_TLS_KEY", key, |path| read_pem(path, "PRIVATE KEY"))?;
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert_pem), Some(key_pem)) => Ok(Some(GrpcTls { cert_pem: cert_pem.to_vec(), key_pem })),
        _ => Err(ConfigError::HalfTls),
    }
}

fn parse_url(value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|err| format!("expected a URL such as https://127.0.0.1:1280 ({err})"))?;
    if url.scheme() != "https" || url.host_str().is_none() {
        return Err("expected an https:// URL with a host, such as https://127.0.0.1:1280".to_owned());
    }
    if url.path() != "/" || url.query().is_some() {
        return Err("expected the controller's root URL, without a path or query".to_owned());
    }
    Ok(url)
}

fn positive(value: &str) -> Result<Duration, String> {
    match humantime::parse_duration(value) {
        Ok(Duration::ZERO) => Err("must be greater than zero".to_owned()),
        Ok(duration) => Ok(duration),
        Err(err) => Err(format!("expected a duration such as 30s or 5m ({err})")),
    }
}

/// A comma-separated list of role attributes (without `#`).
fn parse_attributes(value: &str) -> Result<Vec<String>, String> {
    let attributes: Vec<String> = value.split(',').map(str::trim).map(str::to_owned).collect();
    if attributes.iter().any(String::is_empty) {
        return Err("expected a comma-separated list of role attributes such as gateway-hosts,edge".to_owned());
    }
    if attributes.iter().any(|attribute| attribute.starts_with('#')) {
        return Err("role attributes are given without the leading #".to_owned());
    }
    Ok(attributes)
}

fn parse_addr(value: &str) -> Result<SocketAddr, String> {
    value.parse().map_err(|_| "expected an IP address and port such as 127.0.0.1:50051".to_owned())
}

fn read_file(path: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    std::fs::read(Path::new(path)).map(Zeroizing::new).map_err(|err| format!("cannot read the file ({err})"))
}

fn read_ca(path: &str) -> Result<Vec<u8>, String> {
    let pem = read_pem(path, "CERTIFICATE")?;
    Ok(pem.to_vec())
}

/// Reads a PEM file and checks that it holds a block of the expected kind.
fn read_pem(path: &str, kind: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let contents = read_file(path)?;
    let found = String::from_utf8_lossy(&contents).lines().any(|line| {
        line.strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(|label| label.ends_with(kind))
    });
    if found { Ok(contents) } else { Err(format!("the file holds no PEM {kind}")) }
}

/// The file's first line: a trailing newline is not part of the password.
fn read_password_file(path: &str) -> Result<Zeroizing<String>, String> {
    let contents = read_file(path)?;
    let text = std::str::from_utf8(&contents).map_err(|_| "the file is not UTF-8 text".to_owned())?;
    Ok(Zeroizing::new(text.trim_end_matches(['\r', '\n']).to_owned()))
}

#[cfg(test)]
mod tests;
