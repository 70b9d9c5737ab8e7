//! ziti-management over gRPC: [`ManagementClient`] implements the domain's
//! `IdentityProvider` and `IdentityResolver` ports against the contract in
//! `proto/zitimgmt/v1/zitimgmt.proto`, and provisions a caller's own identity from its
//! IdP token ([`ManagementClient::provision_identity`]).

mod client;
mod config;
mod expiry;
mod rotating_tls;
mod status;
mod tls;

pub use client::{ClientError, ManagementClient, ProvisionedIdentity};
pub use config::{
    BearerTokenSource, ConfigError, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_REQUEST_TIMEOUT,
    ManagementConfig, TlsMaterial, is_loopback_host,
};
pub use rotating_tls::{ClientCertificate, ClientCertificateSource};
pub use status::{CallError, code_name};
pub use tls::TlsError;
/// Re-exported so callers can build [`TlsMaterial::client_key_pem`] without naming the crate.
pub use zeroize::Zeroizing;

/// The generated contract (`proto/zitimgmt/v1/zitimgmt.proto`); regenerate with
/// `cargo xtask regen-proto`.
#[allow(clippy::all, clippy::pedantic, missing_debug_implementations)]
pub mod proto {
    include!("generated/zitimgmt.v1.rs");
}
