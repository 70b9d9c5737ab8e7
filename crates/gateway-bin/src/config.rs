//! Configuration: defaults < optional TOML file (`GATEWAY_CONFIG_FILE`) < environment.
//!
//! Every value is read as text and validated here, so that a bad value stops the start
//! with a message that names the variable and says what is wrong with it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::providers::Env;
use figment::value::Value;
use serde::{Deserialize, Serialize};
use service_kit::env::{InvalidValue, layered, parse_bool, parse_non_empty, parse_optional, parse_or, text};
use thiserror::Error;
use ziti_transport::ControllerPins;

/// The contract's lease TTL: renewals must come well before it.
pub const LEASE_TTL: Duration = Duration::from_secs(5 * 60);

/// Every variable the gateway reads. File keys are the same names in lower case.
pub const VARIABLES: &[&str] = &[
    "ZITI_ENABLED",
    "ZITI_MANAGEMENT_GRPC_TARGET",
    "ZITI_LEASE_RENEWAL_INTERVAL",
    "ZITI_SERVICE_NAME",
    "ZITI_IDENTITY_FILE",
    "ZITI_ENROLLMENT_TIMEOUT",
    "ZITI_MANAGEMENT_TIMEOUT",
    "ZITI_MANAGEMENT_TLS_CA",
    "ZITI_MANAGEMENT_TLS_CERT",
    "ZITI_MANAGEMENT_TLS_KEY",
    "ZITI_MANAGEMENT_TLS_DOMAIN",
    "ZITI_MANAGEMENT_INSECURE",
    "ZITI_MANAGEMENT_TOKEN_FILE",
    "ZITI_CONTROLLER_URL",
    "ZITI_CONTROLLER_CA",
    "ZITI_IDENTITY_SOURCE",
    "SPIFFE_ENDPOINT_SOCKET",
    "ZITI_SPIFFE_ID",
    "ZITI_JWT_FILE",
    "ZITI_OIDC_ISSUER",
    "ZITI_OIDC_CLIENT_ID",
    "ZITI_OIDC_CLIENT_SECRET_FILE",
    "ZITI_OIDC_AUDIENCE",
    "ZITI_OIDC_SCOPES",
    "ZITI_IDP_PROVISION",
    "ZITI_RESOLVE_CACHE_TTL",
    "ZITI_RESOLVE_MAX_CONCURRENT",
    "GATEWAY_UNVERIFIED_CALLERS",
    "GATEWAY_MAX_CONNECTIONS",
    "GATEWAY_FORWARDED_HOSTS",
    "GATEWAY_LISTEN_ADDR",
    "GATEWAY_ADMIN_ADDR",
    "GATEWAY_UPSTREAM_URL",
    "GATEWAY_UPSTREAM_TIMEOUT",
    "GATEWAY_SHUTDOWN_GRACE",
    "GATEWAY_LOG_FORMAT",
    "GATEWAY_IDENTITY_DIR",
    "GATEWAY_IDENTITY_STORE",
];

