//! Starting the network's processes and provisioning what the project expects of it.

use std::path::Path;
use std::process::Command;

use anyhow::Result;
use ziti_net_kit::EdgeRouter;

use super::cli::Cli;
use super::layout::{ADMIN_USER, CLIENT_NAME, Layout, ROUTER_NAME, SERVICE_NAME};
use super::process::spawn_detached;

/// The attribute ziti-management gives gateway identities by default (and `ziti-up`
/// gives the gateway's SPIFFE identity).
pub const HOSTS_ROLE: &str = "gateway-hosts";
/// The attribute of identities allowed to dial the gateway's service.
pub const CLIENTS_ROLE: &str = "gateway-clients";

/// The password `ziti edge quickstart` gives the admin when none is passed (it reads
/// one from no variable or file, and its command line is readable by every local
/// user): changed to the network's own at once, see `Cli::change_password`.
pub const BOOTSTRAP_PASSWORD: &str = "admin";

/// `ziti edge quickstart --no-router` with every listener on 127.0.0.1, the admin's
/// password still [`BOOTSTRAP_PASSWORD`].
pub fn start_controller(cli: &Cli, layout: &Layout, port: u16) -> Result<u32> {
    let mut command = cli.command();
    command
        .current_dir(&layout.home)
        .args(["edge", "quickstart", "--no-router", "--ctrl-address", "127.0.0.1"])
        .arg("--ctrl-port")
        .arg(port.to_string())
        .arg("--home")
        .arg(layout.controller_home())
        .args(["-u", ADMIN_USER])
        // The quickstart's defaults bind 0.0.0.0; the config generator honours these.
        .env("ZITI_CTRL_BIND_ADDRESS", "127.0.0.1")
        .env("ZITI_CTRL_EDGE_BIND_ADDRESS", "127.0.0.1");
    crate::step(&format!("starting the controller on 127.0.0.1:{port}"));
    spawn_detached(command, &layout.log("controller"))
}

/// Creates, configures (on 127.0.0.1), enrolls and runs the edge router.
pub fn start_router(cli: &Cli, layout: &Layout, ctrl_port: u16, port: u16) -> Result<u32> {
    crate::step(&format!("enrolling the edge router {ROUTER_NAME} on 127.0.0.1:{port}"));
    let (home, config) = (layout.router_home(), layout.router_config());
    let router = EdgeRouter { name: ROUTER_NAME, home: &home, config: &config, ctrl_port, port };
    router.enroll(|| cli.command())?;
    let mut command = router.run_command(cli.command());
    command.current_dir(&layout.home);
    spawn_detached(command, &layout.log("router"))
}

/// The `gateway` service (end-to-end encryption on, the CLI's default) and its policies.
pub fn service_and_policies(cli: &Cli) -> Result<()> {
    crate::step(&format!("provisioning the service {SERVICE_NAME} and its policies"));
    let service = format!("@{SERVICE_NAME}");
    let hosts = format!("#{HOSTS_ROLE}");
    let clients = format!("#{CLIENTS_ROLE}");
    cli.run(&["edge", "create", "service", SERVICE_NAME, "-a", SERVICE_NAME])?;
    cli.run(&[
        "edge",
        "create",
        "service-policy",
        "gateway-bind",
        "Bind",
        "--service-roles",
        &service,
        "--identity-roles",
        &hosts,
    ])?;
    cli.run(&[
        "edge",
        "create",
        "service-policy",
        "gateway-dial",
        "Dial",
        "--service-roles",
        &service,
        "--identity-roles",
        &clients,
    ])?;
    cli.run(&[
        "edge",
        "create",
        "edge-router-policy",
        "all-identities-all-routers",
        "--identity-roles",
        "#all",
        "--edge-router-roles",
        "#all",
    ])?;
    cli.run(&[
        "edge",
        "create",
        "service-edge-router-policy",
        "all-services-all-routers",
        "--service-roles",
        "#all",
        "--edge-router-roles",
        "#all",
    ])?;
    Ok(())
}

