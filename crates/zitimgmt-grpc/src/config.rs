//! How to reach ziti-management: the target, the limits, and the TLS material.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Uri;
use zeroize::Zeroizing;

use crate::rotating_tls::ClientCertificateSource;

/// How long establishing a connection may take before a call fails as transient.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The deadline of each call, connection included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest response accepted; an identity JSON is a few KiB, so this is generous
/// while still bounding what a broken or hostile server can make us allocate.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// Where ziti-management is and how to talk to it.
#[derive(Debug, Clone)]
pub struct ManagementConfig {
    /// `host:port` (plain text, or TLS when [`Self::tls`] is set), or a full
    /// `http://` / `https://` URI.
    pub target: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Responses larger than this fail instead of being decoded.
    pub max_response_bytes: usize,
    /// TLS towards ziti-management; `None` means plain text unless the target is `https://`.
    pub tls: Option<TlsMaterial>,
    /// Allows plain text to a host other than loopback. Off by default: the leased
    /// identity, private key included, would cross the network readable by anyone on
    /// the path.
    pub allow_plaintext_to_remote: bool,
    /// A bearer token sent with every call (`authorization: Bearer ...`), asked for
    /// anew each call so that a rotated token is used at once.
    pub bearer_token: Option<Arc<dyn BearerTokenSource>>,
}

/// The port for the token a caller presents to ziti-management, e.g. a Kubernetes
/// projected service-account token re-read from its file.
pub trait BearerTokenSource: Send + Sync + fmt::Debug {
    /// The token to present now. The error names the source, never the token.
    fn token(&self) -> Result<Zeroizing<String>, String>;
}

impl ManagementConfig {
    /// A plain-text configuration with the default timeouts and response limit.
    pub fn new(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            tls: None,
            allow_plaintext_to_remote: false,
            bearer_token: None,
        }
    }

    /// The same configuration with TLS.
    #[must_use]
    pub fn with_tls(self, tls: TlsMaterial) -> Self {
        Self { tls: Some(tls), ..self }
    }

    /// Whether calls would go as plain text to a host that is not loopback (another
    /// machine could read them). Fails when the target itself is invalid.
    pub fn is_plaintext_to_remote(&self) -> Result<bool, ConfigError> {
        let uri = target_uri(&self.target, self.tls.is_some())?;
        Ok(uri.scheme_str() == Some("http") && !uri.host().is_some_and(is_loopback_host))
    }

    /// Checks the configuration and returns the URI the client connects to. Plain text
    /// to a host that is not loopback is refused unless [`Self::allow_plaintext_to_remote`].
    pub fn uri(&self) -> Result<Uri, ConfigError> {
        for (field, zero) in [
            ("connect_timeout", self.connect_timeout.is_zero()),
            ("request_timeout", self.request_timeout.is_zero()),
            ("max_response_bytes", self.max_response_bytes == 0),
        ] {
            if zero {
                return Err(ConfigError::Zero { field });
            }
        }
        if self.is_plaintext_to_remote()? && !self.allow_plaintext_to_remote {
            return Err(ConfigError::PlaintextToRemote { target: self.target.clone() });
        }
        target_uri(&self.target, self.tls.is_some())
    }
}

/// Loopback: 127.0.0.0/8, `::1` (also as an IPv4-mapped address) and `localhost`.
/// Any other name counts as remote, whatever it resolves to now.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return ip.to_canonical().is_loopback();
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    name.eq_ignore_ascii_case("localhost")
}

/// TLS material as PEM bytes (the caller reads the files, so this crate does no I/O).
#[derive(Clone, Default)]
pub struct TlsMaterial {
    /// The CA(s) that sign ziti-management's certificate; `None` trusts the platform's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// The client certificate chain for mTLS; needs [`Self::client_key_pem`].
    pub client_cert_pem: Option<Vec<u8>>,
    /// The client private key for mTLS; wiped from memory on drop.
    pub client_key_pem: Option<Zeroizing<Vec<u8>>>,
    /// The name to verify on the server's certificate, when it is not the target's host.
    pub domain_name: Option<String>,
    /// A client certificate that rotates (e.g. the workload's X.509-SVID), instead of
    /// the fixed [`Self::client_cert_pem`]: each new connection presents the current one.
    pub client_certificate_source: Option<Arc<dyn ClientCertificateSource>>,
}

