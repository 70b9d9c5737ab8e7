//! The `ziti` management CLI, logged in to the network's controller as the admin.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

#[derive(Debug, Clone)]
pub struct Cli {
    pub bin: PathBuf,
    /// The CLI's own config directory (`ZITI_CONFIG_DIR`), one per network.
    pub config_dir: PathBuf,
}

impl Cli {
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.bin);
        command.env("ZITI_CONFIG_DIR", &self.config_dir).env("PFXLOG_NO_JSON", "true");
        command
    }

    /// Runs `ziti ARGS`, returning stdout; the error carries the CLI's own message.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let output = self.command().args(args).output().with_context(|| format!("starting {}", self.bin.display()))?;
        if !output.status.success() {
            bail!(
                "`ziti {}` failed ({}): {}{}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                String::from_utf8_lossy(&output.stdout).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Logs in; the password stays out of any error message.
    pub fn login(&self, ctrl: &str, user: &str, password: &str, ca: &Path) -> Result<()> {
        let ca = ca.to_string_lossy();
        let output = self
            .command()
            .args(["edge", "login", ctrl, "-u", user, "-p", password, "--ca", &ca])
            .output()
            .context("starting ziti edge login")?;
        if !output.status.success() {
            bail!("`ziti edge login {ctrl} -u {user}` failed: {}", String::from_utf8_lossy(&output.stderr).trim());
        }
        Ok(())
    }

    /// Whether the named edge router is connected to the controller.
    pub fn router_online(&self, name: &str) -> Result<bool> {
        let listing = self.run(&["edge", "list", "edge-routers", &format!("name=\"{name}\""), "-j"])?;
        let json: serde_json::Value =
            serde_json::from_str(&listing).context("parsing `ziti edge list edge-routers -j`")?;
        Ok(json["data"].as_array().is_some_and(|routers| {
            routers.iter().any(|router| router["name"] == name && router["isOnline"] == serde_json::Value::Bool(true))
        }))
    }
}