/// The file that may hold the same settings (TOML, lower-case keys).
pub const CONFIG_FILE_VARIABLE: &str = "GATEWAY_CONFIG_FILE";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{variable}={value:?} is invalid: {problem}")]
    Invalid { variable: &'static str, value: String, problem: String },
    #[error(
        "ZITI_IDENTITY_FILE is set but no longer used: the gateway now obtains its identity from ziti-management at start-up. \
         Set ZITI_ENABLED=true to serve on the overlay (and unset ZITI_IDENTITY_FILE), or unset ZITI_IDENTITY_FILE to serve on plain TCP"
    )]
    IdentityFileWithoutOverlay,
    #[error("ZITI_MANAGEMENT_TLS_CERT and ZITI_MANAGEMENT_TLS_KEY must be set together (for mTLS to ziti-management)")]
    HalfClientIdentity,
    #[error(
        "ZITI_MANAGEMENT_GRPC_TARGET={target:?} would be plain text to a host that is not loopback, so the leased \
         identity and its private key would cross the network readable. Set ZITI_MANAGEMENT_TLS_CA (with a host:port \
         or https:// target) to use TLS, or set ZITI_MANAGEMENT_INSECURE=true to accept plain text"
    )]
    PlaintextManagement { target: String },
    #[error("{variable} must be set with ZITI_IDENTITY_SOURCE=spiffe ({why})")]
    RequiredForSpiffe { variable: &'static str, why: &'static str },
    #[error(
        "GATEWAY_IDENTITY_STORE=file cannot be used with ZITI_IDENTITY_SOURCE=spiffe: the X.509-SVID's key never \
         touches disk. Unset GATEWAY_IDENTITY_STORE (or set it to memory)"
    )]
    SpiffeKeyOnDisk,
    #[error("{variable} must be set with ZITI_IDENTITY_SOURCE=jwt ({why})")]
    RequiredForJwt { variable: &'static str, why: &'static str },
    #[error(
        "ZITI_IDENTITY_SOURCE=jwt takes its token from ZITI_JWT_FILE or from the OIDC client credentials \
         (ZITI_OIDC_ISSUER, ZITI_OIDC_CLIENT_ID, ZITI_OIDC_CLIENT_SECRET_FILE, ZITI_OIDC_AUDIENCE), not both"
    )]
    TwoTokenSources,
    #[error(
        "GATEWAY_IDENTITY_STORE=file cannot be used with ZITI_IDENTITY_SOURCE=jwt: the IdP token never touches \
         disk. Unset GATEWAY_IDENTITY_STORE (or set it to memory)"
    )]
    JwtTokenOnDisk,
    #[error("configuration could not be read: {0}")]
    Source(String),
}

impl From<InvalidValue> for ConfigError {
    fn from(InvalidValue { variable, value, problem }: InvalidValue) -> Self {
        Self::Invalid { variable, value, problem }
    }
}

pub use service_kit::logging::LogFormat;

/// TLS for the channel to ziti-management (files are read at start-up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagementTls {
    pub ca_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    pub domain_name: Option<String>,
}

/// What the gateway presents to ziti-management, besides a fixed client certificate
/// (`ZITI_MANAGEMENT_TLS_CERT`): its X.509-SVID when the SPIFFE Workload API is
/// there, and a bearer token when a token file is named.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagementCredentials {
    /// `SPIFFE_ENDPOINT_SOCKET`, when no fixed client certificate is given: the SVID
    /// of the moment is the client certificate of each new TLS connection.
    pub svid_endpoint: Option<String>,
    /// `ZITI_SPIFFE_ID`: which SVID, when the workload has several.
    pub spiffe_id: Option<String>,
    /// `ZITI_MANAGEMENT_TOKEN_FILE`: re-read for every call (a rotating projected token).
    pub token_file: Option<PathBuf>,
}

/// Where the gateway's OpenZiti identity comes from (`ZITI_IDENTITY_SOURCE`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentitySourceConfig {
    /// `lease`: leased from ziti-management (`RequestServiceIdentity`).
    Lease,
    /// `spiffe`: the workload's X.509-SVID from the SPIFFE Workload API.
    Spiffe(SpiffeConfig),
    /// `jwt`: an OIDC identity provider's token, for the controller's ext-jwt login.
    Jwt(JwtConfig),
}

/// The `jwt` source's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// Where the IdP token comes from.
    pub token: JwtTokenConfig,
    /// `ZITI_CONTROLLER_URL`.
    pub controller_url: String,
    /// The PEM of `ZITI_CONTROLLER_CA` (read at start-up).
    pub controller_ca_pem: String,
    /// `ZITI_IDP_PROVISION`: ask ziti-management to make the identity exist first.
    pub provision: bool,
}

/// Where the `jwt` source's token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwtTokenConfig {
    /// `ZITI_JWT_FILE`: re-read when it changes.
    File(PathBuf),
    /// The OAuth2 client-credentials grant at the IdP (`ZITI_OIDC_*`).
    ClientCredentials { issuer: String, client_id: String, secret_file: PathBuf, audience: String, scopes: Vec<String> },
}

/// The SPIFFE source's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeConfig {
    /// `SPIFFE_ENDPOINT_SOCKET`: the Workload API, e.g. `unix:///run/spire/agent.sock`.
    pub endpoint: String,
    /// `ZITI_SPIFFE_ID`: which SVID to use when the Workload API gives several.
    pub spiffe_id: Option<String>,
    /// `ZITI_CONTROLLER_URL`.
    pub controller_url: String,
    /// The PEM of `ZITI_CONTROLLER_CA` (read at start-up).
    pub controller_ca_pem: String,
}