impl TlsMaterial {
    /// TLS that trusts the given CA(s) (PEM).
    pub fn with_ca(ca_pem: impl Into<Vec<u8>>) -> Self {
        Self { ca_pem: Some(ca_pem.into()), ..Self::default() }
    }

    /// The same material with a client identity for mTLS.
    #[must_use]
    pub fn with_client_identity(self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        Self { client_cert_pem: Some(cert_pem.into()), client_key_pem: Some(Zeroizing::new(key_pem.into())), ..self }
    }

    /// The same material presenting the source's current certificate on each new connection.
    #[must_use]
    pub fn with_client_certificate_source(self, source: Arc<dyn ClientCertificateSource>) -> Self {
        Self { client_certificate_source: Some(source), ..self }
    }

    /// The same material checking `domain_name` on the server's certificate.
    #[must_use]
    pub fn with_domain_name(self, domain_name: impl Into<String>) -> Self {
        Self { domain_name: Some(domain_name.into()), ..self }
    }
}

/// Shows which material is present, never the key.
impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_pem", &self.ca_pem.as_ref().map(|pem| format!("<{} bytes>", pem.len())))
            .field("client_cert_pem", &self.client_cert_pem.as_ref().map(|pem| format!("<{} bytes>", pem.len())))
            .field("client_key_pem", &self.client_key_pem.as_ref().map(|_| "<redacted>"))
            .field("domain_name", &self.domain_name)
            .field("client_certificate_source", &self.client_certificate_source)
            .finish()
    }
}

/// A configuration that cannot work, named so the operator can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("ziti-management target {target:?} is invalid: {reason}")]
    InvalidTarget { target: String, reason: String },
    #[error("ziti-management target {target:?} is plain http:// but TLS is configured; use https:// or host:port")]
    PlaintextTargetWithTls { target: String },
    #[error(
        "ziti-management target {target:?} is plain text to a host that is not loopback: the leased identity, \
         private key included, would cross the network readable; use TLS"
    )]
    PlaintextToRemote { target: String },
    #[error("ziti-management {field} must be above zero")]
    Zero { field: &'static str },
}

