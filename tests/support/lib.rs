//! Test support shared by the workspace's integration tests.
//!
//! [`FakeManagement`] is a ziti-management server speaking the real contract over real
//! gRPC on loopback, scripted per test and recording every call, so that tests can
//! assert what the gateway did from the server's side (as an operator would).

mod management;

pub use management::{Behaviour, FakeManagement, identity_json_for};
