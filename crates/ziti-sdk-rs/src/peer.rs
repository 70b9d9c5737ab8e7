//! Who is on the other end of a hosted connection.

use crate::channel::frame::Message;
use crate::edge::header;

/// The dialer of an accepted connection, as far as the router tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialerIdentity {
    /// Filled in by the router from the dialer's API session (v2.0 routers):
    /// trustworthy.
    Verified {
        /// The dialer's identity id.
        id: String,
        /// The dialer's identity name.
        name: String,
    },
    /// The CallerId the *dialing SDK* chose to send (all a v1.6 router passes on).
    /// UNVERIFIED: any dialer can claim any name. Do not authorize on it alone.
    Claimed {
        /// The name the dialer claims.
        name: String,
    },
    /// The router said nothing about the dialer.
    Unknown,
}

impl DialerIdentity {
    pub(crate) fn from_dial(dial: &Message) -> Self {
        let text = |key| dial.header_str(key).filter(|s| !s.is_empty()).map(str::to_owned);
        match (text(header::DIALER_IDENTITY_ID), text(header::DIALER_IDENTITY_NAME), text(header::CALLER_ID)) {
            (Some(id), Some(name), _) => DialerIdentity::Verified { id, name },
            (Some(id), None, _) => DialerIdentity::Verified { name: id.clone(), id },
            (None, _, Some(name)) => DialerIdentity::Claimed { name },
            (None, _, None) => DialerIdentity::Unknown,
        }
    }

    /// The dialer's name when known, verified or not (see [`DialerIdentity::is_verified`]).
    pub fn name(&self) -> Option<&str> {
        match self {
            DialerIdentity::Verified { name, .. } | DialerIdentity::Claimed { name } => Some(name),
            DialerIdentity::Unknown => None,
        }
    }

    /// The dialer's identity id, only when the router vouches for it.
    pub fn verified_id(&self) -> Option<&str> {
        match self {
            DialerIdentity::Verified { id, .. } => Some(id),
            _ => None,
        }
    }

    /// Whether the router vouches for the dialer ([`DialerIdentity::Verified`]).
    pub fn is_verified(&self) -> bool {
        matches!(self, DialerIdentity::Verified { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dial(headers: &[(i32, &str)]) -> Message {
        headers.iter().fold(Message::new(60787, Vec::new()), |m, (k, v)| m.with_header(*k, v.as_bytes().to_vec()))
    }

    #[test]
    fn router_headers_win_over_the_callers_claim() {
        let both = dial(&[(1034, "id1"), (1035, "alice"), (1008, "mallory")]);
        assert_eq!(
            DialerIdentity::from_dial(&both),
            DialerIdentity::Verified { id: "id1".into(), name: "alice".into() }
        );
        let claim = DialerIdentity::from_dial(&dial(&[(1008, "bob")]));
        assert_eq!(claim, DialerIdentity::Claimed { name: "bob".into() });
        assert!(!claim.is_verified());
        assert_eq!(claim.verified_id(), None);
        assert_eq!(DialerIdentity::from_dial(&dial(&[])), DialerIdentity::Unknown);
    }
}
