//! Finding the `ziti` executable: `ZITI_BIN`, then `ziti` on `PATH`, then the copy
//! carried in `../shared/openziti/` (unpacked and checked by its `install` script).
//! When a version is asked for (`--ziti-version`, or `ZITI_VERSION`), a `ziti` that
//! reports another version is passed over.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const RELEASES: &str = "https://github.com/openziti/ziti/releases";

/// The release `ziti-up` runs when none is asked for and none is found on the machine.
pub const DEFAULT_VERSION: &str = "v1.6.20";

/// The releases `cargo xtask test` runs against: the whole suite on the first, the
/// network suites on the others (README: "Compatibility").
pub const TESTED_VERSIONS: [&str; 2] = [DEFAULT_VERSION, "v2.0.0-pre12"];

/// The variable that asks for a release, the same name `../shared/openziti/install` reads.
pub const VERSION_ENV: &str = "ZITI_VERSION";

/// The release asked for: the command line's `--ziti-version`, else `ZITI_VERSION`.
pub fn wanted_version(flag: Option<&str>) -> Result<Option<String>> {
    let wanted = match flag {
        Some(version) => Some(version.to_owned()),
        None => std::env::var(VERSION_ENV).ok().filter(|version| !version.trim().is_empty()),
    };
    match wanted {
        Some(version) if !is_version(&version) => {
            bail!("{VERSION_ENV} / --ziti-version {version:?} is not a release name like {DEFAULT_VERSION}")
        }
        other => Ok(other),
    }
}

/// `v` followed by a dotted number, with an optional pre-release suffix (`v2.0.0-pre12`).
fn is_version(text: &str) -> bool {
    text.strip_prefix('v').is_some_and(|rest| {
        let (numbers, _pre) = rest.split_once('-').unwrap_or((rest, ""));
        numbers.split('.').count() == 3
            && numbers.split('.').all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// A `ziti` executable and the version it reports.
#[derive(Debug, Clone)]
pub struct Ziti {
    pub bin: PathBuf,
    pub version: String,
}

pub fn ziti_binary(root: &Path, wanted: Option<&str>) -> Result<Ziti> {
    if let Some(bin) = std::env::var_os("ZITI_BIN").filter(|bin| !bin.is_empty()) {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("ZITI_BIN={} is not a file", bin.display());
        }
        let version = version_of(&bin)?;
        if wanted.is_none_or(|wanted| wanted == version) {
            return Ok(Ziti { bin, version });
        }
        crate::step(&format!("ZITI_BIN is {version}; looking for {} elsewhere", wanted.unwrap_or_default()));
    }
    if let Some(bin) = on_path("ziti") {
        let version = version_of(&bin)?;
        if wanted.is_none_or(|wanted| wanted == version) {
            return Ok(Ziti { bin, version });
        }
        crate::step(&format!("{} is {version}; looking for {} elsewhere", bin.display(), wanted.unwrap_or_default()));
    }
    let installer = root.join("../shared/openziti/install");
    if installer.is_file() {
        let version = wanted.unwrap_or(DEFAULT_VERSION);
        crate::step(&format!("unpacking OpenZiti {version} with {}", installer.display()));
        let output = Command::new("bash")
            .arg(&installer)
            .arg(version)
            .output()
            .with_context(|| format!("running {}", installer.display()))?;
        if !output.status.success() {
            bail!(
                "{} {version} failed ({}): {}",
                installer.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let bin = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if !bin.is_file() {
            bail!("{} printed {}, which is not a file", installer.display(), bin.display());
        }
        let found = version_of(&bin)?;
        if found != version {
            bail!("{} unpacked {found}, not {version}", installer.display());
        }
        return Ok(Ziti { bin, version: found });
    }
    bail!(
        "no OpenZiti `ziti` executable {}found: set ZITI_BIN to its path, put `ziti` on PATH, \
         or download it from {RELEASES}",
        wanted.map(|wanted| format!("{wanted} ")).unwrap_or_default()
    )
}

/// What `ziti version` prints, e.g. `v1.6.20`.
fn version_of(bin: &Path) -> Result<String> {
    let output =
        Command::new(bin).arg("version").output().with_context(|| format!("running {} version", bin.display()))?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || !is_version(&version) {
        bail!("{} version did not name a release ({}): {version:?}", bin.display(), output.status);
    }
    Ok(version)
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::is_version;

    #[test]
    fn release_names_are_recognised() {
        for good in ["v1.6.20", "v2.0.0-pre12", "v10.0.1"] {
            assert!(is_version(good), "{good}");
        }
        for bad in ["1.6.20", "v1.6", "v1.6.x", "latest", "", "v1..2", "v1.6.20 extra"] {
            assert!(!is_version(bad), "{bad}");
        }
    }
}
