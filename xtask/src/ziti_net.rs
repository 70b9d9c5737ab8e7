//! `cargo xtask ziti-up` / `ziti-down`: a real OpenZiti network on loopback.
//!
//! The controller is `ziti edge quickstart --no-router` with its listeners bound to
//! 127.0.0.1; the edge router is configured, enrolled and run as a process of its own
//! (the quickstart's built-in router listens on 0.0.0.0, and a separate router can be
//! restarted by tests). Then the project's service and policies are provisioned, a
//! client identity enrolled, SPIRE started and trusted by the controller (the gateway's
//! SPIFFE identity, see `spiffe`), ORY Hydra started and trusted as an ext-jwt signer
//! (the gateway's IdP identity, see `idp`), and `ziti-management` started against the
//! controller.

pub(crate) mod cli;
mod idp;
pub(crate) mod layout;
pub(crate) mod locate;
mod process;
mod provision;
pub(crate) mod spiffe;
mod tls;

use std::fmt::Write as _;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ziti_net_kit::hydra::HydraAdmin;
use ziti_net_kit::spire::WorkloadApi;

use self::cli::Cli;
use self::layout::{ADMIN_USER, CLIENT_NAME, Layout, ROUTER_NAME, SERVICE_NAME};

const START_TIMEOUT: Duration = Duration::from_secs(90);
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The loopback ports of one network.
#[derive(Debug, Clone, Copy)]
struct Ports {
    controller: u16,
    router: u16,
    management_grpc: u16,
    management_admin: u16,
}

/// Whether `up` found a network running or started one (so a test run stops only its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Reused,
    Started,
}

/// Where ziti-management's executable comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Management {
    /// Built now (`cargo build -p zitimgmt-server`).
    Build,
    /// As the test build left it (`cargo test --no-run` builds it for its own tests);
    /// building it again with another feature set would recompile half the tree.
    BuiltByTests,
}

/// `version`: the OpenZiti release asked for (`--ziti-version`, else `ZITI_VERSION`);
/// `None` runs whichever `ziti` is found first.
pub fn up(root: &Path, version: Option<&str>) -> Result<Outcome> {
    up_with(root, Management::Build, version)
}

pub fn up_with(root: &Path, management: Management, version: Option<&str>) -> Result<Outcome> {
    let layout = Layout::new(root);
    if is_running(&layout) {
        let running = recorded_version(&layout);
        if version.is_none_or(|wanted| running.as_deref() == Some(wanted)) {
            crate::step(&format!(
                "an OpenZiti network ({}) is already running; reusing it",
                running.as_deref().unwrap_or("unknown version")
            ));
            print_env(&layout)?;
            return Ok(Outcome::Reused);
        }
        crate::step(&format!(
            "the running network is {}, not {}; replacing it",
            running.as_deref().unwrap_or("of an unknown version"),
            version.unwrap_or_default()
        ));
        down(root)?;
    }
    if layout.home.exists() {
        crate::step("replacing the stale network in target/ziti-net");
        down(root)?;
    }
    let started = Instant::now();
    if let Err(err) = start(root, &layout, management, version) {
        // Leave nothing half-started behind; the error carries the failing process's log.
        let _ = down(root);
        return Err(err);
    }
    crate::step(&format!("OpenZiti network ready in {:.1} s", started.elapsed().as_secs_f64()));
    print_env(&layout)?;
    Ok(Outcome::Started)
}

pub fn down(root: &Path) -> Result<()> {
    let layout = Layout::new(root);
    let marker = layout.marker();
    let recorded = fs::read_to_string(layout.pids()).unwrap_or_default();
    let mut pids: Vec<u32> = recorded.lines().filter_map(|line| line.split_whitespace().nth(1)?.parse().ok()).collect();
    // Also whatever else runs from the home: a router a test restarted, a stray peer.
    pids.extend(process::find_ours(&marker));
    pids.sort_unstable();
    pids.dedup();
    for pid in &pids {
        process::stop(*pid, &marker, STOP_GRACE)?;
    }
    if layout.home.exists() {
        fs::remove_dir_all(&layout.home).with_context(|| format!("removing {}", layout.home.display()))?;
    }
    crate::step(&format!("OpenZiti network stopped ({} processes) and {} removed", pids.len(), layout.home.display()));
    Ok(())
}

