//! The Go SDK peers of the `ziti` executable: an echo server hosting the overlay
//! service with an issued identity, and `zcat` dialing it as the client identity.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use workspace_tests::network::ZitiNetwork;

/// `ziti demo echo-server` hosting `service` with `identity`; killed on drop.
#[derive(Debug)]
pub struct EchoServer {
    child: Child,
    log: PathBuf,
}

impl EchoServer {
    pub fn start(network: &ZitiNetwork, identity: &Path, service: &str, log_dir: &Path) -> Self {
        let log = log_dir.join("echo-server.log");
        let file = File::create(&log).expect("log file");
        let child = network
            .ziti()
            .args(["demo", "echo-server", "--cli-agent=false", "-s", service, "-i"])
            .arg(identity)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("spawn ziti demo echo-server");
        Self { child, log }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Sends `payload` through `ziti demo zcat` as `identity` to `service`; returns what
/// came back within `within` (possibly partial), and zcat's stderr.
pub fn zcat(
    network: &ZitiNetwork,
    identity: &Path,
    service: &str,
    payload: &[u8],
    within: Duration,
) -> (Vec<u8>, String) {
    let mut child = network
        .ziti()
        .args(["demo", "zcat", "-i"])
        .arg(identity)
        .arg(format!("ziti:{service}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ziti demo zcat");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let payload_owned = payload.to_vec();
    // Kept open until the echo is back: closing stdin early may end the connection first.
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&payload_owned).ok();
        stdin.flush().ok();
        done_rx.recv_timeout(Duration::from_secs(60)).ok();
    });
    let (bytes_tx, bytes_rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        while let Ok(n) = stdout.read(&mut buffer) {
            if n == 0 || bytes_tx.send(buffer[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).ok();
        text
    });
    let deadline = Instant::now() + within;
    let mut received = Vec::new();
    while received.len() < payload.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match bytes_rx.recv_timeout(left) {
            Ok(chunk) => received.extend_from_slice(&chunk),
            Err(_) => break,
        }
    }
    done_tx.send(()).ok();
    child.kill().ok();
    child.wait().ok();
    writer.join().ok();
    let stderr = err_reader.join().unwrap_or_default();
    (received, stderr)
}

/// Round trips `payload` until it comes back intact (the host's terminator may take
/// a few seconds to appear), at most `attempts` times. Returns the attempts used.
pub fn echo_round_trip(
    network: &ZitiNetwork,
    client: &Path,
    service: &str,
    payload: &[u8],
    attempts: usize,
) -> Result<usize, String> {
    let mut last = String::new();
    for attempt in 1..=attempts {
        let (received, stderr) = zcat(network, client, service, payload, Duration::from_secs(10));
        if received == payload {
            return Ok(attempt);
        }
        last = format!("attempt {attempt}: got {} of {} bytes; zcat said: {stderr}", received.len(), payload.len());
        std::thread::sleep(Duration::from_secs(1));
    }
    Err(last)
}
