//! Who is on the other end of an accepted connection.

use std::fmt;

/// How a connection reached the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP: the caller is only a socket address.
    Tcp,
    /// The OpenZiti overlay: the caller is an OpenZiti identity.
    Overlay,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Overlay => "overlay",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The OpenZiti identity of a caller, as far as the transport knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallerIdentity {
    pub id: Option<String>,
    pub name: Option<String>,
    /// Whether the overlay vouches for it (the router filled it in from the dialer's
    /// session), or it is only what the dialer claims (all a v1.6 router passes on).
    pub verified: bool,
}

/// A caller as the transport reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub transport: Transport,
    /// The socket address (TCP) or circuit (overlay) it came from, for logs.
    pub peer: String,
    /// Its OpenZiti identity; `None` on plain TCP.
    pub identity: Option<CallerIdentity>,
}

/// Who a caller's identity stands for, according to ziti-management.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role_attributes: Vec<String>,
}

/// What the gateway does with an overlay caller whose identity the overlay did not
/// vouch for: one whose identity is only what its dialer claims (all an OpenZiti v1.6
/// router passes on), or that came with no identity at all. A claim is not proof:
/// anyone allowed to dial the service can claim to be anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum UnverifiedCallers {
    /// Serve it as an anonymous caller: the claim is dropped, never resolved.
    #[default]
    Anonymous,
    /// Serve it with its claim, marked unverified, and resolve the claimed identity.
    Claim,
    /// Refuse every request it makes.
    Reject,
}

/// Why a caller's requests are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error("the overlay did not verify this caller's identity, and this gateway serves verified callers only")]
    UnverifiedCaller,
}

/// How a connection's caller is served.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Admission {
    /// Serve it as this caller; an identity it carries may be resolved to a principal.
    Serve(Caller),
    /// Answer each of its requests with this refusal.
    Refuse(Refusal),
}

impl Admission {
    /// The caller to serve, or why its requests are refused.
    pub fn into_result(self) -> Result<Caller, Refusal> {
        match self {
            Self::Serve(caller) => Ok(caller),
            Self::Refuse(refusal) => Err(refusal),
        }
    }
}

impl UnverifiedCallers {
    /// Decides how `caller` is served. Plain-TCP callers and callers the overlay
    /// verified are served as they are; the policy decides for the others.
    pub fn admit(self, caller: Caller) -> Admission {
        let vouched = caller.identity.as_ref().is_some_and(|identity| identity.verified);
        if caller.transport == Transport::Tcp || vouched {
            return Admission::Serve(caller);
        }
        match self {
            Self::Anonymous => Admission::Serve(Caller { identity: None, ..caller }),
            Self::Claim => Admission::Serve(caller),
            Self::Reject => Admission::Refuse(Refusal::UnverifiedCaller),
        }
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    fn overlay(identity: Option<(&str, bool)>) -> Caller {
        Caller {
            transport: Transport::Overlay,
            peer: "circuit-1".to_owned(),
            identity: identity.map(|(name, verified)| CallerIdentity {
                id: Some(format!("{name}-id")),
                name: Some(name.to_owned()),
                verified,
            }),
        }
    }

    fn tcp() -> Caller {
        Caller { transport: Transport::Tcp, peer: "127.0.0.1:5000".to_owned(), identity: None }
    }

    fn anonymous() -> Caller {
        overlay(None)
    }

    #[rstest]
    // Verified callers and plain TCP are served as they are, whatever the policy.
    #[case::verified_anonymous(UnverifiedCallers::Anonymous, overlay(Some(("alice", true))), Admission::Serve(overlay(Some(("alice", true)))))]
    #[case::verified_claim(UnverifiedCallers::Claim, overlay(Some(("alice", true))), Admission::Serve(overlay(Some(("alice", true)))))]
    #[case::verified_reject(UnverifiedCallers::Reject, overlay(Some(("alice", true))), Admission::Serve(overlay(Some(("alice", true)))))]
    #[case::tcp_anonymous(UnverifiedCallers::Anonymous, tcp(), Admission::Serve(tcp()))]
    #[case::tcp_claim(UnverifiedCallers::Claim, tcp(), Admission::Serve(tcp()))]
    #[case::tcp_reject(UnverifiedCallers::Reject, tcp(), Admission::Serve(tcp()))]
    // anonymous: the claim is dropped, so nothing of it is shown or resolved.
    #[case::claimed_anonymous(UnverifiedCallers::Anonymous, overlay(Some(("admin", false))), Admission::Serve(anonymous()))]
    #[case::none_anonymous(UnverifiedCallers::Anonymous, anonymous(), Admission::Serve(anonymous()))]
    // claim: served with the claim, still marked unverified.
    #[case::claimed_claim(UnverifiedCallers::Claim, overlay(Some(("admin", false))), Admission::Serve(overlay(Some(("admin", false)))))]
    #[case::none_claim(UnverifiedCallers::Claim, anonymous(), Admission::Serve(anonymous()))]
    // reject: refused, with or without a claim.
    #[case::claimed_reject(UnverifiedCallers::Reject, overlay(Some(("admin", false))), Admission::Refuse(Refusal::UnverifiedCaller))]
    #[case::none_reject(UnverifiedCallers::Reject, anonymous(), Admission::Refuse(Refusal::UnverifiedCaller))]
    fn each_policy_admits_callers_as_documented(
        #[case] policy: UnverifiedCallers,
        #[case] caller: Caller,
        #[case] admission: Admission,
    ) {
        assert_eq!(policy.admit(caller), admission);
    }
}
