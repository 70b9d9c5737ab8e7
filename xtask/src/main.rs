//! Project tasks: `cargo xtask <task>`.
//!
//! - `regen-proto [--check]`: regenerate the checked-in ziti-management stubs, or
//!   with `--check` fail when they are stale.
//! - `test`: every test of the workspace, then a smoke run of the README's
//!   gateway command.

mod proto;
mod smoke;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

const USAGE: &str = "usage: cargo xtask <regen-proto [--check] | test>";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["regen-proto"] => proto::regenerate(&workspace_root()?),
        ["regen-proto", "--check"] => proto::check(&workspace_root()?),
        ["test"] => test(&workspace_root()?),
        [] => bail!("no task given\n{USAGE}"),
        other => bail!("unknown task {:?}\n{USAGE}", other.join(" ")),
    }
}

fn workspace_root() -> Result<PathBuf> {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().map(Path::to_path_buf).context("xtask has no parent directory")
}

fn test(root: &Path) -> Result<()> {
    step("cargo test --workspace (unit, gRPC integration, gateway binary)");
    cargo(root, &["test", "--workspace", "--all-targets", "--locked"])?;
    step("smoke run of the README command `cargo run -p gateway-bin`");
    smoke::default_gateway(root)?;
    step("all tests passed");
    Ok(())
}

pub(crate) fn step(what: &str) {
    eprintln!("==> {what}");
}

pub(crate) fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| format!("could not start `{cargo}`"))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
