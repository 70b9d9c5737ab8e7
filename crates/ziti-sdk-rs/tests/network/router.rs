//! Restarting the network's edge router (started by `cargo xtask ziti-up` as its own
//! process, `ziti router run <ZITI_ROUTER_CONFIG>`): as an operator would, by its pid.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use workspace_tests::network::ZitiNetwork;

use crate::support::within;

fn pid_file(network: &ZitiNetwork) -> std::path::PathBuf {
    network.home.join("pids")
}

/// The running router processes of this network, found by their command line (the
/// recorded pid may be stale when another test restarted the router).
fn router_pids(network: &ZitiNetwork) -> Vec<u32> {
    let config = network.router_config.to_string_lossy().into_owned();
    let entries = fs::read_dir("/proc").expect("/proc is readable");
    entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<String> =
                cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            let is_router = args.windows(3).any(|w| w[0] == "router" && w[1] == "run" && w[2] == config);
            let alive = fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "));
            (is_router && alive).then_some(pid)
        })
        .collect()
}

/// Stops the router (SIGTERM) and waits until it is gone.
pub async fn stop(network: &ZitiNetwork) {
    let pids = router_pids(network);
    assert!(!pids.is_empty(), "no router of this network runs (cargo xtask ziti-up starts one)");
    for pid in &pids {
        // It may exit on its own meanwhile; then there is nothing to signal.
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    }
    within("the router to stop", Duration::from_secs(20), async {
        while !router_pids(network).is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

/// Starts the router again as `ziti-up` does (from the network's home, so that
/// `ziti-down` stops it), and records its pid in place of the old one.
#[allow(clippy::zombie_processes)] // the router outlives this test process; `ziti-down` stops it
pub fn start(network: &ZitiNetwork) {
    if !router_pids(network).is_empty() {
        // Someone else (another test process on this network) started it already.
        return;
    }
    let log = File::options().create(true).append(true).open(network.home.join("router.log")).expect("router log");
    let child = Command::new(&network.ziti_bin)
        .current_dir(&network.home)
        .args(["router", "run"])
        .arg(&network.router_config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("the router starts");
    let pids = fs::read_to_string(pid_file(network)).unwrap_or_default();
    let mut updated: String =
        pids.lines().filter(|line| !line.starts_with("router ")).map(|line| format!("{line}\n")).collect();
    updated.push_str(&format!("router {}\n", child.id()));
    fs::write(pid_file(network), updated).expect("pid file updated");
}
