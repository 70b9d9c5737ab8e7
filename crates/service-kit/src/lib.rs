//! What the gateway and ziti-management share as services: the admin listener
//! ([`admin`]), reading settings from figment ([`env`](mod@env)), logging set-up ([`logging`])
//! and the one cause printer ([`causes`]).
//!
//! Only [`causes`] is built without the default `service` feature, so that library
//! crates can print errors the same way without pulling in HTTP or logging crates.

pub mod causes;

#[cfg(feature = "service")]
pub mod admin;
#[cfg(feature = "service")]
pub mod env;
#[cfg(feature = "service")]
pub mod logging;
