//! The SPIFFE Workload API as an identity source: the workload's X.509-SVID, issued and
//! rotated by a SPIFFE implementation (SPIRE), is the gateway's OpenZiti identity, for a
//! controller that trusts the SVID's trust domain as a third-party CA and holds an
//! identity whose external id is the SPIFFE ID. Nothing is enrolled and nothing is
//! written: the key stays in memory. See [`SpiffeIdentitySource`]. The same SVID can be
//! a TLS client certificate ([`SvidCertificates`]), e.g. towards ziti-management.

mod client_certificate;
mod credential;
mod source;

pub use client_certificate::{CurrentSvid, SvidCertificateError, SvidCertificates};
pub use credential::{Svid, SvidError};
pub use source::{SpiffeIdentitySource, SpiffeSettings};
