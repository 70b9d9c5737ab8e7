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