impl IdentitySourceConfig {
    /// The source, in the words of the logs and errors.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Lease => "ziti-management",
            Self::Spiffe(_) => "the SPIFFE Workload API",
            Self::Jwt(_) => "the identity provider's token",
        }
    }
}

/// Whether a leased identity is written to a private file before it is loaded
/// (`GATEWAY_IDENTITY_STORE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityStore {
    /// The spec's private temp file (0600 in a 0700 directory).
    File,
    /// Kept in memory only; nothing is written.
    Memory,
}

/// Settings that matter only with the overlay on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayConfig {
    pub management_target: String,
    pub management_timeout: Duration,
    pub management_tls: Option<ManagementTls>,
    /// `ZITI_MANAGEMENT_INSECURE`: plain text to a ziti-management that is not on loopback.
    pub management_insecure: bool,
    /// How the gateway proves who it is to ziti-management.
    pub management_credentials: ManagementCredentials,
    /// `ZITI_CONTROLLER_URL` and `ZITI_CONTROLLER_CA`: what a leased identity may point
    /// at (the CA file is read here); unset parts are not checked.
    pub controller_pins: ControllerPins,
    pub renewal_interval: Duration,
    pub service_name: String,
    pub enrollment_timeout: Duration,
    pub resolve_cache_ttl: Duration,
    /// `ZITI_RESOLVE_MAX_CONCURRENT`: `ResolveIdentity` calls in flight at most.
    pub resolve_max_concurrent: usize,
    /// `GATEWAY_UNVERIFIED_CALLERS`: how callers the overlay did not vouch for are served.
    pub unverified_callers: domain::UnverifiedCallers,
    /// Where the private identity directory is created; `None` is the system temp dir.
    pub identity_dir: Option<PathBuf>,
    /// `ZITI_IDENTITY_SOURCE`: ziti-management leases (default) or SPIFFE.
    pub identity_source: IdentitySourceConfig,
    /// `GATEWAY_IDENTITY_STORE`: `file` (default for leases) or `memory` (always for SPIFFE).
    pub identity_store: IdentityStore,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub upstream_url: Option<http::Uri>,
    pub upstream_timeout: Duration,
    /// `GATEWAY_FORWARDED_HOSTS`: client `Host` values passed on as `x-forwarded-host`
    /// (lower case); any other is not passed on.
    pub forwarded_hosts: Vec<String>,
    /// `GATEWAY_MAX_CONNECTIONS`: connections served at once; more are closed at once.
    pub max_connections: usize,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    /// `Some` when `ZITI_ENABLED` is true.
    pub overlay: Option<OverlayConfig>,
    /// `ZITI_IDENTITY_FILE` was set alongside `ZITI_ENABLED=true`: ignored, worth a warning.
    pub ignored_identity_file: bool,
}

/// The raw settings as text (or whatever scalar the source gave), before validation.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    ziti_enabled: Option<Value>,
    ziti_management_grpc_target: Option<Value>,
    ziti_lease_renewal_interval: Option<Value>,
    ziti_service_name: Option<Value>,
    ziti_identity_file: Option<Value>,
    ziti_enrollment_timeout: Option<Value>,
    ziti_management_timeout: Option<Value>,
    ziti_management_tls_ca: Option<Value>,
    ziti_management_tls_cert: Option<Value>,
    ziti_management_tls_key: Option<Value>,
    ziti_management_tls_domain: Option<Value>,
    ziti_management_insecure: Option<Value>,
    ziti_management_token_file: Option<Value>,
    ziti_controller_url: Option<Value>,
    ziti_controller_ca: Option<Value>,
    ziti_resolve_cache_ttl: Option<Value>,
    ziti_resolve_max_concurrent: Option<Value>,
    gateway_unverified_callers: Option<Value>,
    gateway_max_connections: Option<Value>,
    gateway_forwarded_hosts: Option<Value>,
    gateway_listen_addr: Option<Value>,
    gateway_admin_addr: Option<Value>,
    gateway_upstream_url: Option<Value>,
    gateway_upstream_timeout: Option<Value>,
    gateway_shutdown_grace: Option<Value>,
    gateway_log_format: Option<Value>,
    gateway_identity_dir: Option<Value>,
    gateway_identity_store: Option<Value>,
    ziti_identity_source: Option<Value>,
    spiffe_endpoint_socket: Option<Value>,
    ziti_spiffe_id: Option<Value>,
    ziti_jwt_file: Option<Value>,
    ziti_oidc_issuer: Option<Value>,
    ziti_oidc_client_id: Option<Value>,
    ziti_oidc_client_secret_file: Option<Value>,
    ziti_oidc_audience: Option<Value>,
    ziti_oidc_scopes: Option<Value>,
    ziti_idp_provision: Option<Value>,
}

