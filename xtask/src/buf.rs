//! The pinned `buf` CLI.
//!
//! buf comes from a registry package (PyPI `buf-bin`, or npm `@bufbuild/buf` where
//! Python is missing), installed under `target/tools/` without root, so a clean clone
//! and CI get the same version with nothing installed system-wide. buf never talks to
//! the Buf Schema Registry here: `proto/buf.yaml` has no remote deps and the
//! google/protobuf well-known types are built into buf.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};

/// The one place the buf version is pinned.
pub const BUF_VERSION: &str = "1.75.0";

/// A runnable buf binary and the version it reports.
#[derive(Debug, Clone)]
pub struct Buf {
    pub path: PathBuf,
    pub version: String,
}

impl Buf {
    /// A `buf` command run from the workspace root, its cache kept under `target/tools/`
    /// so it needs no writable home directory.
    pub fn command(&self, root: &Path) -> Command {
        let mut command = Command::new(&self.path);
        command.current_dir(root).env("BUF_CACHE_DIR", tools_dir(root).join("buf-cache"));
        command
    }

    /// The directory to put on the PATH so that `buf` is this binary.
    pub fn bin_dir(&self) -> Result<&Path> {
        self.path.parent().with_context(|| format!("{} has no parent directory", self.path.display()))
    }
}

/// The pinned install if it is there, else any `buf` on the PATH.
pub fn locate(root: &Path) -> Option<Buf> {
    pinned(root).or_else(|| version_of(Path::new("buf")).map(|version| Buf { path: PathBuf::from("buf"), version }))
}

/// Whether tasks run on CI (`CI=true`), where buf is required rather than optional.
pub fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| !value.is_empty() && value != "false" && value != "0")
}

/// The pinned buf, installed from a registry package first if it is missing.
pub fn ensure(root: &Path) -> Result<Buf> {
    if let Some(buf) = pinned(root) {
        return Ok(buf);
    }
    let dir = install_dir(root);
    crate::step(&format!("installing buf {BUF_VERSION} into {}", dir.display()));
    install(root, &dir)?;
    pinned(root).with_context(|| {
        format!("buf {BUF_VERSION} was installed into {} but does not run or reports another version", dir.display())
    })
}

fn tools_dir(root: &Path) -> PathBuf {
    root.join("target").join("tools")
}

fn install_dir(root: &Path) -> PathBuf {
    tools_dir(root).join(format!("buf-{BUF_VERSION}"))
}

/// Where each package puts the executable inside the install directory.
fn binary_in(dir: &Path) -> [PathBuf; 2] {
    [dir.join("bin").join("buf"), dir.join("node_modules").join(".bin").join("buf")]
}

fn pinned(root: &Path) -> Option<Buf> {
    binary_in(&install_dir(root)).into_iter().find_map(|path| {
        let version = version_of(&path)?;
        (version == BUF_VERSION).then_some(Buf { path, version })
    })
}

fn version_of(path: &Path) -> Option<String> {
    let out = Command::new(path).arg("--version").output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Installs into a private staging directory and renames it into place, so a run that
/// is interrupted, or one racing another run, never leaves a half-installed buf.
fn install(root: &Path, dir: &Path) -> Result<()> {
    let tools = tools_dir(root);
    fs::create_dir_all(&tools).with_context(|| format!("creating {}", tools.display()))?;
    let staging = tempfile::Builder::new().prefix(".buf-install-").tempdir_in(&tools)?;
    let pip = pip_install(staging.path());
    let installed = match pip {
        Ok(()) => Ok(()),
        Err(pip_err) => {
            eprintln!("xtask: installing buf from PyPI failed ({pip_err:#}); trying npm");
            npm_install(staging.path()).map_err(|npm_err| {
                anyhow::anyhow!(
                    "could not install buf {BUF_VERSION} from a registry package:\n  PyPI buf-bin: {pip_err:#}\n  npm @bufbuild/buf: {npm_err:#}"
                )
            })
        }
    };
    installed?;
    match fs::rename(staging.path(), dir) {
        Ok(()) => Ok(()),
        // Another run installed it first; `ensure` checks that what is there runs.
        Err(_) if dir.exists() => Ok(()),
        Err(err) => Err(err).with_context(|| format!("moving the buf install into {}", dir.display())),
    }
}

fn pip_install(dir: &Path) -> Result<()> {
    let target = dir.to_string_lossy();
    let spec = format!("buf-bin=={BUF_VERSION}");
    let args = [
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--target",
        &target,
        &spec,
    ];
    let out = Command::new("python3")
        .args(args)
        // `--target` installs outside any virtualenv on purpose.
        .env("PIP_REQUIRE_VIRTUALENV", "0")
        .output()
        .context("could not start python3")?;
    succeeded("python3 -m pip install buf-bin", &out)
}

fn npm_install(dir: &Path) -> Result<()> {
    let spec = format!("@bufbuild/buf@{BUF_VERSION}");
    let out = Command::new("npm")
        .args(["install", "--no-save", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
        .arg(dir)
        .arg(&spec)
        .output()
        .context("could not start npm")?;
    succeeded("npm install @bufbuild/buf", &out)
}

fn succeeded(what: &str, out: &Output) -> Result<()> {
    if !out.status.success() {
        bail!("`{what}` failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
