//! The gateway: configuration, wiring of the adapters to the domain policy, HTTP.
//!
//! The binary (`main.rs`) only reads the configuration and runs [`app::start`]; the
//! integration tests drive the same wiring as a library.

pub mod admin;
pub mod app;
pub mod config;
pub mod http;
pub mod metrics;
pub mod readiness;
