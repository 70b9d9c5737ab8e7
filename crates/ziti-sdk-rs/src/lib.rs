//! A pure-Rust OpenZiti SDK: load an identity, log in to the controller with its
//! certificate or an external IdP's JWT (OIDC), host services ([`ZitiContext::listen`]) and dial them
//! ([`ZitiContext::dial`]) through edge routers, with end-to-end encryption.
//!
//! ```no_run
//! # async fn run() -> Result<(), ziti_sdk::Error> {
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! let context = ziti_sdk::ZitiContext::from_file("host.json").await?;
//! let mut listener = context.listen("echo").await?;
//! let mut conn = listener.accept().await?;
//! let mut buf = [0u8; 1024];
//! let n = conn.read(&mut buf).await?;
//! conn.write_all(&buf[..n]).await?;
//! # Ok(()) }
//! ```
//!
//! A [`ZitiConn`] is `AsyncRead`, `AsyncBufRead` and `AsyncWrite`. An application that
//! forwards what it reads can take each received payload as it is with
//! [`ZitiConn::read_chunk`] and keep no buffer of its own, so an idle connection costs
//! only what the SDK keeps for it (about 4 KiB).

#![warn(missing_docs)]

mod accept;
mod backoff;
mod bind;
mod channel;
mod conn;
mod context;
mod controller;
mod crypto;
mod dial;
mod edge;
mod error;
#[cfg(test)]
mod fake_controller;
mod identity;
mod listener;
mod peer;
mod tls;

pub use conn::ZitiConn;
pub use context::{ContextOptions, ZitiContext};
pub use controller::{Service, SessionType};
pub use error::{Error, IdentityError, Result};
pub use identity::Identity;
pub use listener::ZitiListener;
pub use peer::DialerIdentity;
