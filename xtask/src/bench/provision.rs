//! The benchmark's own services, identities and policies on the network of `ziti-up`
//! (idempotent): nothing the project's tests use is touched or shared.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::ziti_net::cli::Cli;

/// The echo service both hosts take turns to bind (end-to-end encryption on, as `gateway`).
pub const ECHO_SERVICE: &str = "bench-echo";
/// The service the gateway binds for the end-to-end measure (its leased identities carry
/// `#gateway-hosts`, ziti-management's default).
pub const GATEWAY_SERVICE: &str = "bench-gateway";
/// The service `ziti tunnel host` hosts in front of the gateway on plain TCP.
pub const GATEWAY_TUNNEL_SERVICE: &str = "bench-gateway-tunnel";
/// The `host.v1` configs that tell `ziti tunnel host` where each service's TCP app listens.
const ECHO_HOST_CONFIG: &str = "bench-echo-host";
const GATEWAY_HOST_CONFIG: &str = "bench-gateway-tunnel-host";
const HOST: &str = "bench-host";
const CLIENT: &str = "bench-client";

/// What the benchmark runs with: identity files under `target/ziti-net/bench/`.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub host_identity: PathBuf,
    pub client_identity: PathBuf,
}

pub fn ensure(cli: &Cli, dir: &Path) -> Result<Provisioned> {
    ensure_service(cli, ECHO_SERVICE)?;
    ensure_service(cli, GATEWAY_SERVICE)?;
    ensure_service(cli, GATEWAY_TUNNEL_SERVICE)?;
    ensure_policy(cli, "bench-echo-bind", "Bind", ECHO_SERVICE, "#bench-hosts")?;
    ensure_policy(cli, "bench-echo-dial", "Dial", ECHO_SERVICE, "#bench-clients")?;
    ensure_policy(cli, "bench-gateway-bind", "Bind", GATEWAY_SERVICE, "#gateway-hosts")?;
    ensure_policy(cli, "bench-gateway-dial", "Dial", GATEWAY_SERVICE, "#bench-clients")?;
    ensure_policy(cli, "bench-gateway-tunnel-bind", "Bind", GATEWAY_TUNNEL_SERVICE, "#bench-hosts")?;
    ensure_policy(cli, "bench-gateway-tunnel-dial", "Dial", GATEWAY_TUNNEL_SERVICE, "#bench-clients")?;
    Ok(Provisioned {
        host_identity: ensure_identity(cli, dir, HOST, "bench-hosts")?,
        client_identity: ensure_identity(cli, dir, CLIENT, "bench-clients")?,
    })
}

/// Points `ziti tunnel host` at the TCP app behind `service` (the echo service, or the
/// gateway's tunnel service): a `host.v1` config on 127.0.0.1:`port`, attached to it.
pub fn host_at(cli: &Cli, service: &str, port: u16) -> Result<()> {
    let config = if service == ECHO_SERVICE { ECHO_HOST_CONFIG } else { GATEWAY_HOST_CONFIG };
    let data = format!(r#"{{"protocol":"tcp","address":"127.0.0.1","port":{port}}}"#);
    if exists(cli, "configs", config)? {
        cli.run(&["edge", "update", "config", config, "--data", &data])?;
    } else {
        cli.run(&["edge", "create", "config", config, "host.v1", &data])?;
    }
    cli.run(&["edge", "update", "service", service, "--configs", config])?;
    Ok(())
}

fn exists(cli: &Cli, kind: &str, name: &str) -> Result<bool> {
    let listing = cli.run(&["edge", "list", kind, &format!("name=\"{name}\""), "-j"])?;
    let json: serde_json::Value =
        serde_json::from_str(&listing).with_context(|| format!("parsing `ziti edge list {kind} -j`"))?;
    Ok(json["data"].as_array().is_some_and(|found| !found.is_empty()))
}

fn ensure_service(cli: &Cli, name: &str) -> Result<()> {
    if !exists(cli, "services", name)? {
        crate::step(&format!("bench: creating the service {name}"));
        cli.run(&["edge", "create", "service", name, "-a", "bench"])?;
    }
    Ok(())
}

fn ensure_policy(cli: &Cli, name: &str, kind: &str, service: &str, identities: &str) -> Result<()> {
    if !exists(cli, "service-policies", name)? {
        let service = format!("@{service}");
        cli.run(&[
            "edge",
            "create",
            "service-policy",
            name,
            kind,
            "--service-roles",
            &service,
            "--identity-roles",
            identities,
        ])?;
    }
    Ok(())
}

/// An enrolled identity file; recreated when the file or the controller's record is gone
/// (a fresh network keeps no file of an old one).
fn ensure_identity(cli: &Cli, dir: &Path, name: &str, role: &str) -> Result<PathBuf> {
    let file = dir.join(format!("{name}.json"));
    let known = exists(cli, "identities", name)?;
    if known && file.is_file() {
        return Ok(file);
    }
    if known {
        cli.run(&["edge", "delete", "identity", name])?;
    }
    crate::step(&format!("bench: enrolling the identity {name} (#{role})"));
    let jwt = dir.join(format!("{name}.jwt"));
    cli.run(&["edge", "create", "identity", name, "-a", role, "-o", &jwt.to_string_lossy()])?;
    cli.run(&["edge", "enroll", &jwt.to_string_lossy(), "-o", &file.to_string_lossy(), "--keyAlg", "EC"])?;
    Ok(file)
}