/// `host:port` gets the scheme TLS implies; a full URI must be `http` or `https` with
/// a host and a port-free path, since gRPC paths are appended to it.
fn target_uri(target: &str, tls: bool) -> Result<Uri, ConfigError> {
    let invalid = |reason: &str| ConfigError::InvalidTarget { target: target.to_owned(), reason: reason.to_owned() };
    let trimmed = target.trim();
    if trimmed.is_empty() {
        return Err(invalid("it is empty"));
    }
    let full = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://{trimmed}")
    };
    let uri = full.parse::<Uri>().map_err(|error| invalid(&error.to_string()))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if tls => return Err(ConfigError::PlaintextTargetWithTls { target: target.to_owned() }),
        Some("http") => {}
        _ => return Err(invalid("the scheme must be http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("it names no host"));
    }
    if !trimmed.contains("://") && uri.port().is_none() {
        return Err(invalid("expected host:port"));
    }
    if uri.path_and_query().is_some_and(|path| path.as_str() != "/") {
        return Err(invalid("it must not have a path or query"));
    }
    Ok(uri)
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[rstest]
    #[case::ipv4_loopback("127.0.0.1", true)]
    #[case::ipv4_loopback_range("127.8.9.10", true)]
    #[case::ipv6_loopback("[::1]", true)]
    #[case::ipv6_loopback_bare("::1", true)]
    #[case::ipv4_mapped_loopback("[::ffff:127.0.0.1]", true)]
    #[case::localhost("localhost", true)]
    #[case::localhost_any_case("LocalHost.", true)]
    #[case::private_ip("10.0.0.5", false)]
    #[case::unspecified("0.0.0.0", false)]
    #[case::ipv6_other("[2001:db8::1]", false)]
    #[case::dns_name("ziti-management", false)]
    #[case::localhost_lookalike("localhost.example.com", false)]
    fn loopback_hosts(#[case] host: &str, #[case] loopback: bool) {
        assert_eq!(is_loopback_host(host), loopback, "{host}");
    }

    #[rstest]
    #[case::default_target("ziti-management:50051", None)]
    #[case::http_remote_ip("http://10.1.2.3:50051", None)]
    #[case::loopback("127.0.0.1:50051", Some("http://127.0.0.1:50051/"))]
    #[case::localhost_http("http://localhost:50051", Some("http://localhost:50051/"))]
    #[case::https_remote("https://ziti-management:50051", Some("https://ziti-management:50051/"))]
    fn plaintext_is_refused_only_towards_a_remote_host(#[case] target: &str, #[case] accepted: Option<&str>) {
        let outcome = ManagementConfig::new(target).uri().map(|uri| uri.to_string());
        match accepted {
            Some(uri) => assert_eq!(outcome, Ok(uri.to_owned())),
            None => assert_eq!(outcome, Err(ConfigError::PlaintextToRemote { target: target.to_owned() })),
        }
    }

    #[test]
    fn plaintext_to_a_remote_host_is_accepted_when_allowed() {
        let config = ManagementConfig { allow_plaintext_to_remote: true, ..ManagementConfig::new("ziti-management:1") };
        assert_eq!(config.is_plaintext_to_remote(), Ok(true));
        assert_eq!(config.uri().map(|uri| uri.to_string()), Ok("http://ziti-management:1/".to_owned()));
    }

    #[test]
    fn tls_material_makes_a_remote_host_port_target_tls() {
        let config = ManagementConfig::new("ziti-management:50051").with_tls(TlsMaterial::with_ca("CA"));
        assert_eq!(config.is_plaintext_to_remote(), Ok(false));
        assert!(config.uri().is_ok());
    }

    #[rstest]
    #[case::host_port("ziti-management:50051", false, "http://ziti-management:50051/")]
    #[case::host_port_tls("ziti-management:50051", true, "https://ziti-management:50051/")]
    #[case::ip("127.0.0.1:1", false, "http://127.0.0.1:1/")]
    #[case::ipv6("[::1]:50051", false, "http://[::1]:50051/")]
    #[case::http_uri("http://mgmt.local:80", false, "http://mgmt.local:80/")]
    #[case::https_uri_without_material("https://mgmt.local", false, "https://mgmt.local/")]
    #[case::https_uri_with_material("https://mgmt.local:8443/", true, "https://mgmt.local:8443/")]
    fn valid_targets(#[case] target: &str, #[case] tls: bool, #[case] expected: &str) {
        let uri = target_uri(target, tls).expect("valid target");
        assert_eq!(uri.to_string(), expected);
    }

    #[rstest]
    #[case::empty("")]
    #[case::no_port("ziti-management")]
    #[case::bad_port("ziti-management:port")]
    #[case::other_scheme("grpc://ziti-management:50051")]
    #[case::spaces("ziti management:50051")]
    #[case::path("http://ziti-management:50051/api")]
    fn invalid_targets_name_the_target(#[case] target: &str) {
        let error = target_uri(target, false).expect_err("invalid target");
        assert!(matches!(error, ConfigError::InvalidTarget { .. }), "{error:?}");
        assert!(error.to_string().contains(&format!("{target:?}")), "{error}");
    }

    #[test]
    fn plain_http_with_tls_is_refused() {
        let error = target_uri("http://mgmt:50051", true).expect_err("contradiction");
        assert_eq!(error, ConfigError::PlaintextTargetWithTls { target: "http://mgmt:50051".into() });
    }

    #[test]
    fn defaults() {
        let config = ManagementConfig::new("mgmt:50051");
        assert_eq!(config.connect_timeout, Duration::from_secs(5));
        assert_eq!(config.request_timeout, Duration::from_secs(10));
        assert_eq!(config.max_response_bytes, 256 * 1024);
        assert!(config.tls.is_none());
    }

    #[test]
    fn zero_limits_are_refused() {
        let config = ManagementConfig { request_timeout: Duration::ZERO, ..ManagementConfig::new("mgmt:1") };
        assert_eq!(config.uri(), Err(ConfigError::Zero { field: "request_timeout" }));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let tls = TlsMaterial::with_ca("CA").with_client_identity("CERT", "-----BEGIN PRIVATE KEY-----SECRET");
        let shown = format!("{tls:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
