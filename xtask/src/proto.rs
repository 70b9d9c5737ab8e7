//! Stub generation for the ziti-management contract.
//!
//! Both paths end in the same generator (tonic-prost-build fed a descriptor set), so
//! they give byte-identical stubs: with `buf` on the PATH, `buf dep update` and
//! `buf build` produce the descriptor set; without it, protox (a pure-Rust protobuf
//! compiler) does.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use prost::Message;
use prost_types::FileDescriptorSet;

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
    let proto_dir = root.join("proto");
    let descriptors = if buf_available() {
        crate::step("building descriptors with buf (buf dep update + buf build)");
        buf_descriptors(&proto_dir)?
    } else {
        crate::step("buf not on PATH: building descriptors with protox");
        protox::compile([PROTO_FILE], [&proto_dir])
            .with_context(|| format!("compiling {}", proto_dir.join(PROTO_FILE).display()))?
    };
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

fn buf_available() -> bool {
    Command::new("buf").arg("--version").output().is_ok_and(|out| out.status.success())
}

fn buf_descriptors(proto_dir: &Path) -> Result<FileDescriptorSet> {
    run_buf(proto_dir, &["dep", "update"])?;
    let image = tempfile::NamedTempFile::new()?;
    let image_path = image.path().to_string_lossy().into_owned();
    run_buf(proto_dir, &["build", "--output", &format!("{image_path}#format=binpb")])?;
    let bytes = fs::read(image.path())?;
    FileDescriptorSet::decode(bytes.as_slice()).context("decoding the image buf built")
}

fn run_buf(dir: &Path, args: &[&str]) -> Result<()> {
    let status = Command::new("buf").args(args).current_dir(dir).status()?;
    if !status.success() {
        bail!("`buf {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
