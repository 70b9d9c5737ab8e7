//! The SDK against the real OpenZiti v1.6.20 network of `cargo xtask ziti-up`
//! (`workspace_tests::network::ZitiNetwork`), with the Go SDK peers of the `ziti` binary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: a failed step should panic

mod dial;
mod errors;
mod ext_jwt;
mod flow;
mod host;
mod idle;
mod inspect;
mod plain;
mod rebind;
mod relogin;
mod rotation;
mod routers;
mod session;
mod support;
mod transient;
