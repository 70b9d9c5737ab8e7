//! Project tasks: `cargo xtask <task>`.
//!
//! - `regen-proto [--check]`: regenerate the checked-in ziti-management stubs, or
//!   with `--check` fail when they are stale.
//! - `install-buf`: install the pinned buf under `target/tools/` (from PyPI, else npm)
//!   and print the directory to put on the PATH.
//! - `proto-lint` / `proto-breaking`: `buf lint` on the contract, and `buf breaking`
//!   against the contract as it was before the change under review (from git).
//! - `ziti-up [--ziti-version V]` / `ziti-down`: start or stop a real OpenZiti network
//!   on loopback (controller, edge router, SPIRE, ORY Hydra, ziti-management), described in
//!   `target/ziti-net/env`; the release is `--ziti-version`, else `ZITI_VERSION`, else
//!   the `ziti` found first (v1.6.20 from `../shared`).
//! - `test [--ziti-version V] [--network-only]`: every test of the workspace against
//!   that network (started for the run unless one of that version is up already), then
//!   a smoke run of the README's gateway command; `--network-only` runs just the suites
//!   that talk to the network (SDK, gateway overlay, ziti-management), e.g. on a
//!   second OpenZiti release.
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

const USAGE: &str = "usage: cargo xtask <regen-proto [--check] | install-buf | proto-lint | proto-breaking | ziti-up [--ziti-version V] | ziti-down | test [--ziti-version V] [--network-only] | bench [--quick] [--reps N] [--idle N] [--bulk-mib N] [--no-gateway]>";

/// The test targets that run against the real network, as `cargo test` arguments.
const NETWORK_SUITES: [&[&str]; 5] = [
    &["-p", "ziti-sdk-rs", "--test", "network"],
    &["-p", "gateway-bin", "--test", "overlay"],
    &["-p", "zitimgmt-server", "--tests"],
    &["-p", "workspace-tests", "--test", "spiffe"],
    &["-p", "workspace-tests", "--test", "idp"],
];

/// Long soaks that show a property of the gateway, SPIRE, ziti-management or the SDK
/// under load, not of the release (every login, refusal, provisioning and certificate
/// renewal test runs on each release; the SDK's third-party-CA login on v2 is in the
/// `spiffe` and `sources` suites): they run with the whole suite on the first release
/// only, which keeps CI under 30 minutes.
const FIRST_RELEASE_ONLY: &[&str] = &[
    "idp::idp_tokens_replaced_over_three_lifetimes_fail_no_request_of_ten_clients",
    "sources::rotating_svids_fail_no_request_of_ten_clients_looping_through_the_overlay",
    "sources::with_the_agent_gone_past_the_svid_lifetime_the_gateway_goes_unready_and_serves_again_when_it_is_back",
    "two_hundred_leases_held_for_a_minute_then_a_burst_of_requests",
    "what_attestation_costs_enrollments_with_and_without_mtls_side_by_side",
    "rotation::rotating_the_certificate_under_load_fails_no_exchange",
];

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
        ["ziti-up", options @ ..] => {
            let options = TestOptions::parse(options, false)?;
            ziti_net::up(&workspace_root()?, options.version.as_deref()).map(|_| ())
        }
        ["ziti-down"] => ziti_net::down(&workspace_root()?),
        ["test", options @ ..] => test(&workspace_root()?, &TestOptions::parse(options, true)?),
        ["bench", options @ ..] => bench::run(&workspace_root()?, options),
        [] => bail!("no task given\n{USAGE}"),
        other => bail!("unknown task {:?}\n{USAGE}", other.join(" ")),
    }
}

fn workspace_root() -> Result<PathBuf> {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().map(Path::to_path_buf).context("xtask has no parent directory")
}

/// The options of `test` (and `ziti-up`, which takes only the version).
#[derive(Debug, Default)]
struct TestOptions {
    version: Option<String>,
    network_only: bool,
}

impl TestOptions {
    fn parse(args: &[&str], test: bool) -> Result<Self> {
        let mut options = Self::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match *arg {
                "--ziti-version" => {
                    let version = args.next().context("--ziti-version needs a release name, e.g. v2.0.0-pre12")?;
                    options.version = Some((*version).to_owned());
                }
                "--network-only" if test => options.network_only = true,
                other => bail!("unknown option {other:?}\n{USAGE}"),
            }
        }
        options.version = ziti_net::locate::wanted_version(options.version.as_deref())?;
        Ok(options)
    }
}

/// Without `--ziti-version`: the whole suite on the first of
/// [`ziti_net::locate::TESTED_VERSIONS`], then the network suites on each other one.
/// With it: the whole suite (or with `--network-only`, the network suites) on that one.
fn test(root: &Path, options: &TestOptions) -> Result<()> {
    step("building the workspace and its tests");
    cargo(root, &["test", "--workspace", "--all-targets", "--locked", "--no-run"])?;
    let (first, others) = match &options.version {
        Some(version) => (version.as_str(), &[][..]),
        None => (ziti_net::locate::TESTED_VERSIONS[0], &ziti_net::locate::TESTED_VERSIONS[1..]),
    };
    if options.network_only {
        return network_suites(root, first, &[]);
    }
    whole_suite(root, first)?;
    for version in others {
        network_suites(root, version, FIRST_RELEASE_ONLY)?;
    }
    step("all tests passed");
    Ok(())
}

fn whole_suite(root: &Path, version: &str) -> Result<()> {
    with_network(root, version, || {
        step(&format!(
            "cargo test --workspace (unit, gRPC integration, gateway binary, real OpenZiti {version} network)"
        ));
        cargo(root, &["test", "--workspace", "--all-targets", "--locked"])
    })?;
    contract::buf_tests(root)?;
    step("smoke run of the README command `cargo run -p gateway-bin`");
    smoke::default_gateway(root)
}

fn network_suites(root: &Path, version: &str, skip: &[&str]) -> Result<()> {
    with_network(root, version, || {
        NETWORK_SUITES.iter().try_for_each(|suite| {
            step(&format!("cargo test {} (real OpenZiti {version} network)", suite.join(" ")));
            let mut args: Vec<&str> = [&["test", "--locked"], *suite].concat();
            if !skip.is_empty() {
                step(&format!("run on the first release only, not again on {version}: {}", skip.join(", ")));
                args.push("--");
                for test in skip {
                    args.extend(["--skip", test]);
                }
            }
            cargo(root, &args)
        })
    })?;
    step(&format!("the network suites passed on OpenZiti {version}"));
    Ok(())
}

/// Runs `tests` against a network of `version`, started for them unless one runs
/// already (and then stopped again, after showing its logs if they failed).
fn with_network(root: &Path, version: &str, tests: impl FnOnce() -> Result<()>) -> Result<()> {
    step(&format!("starting the OpenZiti {version} network the end-to-end tests run against"));
    let network = ziti_net::up_with(root, ziti_net::Management::BuiltByTests, Some(version))?;
    let tested = tests();
    if network == ziti_net::Outcome::Started {
        if tested.is_err() {
            ziti_net::show_logs(root);
        }
        ziti_net::down(root)?;
    }
    tested
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
