//! The real OpenZiti network started by `cargo xtask ziti-up`, as tests see it.
//!
//! `cargo xtask ziti-up` writes `target/ziti-net/env`, which tests read here (it is
//! not exported to them, so the gateway's own config tests see no stray `ZITI_*`
//! variables). A test that needs the network takes it from [`ZitiNetwork::from_env`],
//! which panics when there is none: a network test must fail loudly, never pass by
//! skipping.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ziti_net_kit::EdgeRouter;
use ziti_net_kit::ext_jwt::IDP_AUTH_POLICY;
use ziti_net_kit::hydra::{self, HydraAdmin, HydraError};
use ziti_net_kit::spire::{
    Spire, SpireBinaries, SpireError, SpireServer, SpireSettings, WorkloadApi, X509Svid, current_uid,
};
use ziti_net_kit::third_party_ca;

/// Where the network's description is written, relative to the workspace root.
pub const ENV_FILE: &str = "target/ziti-net/env";

/// The variables of the env file, each read once here.
const VARIABLES: [&str; 28] = [
    "ZITI_BIN",
    "ZITI_VERSION",
    "ZITI_CTRL_URL",
    "ZITI_CTRL_CA",
    "ZITI_ADMIN_USER",
    "ZITI_ADMIN_PASSWORD",
    "ZITI_CONFIG_DIR",
    "ZITI_CLIENT_IDENTITY",
    "ZITI_SERVICE_NAME",
    "ZITI_ROUTER_NAME",
    "ZITI_MANAGEMENT_GRPC_TARGET",
    "ZITI_MANAGEMENT_TLS_CA",
    "ZITI_MANAGEMENT_ADMIN_ADDR",
    "ZITI_MANAGEMENT_BIN",
    "ZITI_NET_HOME",
    "ZITI_ROUTER_CONFIG",
    "ZITI_CONTROLLER_URL",
    "ZITI_CONTROLLER_CA",
    "SPIFFE_ENDPOINT_SOCKET",
    "SPIFFE_TRUST_DOMAIN",
    "SPIRE_SERVER_SOCKET",
    "SPIRE_BIN_DIR",
    "ZITI_OIDC_ISSUER",
    "ZITI_OIDC_CLIENT_ID",
    "ZITI_OIDC_CLIENT_SECRET_FILE",
    "ZITI_OIDC_AUDIENCE",
    "HYDRA_ADMIN_URL",
    "HYDRA_BIN",
];