impl Config {
    /// Reads the process environment (and the file it may name).
    pub fn load() -> Result<Self, ConfigError> {
        Self::from_figment(&Self::figment())
    }

    /// Defaults < `GATEWAY_CONFIG_FILE` (when set) < environment.
    pub fn figment() -> Figment {
        layered(Raw::default(), CONFIG_FILE_VARIABLE, Env::raw().only(VARIABLES))
    }

    pub fn from_figment(figment: &Figment) -> Result<Self, ConfigError> {
        let raw: Raw = figment.extract().map_err(|err| ConfigError::Source(err.to_string()))?;
        raw.validate()
    }
}

impl Raw {
    /// Checks every variable, even those that matter only with the overlay on: a bad
    /// value is reported whether or not it would be used.
    fn validate(self) -> Result<Config, ConfigError> {
        let enabled = parse_or("ZITI_ENABLED", self.ziti_enabled, false, parse_bool)?;
        let identity_file = text(self.ziti_identity_file).filter(|path| !path.trim().is_empty());
        if identity_file.is_some() && !enabled {
            return Err(ConfigError::IdentityFileWithoutOverlay);
        }
        let controller = controller_pins(self.ziti_controller_url, self.ziti_controller_ca)?;
        let store = parse_optional("GATEWAY_IDENTITY_STORE", self.gateway_identity_store, parse_identity_store)?;
        let spiffe_id = parse_optional("ZITI_SPIFFE_ID", self.ziti_spiffe_id, parse_spiffe_id)?;
        let endpoint = parse_optional("SPIFFE_ENDPOINT_SOCKET", self.spiffe_endpoint_socket, parse_workload_api)?;
        let kind =
            parse_or("ZITI_IDENTITY_SOURCE", self.ziti_identity_source, SourceKind::Lease, parse_identity_source)?;
        let jwt_token = jwt_token(JwtValues {
            file: self.ziti_jwt_file,
            issuer: self.ziti_oidc_issuer,
            client_id: self.ziti_oidc_client_id,
            secret_file: self.ziti_oidc_client_secret_file,
            audience: self.ziti_oidc_audience,
            scopes: self.ziti_oidc_scopes,
        })?;
        let token_file =
            parse_optional("ZITI_MANAGEMENT_TOKEN_FILE", self.ziti_management_token_file, parse_token_file)?;
        let fixed_client_certificate = text(self.ziti_management_tls_cert.clone()).is_some();
        let management_credentials = ManagementCredentials {
            svid_endpoint: endpoint.clone().filter(|_| !fixed_client_certificate),
            spiffe_id: spiffe_id.clone(),
            token_file,
        };
        let provision = parse_or("ZITI_IDP_PROVISION", self.ziti_idp_provision, false, parse_bool)?;
        let (identity_source, identity_store) = if kind == SourceKind::Jwt && enabled {
            let required = |variable, why| ConfigError::RequiredForJwt { variable, why };
            let source = IdentitySourceConfig::Jwt(JwtConfig {
                token: jwt_token.ok_or(required(
                    "ZITI_JWT_FILE or ZITI_OIDC_ISSUER",
                    "where the identity provider's token comes from",
                ))?,
                controller_url: controller
                    .url
                    .ok_or(required("ZITI_CONTROLLER_URL", "the controller the token logs in to"))?,
                controller_ca_pem: controller
                    .ca_pem
                    .ok_or(required("ZITI_CONTROLLER_CA", "the CA bundle that the controller is trusted with"))?,
                provision,
            });
            if store == Some(IdentityStore::File) {
                return Err(ConfigError::JwtTokenOnDisk);
            }
            (source, IdentityStore::Memory)
        } else if kind == SourceKind::Spiffe && enabled {
            let required = |variable, why| ConfigError::RequiredForSpiffe { variable, why };
            let source = IdentitySourceConfig::Spiffe(SpiffeConfig {
                endpoint: endpoint
                    .ok_or(required("SPIFFE_ENDPOINT_SOCKET", "where the SPIFFE Workload API listens"))?,
                spiffe_id,
                controller_url: controller
                    .url
                    .ok_or(required("ZITI_CONTROLLER_URL", "the controller the X.509-SVID logs in to"))?,
                controller_ca_pem: controller
                    .ca_pem
                    .ok_or(required("ZITI_CONTROLLER_CA", "the CA bundle that the controller is trusted with"))?,
            });
            if store == Some(IdentityStore::File) {
                return Err(ConfigError::SpiffeKeyOnDisk);
            }
            (source, IdentityStore::Memory)
        } else {
            (IdentitySourceConfig::Lease, store.unwrap_or(IdentityStore::File))
        };
        let overlay = OverlayConfig {
            management_target: parse_or(
                "ZITI_MANAGEMENT_GRPC_TARGET",
                self.ziti_management_grpc_target,
                "ziti-management:50051".to_owned(),
                parse_target,
            )?,
            management_timeout: parse_or(
                "ZITI_MANAGEMENT_TIMEOUT",
                self.ziti_management_timeout,
                Duration::from_secs(10),
                parse_positive_duration,
            )?,
            management_tls: management_tls(
                self.ziti_management_tls_ca,
                self.ziti_management_tls_cert,
                self.ziti_management_tls_key,
                self.ziti_management_tls_domain,
            )?,
            management_insecure: parse_or(
                "ZITI_MANAGEMENT_INSECURE",
                self.ziti_management_insecure,
                false,
                parse_bool,
            )?,
            management_credentials,
            controller_pins: controller.pins.clone(),
            renewal_interval: parse_or(
                "ZITI_LEASE_RENEWAL_INTERVAL",
                self.ziti_lease_renewal_interval,
                Duration::from_secs(120),
                parse_renewal_interval,
            )?,
            service_name: parse_or("ZITI_SERVICE_NAME", self.ziti_service_name, "gateway".to_owned(), parse_non_empty)?,
            enrollment_timeout: parse_or(
                "ZITI_ENROLLMENT_TIMEOUT",
                self.ziti_enrollment_timeout,
                Duration::from_secs(30),
                parse_positive_duration,
            )?,
            resolve_cache_ttl: parse_or(
                "ZITI_RESOLVE_CACHE_TTL",
                self.ziti_resolve_cache_ttl,
                Duration::from_secs(30),
                parse_duration,
            )?,
            resolve_max_concurrent: parse_or(
                "ZITI_RESOLVE_MAX_CONCURRENT",
                self.ziti_resolve_max_concurrent,
                32,
                parse_count,
            )?,
            unverified_callers: parse_or(
                "GATEWAY_UNVERIFIED_CALLERS",
                self.gateway_unverified_callers,
                domain::UnverifiedCallers::Anonymous,
                parse_unverified_callers,
            )?,
            identity_dir: parse_optional("GATEWAY_IDENTITY_DIR", self.gateway_identity_dir, parse_dir)?,
            identity_store,
            identity_source,
        };
        let config = Config {
            listen_addr: parse_or(
                "GATEWAY_LISTEN_ADDR",
                self.gateway_listen_addr,
                SocketAddr::from(([127, 0, 0, 1], 8080)),
                parse_addr,
            )?,
            admin_addr: parse_or(
                "GATEWAY_ADMIN_ADDR",
                self.gateway_admin_addr,
                SocketAddr::from(([127, 0, 0, 1], 9090)),
                parse_addr,
            )?,
            upstream_url: parse_optional("GATEWAY_UPSTREAM_URL", self.gateway_upstream_url, parse_upstream)?,
            upstream_timeout: parse_or(
                "GATEWAY_UPSTREAM_TIMEOUT",
                self.gateway_upstream_timeout,
                Duration::from_secs(30),
                parse_positive_duration,
            )?,
            forwarded_hosts: parse_or(
                "GATEWAY_FORWARDED_HOSTS",
                self.gateway_forwarded_hosts,
                Vec::new(),
                parse_forwarded_hosts,
            )?,
            max_connections: parse_or("GATEWAY_MAX_CONNECTIONS", self.gateway_max_connections, 1024, parse_count)?,
            shutdown_grace: parse_or(
                "GATEWAY_SHUTDOWN_GRACE",
                self.gateway_shutdown_grace,
                Duration::from_secs(10),
                parse_duration,
            )?,
            log_format: parse_or("GATEWAY_LOG_FORMAT", self.gateway_log_format, LogFormat::Text, parse_log_format)?,
            overlay: enabled.then_some(overlay),
            ignored_identity_file: identity_file.is_some(),
        };
        // After every value is known good, so a bad one is what gets reported.
        if let Some(overlay) = &config.overlay {
            check_management_transport(overlay)?;
        }
        Ok(config)
    }
}

