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

/// What `RequestServiceIdentity` hands out: an identity and the lease that keeps it alive.
#[derive(Debug)]
pub struct LeasedIdentity {
    pub id: IdentityId,
    pub identity_json: IdentityJson,
    /// How long the lease has left, when the server says so.
    pub expires_in: Option<Duration>,
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
