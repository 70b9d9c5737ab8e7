//! Stub generation for the ziti-management contract.
//!
//! Both paths end in the same generator (tonic-prost-build fed a descriptor set), so
//! they give byte-identical stubs (a test below proves it): with buf (the pinned
//! install under `target/tools/`, else one on the PATH) `buf build` produces the
//! descriptor set; without it, protox (a pure-Rust protobuf compiler) does. On CI buf
//! is required, so the buf path is the one CI proves.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use prost::Message;
use prost_types::FileDescriptorSet;

use crate::buf::{self, Buf};

const PROTO_DIR: &str = "proto";
const PROTO_FILE: &str = "zitimgmt/v1/zitimgmt.proto";
const GENERATED_FILE: &str = "zitimgmt.v1.rs";
const STUBS_DIR: &str = "crates/zitimgmt-grpc/src/generated";

pub fn regenerate(root: &Path) -> Result<()> {
    let out = generate(root)?;
    let target = root.join(STUBS_DIR).join(GENERATED_FILE);
    fs::create_dir_all(root.join(STUBS_DIR))?;
    fs::write(&target, out).with_context(|| format!("writing {}", target.display()))?;
    crate::step(&format!("wrote {}", target.display()));
    Ok(())
}

pub fn check(root: &Path) -> Result<()> {
    let fresh = generate(root)?;
    let target = root.join(STUBS_DIR).join(GENERATED_FILE);
    let current = fs::read(&target).with_context(|| format!("reading {}", target.display()))?;
    if current != fresh {
        bail!(
            "{} is stale: it differs from what proto/ generates; run `cargo xtask regen-proto` and commit the result",
            target.display()
        );
    }
    crate::step("checked-in proto stubs are up to date");
    Ok(())
}

fn generate(root: &Path) -> Result<Vec<u8>> {
    let found = if buf::on_ci() { Some(buf::ensure(root)?) } else { buf::locate(root) };
    let descriptors = match found {
        Some(buf) => {
            crate::step(&format!("building descriptors with buf {} ({})", buf.version, buf.path.display()));
            buf_descriptors(root, &buf)?
        }
        None => {
            crate::step("buf not found (`cargo xtask install-buf` installs it): building descriptors with protox");
            protox_descriptors(root)?
        }
    };
    stubs(descriptors)
}

fn protox_descriptors(root: &Path) -> Result<FileDescriptorSet> {
    let proto_dir = root.join(PROTO_DIR);
    protox::compile([PROTO_FILE], [&proto_dir])
        .with_context(|| format!("compiling {}", proto_dir.join(PROTO_FILE).display()))
}

fn buf_descriptors(root: &Path, buf: &Buf) -> Result<FileDescriptorSet> {
    let image = tempfile::NamedTempFile::new()?;
    let output = format!("{}#format=binpb", image.path().display());
    let status = buf.command(root).args(["build", PROTO_DIR, "--output", &output]).status()?;
    if !status.success() {
        bail!("`buf build {PROTO_DIR}` failed ({status})");
    }
    let bytes = fs::read(image.path())?;
    FileDescriptorSet::decode(bytes.as_slice()).context("decoding the image buf built")
}

/// Runs the generator into a fresh temporary directory and returns the stub file.
fn stubs(descriptors: FileDescriptorSet) -> Result<Vec<u8>> {
    let out_dir = tempfile::tempdir()?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .out_dir(out_dir.path())
        .compile_fds(descriptors)
        .context("generating Rust stubs")?;
    let generated: PathBuf = out_dir.path().join(GENERATED_FILE);
    fs::read(&generated).with_context(|| format!("reading {}", generated.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A contributor without buf (protox) must get exactly what CI (buf) checks.
    #[test]
    #[ignore = "needs buf: `cargo xtask test` installs the pinned buf and runs this test"]
    fn buf_and_protox_generate_byte_identical_stubs() {
        let root = crate::workspace_root().unwrap();
        let buf = buf::locate(&root).expect("no buf: run `cargo xtask install-buf` (or put buf on the PATH)");
        eprintln!("comparing stubs from buf {} ({}) with protox", buf.version, buf.path.display());
        let via_buf = stubs(buf_descriptors(&root, &buf).unwrap()).unwrap();
        let via_protox = stubs(protox_descriptors(&root).unwrap()).unwrap();
        let via_buf = String::from_utf8(via_buf).unwrap();
        assert!(via_buf.contains("pub async fn request_service_identity"), "buf path generated no client");
        assert_eq!(via_buf, String::from_utf8(via_protox).unwrap(), "buf and protox stubs differ");
    }
}
