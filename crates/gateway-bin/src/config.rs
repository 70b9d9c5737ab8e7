//! Configuration: defaults < optional TOML file (`GATEWAY_CONFIG_FILE`) < environment.
//!
//! Every value is read as text and validated here, so that a bad value stops the start
//! with a message that names the variable and says what is wrong with it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::Value;
use serde::{Deserialize, Serialize};
use thiserror::Error;

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
    "ZITI_RESOLVE_CACHE_TTL",
    "GATEWAY_LISTEN_ADDR",
    "GATEWAY_ADMIN_ADDR",
    "GATEWAY_UPSTREAM_URL",
    "GATEWAY_UPSTREAM_TIMEOUT",
    "GATEWAY_SHUTDOWN_GRACE",
    "GATEWAY_LOG_FORMAT",
    "GATEWAY_IDENTITY_DIR",
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
    #[error("configuration could not be read: {0}")]
    Source(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// TLS for the channel to ziti-management (files are read at start-up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagementTls {
    pub ca_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    pub domain_name: Option<String>,
}

/// Settings that matter only with the overlay on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayConfig {
    pub management_target: String,
    pub management_timeout: Duration,
    pub management_tls: Option<ManagementTls>,
    pub renewal_interval: Duration,
    pub service_name: String,
    pub enrollment_timeout: Duration,
    pub resolve_cache_ttl: Duration,
    /// Where the private identity directory is created; `None` is the system temp dir.
    pub identity_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub upstream_url: Option<http::Uri>,
    pub upstream_timeout: Duration,
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
    ziti_resolve_cache_ttl: Option<Value>,
    gateway_listen_addr: Option<Value>,
    gateway_admin_addr: Option<Value>,
    gateway_upstream_url: Option<Value>,
    gateway_upstream_timeout: Option<Value>,
    gateway_shutdown_grace: Option<Value>,
    gateway_log_format: Option<Value>,
    gateway_identity_dir: Option<Value>,
}

impl Config {
    /// Reads the process environment (and the file it may name).
    pub fn load() -> Result<Self, ConfigError> {
        Self::from_figment(&Self::figment())
    }

    /// Defaults < `GATEWAY_CONFIG_FILE` (when set) < environment.
    pub fn figment() -> Figment {
        let mut figment = Figment::from(Serialized::defaults(Raw::default()));
        if let Ok(file) = std::env::var(CONFIG_FILE_VARIABLE) {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment.merge(Env::raw().only(VARIABLES))
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
            identity_dir: parse_optional("GATEWAY_IDENTITY_DIR", self.gateway_identity_dir, parse_dir)?,
        };
        Ok(Config {
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
            shutdown_grace: parse_or(
                "GATEWAY_SHUTDOWN_GRACE",
                self.gateway_shutdown_grace,
                Duration::from_secs(10),
                parse_duration,
            )?,
            log_format: parse_or("GATEWAY_LOG_FORMAT", self.gateway_log_format, LogFormat::Text, parse_log_format)?,
            overlay: enabled.then_some(overlay),
            ignored_identity_file: identity_file.is_some(),
        })
    }
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

/// A scalar from any source as text: env values arrive parsed (`1` as a number).
fn text(value: Option<Value>) -> Option<String> {
    match value? {
        Value::String(_, s) => Some(s),
        Value::Char(_, c) => Some(c.to_string()),
        Value::Bool(_, b) => Some(b.to_string()),
        Value::Num(_, n) => n.to_u128().map(|n| n.to_string()).or_else(|| n.to_f64().map(|n| n.to_string())),
        Value::Empty(_, _) => Some(String::new()),
        Value::Dict(..) | Value::Array(..) => Some("<a table or list>".to_owned()),
    }
}

fn parse_or<T>(
    variable: &'static str,
    value: Option<Value>,
    default: T,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    Ok(parse_optional(variable, value, parse)?.unwrap_or(default))
}

fn parse_optional<T>(
    variable: &'static str,
    value: Option<Value>,
    parse: fn(&str) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    match text(value) {
        None => Ok(None),
        Some(value) => {
            parse(value.trim()).map(Some).map_err(|problem| ConfigError::Invalid { variable, value, problem })
        }
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err("expected true, false, 1 or 0".to_owned()),
    }
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

fn parse_non_empty(value: &str) -> Result<String, String> {
    if value.is_empty() { Err("must not be empty".to_owned()) } else { Ok(value.to_owned()) }
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

fn parse_log_format(value: &str) -> Result<LogFormat, String> {
    match value.to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err("expected text or json".to_owned()),
    }
}

#[cfg(test)]
mod tests;