/// A token file must be readable and hold a token now; it is re-read for each call.
fn parse_token_file(path: &str) -> Result<PathBuf, String> {
    let token = std::fs::read_to_string(path).map_err(|err| format!("cannot read the token file ({err})"))?;
    if token.trim().is_empty() {
        return Err("the token file is empty".to_owned());
    }
    Ok(PathBuf::from(path))
}

fn management_tls(
    ca: Option<Value>,
    cert: Option<Value>,
    key: Option<Value>,
    domain: Option<Value>,
) -> Result<Option<ManagementTls>, ConfigError> {
    let (ca, cert, key, domain) = (text(ca), text(cert), text(key), text(domain));
    if cert.is_some() != key.is_some() {
        return Err(ConfigError::HalfClientIdentity);
    }
    if ca.is_none() && cert.is_none() && domain.is_none() {
        return Ok(None);
    }
    Ok(Some(ManagementTls {
        ca_file: ca.map(PathBuf::from),
        client_cert_file: cert.map(PathBuf::from),
        client_key_file: key.map(PathBuf::from),
        domain_name: domain,
    }))
}

/// Plain text to ziti-management only where nothing else can listen (loopback),
/// unless the operator said otherwise.
fn check_management_transport(overlay: &OverlayConfig) -> Result<(), ConfigError> {
    let target = &overlay.management_target;
    let mut config = zitimgmt_grpc::ManagementConfig::new(target.clone());
    if overlay.management_tls.is_some() {
        config = config.with_tls(zitimgmt_grpc::TlsMaterial::default());
    }
    let plaintext_to_remote = config.is_plaintext_to_remote().map_err(|error| ConfigError::Invalid {
        variable: "ZITI_MANAGEMENT_GRPC_TARGET",
        value: target.clone(),
        problem: error.to_string(),
    })?;
    if plaintext_to_remote && !overlay.management_insecure {
        return Err(ConfigError::PlaintextManagement { target: target.clone() });
    }
    Ok(())
}

