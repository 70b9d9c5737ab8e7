//! The gateway's policy, free of I/O.
//!
//! `domain` decides *when* to enroll, renew, re-enroll and give up, and how callers
//! are resolved; the adapter crates decide *how* (gRPC, files, sockets). Everything
//! here talks to the outside world through the ports in [`ports`], and to time
//! through tokio's clock, which tests pause and advance.

pub mod backoff;
pub mod caller;
pub mod enrollment;
pub mod error;
pub mod hosting;
pub mod identity;
pub mod lease;
pub mod ports;
pub mod resolution;
pub mod service;

#[cfg(test)]
mod test_support;

pub use caller::{Admission, Caller, CallerIdentity, Principal, Refusal, Transport, UnverifiedCallers};
pub use error::{AttemptFailure, Cause, InstallError, ListenError, ProviderError, ResolveError};
pub use identity::{IdentityId, IdentityJson, LeasedIdentity, Renewal, ServiceType};