fn start(root: &Path, layout: &Layout, management: Management, version: Option<&str>) -> Result<()> {
    let locate::Ziti { bin: ziti, version } = locate::ziti_binary(root, version)?;
    crate::step(&format!("OpenZiti {version} from {}", ziti.display()));
    let management = match management {
        Management::Build => crate::build_binary(root, "zitimgmt-server", "ziti-management")?,
        Management::BuiltByTests => {
            let binary = crate::target_dir(root).join("debug/ziti-management");
            if !binary.is_file() {
                bail!("{} is missing: the test build should have made it", binary.display());
            }
            binary
        }
    };
    fs::create_dir_all(&layout.home)?;
    fs::set_permissions(&layout.home, fs::Permissions::from_mode(0o700))?;
    let mut ports = Ports { controller: free_port()?, router: free_port()?, management_grpc: 0, management_admin: 0 };
    let password = random_password()?;
    let cli = Cli { bin: ziti.clone(), config_dir: layout.cli_config() };

    let controller_pid = provision::start_controller(&cli, layout, ports.controller)?;
    record_pid(layout, "controller", controller_pid)?;
    let ctrl = format!("127.0.0.1:{}", ports.controller);
    wait_until("the controller to accept the admin login", &layout.log("controller"), || {
        if !process::is_ours(controller_pid, &layout.marker()) {
            bail!("the controller exited");
        }
        Ok(layout.root_ca().is_file()
            && cli.login(&ctrl, ADMIN_USER, provision::BOOTSTRAP_PASSWORD, &layout.root_ca()).is_ok())
    })?;
    // Before anything else is provisioned: the quickstart's default password is known to all.
    cli.change_password(provision::BOOTSTRAP_PASSWORD, &password).context("setting the admin password")?;

    let router_pid = provision::start_router(&cli, layout, ports.controller, ports.router)?;
    record_pid(layout, "router", router_pid)?;
    wait_until(&format!("the edge router {ROUTER_NAME} to come online"), &layout.log("router"), || {
        if !process::is_ours(router_pid, &layout.marker()) {
            bail!("the router exited");
        }
        cli.router_online(ROUTER_NAME)
    })?;

    provision::service_and_policies(&cli)?;
    provision::client_identity(&cli, layout)?;
    let spire = spiffe::start(root, &cli, layout)?;
    let idp = idp::start(root, &cli, layout)?;

    fs::write(layout.admin_password_file(), &password)?;
    fs::set_permissions(layout.admin_password_file(), fs::Permissions::from_mode(0o600))?;
    tls::make_management_pki(layout)?;
    // Chosen only now: a port found free at the start may since have become the local
    // end of one of the many connections the set-up made.
    ports.management_grpc = free_port()?;
    ports.management_admin = free_port()?;
    let management_ports = provision::ManagementPorts {
        controller: ports.controller,
        grpc: ports.management_grpc,
        admin: ports.management_admin,
    };
    let management_pid = provision::start_management(&management, layout, management_ports, &spire.workload_endpoint)?;
    record_pid(layout, "ziti-management", management_pid)?;
    let admin = format!("127.0.0.1:{}", ports.management_admin);
    wait_until("ziti-management to be ready", &layout.log("ziti-management"), || {
        if !process::is_ours(management_pid, &layout.marker()) {
            bail!("ziti-management exited");
        }
        Ok(crate::smoke::get(&admin, "/readyz").is_ok_and(|response| response.starts_with("HTTP/1.1 200")))
    })?;

    write_env(layout, &ziti, &version, &management, &ports, &password, &spire, &idp)
}

