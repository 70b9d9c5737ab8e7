//! A leased OpenZiti identity and the secret it carries.

use std::fmt;
use std::time::Duration;

use zeroize::Zeroizing;

/// The kind of service asking for an identity; selects role attributes server-side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceType {
    Gateway,
}

impl fmt::Display for ServiceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Gateway => f.write_str("gateway"),
        }
    }
}

/// The OpenZiti identity id that names a lease on the management server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdentityId(String);

impl IdentityId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdentityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An enrolled identity's JSON (it holds the private key). Wiped from memory on drop,
/// and its `Debug` shows only its length, so it cannot leak through logs or errors.
pub struct IdentityJson(Zeroizing<Vec<u8>>);

impl IdentityJson {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for IdentityJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityJson(<redacted, {} bytes>)", self.0.len())
    }
}

/// What an identity source hands out: an OpenZiti identity (its JSON: controller,
/// certificate chain, key and CAs, whatever the source) and the lease that keeps it
/// alive: a ziti-management lease, or the lifetime of an X.509-SVID.
#[derive(Debug)]
pub struct LeasedIdentity {
    pub id: IdentityId,
    pub identity_json: IdentityJson,
    /// How long the lease has left, when the server says so.
    pub expires_in: Option<Duration>,
}

/// What keeping a lease gives: how long it has left now and, from a source whose
/// credentials rotate (SPIFFE), the identity's current credential, to be used from now
/// on if it is not the one in use.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Renewal {
    /// How long the lease has left, when the source says so.
    pub expires_in: Option<Duration>,
    /// The identity's current credential, for sources that rotate it.
    pub credential: Option<IdentityJson>,
}

impl Renewal {
    /// A lease extended; the credential stays as it is.
    pub fn extended(expires_in: Option<Duration>) -> Self {
        Self { expires_in, credential: None }
    }

    /// The same identity with `credential`, valid for `expires_in` (a rotating source
    /// hands it out at every renewal; the installer knows whether it is new).
    pub fn with_credential(credential: IdentityJson, expires_in: Option<Duration>) -> Self {
        Self { expires_in, credential: Some(credential) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_json_debug_never_shows_the_secret() {
        let secret = b"{\"id\":{\"key\":\"pem:SECRET\"}}";
        let json = IdentityJson::new(secret.to_vec());
        let shown = format!("{json:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert_eq!(shown, "IdentityJson(<redacted, 27 bytes>)");
    }

    #[test]
    fn leased_identity_debug_never_shows_the_secret() {
        let leased = LeasedIdentity {
            id: IdentityId::new("lease-1"),
            identity_json: IdentityJson::new(b"pem:SECRET".to_vec()),
            expires_in: Some(Duration::from_secs(300)),
        };
        let shown = format!("{leased:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("lease-1") && shown.contains("10 bytes"), "{shown}");
    }
}
