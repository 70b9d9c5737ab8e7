//! gRPC statuses turned into the port errors, by what the policy should do about them.

use std::error::Error as _;
use std::fmt;

use domain::{ProviderError, ResolveError};
use tonic::{Code, Status};

/// The RPCs of the contract, named as in the proto for messages and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rpc {
    ResolveIdentity,
    RequestServiceIdentity,
    ExtendIdentityLease,
    ReleaseServiceIdentity,
}

impl Rpc {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::ResolveIdentity => "ResolveIdentity",
            Self::RequestServiceIdentity => "RequestServiceIdentity",
            Self::ExtendIdentityLease => "ExtendIdentityLease",
            Self::ReleaseServiceIdentity => "ReleaseServiceIdentity",
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

pub(crate) fn provider_error(rpc: Rpc, status: &Status, target: &str) -> ProviderError {
    let message = describe(rpc, status, target);
    match classify(rpc, status.code()) {
        Class::Transient => ProviderError::Transient(message),
        Class::LeaseGone => ProviderError::LeaseGone(message),
        Class::Fatal => ProviderError::Fatal(message),
    }
}

/// `ResolveError` has no "refused": anything but NOT_FOUND is "could not resolve now",
/// which the resolver does not cache.
pub(crate) fn resolve_error(status: &Status, target: &str) -> ResolveError {
    match status.code() {
        Code::NotFound => ResolveError::NotFound,
        _ => ResolveError::Unavailable(describe(Rpc::ResolveIdentity, status, target)),
    }
}

/// `RPC: CODE: message (target …)`. A transport failure's status message is terse
/// ("tcp connect error"), so its root cause ("Connection refused") is appended.
pub(crate) fn describe(rpc: Rpc, status: &Status, target: &str) -> String {
    let mut detail = status.message().trim().to_owned();
    let mut root = None;
    let mut cause = status.source();
    while let Some(error) = cause {
        root = Some(error);
        cause = error.source();
    }
    if let Some(root) = root.map(ToString::to_string).filter(|root| !root.is_empty() && !detail.contains(root)) {
        detail = if detail.is_empty() { root } else { format!("{detail}: {root}") };
    }
    if detail.is_empty() {
        detail = "no message".to_owned();
    }
    format!("{rpc}: {}: {detail} (target {target})", code_name(status.code()))
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
            &Status::unavailable("connection refused"),
            "http://127.0.0.1:1/",
        );
        assert_eq!(
            error,
            ProviderError::Transient(
                "RequestServiceIdentity: UNAVAILABLE: connection refused (target http://127.0.0.1:1/)".into()
            )
        );
    }

    #[test]
    fn an_empty_server_message_is_said_so() {
        let message = describe(Rpc::ExtendIdentityLease, &Status::not_found(""), "http://m:1/");
        assert_eq!(message, "ExtendIdentityLease: NOT_FOUND: no message (target http://m:1/)");
    }

    #[rstest]
    #[case(Code::NotFound, true)]
    #[case(Code::Unavailable, false)]
    #[case(Code::PermissionDenied, false)]
    fn resolve_errors(#[case] code: Code, #[case] not_found: bool) {
        let error = resolve_error(&Status::new(code, "m"), "http://m:1/");
        assert_eq!(error == ResolveError::NotFound, not_found, "{error:?}");
    }
}
