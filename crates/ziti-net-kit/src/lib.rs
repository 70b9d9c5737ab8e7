//! Provisioning on a local OpenZiti network through the `ziti` CLI, shared by
//! `cargo xtask ziti-up` and the network tests so that both set up routers the same way.
//!
//! [`third_party_ca`] makes OpenZiti trust a SPIFFE issuer's CA and creates identities
//! that log in with its certificates; [`spire`] runs a SPIRE server and agent on loopback.
//! [`ext_jwt`] makes OpenZiti trust an IdP's JWTs; [`hydra`] runs ORY Hydra, such an IdP,
//! on loopback.

pub mod ext_jwt;
pub mod hydra;
pub mod spire;
pub mod third_party_ca;

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;

/// An edge router to create and enroll on a running controller.
#[derive(Debug, Clone, Copy)]
pub struct EdgeRouter<'a> {
    /// Its name on the controller.
    pub name: &'a str,
    /// Its own directory (`ZITI_HOME` for its config generator; its JWT goes here).
    pub home: &'a Path,
    /// Where its config file is written.
    pub config: &'a Path,
    /// The controller's port on 127.0.0.1.
    pub ctrl_port: u16,
    /// The port its edge listener binds and advertises on 127.0.0.1.
    pub port: u16,
}

/// A provisioning step that failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// The `ziti` CLI could not be started.
    #[error("cannot run `ziti {step}`: {source}")]
    Start {
        /// The CLI command, e.g. `router enroll`.
        step: &'static str,
        /// Why it could not start.
        source: std::io::Error,
    },
    /// The `ziti` CLI ran and failed.
    #[error("`ziti {step}` failed ({status}): {message}")]
    Failed {
        /// The CLI command, e.g. `router enroll`.
        step: &'static str,
        /// Its exit status.
        status: ExitStatus,
        /// What it printed on stderr.
        message: String,
    },
    /// A name that the CLI's filter language cannot quote (empty, `"`, a backslash, control
    /// characters).
    #[error("{name:?} cannot be used as a name on the controller")]
    InvalidName {
        /// The name as given.
        name: String,
    },
    /// The `ziti` CLI succeeded but its answer was not what the step needs.
    #[error("`ziti {step}`: {reason}")]
    Unexpected {
        /// The CLI command, e.g. `edge list cas`.
        step: &'static str,
        /// What was wrong (never the CLI's output, which may hold enrollment tokens).
        reason: String,
    },
    /// A file (a router's, a CA's) could not be written or read.
    #[error("{}: {source}", path.display())]
    File {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl EdgeRouter<'_> {
    /// Creates the router on the controller, writes its config with every listener on
    /// 127.0.0.1, and enrolls it. `ziti` makes a `ziti` CLI command logged in to the
    /// controller. Start it afterwards with [`EdgeRouter::run_command`].
    pub fn enroll(&self, ziti: impl Fn() -> Command) -> Result<(), ProvisionError> {
        std::fs::create_dir_all(self.home).map_err(|source| file_error(self.home, source))?;
        let jwt = self.home.join(format!("{}.jwt", self.name));
        run(
            ziti().args(["edge", "create", "edge-router", self.name, "-a", "public", "-o"]).arg(&jwt),
            "edge create edge-router",
        )?;
        let (ctrl_port, port) = (self.ctrl_port.to_string(), self.port.to_string());
        run(
            ziti()
                .args(["create", "config", "router", "edge", "--routerName", self.name, "--tunnelerMode", "none"])
                .arg("--output")
                .arg(self.config)
                .env("ZITI_HOME", self.home)
                .env("ZITI_CTRL_ADVERTISED_ADDRESS", "127.0.0.1")
                .env("ZITI_CTRL_ADVERTISED_PORT", &ctrl_port)
                .env("ZITI_ROUTER_ADVERTISED_ADDRESS", "127.0.0.1")
                .env("ZITI_ROUTER_PORT", &port)
                .env("ZITI_ROUTER_LISTENER_BIND_PORT", &port),
            "create config router edge",
        )?;
        // The router template binds its listeners to 0.0.0.0 with no variable to change it.
        let text = std::fs::read_to_string(self.config).map_err(|source| file_error(self.config, source))?;
        std::fs::write(self.config, loopback_listeners(&text)).map_err(|source| file_error(self.config, source))?;
        run(ziti().args(["router", "enroll"]).arg(self.config).arg("--jwt").arg(&jwt), "router enroll")
    }

    /// `ziti router run CONFIG`, for the caller to spawn with its own log and process
    /// handling.
    pub fn run_command(&self, mut ziti: Command) -> Command {
        ziti.args(["router", "run"]).arg(self.config);
        ziti
    }
}

