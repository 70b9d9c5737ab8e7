//! Finding the `ziti` executable: `ZITI_BIN`, then `ziti` on `PATH`, then the copy
//! carried in `../shared/openziti/` (unpacked and checked by its `install` script).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const RELEASES: &str = "https://github.com/openziti/ziti/releases";

pub fn ziti_binary(root: &Path) -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("ZITI_BIN").filter(|bin| !bin.is_empty()) {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("ZITI_BIN={} is not a file", bin.display());
        }
        return Ok(bin);
    }
    if let Some(bin) = on_path("ziti") {
        return Ok(bin);
    }
    let installer = root.join("../shared/openziti/install");
    if installer.is_file() {
        crate::step(&format!("unpacking OpenZiti with {}", installer.display()));
        let output = Command::new("bash")
            .arg(&installer)
            .output()
            .with_context(|| format!("running {}", installer.display()))?;
        if !output.status.success() {
            bail!(
                "{} failed ({}): {}",
                installer.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let bin = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if bin.is_file() {
            return Ok(bin);
        }
        bail!("{} printed {}, which is not a file", installer.display(), bin.display());
    }
    bail!(
        "no OpenZiti `ziti` executable found: set ZITI_BIN to its path, put `ziti` on PATH, \
         or download v1.6.20 from {RELEASES}"
    )
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}