/// `ZITI_CONTROLLER_URL` and `ZITI_CONTROLLER_CA`: pins for leased identities, and
/// the controller of the SPIFFE source.
struct Controller {
    pins: ControllerPins,
    url: Option<String>,
    ca_pem: Option<String>,
}

fn controller_pins(url: Option<Value>, ca: Option<Value>) -> Result<Controller, ConfigError> {
    let mut pins = ControllerPins::none();
    let url = parse_optional("ZITI_CONTROLLER_URL", url, parse_controller_url)?;
    if let Some(url) = &url {
        pins = pins.with_controller(url).map_err(|error| ConfigError::Invalid {
            variable: "ZITI_CONTROLLER_URL",
            value: url.clone(),
            problem: error.to_string(),
        })?;
    }
    let mut ca_pem = None;
    if let Some(ca) = text(ca) {
        let invalid =
            |problem: String| ConfigError::Invalid { variable: "ZITI_CONTROLLER_CA", value: ca.clone(), problem };
        let pem = std::fs::read(ca.trim()).map_err(|error| invalid(format!("cannot read the file ({error})")))?;
        pins = pins.with_ca_pem(&pem).map_err(|error| invalid(error.to_string()))?;
        ca_pem = Some(String::from_utf8(pem).map_err(|_| invalid("is not PEM text".to_owned()))?);
    }
    Ok(Controller { pins, url, ca_pem })
}

/// The values of `ZITI_IDENTITY_SOURCE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceKind {
    Lease,
    Spiffe,
    Jwt,
}