/// A running controller, edge router and ziti-management on loopback.
#[derive(Debug, Clone)]
pub struct ZitiNetwork {
    /// The `ziti` executable (controller, router, CLI, Go SDK peers).
    pub ziti_bin: PathBuf,
    /// The OpenZiti release the network runs, e.g. `v1.6.20`.
    pub version: String,
    /// The controller's API base, e.g. `https://127.0.0.1:1280`.
    pub ctrl_url: String,
    /// The network's root CA (PEM).
    pub ctrl_ca: PathBuf,
    pub admin_user: String,
    pub admin_password: String,
    /// The CLI's config directory, logged in as the admin.
    pub config_dir: PathBuf,
    /// An enrolled identity JSON with the role attribute `gateway-clients`.
    pub client_identity: PathBuf,
    /// The overlay service (`gateway`, end-to-end encryption on).
    pub service_name: String,
    pub router_name: String,
    /// The router's configuration, for restarting it (`ziti router run`).
    pub router_config: PathBuf,
    /// The network's ziti-management, e.g. `https://127.0.0.1:50051` (TLS only).
    pub management_grpc_target: String,
    /// The CA (PEM) that signs its certificate, for 127.0.0.1 and `localhost`.
    pub management_tls_ca: PathBuf,
    /// Its `/healthz`, `/readyz`, `/metrics` listener, `127.0.0.1:PORT`.
    pub management_admin_addr: String,
    /// The `ziti-management` executable, for tests that need one configured otherwise.
    pub management_bin: PathBuf,
    /// The network's home directory under `target/ziti-net/`.
    pub home: PathBuf,
    /// The gateway's `ZITI_CONTROLLER_URL` (the controller's API base, as `ctrl_url`).
    pub controller_url: String,
    /// The gateway's `ZITI_CONTROLLER_CA`: the controller's CA bundle (root and edge
    /// signer, as `/.well-known/est/cacerts` serves it).
    pub controller_ca_bundle: PathBuf,
    /// The SPIRE agent's Workload API, `unix:///...` (`SPIFFE_ENDPOINT_SOCKET`).
    pub spiffe_endpoint_socket: String,
    /// The trust domain of the network's SPIRE, whose root the controller trusts.
    pub spiffe_trust_domain: String,
    /// The SPIRE server's admin socket.
    pub spire_server_socket: PathBuf,
    /// The directory holding `spire-server` and `spire-agent`.
    pub spire_bin_dir: PathBuf,
    /// The network's Hydra's issuer, `http://127.0.0.1:PORT` (the gateway's `ZITI_OIDC_ISSUER`).
    pub oidc_issuer: String,
    /// The gateway's Hydra client, `gateway-idp`: also the external id of the identity
    /// `gateway-idp` (`#gateway-hosts`, auth policy `idp-jwt`).
    pub oidc_client_id: String,
    /// The file (0600) holding that client's secret.
    pub oidc_client_secret_file: PathBuf,
    /// The `aud` the controller demands of IdP tokens, `openziti`.
    pub oidc_audience: String,
    /// Hydra's admin API, `http://127.0.0.1:PORT`.
    pub hydra_admin_url: String,
    /// The `hydra` executable.
    pub hydra_bin: PathBuf,
}

impl ZitiNetwork {
    /// The network from `target/ziti-net/env`, else from the process environment.
    ///
    /// # Panics
    /// When neither describes a network: run the tests with `cargo xtask test`, or
    /// start one with `cargo xtask ziti-up`.
    pub fn from_env() -> Self {
        match Self::load() {
            Ok(network) => network,
            Err(missing) => panic!(
                "this test needs the real OpenZiti network, but {missing}. \
                 Run the tests with `cargo xtask test` (it starts the network), or start it \
                 with `cargo xtask ziti-up` first (it writes {ENV_FILE})."
            ),
        }
    }

    fn load() -> Result<Self, String> {
        let file = workspace_root().join(ENV_FILE);
        let from_file = std::fs::read_to_string(&file).map(|text| parse_env(&text)).unwrap_or_default();
        let mut values = HashMap::new();
        for name in VARIABLES {
            // The file describes the network that runs now; a shell may hold stale values.
            let value = from_file.get(name).cloned().or_else(|| std::env::var(name).ok());
            match value {
                Some(value) if !value.is_empty() => values.insert(name, value),
                _ => return Err(format!("{name} is neither set nor in {}", file.display())),
            };
        }
        let take = |name: &str| values.get(name).cloned().unwrap_or_default();
        Ok(Self {
            ziti_bin: take("ZITI_BIN").into(),
            version: take("ZITI_VERSION"),
            ctrl_url: take("ZITI_CTRL_URL"),
            ctrl_ca: take("ZITI_CTRL_CA").into(),
            admin_user: take("ZITI_ADMIN_USER"),
            admin_password: take("ZITI_ADMIN_PASSWORD"),
            config_dir: take("ZITI_CONFIG_DIR").into(),
            client_identity: take("ZITI_CLIENT_IDENTITY").into(),
            service_name: take("ZITI_SERVICE_NAME"),
            router_name: take("ZITI_ROUTER_NAME"),
            router_config: take("ZITI_ROUTER_CONFIG").into(),
            management_grpc_target: take("ZITI_MANAGEMENT_GRPC_TARGET"),
            management_tls_ca: take("ZITI_MANAGEMENT_TLS_CA").into(),
            management_admin_addr: take("ZITI_MANAGEMENT_ADMIN_ADDR"),
            management_bin: take("ZITI_MANAGEMENT_BIN").into(),
            home: take("ZITI_NET_HOME").into(),
            controller_url: take("ZITI_CONTROLLER_URL"),
            controller_ca_bundle: take("ZITI_CONTROLLER_CA").into(),
            spiffe_endpoint_socket: take("SPIFFE_ENDPOINT_SOCKET"),
            spiffe_trust_domain: take("SPIFFE_TRUST_DOMAIN"),
            spire_server_socket: take("SPIRE_SERVER_SOCKET").into(),
            spire_bin_dir: take("SPIRE_BIN_DIR").into(),
            oidc_issuer: take("ZITI_OIDC_ISSUER"),
            oidc_client_id: take("ZITI_OIDC_CLIENT_ID"),
            oidc_client_secret_file: take("ZITI_OIDC_CLIENT_SECRET_FILE").into(),
            oidc_audience: take("ZITI_OIDC_AUDIENCE"),
            hydra_admin_url: take("HYDRA_ADMIN_URL"),
            hydra_bin: take("HYDRA_BIN").into(),
        })
    }

