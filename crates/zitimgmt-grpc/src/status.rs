//! gRPC statuses turned into the port errors, by what the policy should do about them.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use domain::{ProviderError, ResolveError};
use tonic::{Code, Status};

/// The RPCs of the contract, named as in the proto for messages and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rpc {
    ResolveIdentity,
    RequestServiceIdentity,
    ExtendIdentityLease,
    ReleaseServiceIdentity,
    ProvisionIdentity,
}

impl Rpc {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::ResolveIdentity => "ResolveIdentity",
            Self::RequestServiceIdentity => "RequestServiceIdentity",
            Self::ExtendIdentityLease => "ExtendIdentityLease",
            Self::ReleaseServiceIdentity => "ReleaseServiceIdentity",
            Self::ProvisionIdentity => "ProvisionIdentity",
        }
    }
}

impl fmt::Display for Rpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a failed call calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Down, slow, overloaded or a passing server fault: retry with backoff.
    Transient,
    /// The lease is gone: enroll again.
    LeaseGone,
    /// Retrying the same call will not help.
    Fatal,
}

/// The one place that decides how a status code is handled.
pub(crate) fn classify(rpc: Rpc, code: Code) -> Class {
    match code {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Cancelled
        | Code::Unknown
        | Code::Internal => Class::Transient,
        Code::NotFound if rpc == Rpc::ExtendIdentityLease => Class::LeaseGone,
        _ => Class::Fatal,
    }
}

pub(crate) fn provider_error(rpc: Rpc, status: Status, target: &str) -> ProviderError {
    let class = classify(rpc, status.code());
    let source = Box::new(CallError { rpc, status, target: target.to_owned() });
    match class {
        Class::Transient => ProviderError::Transient(source),
        Class::LeaseGone => ProviderError::LeaseGone(source),
        Class::Fatal => ProviderError::Fatal(source),
    }
}

/// `ResolveError` has no "refused": anything but NOT_FOUND is "could not resolve now",
/// which the resolver does not cache.
pub(crate) fn resolve_error(status: Status, target: &str) -> ResolveError {
    match status.code() {
        Code::NotFound => ResolveError::NotFound,
        _ => ResolveError::Unavailable(Arc::new(CallError {
            rpc: Rpc::ResolveIdentity,
            status,
            target: target.to_owned(),
        })),
    }
}

/// A call to ziti-management that ended with an error status, shown as
/// `RPC: CODE: message (target …)`. A transport failure's status message is terse
/// ("tcp connect error"); its causes ("Connection refused") are this error's sources.
#[derive(Debug)]
pub struct CallError {
    rpc: Rpc,
    status: Status,
    target: String,
}

impl CallError {
    pub(crate) fn new(rpc: Rpc, status: Status, target: &str) -> Self {
        Self { rpc, status, target: target.to_owned() }
    }

    /// The status the call ended with.
    pub fn status(&self) -> &Status {
        &self.status
    }
}

/// A failed call as the identity-source port sees it: retried when transient.
impl From<CallError> for ProviderError {
    fn from(CallError { rpc, status, target }: CallError) -> Self {
        provider_error(rpc, status, &target)
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = self.status.message().trim();
        let message = if message.is_empty() { "no message" } else { message };
        write!(f, "{}: {}: {message} (target {})", self.rpc, code_name(self.status.code()), self.target)
    }
}

impl Error for CallError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.status.source()
    }
}

/// A well-formed answer that cannot be used: the server is broken, retrying won't help.
#[derive(Debug, thiserror::Error)]
#[error("{rpc}: {reason} (target {target})")]
pub(crate) struct BrokenAnswer {
    pub(crate) rpc: Rpc,
    pub(crate) reason: String,
    pub(crate) target: String,
}

/// The canonical upper-case name, as gRPC tooling prints it (tonic's `Display` gives prose).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[rstest]
    #[case(Code::Unavailable, Class::Transient, Class::Transient)]
    #[case(Code::DeadlineExceeded, Class::Transient, Class::Transient)]
    #[case(Code::ResourceExhausted, Class::Transient, Class::Transient)]
    #[case(Code::Aborted, Class::Transient, Class::Transient)]
    #[case(Code::Cancelled, Class::Transient, Class::Transient)]
    #[case(Code::Unknown, Class::Transient, Class::Transient)]
    #[case(Code::Internal, Class::Transient, Class::Transient)]
    #[case(Code::NotFound, Class::Fatal, Class::LeaseGone)]
    #[case(Code::InvalidArgument, Class::Fatal, Class::Fatal)]
    #[case(Code::PermissionDenied, Class::Fatal, Class::Fatal)]
    #[case(Code::Unauthenticated, Class::Fatal, Class::Fatal)]
    #[case(Code::FailedPrecondition, Class::Fatal, Class::Fatal)]
    #[case(Code::Unimplemented, Class::Fatal, Class::Fatal)]
    #[case(Code::OutOfRange, Class::Fatal, Class::Fatal)]
    #[case(Code::AlreadyExists, Class::Fatal, Class::Fatal)]
    #[case(Code::DataLoss, Class::Fatal, Class::Fatal)]
    #[case(Code::Ok, Class::Fatal, Class::Fatal)]
    fn status_codes_are_classified(#[case] code: Code, #[case] on_request: Class, #[case] on_extend: Class) {
        assert_eq!(classify(Rpc::RequestServiceIdentity, code), on_request, "request {code:?}");
        assert_eq!(classify(Rpc::ExtendIdentityLease, code), on_extend, "extend {code:?}");
    }

    #[test]
    fn messages_name_the_rpc_the_code_the_server_message_and_the_target() {
        let error = provider_error(
            Rpc::RequestServiceIdentity,
            Status::unavailable("connection refused"),
            "http://127.0.0.1:1/",
        );
        assert_eq!(
            error,
            ProviderError::Transient(
                "RequestServiceIdentity: UNAVAILABLE: connection refused (target http://127.0.0.1:1/)".into()
            )
        );
        assert_eq!(
            service_kit::causes::with_causes(&error),
            "ziti-management is unavailable: RequestServiceIdentity: UNAVAILABLE: connection refused (target \
             http://127.0.0.1:1/)"
        );
    }

    #[test]
    fn an_empty_server_message_is_said_so() {
        let error = provider_error(Rpc::ExtendIdentityLease, Status::not_found(""), "http://m:1/");
        assert_eq!(
            error,
            ProviderError::LeaseGone("ExtendIdentityLease: NOT_FOUND: no message (target http://m:1/)".into())
        );
    }

    #[rstest]
    #[case(Code::NotFound, true)]
    #[case(Code::Unavailable, false)]
    #[case(Code::PermissionDenied, false)]
    fn resolve_errors(#[case] code: Code, #[case] not_found: bool) {
        let error = resolve_error(Status::new(code, "m"), "http://m:1/");
        assert_eq!(error == ResolveError::NotFound, not_found, "{error:?}");
    }
}
