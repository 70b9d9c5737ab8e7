//! Where a network's files live: everything under `target/ziti-net/`.

use std::path::{Path, PathBuf};

pub const ROUTER_NAME: &str = "router-quickstart";
pub const SERVICE_NAME: &str = "gateway";
pub const CLIENT_NAME: &str = "gateway-client";
pub const ADMIN_USER: &str = "admin";

#[derive(Debug, Clone)]
pub struct Layout {
    /// `target/ziti-net`: the network's home, removed whole by `ziti-down`.
    pub home: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Self {
        Self { home: root.join("target/ziti-net") }
    }

    /// The quickstart's own home (controller config, PKI, database).
    pub fn controller_home(&self) -> PathBuf {
        self.home.join("controller")
    }
    pub fn root_ca(&self) -> PathBuf {
        self.controller_home().join("pki/root-ca/certs/root-ca.cert")
    }
    /// The controller's CA bundle as `/.well-known/est/cacerts` serves it (the root and
    /// the edge signing intermediate): what a client of the controller trusts, and the
    /// `id.ca` of every identity ziti-management leases (the gateway's `ZITI_CONTROLLER_CA`).
    pub fn controller_ca_bundle(&self) -> PathBuf {
        self.controller_home().join("pki/intermediate-ca-quickstart/certs/intermediate-ca-quickstart.chain.pem")
    }
    pub fn router_home(&self) -> PathBuf {
        self.home.join("router")
    }
    pub fn router_config(&self) -> PathBuf {
        self.router_home().join(format!("{ROUTER_NAME}.yaml"))
    }
    pub fn cli_config(&self) -> PathBuf {
        self.home.join("cli")
    }
    pub fn client_identity(&self) -> PathBuf {
        self.home.join(format!("{CLIENT_NAME}.json"))
    }
    pub fn admin_password_file(&self) -> PathBuf {
        self.home.join("admin-password")
    }
    /// The CA that signs ziti-management's certificate (the gateway's `ZITI_MANAGEMENT_TLS_CA`).
    pub fn management_ca(&self) -> PathBuf {
        self.home.join("management-ca.pem")
    }
    pub fn management_cert(&self) -> PathBuf {
        self.home.join("management-server.pem")
    }
    pub fn management_key(&self) -> PathBuf {
        self.home.join("management-server.key")
    }
    /// ziti-management's caller policy (who may ask for which identities).
    pub fn management_policy(&self) -> PathBuf {
        self.home.join("management-policy.toml")
    }
    /// SPIRE's server and agent: configs, root CA, data, sockets, logs.
    pub fn spire_dir(&self) -> PathBuf {
        self.home.join("spire")
    }
    /// ORY Hydra's config and log, and the secrets of the clients `ziti-up` made in it.
    pub fn hydra_dir(&self) -> PathBuf {
        self.home.join("hydra")
    }
    pub fn log(&self, process: &str) -> PathBuf {
        self.home.join(format!("{process}.log"))
    }
    /// `name pid` lines of the processes `ziti-up` started.
    pub fn pids(&self) -> PathBuf {
        self.home.join("pids")
    }
    /// The shell-sourceable description of the running network.
    pub fn env_file(&self) -> PathBuf {
        self.home.join("env")
    }
    /// What identifies our processes in `/proc/*/cmdline`: every one names a path in the home.
    pub fn marker(&self) -> String {
        self.home.to_string_lossy().into_owned()
    }
}
