//! The processes a benchmark drives (echo hosts, the Go tunnel proxy, the gateway): started
//! in the network's home (so `ziti-down` sweeps any left behind), measured through /proc,
//! stopped by pid.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A child process, killed when dropped.
#[derive(Debug)]
pub struct Running {
    pub name: String,
    child: Child,
    log: std::path::PathBuf,
}

impl Running {
    pub fn spawn(name: &str, mut command: Command, dir: &Path) -> Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = command
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self { name: name.to_owned(), child, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size now, in bytes (`VmRSS` of /proc/PID/status).
    pub fn rss(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .context("no VmRSS in /proc/PID/status")?;
        Ok(kib * 1024)
    }

    /// CPU time used so far (user + system, all threads), in seconds.
    pub fn cpu_seconds(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        let (_, rest) = stat.rsplit_once(')').context("malformed /proc/PID/stat")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the command: state is field 3, utime 14 and stime 15 (1-based, proc(5)).
        let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok()).context("short /proc/PID/stat");
        Ok((ticks(14)? + ticks(15)?) as f64 / clock_ticks())
    }

    /// Fails with the log's tail when the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}):\n{}", self.name, tail(&self.log, 15));
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `grace`; waits for the exit.
    pub fn stop(mut self, grace: Duration) {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux target Rust supports (getconf CLK_TCK).
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Waits until `addr` echoes `needed` probes in a row (a host that just bound may still
/// share the service with a terminator the previous one left), or fails after `within`.
pub fn wait_echo(host: &mut Running, addr: &str, needed: u32, within: Duration) -> Result<()> {
    let started = Instant::now();
    let mut in_a_row = 0;
    while in_a_row < needed {
        host.check_alive()?;
        if started.elapsed() > within {
            bail!("{} did not echo through {addr} within {within:?}", host.name);
        }
        if probe(addr).is_ok() {
            in_a_row += 1;
        } else {
            in_a_row = 0;
            sleep(Duration::from_millis(250));
        }
    }
    Ok(())
}

fn probe(addr: &str) -> std::io::Result<()> {
    let mut conn = TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.write_all(b"probe")?;
    let mut back = [0u8; 5];
    conn.read_exact(&mut back)?;
    if &back != b"probe" {
        return Err(std::io::Error::other("echo differs"));
    }
    Ok(())
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
