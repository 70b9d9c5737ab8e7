//! ziti-management, the reference server: leases real, enrolled OpenZiti identities
//! on a real controller, keeping each lease as tags on its identity.
//!
//! One module per concept: [`config`], the [`controller`] client, [`enrollment`]
//! (with its [`ca_bundle`]), [`lease`] tags, the [`reaper`], the gRPC [`service`],
//! the [`admin`] listener, [`metrics`], the caller [`policy`], identities [`provision`]ed from
//! IdP tokens, and the [`server`] wiring.

pub mod admin;
pub mod auth;
pub mod ca_bundle;
pub mod config;
pub mod controller;
pub mod enrollment;
pub mod lease;
pub mod metrics;
pub mod policy;
pub mod provision;
pub mod reaper;
pub mod server;
pub mod service;