fn parse_identity_source(value: &str) -> Result<SourceKind, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "lease" => Ok(SourceKind::Lease),
        "spiffe" => Ok(SourceKind::Spiffe),
        "jwt" => Ok(SourceKind::Jwt),
        _ => Err("expected lease (an identity leased from ziti-management), spiffe (the X.509-SVID from the SPIFFE \
                  Workload API) or jwt (an identity provider's token)"
            .to_owned()),
    }
}

struct JwtValues {
    file: Option<Value>,
    issuer: Option<Value>,
    client_id: Option<Value>,
    secret_file: Option<Value>,
    audience: Option<Value>,
    scopes: Option<Value>,
}

/// The `jwt` source's token settings, checked whatever the source (a bad value is an
/// error even while unused). `None` when neither a file nor an issuer is given.
fn jwt_token(values: JwtValues) -> Result<Option<JwtTokenConfig>, ConfigError> {
    let file = parse_optional("ZITI_JWT_FILE", values.file, parse_readable_file)?;
    let issuer = parse_optional("ZITI_OIDC_ISSUER", values.issuer, parse_issuer)?;
    let client_id = parse_optional("ZITI_OIDC_CLIENT_ID", values.client_id, parse_non_empty)?;
    let secret_file = parse_optional("ZITI_OIDC_CLIENT_SECRET_FILE", values.secret_file, parse_readable_file)?;
    let audience = parse_optional("ZITI_OIDC_AUDIENCE", values.audience, parse_non_empty)?;
    let scopes = parse_optional("ZITI_OIDC_SCOPES", values.scopes, |value| {
        Ok::<_, String>(value.split([' ', ',']).filter(|scope| !scope.is_empty()).map(str::to_owned).collect())
    })?;
    let client = issuer.is_some() || client_id.is_some() || secret_file.is_some() || audience.is_some();
    match (file, client) {
        (Some(_), true) => Err(ConfigError::TwoTokenSources),
        (Some(path), false) => Ok(Some(JwtTokenConfig::File(path))),
        (None, false) => Ok(None),
        (None, true) => {
            let required = |variable, why| ConfigError::RequiredForJwt { variable, why };
            Ok(Some(JwtTokenConfig::ClientCredentials {
                issuer: issuer.ok_or(required("ZITI_OIDC_ISSUER", "the identity provider"))?,
                client_id: client_id.ok_or(required("ZITI_OIDC_CLIENT_ID", "the client the gateway is"))?,
                secret_file: secret_file
                    .ok_or(required("ZITI_OIDC_CLIENT_SECRET_FILE", "the file holding the client's secret"))?,
                audience: audience.ok_or(required("ZITI_OIDC_AUDIENCE", "the audience the controller expects"))?,
                scopes: scopes.unwrap_or_default(),
            }))
        }
    }
}

/// A file that exists and can be read now (its contents are secret: not kept here).
fn parse_readable_file(path: &str) -> Result<PathBuf, String> {
    std::fs::File::open(path).map(|_| PathBuf::from(path)).map_err(|err| format!("cannot read the file ({err})"))
}

/// The IdP's issuer URL: the client secret is sent there, so https, or http to this
/// machine only.
fn parse_issuer(value: &str) -> Result<String, String> {
    let url: http::Uri = value
        .trim()
        .parse()
        .map_err(|err| format!("expected the identity provider's issuer URL, such as https://idp.example ({err})"))?;
    let loopback = url.host().is_some_and(zitimgmt_grpc::is_loopback_host);
    match url.scheme_str() {
        Some("https") if url.host().is_some() => Ok(value.trim().to_owned()),
        Some("http") if loopback => Ok(value.trim().to_owned()),
        _ => Err("expected an https:// URL (http:// only to this machine): the client secret is sent there".to_owned()),
    }
}

fn parse_identity_store(value: &str) -> Result<IdentityStore, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "file" => Ok(IdentityStore::File),
        "memory" => Ok(IdentityStore::Memory),
        _ => Err("expected file (a private temp file) or memory (never written to disk)".to_owned()),
    }
}

/// The Workload API endpoint, as the SPIFFE convention writes it.
fn parse_workload_api(value: &str) -> Result<String, String> {
    let value = value.trim();
    let path = value.strip_prefix("unix://").or_else(|| value.strip_prefix("unix:"));
    match path {
        Some(path) if path.starts_with('/') => Ok(value.to_owned()),
        _ if value.starts_with("tcp://") => Ok(value.to_owned()),
        _ => Err("expected unix:///absolute/path/to/agent.sock (or tcp://ip:port)".to_owned()),
    }
}

