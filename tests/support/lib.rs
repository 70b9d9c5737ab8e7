//! Test support shared by the workspace's integration tests.
//!
//! [`FakeManagement`] is a ziti-management server speaking the real contract over real
//! gRPC on loopback, scripted per test and recording every call, so that tests can
//! assert what the gateway did from the server's side (as an operator would).
//!
//! [`network::ZitiNetwork`] is the real OpenZiti network of `cargo xtask ziti-up`.

mod management;
pub mod network;

pub use management::{Behaviour, FakeManagement, identity_json_for, identity_key_for};
