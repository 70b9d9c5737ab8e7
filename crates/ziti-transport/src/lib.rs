//! The gateway's transports, as `domain`'s ports: plain TCP (overlay off), and the
//! overlay's side of a lease (identity file, binding, retirement) behind the
//! [`OverlayBinder`] seam, bound on OpenZiti by [`ZitiBinder`] (`ziti-sdk-rs`).

mod binder;
mod identity_file;
mod installer;
mod pins;
mod tcp;
#[cfg(feature = "testing")]
pub mod testing;
mod ziti;

pub use binder::{BindError, BoundService, IdentitySource, OverlayBinder, OverlayCredentials, RotateError};
pub use identity_file::{AbandonedDirs, ErasedDir, IdentityFileError, IdentityFileStore, StagedIdentity};
pub use installer::OverlayInstaller;
pub use pins::{ControllerPins, PinError, PinMismatch};
pub use tcp::{TcpBindError, TcpServiceListener};
pub use ziti::{ZitiBinder, refused_login};
