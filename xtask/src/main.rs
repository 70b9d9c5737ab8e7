//! Project tasks: `cargo xtask <task>`.
//!
//! - `regen-proto [--check]`: regenerate the checked-in ziti-management stubs, or
//!   with `--check` fail when they are stale.
//! - `install-buf`: install the pinned buf under `target/tools/` (from PyPI, else npm)
//!   and print the directory to put on the PATH.
//! - `proto-lint` / `proto-breaking`: `buf lint` on the contract, and `buf breaking`
//!   against the contract as it was before the change under review (from git).
//! - `ziti-up` / `ziti-down`: start or stop a real OpenZiti network on loopback
//!   (controller, edge router, ziti-management), described in `target/ziti-net/env`.
//! - `test`: every test of the workspace against that network (started for the run
//!   unless one is up already), then a smoke run of the README's gateway command.
//! - `bench [--quick] [--reps N] [--idle N] [--bulk-mib N] [--no-gateway]`: the Rust
//!   SDK's echo host against the Go SDK's on that network (release build); writes the
//!   results into BENCHMARKS.md and docs/benchmarks.svg.

mod bench;
mod buf;
mod contract;
mod proto;
mod smoke;
mod ziti_net;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

const USAGE: &str = "usage: cargo xtask <regen-proto [--check] | install-buf | proto-lint | proto-breaking | ziti-up | ziti-down | test | bench [--quick] [--reps N] [--idle N] [--bulk-mib N] [--no-gateway]>";

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
        ["install-buf"] => install_buf(&workspace_root()?),
        ["proto-lint"] => contract::lint(&workspace_root()?),
        ["proto-breaking"] => contract::breaking(&workspace_root()?),
        ["ziti-up"] => ziti_net::up(&workspace_root()?).map(|_| ()),
        ["ziti-down"] => ziti_net::down(&workspace_root()?),
        ["test"] => test(&workspace_root()?),
        ["bench", options @ ..] => bench::run(&workspace_root()?, options),
        [] => bail!("no task given\n{USAGE}"),
        other => bail!("unknown task {:?}\n{USAGE}", other.join(" ")),
    }
}

fn workspace_root() -> Result<PathBuf> {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().map(Path::to_path_buf).context("xtask has no parent directory")
}

fn test(root: &Path) -> Result<()> {
    step("building the workspace and its tests");
    cargo(root, &["test", "--workspace", "--all-targets", "--locked", "--no-run"])?;
    step("starting the OpenZiti network the end-to-end tests run against");
    let network = ziti_net::up_with(root, ziti_net::Management::BuiltByTests)?;
    step("cargo test --workspace (unit, gRPC integration, gateway binary, real OpenZiti network)");
    let tested = cargo(root, &["test", "--workspace", "--all-targets", "--locked"]);
    if network == ziti_net::Outcome::Started {
        if tested.is_err() {
            ziti_net::show_logs(root);
        }
        ziti_net::down(root)?;
    }
    tested?;
    contract::buf_tests(root)?;
    step("smoke run of the README command `cargo run -p gateway-bin`");
    smoke::default_gateway(root)?;
    step("all tests passed");
    Ok(())
}

/// Logs the pinned buf's version and prints its directory (stdout) for the PATH.
fn install_buf(root: &Path) -> Result<()> {
    let buf = buf::ensure(root)?;
    step(&format!("buf {} at {}", buf.version, buf.path.display()));
    println!("{}", buf.bin_dir()?.display());
    Ok(())
}

/// Where cargo puts build output: `CARGO_TARGET_DIR` (relative to the workspace) or `target/`.
pub(crate) fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir))
}

/// Builds one binary of the workspace (debug) and returns its path.
pub(crate) fn build_binary(root: &Path, package: &str, binary: &str) -> Result<PathBuf> {
    cargo(root, &["build", "--locked", "-p", package, "--bin", binary])?;
    Ok(target_dir(root).join("debug").join(binary))
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