/// A router config with every `0.0.0.0:` listener moved to `127.0.0.1:`.
fn loopback_listeners(config: &str) -> String {
    config.replace("0.0.0.0:", "127.0.0.1:")
}

fn run(command: &mut Command, step: &'static str) -> Result<(), ProvisionError> {
    run_output(command, step).map(drop)
}

/// Runs a CLI step, returning its stdout.
fn run_output(command: &mut Command, step: &'static str) -> Result<Vec<u8>, ProvisionError> {
    let output = command.output().map_err(|source| ProvisionError::Start { step, source })?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    let message = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    Err(ProvisionError::Failed { step, status: output.status, message })
}

fn file_error(path: &Path, source: std::io::Error) -> ProvisionError {
    ProvisionError::File { path: path.to_path_buf(), source }
}

/// Creates `path` with mode 0600 from the start, replacing any earlier file.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(bytes)
}

/// The last `lines` lines of a log, `secret` blanked out.
fn tail(log: &Path, lines: usize, secret: &str) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let last = all[all.len().saturating_sub(lines)..].join("\n");
    if secret.is_empty() { last } else { last.replace(secret, "<redacted>") }
}

/// SIGTERM, then SIGKILL after `grace`; returns once `child` is reaped.
/// Why a `../shared/<tool>/install` gave no path.
enum InstallerError {
    /// There is no such script.
    Missing,
    /// It could not be run.
    Run(std::io::Error),
    /// It ran and failed: its status and stderr.
    Failed(String),
}

/// Runs a carried tool's sha256-checking installer, which prints where it unpacked
/// the tool.
fn run_installer(installer: &Path) -> Result<std::path::PathBuf, InstallerError> {
    if !installer.is_file() {
        return Err(InstallerError::Missing);
    }
    let output = Command::new("bash").arg(installer).output().map_err(InstallerError::Run)?;
    if !output.status.success() {
        return Err(InstallerError::Failed(format!(
            "{} failed ({}): {}",
            installer.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(std::path::PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
}

fn terminate(child: &mut Child, grace: Duration) -> std::io::Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    // `kill` (not libc) for SIGTERM; a process that exited meanwhile makes it fail harmlessly.
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).stderr(Stdio::null()).status();
    let deadline = Instant::now() + grace;
    while child.try_wait()?.is_none() {
        if Instant::now() >= deadline {
            child.kill()?;
            child.wait()?;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_move_to_loopback() {
        let config = "link:\n  listeners:\n    - bind: tls:0.0.0.0:10080\nedge:\n  address: 0.0.0.0:3022\n";
        let rewritten = loopback_listeners(config);
        assert!(!rewritten.contains("0.0.0.0"), "{rewritten}");
        assert!(rewritten.contains("tls:127.0.0.1:10080") && rewritten.contains("address: 127.0.0.1:3022"));
    }

    #[test]
    fn a_failing_cli_step_is_reported_with_its_message() {
        let dir = std::env::temp_dir().join(format!("ziti-net-kit-{}", std::process::id()));
        let config = dir.join("r.yaml");
        let router = EdgeRouter { name: "r", home: &dir, config: &config, ctrl_port: 1280, port: 3022 };
        let fake_ziti = || {
            let mut command = Command::new("sh");
            command.args(["-c", "echo 'no controller session' >&2; exit 3", "ziti"]);
            command
        };
        let err = router.enroll(fake_ziti).unwrap_err();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            err.to_string().starts_with("`ziti edge create edge-router` failed")
                && err.to_string().ends_with("no controller session"),
            "{err}"
        );
    }
}
