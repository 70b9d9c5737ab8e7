//! The `ziti` management CLI, logged in to the network's controller as the admin.
//!
//! Passwords never go on a command line (any local user can read `/proc/*/cmdline`):
//! `ziti` v1.6/v2 takes them from no variable or file, only from its prompt, so they are
//! typed at that prompt on a terminal that `script` (util-linux) provides.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

    /// Logs in, typing the password at the CLI's prompt; it stays out of any message.
    pub fn login(&self, ctrl: &str, user: &str, password: &str, ca: &Path) -> Result<()> {
        let ca = ca.to_string_lossy();
        self.run_prompted(&["edge", "login", ctrl, "-u", user, "--ca", &ca], &[password])
    }

    /// Changes the logged-in admin's password from `current` to `new`, at the prompts.
    pub fn change_password(&self, current: &str, new: &str) -> Result<()> {
        self.run_prompted(&["edge", "update", "authenticator", "updb", "-s"], &[current, new])
    }

    /// Runs `ziti ARGS` on a terminal of `script`'s, answering its prompts with
    /// `answers` in order. The answers are written to the terminal, never to argv, and
    /// removed from any output quoted in an error (the terminal echoes typed-ahead text).
    fn run_prompted(&self, args: &[&str], answers: &[&str]) -> Result<()> {
        let quote = |arg: &str| format!("'{}'", arg.replace('\'', "'\\''"));
        let line: Vec<String> =
            std::iter::once(self.bin.to_string_lossy().as_ref()).chain(args.iter().copied()).map(quote).collect();
        let mut child = Command::new("script")
            .args(["-q", "-e", "-c", &line.join(" "), "/dev/null"])
            .env("ZITI_CONFIG_DIR", &self.config_dir)
            .env("PFXLOG_NO_JSON", "true")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting `script` (util-linux), which gives the ziti CLI a terminal for its password prompt")?;
        let mut input = String::new();
        for answer in answers {
            input.push_str(answer);
            input.push('\n');
        }
        if let Some(mut stdin) = child.stdin.take() {
            // A CLI that exits before reading everything closes the pipe; its status says why.
            let _ = stdin.write_all(input.as_bytes());
        }
        let output = child.wait_with_output().context("waiting for the ziti CLI")?;
        if !output.status.success() {
            let mut said =
                format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
            for answer in answers.iter().filter(|answer| !answer.is_empty()) {
                said = said.replace(answer, "<redacted>");
            }
            bail!("`ziti {}` failed ({}): {}", args.join(" "), output.status, said.trim());
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
