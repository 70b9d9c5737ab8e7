//! ziti-management over gRPC.

/// The generated contract (`proto/zitimgmt/v1/zitimgmt.proto`); regenerate with
/// `cargo xtask regen-proto`.
#[allow(clippy::all, clippy::pedantic, missing_debug_implementations)]
pub mod proto {
    include!("generated/zitimgmt.v1.rs");
}
