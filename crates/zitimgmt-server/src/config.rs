//! Configuration: defaults < TOML file named by `ZITI_MGMT_CONFIG_FILE` < environment.
//!
//! Every value is validated here (files are read too), so a bad value stops the start
//! with a message that names the variable and its value. The admin password is never
//! echoed, not even when it is the bad value.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::Serialized;
use figment::value::Value;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use service_kit::env::{InvalidValue, layered, parse_bool, parse_non_empty, parse_optional, parse_or, text};
use thiserror::Error;
use zeroize::Zeroizing;

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
];

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
}

impl Config {
    /// Whether gRPC is served in plain text where other machines can reach it (only
    /// possible with [`Config::insecure`]).
    pub fn serves_plaintext_on_network(&self) -> bool {
        self.grpc_tls.is_none() && !self.grpc_addr.ip().to_canonical().is_loopback()
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
        };
        if config.serves_plaintext_on_network() && !config.insecure {
            return Err(ConfigError::PlaintextOnNetwork { addr: config.grpc_addr });
        }
        Ok(config)
    }
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