/// Polls `ready` every 250 ms, showing progress, until it says yes or `START_TIMEOUT`
/// passes; then fails with the process log's last lines.
fn wait_until(what: &str, log: &Path, mut ready: impl FnMut() -> Result<bool>) -> Result<()> {
    let started = Instant::now();
    let mut shown = 0;
    loop {
        match ready() {
            Ok(true) => {
                crate::step(&format!("{what}: ok after {:.1} s", started.elapsed().as_secs_f64()));
                return Ok(());
            }
            Ok(false) => {}
            Err(err) => {
                bail!("waiting for {what}: {err:#}\n--- {} (last lines) ---\n{}", log.display(), process::tail(log, 20))
            }
        }
        let waited = started.elapsed();
        if waited >= START_TIMEOUT {
            bail!(
                "timed out after {} s waiting for {what}\n--- {} (last lines) ---\n{}",
                START_TIMEOUT.as_secs(),
                log.display(),
                process::tail(log, 20)
            );
        }
        if waited.as_secs() >= shown + 5 {
            shown = waited.as_secs();
            crate::step(&format!("still waiting for {what} ({shown} s)"));
        }
        sleep(Duration::from_millis(250));
    }
}

/// A network is running when every recorded process is alive, ziti-management is ready,
/// the SPIRE agent is healthy and Hydra is ready.
fn is_running(layout: &Layout) -> bool {
    let Ok(recorded) = fs::read_to_string(layout.pids()) else { return false };
    let pids: Vec<u32> = recorded.lines().filter_map(|line| line.split_whitespace().nth(1)?.parse().ok()).collect();
    let env = fs::read_to_string(layout.env_file()).unwrap_or_default();
    let admin = env
        .lines()
        .find_map(|line| line.strip_prefix("export ZITI_MANAGEMENT_ADMIN_ADDR="))
        .map(|v| v.trim_matches('\''));
    let value = |name: &str| {
        let prefix = format!("export {name}=");
        env.lines().find_map(|line| line.strip_prefix(prefix.as_str())).map(|v| v.trim_matches('\'').to_owned())
    };
    // A network from before ziti-management served TLS, or from before SPIRE, is replaced.
    let tls = value("ZITI_MANAGEMENT_TLS_CA").is_some();
    let spire_healthy =
        value("SPIRE_BIN_DIR").zip(value("SPIFFE_ENDPOINT_SOCKET")).is_some_and(|(bin_dir, endpoint)| {
            let socket = endpoint.strip_prefix("unix://").unwrap_or(&endpoint).to_owned();
            WorkloadApi::new(Path::new(&bin_dir), Path::new(&socket)).healthy()
        });
    // A network from before Hydra has no HYDRA_ADMIN_URL, and is replaced.
    let hydra_ready = value("HYDRA_ADMIN_URL")
        .zip(value("ZITI_OIDC_ISSUER"))
        .is_some_and(|(admin_url, issuer)| HydraAdmin::new(&admin_url, &issuer).ready());
    tls && spire_healthy
        && hydra_ready
        && pids.len() == 6
        && pids.iter().all(|pid| process::is_ours(*pid, &layout.marker()))
        && admin.is_some_and(|admin| crate::smoke::get(admin, "/readyz").is_ok_and(|r| r.starts_with("HTTP/1.1 200")))
}

/// The release the running network was started with, from its env file.
fn recorded_version(layout: &Layout) -> Option<String> {
    let env = fs::read_to_string(layout.env_file()).ok()?;
    let prefix = format!("export {}=", locate::VERSION_ENV);
    env.lines().find_map(|line| line.strip_prefix(prefix.as_str())).map(|v| v.trim_matches('\'').to_owned())
}

fn record_pid(layout: &Layout, name: &str, pid: u32) -> Result<()> {
    let mut pids = fs::read_to_string(layout.pids()).unwrap_or_default();
    writeln!(pids, "{name} {pid}")?;
    fs::write(layout.pids(), pids).context("writing the pid file")
}

