//! An OIDC identity provider's JWT as an identity source: the gateway's OpenZiti
//! identity is the one whose external id the token's claim names, for a controller
//! that trusts the IdP as an external JWT signer. The token comes from a
//! [`TokenSource`]: a file re-read when it changes ([`FileToken`], the Kubernetes
//! projected-token convention) or the OAuth2 client-credentials grant
//! ([`ClientCredentials`], the secret read from a file). [`IdpIdentitySource`] hands
//! the SDK an in-memory identity document holding the token, and a new one when the
//! token in use is half spent. Nothing is written.

mod client_credentials;
mod file;
mod source;
mod token;

pub use client_credentials::{ClientCredentials, ClientCredentialsSettings};
pub use file::FileToken;
pub use source::{IdentityProvisioner, IdpIdentitySource, IdpSettings};
pub use token::{IdpToken, TokenError, TokenSource};