    /// Whether this release's edge routers tell a host who dialed it, from the dialer's
    /// session (headers 1034/1035, OpenZiti v2 and later), rather than passing on only
    /// what the dialing SDK claims (header 1008, v1.x).
    pub fn routers_vouch_for_dialers(&self) -> bool {
        vouches_for_dialers(&self.version)
    }

    /// Whether this release's edge routers end a host's Bind when its identity loses the
    /// Bind permission (StateClosed, "bind access lost", OpenZiti v2 and later); v1.x
    /// routers keep the terminator and go on routing dials to it.
    pub fn routers_end_binds_on_lost_permission(&self) -> bool {
        vouches_for_dialers(&self.version)
    }

    /// The gateway's settings for reaching the network's ziti-management: over TLS,
    /// presenting the gateway's X.509-SVID (ziti-management admits callers by SPIFFE ID).
    pub fn management_env(&self) -> [(&'static str, String); 4] {
        [
            ("ZITI_MANAGEMENT_GRPC_TARGET", self.management_grpc_target.clone()),
            ("ZITI_MANAGEMENT_TLS_CA", self.management_tls_ca.to_string_lossy().into_owned()),
            ("SPIFFE_ENDPOINT_SOCKET", self.spiffe_endpoint_socket.clone()),
            ("ZITI_SPIFFE_ID", self.gateway_spiffe_id()),
        ]
    }

    /// The `ziti` executable with the network's logged-in CLI configuration.
    pub fn ziti(&self) -> Command {
        let mut command = Command::new(&self.ziti_bin);
        command.env("ZITI_CONFIG_DIR", &self.config_dir);
        command
    }
}

/// How long a new SPIRE entry may take to reach the agent (it syncs about every 5 s).
pub const SVID_TIMEOUT: Duration = Duration::from_secs(30);

impl ZitiNetwork {
    /// The gateway's settings for taking its identity from SPIRE: the Workload API and
    /// the controller it logs in to.
    pub fn spiffe_env(&self) -> [(&'static str, String); 3] {
        [
            ("SPIFFE_ENDPOINT_SOCKET", self.spiffe_endpoint_socket.clone()),
            ("ZITI_CONTROLLER_URL", self.controller_url.clone()),
            ("ZITI_CONTROLLER_CA", self.controller_ca_bundle.to_string_lossy().into_owned()),
        ]
    }

    /// The network's SPIRE agent, for this process's uid.
    pub fn workload_api(&self) -> WorkloadApi {
        let socket = self.spiffe_endpoint_socket.strip_prefix("unix://").unwrap_or(&self.spiffe_endpoint_socket);
        WorkloadApi::new(&self.spire_bin_dir, Path::new(socket))
    }

    /// The network's SPIRE server.
    pub fn spire_server(&self) -> SpireServer {
        SpireServer::new(&self.spire_bin_dir, &self.spire_server_socket, &self.spiffe_trust_domain)
    }

    /// The SPIFFE ID `ziti-up` registered for the gateway (this uid, X.509-SVID TTL 120 s);
    /// the identity `gateway-spiffe` (`#gateway-hosts`) has it as its external id.
    pub fn gateway_spiffe_id(&self) -> String {
        format!("spiffe://{}/gateway", self.spiffe_trust_domain)
    }

    /// `spiffe://<trust domain>/<path>` in the network's trust domain.
    pub fn spiffe_id(&self, path: &str) -> String {
        format!("spiffe://{}/{}", self.spiffe_trust_domain, path.trim_start_matches('/'))
    }

    /// Registers `spiffe_id` (in the network's trust domain) for this process's uid, its
    /// X.509-SVIDs living `x509_svid_ttl`; the entry is deleted when the guard drops.
    /// An entry that a killed test left for the same SPIFFE ID is replaced (so is one a
    /// concurrent run of the same test holds: give concurrent tests their own IDs).
    ///
    /// # Panics
    /// When SPIRE refuses it.
    pub fn create_spiffe_entry(&self, spiffe_id: &str, x509_svid_ttl: Duration) -> SpiffeEntry {
        let server = self.spire_server();
        let uid = current_uid().unwrap_or_else(|err| panic!("this process's uid: {err}"));
        let create = || server.create_entry(spiffe_id, uid, x509_svid_ttl);
        let created = match create() {
            Err(SpireError::EntryExists { .. }) => {
                let leftovers = server.entry_ids(spiffe_id).unwrap_or_default();
                for leftover in leftovers {
                    let _ = server.delete_entry(&leftover);
                }
                create()
            }
            other => other,
        };
        let id = created.unwrap_or_else(|err| panic!("creating the SPIRE entry {spiffe_id}: {err}"));
        SpiffeEntry { server, id, spiffe_id: spiffe_id.to_owned() }
    }

    /// An OpenZiti identity `name` that logs in with an X.509-SVID of `external_id`
    /// (no enrollment, the cert-only auth policy that refuses expired certificates),
    /// with `role_attributes` (e.g. `gateway-hosts`). Returns its id; an existing one of
    /// that name is updated.
    ///
    /// # Panics
    /// When the controller refuses it.
    pub fn spiffe_identity(&self, name: &str, external_id: &str, role_attributes: &[&str]) -> String {
        let policy = third_party_ca::cert_only_auth_policy(|| self.ziti(), third_party_ca::SPIFFE_AUTH_POLICY)
            .unwrap_or_else(|err| panic!("the auth policy {}: {err}", third_party_ca::SPIFFE_AUTH_POLICY));
        third_party_ca::external_id_identity(|| self.ziti(), name, external_id, &policy, role_attributes)
            .unwrap_or_else(|err| panic!("the identity {name}: {err}"))
    }

    /// A second SPIRE (server and agent) with its own root and `trust_domain`, which
    /// the controller does not trust unless a test registers it; stopped and its
    /// directory (under the network's home, so `ziti-down` ends a stray one) removed
    /// when dropped.
    ///
    /// # Panics
    /// When it cannot be started.
    pub fn start_throwaway_spire(&self, trust_domain: &str) -> ThrowawaySpire {
        let binaries = SpireBinaries::in_dir(&self.spire_bin_dir, ziti_net_kit::spire::Found::BinDirEnv)
            .unwrap_or_else(|err| panic!("SPIRE in {}: {err}", self.spire_bin_dir.display()));
        let dir = self.home.join(format!("spire-{trust_domain}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir); // a leftover of a killed run with a recycled pid
        let settings = SpireSettings { binaries: &binaries, trust_domain, dir: &dir };
        let spire = Spire::start(&settings, &mut |_| {})
            .unwrap_or_else(|err| panic!("starting a throwaway SPIRE for {trust_domain}: {err}"));
        ThrowawaySpire { spire: Some(spire), dir }
    }
}

impl ZitiNetwork {
    /// The gateway's settings for logging in with its Hydra client's token
    /// (`ZITI_IDENTITY_SOURCE=jwt`): the IdP, the client, and the controller.
    pub fn oidc_env(&self) -> [(&'static str, String); 6] {
        [
            ("ZITI_OIDC_ISSUER", self.oidc_issuer.clone()),
            ("ZITI_OIDC_CLIENT_ID", self.oidc_client_id.clone()),
            ("ZITI_OIDC_CLIENT_SECRET_FILE", self.oidc_client_secret_file.to_string_lossy().into_owned()),
            ("ZITI_OIDC_AUDIENCE", self.oidc_audience.clone()),
            ("ZITI_CONTROLLER_URL", self.controller_url.clone()),
            ("ZITI_CONTROLLER_CA", self.controller_ca_bundle.to_string_lossy().into_owned()),
        ]
    }

    /// The network's Hydra: its admin API (clients) and token endpoint.
    pub fn hydra(&self) -> HydraAdmin {
        HydraAdmin::new(&self.hydra_admin_url, &self.oidc_issuer)
    }

    /// A Hydra access token (a JWT) for the client `client_id`, for the audience the
    /// controller demands, with `scopes` (each must be one the client may ask for).
    ///
    /// # Panics
    /// When Hydra refuses it.
    pub fn idp_token(&self, client_id: &str, secret: &str, scopes: &[&str]) -> String {
        self.hydra()
            .token(client_id, secret, &self.oidc_audience, scopes)
            .unwrap_or_else(|err| panic!("a Hydra token for {client_id}: {err}"))
    }

    /// A new Hydra client `client_id` with a random secret, allowed the controller's
    /// audience and `scopes`; deleted from Hydra when dropped. A client that a killed
    /// test left under that id is replaced.
    ///
    /// # Panics
    /// When Hydra refuses it.
    pub fn idp_client(&self, client_id: &str, scopes: &[&str]) -> IdpClient {
        self.idp_client_for(client_id, &[&self.oidc_audience], scopes)
    }

    /// As [`ZitiNetwork::idp_client`], allowed to ask for tokens for `audiences`.
    ///
    /// # Panics
    /// When Hydra refuses it.
    pub fn idp_client_for(&self, client_id: &str, audiences: &[&str], scopes: &[&str]) -> IdpClient {
        let hydra = self.hydra();
        let secret = hydra::random_secret().unwrap_or_else(|err| panic!("a client secret: {err}"));
        let create = || hydra.create_client(client_id, &secret, audiences, scopes);
        let created = match create() {
            Err(HydraError::ClientExists { .. }) => {
                let _ = hydra.delete_client(client_id);
                create()
            }
            other => other,
        };
        created.unwrap_or_else(|err| panic!("creating the Hydra client {client_id}: {err}"));
        let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("a directory for the client secret: {err}"));
        let secret_file = dir.path().join(format!("{client_id}.secret"));
        hydra::write_secret_file(&secret_file, &secret).unwrap_or_else(|err| panic!("the client secret file: {err}"));
        IdpClient {
            hydra,
            client_id: client_id.to_owned(),
            secret,
            scopes: scopes.iter().map(|scope| (*scope).to_owned()).collect(),
            audience: self.oidc_audience.clone(),
            secret_file,
            _dir: dir,
        }
    }

    /// An OpenZiti identity `name` that logs in only with a Hydra token whose `sub` is
    /// `external_id` (a Hydra client id; no enrollment, the auth policy `idp-jwt`), with
    /// `role_attributes`; deleted from the controller when dropped. An existing one of
    /// that name is updated.
    ///
    /// # Panics
    /// When the controller refuses it.
    pub fn idp_identity(&self, name: &str, external_id: &str, role_attributes: &[&str]) -> IdpIdentity {
        // The CLI takes the policy by name as well as by id.
        let id =
            third_party_ca::external_id_identity(|| self.ziti(), name, external_id, IDP_AUTH_POLICY, role_attributes)
                .unwrap_or_else(|err| panic!("the identity {name}: {err}"));
        IdpIdentity { network: self.clone(), name: name.to_owned(), id }
    }
}

/// A Hydra client of a test, see [`ZitiNetwork::idp_client`]; deleted from Hydra when
/// dropped. `Debug` leaves the secret out.
pub struct IdpClient {
    hydra: HydraAdmin,
    client_id: String,
    secret: String,
    scopes: Vec<String>,
    audience: String,
    secret_file: PathBuf,
    /// Holds the secret file; removed when dropped.
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for IdpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdpClient")
            .field("client_id", &self.client_id)
            .field("secret", &"<redacted>")
            .field("scopes", &self.scopes)
            .field("secret_file", &self.secret_file)
            .finish_non_exhaustive()
    }
}

impl IdpClient {
    /// Its client id: the `sub` of its tokens.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Its secret.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// A file (mode 0600, in a directory of its own) holding its secret, e.g. for the
    /// gateway's `ZITI_OIDC_CLIENT_SECRET_FILE`.
    pub fn secret_file(&self) -> &Path {
        &self.secret_file
    }

    /// A token for the controller's audience with the scopes the client was made with.
    ///
    /// # Panics
    /// When Hydra refuses it.
    pub fn token(&self) -> String {
        let scopes: Vec<&str> = self.scopes.iter().map(String::as_str).collect();
        self.token_for(&self.audience, &scopes)
    }

    /// A token for `audience` (none when empty) with `scopes`.
    ///
    /// # Panics
    /// When Hydra refuses it.
    pub fn token_for(&self, audience: &str, scopes: &[&str]) -> String {
        self.hydra
            .token(&self.client_id, &self.secret, audience, scopes)
            .unwrap_or_else(|err| panic!("a Hydra token for {}: {err}", self.client_id))
    }
}

impl Drop for IdpClient {
    fn drop(&mut self) {
        let _ = self.hydra.delete_client(&self.client_id);
    }
}

/// An OpenZiti identity of a test that logs in with Hydra tokens, see
/// [`ZitiNetwork::idp_identity`]; deleted from the controller when dropped.
#[derive(Debug)]
pub struct IdpIdentity {
    network: ZitiNetwork,
    /// Its name.
    pub name: String,
    /// Its id on the controller.
    pub id: String,
}

impl Drop for IdpIdentity {
    fn drop(&mut self) {
        let _ = self.network.ziti().args(["edge", "delete", "identity", &self.name]).output();
    }
}

/// A SPIRE registration entry for this uid, deleted when dropped.
#[derive(Debug)]
pub struct SpiffeEntry {
    server: SpireServer,
    /// SPIRE's id of the entry.
    pub id: String,
    /// The SPIFFE ID it issues.
    pub spiffe_id: String,
}

impl Drop for SpiffeEntry {
    fn drop(&mut self) {
        let _ = self.server.delete_entry(&self.id);
    }
}

/// A SPIRE of its own for one test, see [`ZitiNetwork::start_throwaway_spire`].
#[derive(Debug)]
pub struct ThrowawaySpire {
    spire: Option<Spire>,
    dir: PathBuf,
}

impl ThrowawaySpire {
    /// The running SPIRE (its server, Workload API, root CA).
    pub fn spire(&self) -> &Spire {
        self.spire.as_ref().unwrap_or_else(|| unreachable!("present until dropped"))
    }

    /// Stops its agent: the Workload API goes away, the server and entries stay.
    pub fn stop_agent(&mut self) -> Result<(), SpireError> {
        self.spire.as_mut().map_or(Ok(()), Spire::stop_agent)
    }

    /// Starts its agent again after [`ThrowawaySpire::stop_agent`] and waits until it
    /// is healthy (it has to sync before it issues SVIDs again).
    pub fn start_agent(&mut self) -> Result<(), SpireError> {
        self.spire.as_mut().map_or(Ok(()), Spire::start_agent)
    }

    /// Registers `spiffe_id` for this uid and waits for the agent to issue its
    /// X.509-SVID (the entry stays until the SPIRE is dropped).
    ///
    /// # Panics
    /// When SPIRE refuses the entry or issues no SVID within [`SVID_TIMEOUT`].
    pub fn issue_svid(&self, spiffe_id: &str, x509_svid_ttl: Duration) -> X509Svid {
        let uid = current_uid().unwrap_or_else(|err| panic!("this process's uid: {err}"));
        self.spire()
            .server()
            .create_entry(spiffe_id, uid, x509_svid_ttl)
            .unwrap_or_else(|err| panic!("creating the SPIRE entry {spiffe_id}: {err}"));
        self.spire()
            .workload_api()
            .wait_for_svid(spiffe_id, SVID_TIMEOUT)
            .unwrap_or_else(|err| panic!("the SVID {spiffe_id}: {err}"))
    }
}

impl Drop for ThrowawaySpire {
    fn drop(&mut self) {
        if let Some(spire) = self.spire.take() {
            let _ = spire.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// `KEY=VALUE` lines, values optionally single-quoted (as `ziti-up` writes them).
fn vouches_for_dialers(version: &str) -> bool {
    let major = version.trim_start_matches('v').split('.').next().and_then(|major| major.parse::<u32>().ok());
    major.is_some_and(|major| major >= 2)
}

fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("export ").unwrap_or(line.trim()).split_once('='))
        .map(|(key, value)| {
            let value = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')).unwrap_or(value);
            (key.to_owned(), value.replace("'\\''", "'"))
        })
        .collect()
}

impl ZitiNetwork {
    /// Stops the edge router and starts it again (as `ziti-up` ran it), then waits
    /// until the controller sees it online.
    ///
    /// # Panics
    /// When the router cannot be found, started, or does not come back within `within`.
    pub fn restart_router(&self, within: Duration) {
        self.stop_router(within);
        self.start_router();
        let deadline = Instant::now() + within;
        while !self.router_online() {
            assert!(Instant::now() < deadline, "the router did not come back online within {within:?}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Stops the edge router (SIGTERM, as an operator would) and waits until it is gone.
    ///
    /// # Panics
    /// When no router of this network runs, or it does not stop within `within`.
    pub fn stop_router(&self, within: Duration) {
        let pids = self.router_pids();
        assert!(!pids.is_empty(), "no router of this network runs (cargo xtask ziti-up starts one)");
        for pid in &pids {
            // It may exit on its own meanwhile; then there is nothing to signal.
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
        let deadline = Instant::now() + within;
        while !self.router_pids().is_empty() {
            assert!(Instant::now() < deadline, "the router did not stop within {within:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts the edge router as `ziti-up` does (from the network's home, so that
    /// `ziti-down` stops it) unless one runs, and records its pid in place of the old.
    ///
    /// # Panics
    /// When it cannot be started.
    #[allow(clippy::zombie_processes)] // it outlives the test process; `ziti-down` stops it
    pub fn start_router(&self) {
        use std::os::unix::process::CommandExt;
        if !self.router_pids().is_empty() {
            return;
        }
        let log = std::fs::File::options().create(true).append(true).open(self.home.join("router.log"));
        let log = log.unwrap_or_else(|err| panic!("opening the router log: {err}"));
        let child = self
            .ziti()
            .current_dir(&self.home)
            .args(["router", "run"])
            .arg(&self.router_config)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap_or_else(|err| panic!("router log: {err}")))
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|err| panic!("starting the router: {err}"));
        let pid_file = self.home.join("pids");
        let recorded = std::fs::read_to_string(&pid_file).unwrap_or_default();
        let mut updated: String =
            recorded.lines().filter(|line| !line.starts_with("router ")).map(|line| format!("{line}\n")).collect();
        updated.push_str(&format!("router {}\n", child.id()));
        std::fs::write(&pid_file, updated).unwrap_or_else(|err| panic!("updating {}: {err}", pid_file.display()));
    }

    /// Whether the controller sees the network's edge router online.
    pub fn router_online(&self) -> bool {
        self.edge_router_online(&self.router_name)
    }

    /// Whether the controller sees the edge router `name` online.
    pub fn edge_router_online(&self, name: &str) -> bool {
        let Ok(out) = self.ziti().args(["edge", "list", "edge-routers", &format!("name=\"{name}\""), "-j"]).output()
        else {
            return false;
        };
        let text = String::from_utf8_lossy(&out.stdout).replace(char::is_whitespace, "");
        out.status.success() && text.contains("\"isOnline\":true")
    }

    /// The live router processes of this network, found by their command line (a
    /// recorded pid is stale once a test restarted the router).
    fn router_pids(&self) -> Vec<u32> {
        let config = self.router_config.to_string_lossy().into_owned();
        let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
        entries
            .filter_map(|entry| {
                let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let args: Vec<String> =
                    cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
                let is_router = args.windows(3).any(|w| w[0] == "router" && w[1] == "run" && w[2] == config);
                let alive =
                    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "));
                (is_router && alive).then_some(pid)
            })
            .collect()
    }
}

/// A second edge router on the network (for multi-router tests), stopped and deleted
/// from the controller when dropped.
#[derive(Debug)]
pub struct ExtraRouter {
    network: ZitiNetwork,
    pub name: String,
    child: std::process::Child,
}

impl ZitiNetwork {
    /// Creates, enrolls and runs another edge router `name` (attribute `public`, so the
    /// network's `#all` policies cover it) on a free loopback port, and waits until the
    /// controller sees it online.
    ///
    /// # Panics
    /// When any step fails or it is not online within `within`.
    pub fn start_extra_router(&self, name: &str, within: Duration) -> ExtraRouter {
        use std::os::unix::process::CommandExt;
        let dir = self.home.join(name);
        let config = dir.join(format!("{name}.yaml"));
        let ctrl_port = self
            .ctrl_url
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("no port in the controller URL {}", self.ctrl_url));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|probe| probe.local_addr())
            .map(|addr| addr.port())
            .unwrap_or_else(|err| panic!("a free port: {err}"));
        let _ = self.ziti().args(["edge", "delete", "edge-router", name]).output(); // a leftover
        let spec = EdgeRouter { name, home: &dir, config: &config, ctrl_port, port };
        spec.enroll(|| self.ziti()).unwrap_or_else(|err| panic!("enrolling {name}: {err}"));
        let log = std::fs::File::create(dir.join("router.log")).unwrap_or_else(|err| panic!("router log: {err}"));
        let child = spec
            .run_command(self.ziti())
            .current_dir(&self.home)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap_or_else(|err| panic!("router log: {err}")))
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|err| panic!("starting {name}: {err}"));
        let router = ExtraRouter { network: self.clone(), name: name.to_owned(), child };
        let deadline = Instant::now() + within;
        while !self.edge_router_online(name) {
            assert!(Instant::now() < deadline, "{name} did not come online within {within:?}");
            std::thread::sleep(Duration::from_millis(250));
        }
        router
    }
}

impl Drop for ExtraRouter {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        let _ = self.network.ziti().args(["edge", "delete", "edge-router", &self.name]).output();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_quoted_and_exported_lines() {
        let parsed = parse_env("export ZITI_BIN='/opt/zi ti'\nZITI_ADMIN_USER=admin\n# comment\nZITI_X='it'\\''s'\n");
        assert_eq!(parsed["ZITI_BIN"], "/opt/zi ti");
        assert_eq!(parsed["ZITI_ADMIN_USER"], "admin");
        assert_eq!(parsed["ZITI_X"], "it's");
        assert!(!parsed.contains_key("# comment"));
    }

    #[test]
    fn v2_routers_vouch_for_dialers_and_v1_routers_do_not() {
        assert!(vouches_for_dialers("v2.0.0-pre12"));
        assert!(vouches_for_dialers("v3.1.0"));
        assert!(!vouches_for_dialers("v1.6.20"));
        assert!(!vouches_for_dialers(""));
    }
}
