//! The network's long-running processes: started detached (they outlive the xtask),
//! logged to files, recorded by pid, and stopped by pid.

use std::fs::{self, File};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Starts `command` in its own process group (so a Ctrl-C aimed at the xtask does not
/// reach it), stdout and stderr appended to `log`. Returns its pid.
pub fn spawn_detached(mut command: Command, log: &Path) -> Result<u32> {
    use std::os::unix::process::CommandExt;
    let out =
        File::options().create(true).append(true).open(log).with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    let child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {:?}", command.get_program()))?;
    Ok(child.id())
}

/// Whether `pid` is alive and one of ours: it runs in `marker` (the network's home, where
/// every daemon is started) or its command line names it, so a recycled pid is never
/// signalled.
pub fn is_ours(pid: u32, marker: &str) -> bool {
    let in_home = fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(marker));
    in_home
        || fs::read(format!("/proc/{pid}/cmdline"))
            .map(|cmdline| String::from_utf8_lossy(&cmdline).contains(marker))
            .unwrap_or(false)
}

/// Every live process of ours (e.g. a router a test restarted, or a Go SDK peer a
/// failed test left behind).
pub fn find_ours(marker: &str) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    let me = std::process::id();
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && is_ours(pid, marker))
        .collect()
}

/// SIGTERM, then SIGKILL after `grace`. Returns once the process is gone.
pub fn stop(pid: u32, marker: &str, grace: Duration) -> Result<()> {
    if !is_ours(pid, marker) {
        return Ok(());
    }
    signal(pid, "TERM")?;
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !is_ours(pid, marker) || is_zombie(pid) {
            return Ok(());
        }
        sleep(Duration::from_millis(100));
    }
    signal(pid, "KILL")?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !is_ours(pid, marker) || is_zombie(pid) {
            return Ok(());
        }
        sleep(Duration::from_millis(100));
    }
    bail!("process {pid} survived SIGKILL")
}

fn signal(pid: u32, signal: &str) -> Result<()> {
    // A process that exited in between makes `kill` fail; that is the outcome we want.
    Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .context("running kill")?;
    Ok(())
}

fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

/// The last `lines` lines of a log, for an error message.
pub fn tail(log: &Path, lines: usize) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
