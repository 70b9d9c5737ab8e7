//! TLS for the network's ziti-management: a CA made at set-up and a server
//! certificate for 127.0.0.1 and `localhost`, so that the gateway and the tests reach
//! it the way production should (the identities it hands out hold private keys).
//! The CA's key is used once and never written.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use super::layout::Layout;

/// Writes the CA certificate, the server certificate and its key (each 0600).
pub fn make_management_pki(layout: &Layout) -> Result<()> {
    crate::step("making a CA and a certificate for ziti-management (127.0.0.1, localhost)");
    let ca_key = KeyPair::generate().context("making the CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(DnType::CommonName, "ziti-up ziti-management CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).context("making the CA certificate")?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().context("making the server key")?;
    let mut server_params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    server_params.distinguished_name.push(DnType::CommonName, "ziti-management");
    let server_cert = server_params.signed_by(&server_key, &issuer).context("signing the server certificate")?;

    write_private(&layout.management_ca(), ca_cert.pem().as_bytes())?;
    write_private(&layout.management_cert(), server_cert.pem().as_bytes())?;
    write_private(&layout.management_key(), server_key.serialize_pem().as_bytes())
}

/// Creates `path` with mode 0600 from the start (never readable by others, not even
/// for a moment).
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes).with_context(|| format!("writing {}", path.display()))
}