fn parse_spiffe_id(value: &str) -> Result<String, String> {
    let value = value.trim();
    match value.strip_prefix("spiffe://") {
        Some(rest) if !rest.is_empty() => Ok(value.to_owned()),
        _ => Err("expected a SPIFFE ID such as spiffe://example.org/gateway".to_owned()),
    }
}

/// The controller's `https://` URL; only scheme, host and port count, so the edge
/// client API path a leased identity's `ztAPI` carries may be given too.
fn parse_controller_url(value: &str) -> Result<String, String> {
    ControllerPins::none()
        .with_controller(value)
        .map(|_| value.to_owned())
        .map_err(|_| "expected the controller's https:// URL, such as https://ctrl.example.com:1280".to_owned())
}

fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value).map_err(|err| format!("expected a duration such as 90s or 2m ({err})"))
}

fn parse_positive_duration(value: &str) -> Result<Duration, String> {
    match parse_duration(value)? {
        Duration::ZERO => Err("must be greater than zero".to_owned()),
        duration => Ok(duration),
    }
}

fn parse_renewal_interval(value: &str) -> Result<Duration, String> {
    let interval = parse_positive_duration(value)?;
    if interval >= LEASE_TTL {
        return Err(format!("must be below the lease TTL ({}) or the lease runs out between renewals", "5m"));
    }
    Ok(interval)
}

fn parse_dir(value: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(value);
    if path.is_dir() { Ok(path) } else { Err("not an existing directory".to_owned()) }
}

fn parse_addr(value: &str) -> Result<SocketAddr, String> {
    value.parse().map_err(|_| "expected an IP address and port such as 127.0.0.1:8080".to_owned())
}

/// `host:port`, or an `http://` / `https://` URL.
fn parse_target(value: &str) -> Result<String, String> {
    let authority = value.strip_prefix("http://").or_else(|| value.strip_prefix("https://")).unwrap_or(value);
    let authority = authority.trim_end_matches('/');
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|port| port > 0) => {
            Ok(value.to_owned())
        }
        _ => {
            Err("expected host:port (or an http:// or https:// URL with a port), e.g. ziti-management:50051".to_owned())
        }
    }
}

fn parse_upstream(value: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = value.parse().map_err(|_| "not a valid URL".to_owned())?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(_)) => Ok(uri),
        (Some("https"), _) => Err("https upstreams are not supported yet; use an http:// URL".to_owned()),
        _ => Err("expected an absolute http:// URL such as http://127.0.0.1:3000".to_owned()),
    }
}

/// A count of things held at once: above 0, and at most a million (far beyond what a
/// gateway should hold, and within what tokio's semaphore can count).
fn parse_count(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(0) => Err("must be greater than zero".to_owned()),
        Ok(count) if count <= 1_000_000 => Ok(count),
        _ => Err("expected a whole number from 1 to 1000000".to_owned()),
    }
}

fn parse_unverified_callers(value: &str) -> Result<domain::UnverifiedCallers, String> {
    match value.to_ascii_lowercase().as_str() {
        "anonymous" => Ok(domain::UnverifiedCallers::Anonymous),
        "claim" => Ok(domain::UnverifiedCallers::Claim),
        "reject" => Ok(domain::UnverifiedCallers::Reject),
        _ => Err("expected anonymous, claim or reject".to_owned()),
    }
}

/// A comma list of `host` or `host:port` values, compared with the client's `Host`
/// without regard to case; empty entries are ignored.
fn parse_forwarded_hosts(value: &str) -> Result<Vec<String>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|host| !host.is_empty())
        .map(|host| match host.parse::<http::uri::Authority>() {
            Ok(authority) if !host.contains('@') => Ok(authority.as_str().to_ascii_lowercase()),
            _ => Err(format!("{host:?} is not a host or host:port, e.g. api.example.com or api.example.com:8443")),
        })
        .collect()
}

fn parse_log_format(value: &str) -> Result<LogFormat, String> {
    match value.to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err("expected text or json".to_owned()),
    }
}

#[cfg(test)]
mod tests;