/// Where ziti-management reaches the controller, and where it listens.
#[derive(Debug, Clone, Copy)]
pub struct ManagementPorts {
    pub controller: u16,
    pub grpc: u16,
    pub admin: u16,
}

/// One enrolled identity allowed to dial the service.
pub fn client_identity(cli: &Cli, layout: &Layout) -> Result<()> {
    crate::step(&format!("enrolling the client identity {CLIENT_NAME} (#{CLIENTS_ROLE})"));
    let jwt = layout.home.join(format!("{CLIENT_NAME}.jwt"));
    cli.run(&["edge", "create", "identity", CLIENT_NAME, "-a", CLIENTS_ROLE, "-o", &jwt.to_string_lossy()])?;
    let identity = layout.client_identity();
    cli.run(&["edge", "enroll", &jwt.to_string_lossy(), "-o", &identity.to_string_lossy(), "--keyAlg", "EC"])?;
    Ok(())
}

/// The reference ziti-management against this controller, with its default lease TTL,
/// serving gRPC over TLS with the certificate of `tls::make_management_pki`, and
/// authenticating its callers by X.509-SVID (the `spiffe` method, the trust bundle
/// from SPIRE's Workload API): the policy issues gateway identities to the gateway's
/// SPIFFE ID only; the trust domain's other workloads may resolve callers.
pub fn start_management(
    binary: &Path,
    layout: &Layout,
    ports: ManagementPorts,
    workload_endpoint: &str,
) -> Result<u32> {
    let ManagementPorts { controller: ctrl_port, grpc: grpc_port, admin: admin_port } = ports;
    let trust_domain = super::spiffe::TRUST_DOMAIN;
    let policy = format!(
        "# Written by `cargo xtask ziti-up`.\n\
         # Only the gateway's SPIFFE ID may ask for gateway identities.\n\
         [[allow]]\nspiffe_id = \"{}\"\nservice_types = [\"gateway\"]\nrole_attributes = [\"{HOSTS_ROLE}\"]\n\n\
         # Other workloads of the trust domain may resolve callers, and are issued nothing.\n\
         [[allow]]\nspiffe_id = \"spiffe://{trust_domain}/*\"\nservice_types = []\n",
        super::spiffe::gateway_spiffe_id()
    );
    std::fs::write(layout.management_policy(), policy)?;
    crate::step(&format!("starting ziti-management: gRPC 127.0.0.1:{grpc_port}, admin 127.0.0.1:{admin_port}"));
    let mut command = Command::new(binary);
    // Only what this network says, not a ZITI_MGMT_* the caller's shell happens to hold.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ZITI_MGMT_") {
            command.env_remove(name);
        }
    }
    command
        .current_dir(&layout.home)
        .env("ZITI_MGMT_CONTROLLER_URL", format!("https://127.0.0.1:{ctrl_port}"))
        .env("ZITI_MGMT_CONTROLLER_CA", layout.root_ca())
        .env("ZITI_MGMT_ADMIN_USER", ADMIN_USER)
        .env("ZITI_MGMT_ADMIN_PASSWORD_FILE", layout.admin_password_file())
        .env("ZITI_MGMT_AUTH_METHODS", "spiffe")
        .env("ZITI_MGMT_SPIFFE_TRUST_DOMAIN", super::spiffe::TRUST_DOMAIN)
        .env("ZITI_MGMT_SPIFFE_ENDPOINT_SOCKET", workload_endpoint)
        .env("ZITI_MGMT_POLICY_FILE", layout.management_policy())
        .env("ZITI_MGMT_TLS_CERT", layout.management_cert())
        .env("ZITI_MGMT_TLS_KEY", layout.management_key())
        .env("ZITI_MGMT_GRPC_ADDR", format!("127.0.0.1:{grpc_port}"))
        .env("ZITI_MGMT_ADMIN_ADDR", format!("127.0.0.1:{admin_port}"));
    spawn_detached(command, &layout.log("ziti-management"))
}
