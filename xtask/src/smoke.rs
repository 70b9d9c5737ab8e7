//! Smoke run of the README's run command: the gateway on its embedded defaults must
//! serve HTTP on 127.0.0.1:8080, answer `/healthz` on 127.0.0.1:9090, and stop
//! cleanly on SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const SERVE_ADDR: &str = "127.0.0.1:8080";
const ADMIN_ADDR: &str = "127.0.0.1:9090";

pub fn default_gateway(root: &Path) -> Result<()> {
    let binary = crate::build_binary(root, "gateway-bin", "gateway")?;
    let mut child = Command::new(&binary)
        .current_dir(root)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let outcome = check_running_gateway(&mut child);
    let stopped = stop(&mut child);
    outcome?;
    stopped
}

fn check_running_gateway(child: &mut Child) -> Result<()> {
    let body = wait_for_http(child, SERVE_ADDR, "/")?;
    if !body.contains("\"transport\":\"tcp\"") {
        bail!("GET http://{SERVE_ADDR}/ did not describe a plain-TCP caller: {body}");
    }
    let health = wait_for_http(child, ADMIN_ADDR, "/healthz")?;
    crate::step(&format!("gateway answered on {SERVE_ADDR} and {ADMIN_ADDR}/healthz ({})", health.trim()));
    Ok(())
}

fn stop(child: &mut Child) -> Result<()> {
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().context("sending SIGTERM")?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            if status.success() {
                crate::step("gateway stopped on SIGTERM with exit 0");
                return Ok(());
            }
            bail!("gateway exited with {status} on SIGTERM");
        }
        sleep(Duration::from_millis(50));
    }
    child.kill().ok();
    bail!("gateway did not exit within 5 s of SIGTERM")
}

/// GETs `path` until the server answers 200 (the binary may still be starting).
fn wait_for_http(child: &mut Child, addr: &str, path: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("gateway exited early with {status}");
        }
        match get(addr, path) {
            Ok(response) if response.starts_with("HTTP/1.1 200") => {
                let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
                return Ok(body.to_owned());
            }
            Ok(response) => bail!("GET http://{addr}{path} answered: {response}"),
            Err(err) if Instant::now() >= deadline => {
                return Err(err).with_context(|| format!("GET http://{addr}{path}"));
            }
            Err(_) => sleep(Duration::from_millis(100)),
        }
    }
}

pub(crate) fn get(addr: &str, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}