#[allow(clippy::too_many_arguments)] // one value per part of the network
fn write_env(
    layout: &Layout,
    ziti: &Path,
    version: &str,
    management: &Path,
    ports: &Ports,
    password: &str,
    spire: &spiffe::Running,
    idp: &idp::Running,
) -> Result<()> {
    let quote = |value: &str| format!("'{}'", value.replace('\'', "'\\''"));
    let path = |p: &Path| quote(&p.to_string_lossy());
    let ctrl_url = format!("https://127.0.0.1:{}", ports.controller);
    let lines = [
        ("ZITI_BIN", path(ziti)),
        (locate::VERSION_ENV, quote(version)),
        ("ZITI_CTRL_URL", quote(&ctrl_url)),
        ("ZITI_CTRL_CA", path(&layout.root_ca())),
        // The gateway's names: the controller an SVID logs in to and the CA bundle it is
        // trusted with, which also pin what a leased identity may point at.
        ("ZITI_CONTROLLER_URL", quote(&ctrl_url)),
        ("ZITI_CONTROLLER_CA", path(&layout.controller_ca_bundle())),
        ("ZITI_ADMIN_USER", quote(ADMIN_USER)),
        ("ZITI_ADMIN_PASSWORD", quote(password)),
        ("ZITI_CONFIG_DIR", path(&layout.cli_config())),
        ("ZITI_CLIENT_IDENTITY", path(&layout.client_identity())),
        ("ZITI_SERVICE_NAME", quote(SERVICE_NAME)),
        ("ZITI_ROUTER_NAME", quote(ROUTER_NAME)),
        ("ZITI_ROUTER_CONFIG", path(&layout.router_config())),
        ("ZITI_MANAGEMENT_GRPC_TARGET", quote(&format!("https://127.0.0.1:{}", ports.management_grpc))),
        ("ZITI_MANAGEMENT_TLS_CA", path(&layout.management_ca())),
        ("ZITI_MANAGEMENT_ADMIN_ADDR", quote(&format!("127.0.0.1:{}", ports.management_admin))),
        ("ZITI_MANAGEMENT_BIN", path(management)),
        ("ZITI_NET_HOME", path(&layout.home)),
        ("SPIFFE_ENDPOINT_SOCKET", quote(&spire.workload_endpoint)),
        ("SPIFFE_TRUST_DOMAIN", quote(spiffe::TRUST_DOMAIN)),
        ("SPIRE_SERVER_SOCKET", path(&spire.server_socket)),
        (ziti_net_kit::spire::BIN_DIR_ENV, path(&spire.bin_dir)),
        // The gateway's names for logging in with the token of its Hydra client.
        ("ZITI_OIDC_ISSUER", quote(&idp.issuer)),
        ("ZITI_OIDC_CLIENT_ID", quote(idp::GATEWAY_CLIENT_ID)),
        ("ZITI_OIDC_CLIENT_SECRET_FILE", path(&idp.secret_file)),
        ("ZITI_OIDC_AUDIENCE", quote(idp::AUDIENCE)),
        // For tests that make Hydra clients of their own.
        ("HYDRA_ADMIN_URL", quote(&idp.admin_url)),
        (ziti_net_kit::hydra::BIN_ENV, path(&idp.bin)),
    ];
    let mut text = format!("# The OpenZiti network of `cargo xtask ziti-up` (client identity: {CLIENT_NAME}).\n");
    for (name, value) in lines {
        writeln!(text, "export {name}={value}")?;
    }
    fs::write(layout.env_file(), text)?;
    fs::set_permissions(layout.env_file(), fs::Permissions::from_mode(0o600))?;
    Ok(())
}

fn print_env(layout: &Layout) -> Result<()> {
    let env = fs::read_to_string(layout.env_file()).context("reading the network's env file")?;
    println!("{env}");
    crate::step(&format!(
        "written to {} (source it: `. {}`)",
        layout.env_file().display(),
        layout.env_file().display()
    ));
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?.local_addr()?.port())
}

/// A fresh admin password per network (it never leaves `target/ziti-net/`).
fn random_password() -> Result<String> {
    let mut buf = [0u8; 18];
    std::io::Read::read_exact(&mut fs::File::open("/dev/urandom")?, &mut buf).context("reading /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Prints the last lines of each process log (after a failed test run, before `down`
/// removes them).
pub fn show_logs(root: &Path) {
    let layout = Layout::new(root);
    let spire = ["spire-server", "spire-agent"].map(|name| layout.spire_dir().join(format!("{name}.log")));
    let hydra = layout.hydra_dir().join("hydra.log");
    let logs = ["controller", "router", "ziti-management"].map(|name| layout.log(name));
    for log in logs.iter().chain(&spire).chain([&hydra]) {
        eprintln!("--- {} (last lines) ---\n{}", log.display(), process::tail(log, 40));
    }
}
