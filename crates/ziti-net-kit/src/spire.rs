//! SPIRE on loopback: a server and an agent in one directory, the server's CA under a
//! root made at set-up (the `disk` UpstreamAuthority, so the root whose key the
//! network owns outlives SPIRE's own CA rotations), the agent attested with a join
//! token, and workloads identified by their uid (the `unix` attestor).
//!
//! [`Spire::start`] runs one; [`SpireServer`] and [`WorkloadApi`] reach a running one by
//! its sockets (the tests reach the network's this way). Everything waits by polling
//! with a deadline.

use std::fmt;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use thiserror::Error;

/// The variable naming a directory that holds `spire-server` and `spire-agent`.
pub const BIN_DIR_ENV: &str = "SPIRE_BIN_DIR";

/// The installer of the SPIRE release carried beside the workspace, relative to its root.
const SHARED_INSTALLER: &str = "../shared/spire/install";

/// How long the server and the agent may take to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopped process may take to exit on SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);
/// A unix socket's path must fit `sun_path` (108 bytes on Linux, with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Something about SPIRE that failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SpireError {
    /// No `spire-server` and `spire-agent` were found.
    #[error(
        "no SPIRE found ({reason}): set {BIN_DIR_ENV} to a directory holding spire-server and \
         spire-agent, put both on PATH, or keep the shared copy in {SHARED_INSTALLER}"
    )]
    NotFound {
        /// What was tried and why it did not do.
        reason: String,
    },
    /// A SPIRE executable could not be started.
    #[error("cannot run {what}: {source}")]
    Start {
        /// Which, e.g. `spire-server run`.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// A SPIRE command ran and failed.
    #[error("`{step}` failed ({status}): {message}")]
    Failed {
        /// The command, e.g. `spire-server entry create`.
        step: &'static str,
        /// Its exit status.
        status: ExitStatus,
        /// What it printed on stderr.
        message: String,
    },
    /// The server or the agent exited while it was awaited.
    #[error("{what} exited ({status}); {} ends with:\n{tail}", log.display())]
    Exited {
        /// `spire-server` or `spire-agent`.
        what: &'static str,
        /// Its exit status.
        status: ExitStatus,
        /// Its log.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
    /// Something awaited did not happen in time.
    #[error("{what} did not happen within {waited:?}; {} ends with:\n{tail}", log.display())]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
        /// The log that may say why.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
    /// An entry for that SPIFFE ID, parent and selector exists already.
    #[error("SPIRE already has an entry for {spiffe_id} with that parent and selector")]
    EntryExists {
        /// The SPIFFE ID.
        spiffe_id: String,
    },
    /// The agent issued no X.509-SVID for a SPIFFE ID in time.
    #[error("no X.509-SVID for {spiffe_id} from the Workload API at {} within {waited:?}: {last}", socket.display())]
    NoSvid {
        /// The SPIFFE ID awaited.
        spiffe_id: String,
        /// The agent's socket.
        socket: PathBuf,
        /// How long.
        waited: Duration,
        /// The last answer (an error, or which SVIDs came instead).
        last: String,
    },
    /// A file could not be written or read.
    #[error("{}: {source}", path.display())]
    File {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The root CA could not be made.
    #[error("making the SPIRE root CA: {0}")]
    RootCa(String),
    /// An argument SPIRE would refuse or misread.
    #[error("{what} {value:?} {reason}")]
    Invalid {
        /// Which argument, e.g. `trust domain`.
        what: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A command succeeded but its answer was not what was needed.
    #[error("`{step}`: {reason}")]
    Unexpected {
        /// The command.
        step: &'static str,
        /// What was wrong (never its output, which may hold keys or tokens).
        reason: String,
    },
}

/// Where `spire-server` and `spire-agent` were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Found {
    /// In [`BIN_DIR_ENV`].
    BinDirEnv,
    /// On `PATH`.
    Path,
    /// Unpacked by the shared copy's installer.
    SharedCopy,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BinDirEnv => BIN_DIR_ENV,
            Self::Path => "PATH",
            Self::SharedCopy => SHARED_INSTALLER,
        })
    }
}

/// A directory holding `spire-server` and `spire-agent`, and the version they report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpireBinaries {
    /// The directory (what [`BIN_DIR_ENV`] names).
    pub dir: PathBuf,
    /// What `spire-server --version` prints, e.g. `1.13.3`.
    pub version: String,
    /// How they were found.
    pub found: Found,
}

impl SpireBinaries {
    /// [`BIN_DIR_ENV`], then `PATH` (both executables in one directory), then the copy
    /// that `<workspace_root>/../shared/spire/install` unpacks.
    pub fn locate(workspace_root: &Path) -> Result<Self, SpireError> {
        if let Some(dir) = std::env::var_os(BIN_DIR_ENV).filter(|dir| !dir.is_empty()) {
            return Self::in_dir(Path::new(&dir), Found::BinDirEnv);
        }
        let on_path = std::env::var_os("PATH")
            .and_then(|path| std::env::split_paths(&path).find(|dir| dir.join("spire-server").is_file()));
        if let Some(dir) = on_path {
            return Self::in_dir(&dir, Found::Path);
        }
        let installer = workspace_root.join(SHARED_INSTALLER);
        let dir = crate::run_installer(&installer).map_err(|err| match err {
            crate::InstallerError::Missing => SpireError::NotFound {
                reason: format!("{BIN_DIR_ENV} is unset, PATH has no spire-server, {} is missing", installer.display()),
            },
            crate::InstallerError::Run(source) => SpireError::Start { what: "the SPIRE installer", source },
            crate::InstallerError::Failed(reason) => SpireError::NotFound { reason },
        })?;
        Self::in_dir(&dir, Found::SharedCopy)
    }

    /// The executables in `dir`, checked to be there and to report a version.
    pub fn in_dir(dir: &Path, found: Found) -> Result<Self, SpireError> {
        for name in ["spire-server", "spire-agent"] {
            if !dir.join(name).is_file() {
                return Err(SpireError::NotFound { reason: format!("{} has no {name}", dir.display()) });
            }
        }
        let output = Command::new(dir.join("spire-server"))
            .arg("--version")
            .output()
            .map_err(|source| SpireError::Start { what: "spire-server --version", source })?;
        // It prints the version on stderr.
        let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        let version = said.trim().to_owned();
        if !output.status.success() || version.is_empty() || !version.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(SpireError::NotFound {
                reason: format!("{} --version did not name a release: {version:?}", dir.join("spire-server").display()),
            });
        }
        Ok(Self { dir: dir.to_path_buf(), version, found })
    }

    /// The `spire-server` executable.
    pub fn server(&self) -> PathBuf {
        self.dir.join("spire-server")
    }

    /// The `spire-agent` executable.
    pub fn agent(&self) -> PathBuf {
        self.dir.join("spire-agent")
    }
}

/// What [`Spire::start`] runs.
#[derive(Debug, Clone, Copy)]
pub struct SpireSettings<'a> {
    /// Where `spire-server` and `spire-agent` are.
    pub binaries: &'a SpireBinaries,
    /// The trust domain, e.g. `ziti-gateway.test`.
    pub trust_domain: &'a str,
    /// The directory for configs, keys, data, sockets and logs (made if missing, mode
    /// 0700); short enough for unix socket paths.
    pub dir: &'a Path,
}

/// The pids of a SPIRE that [`Spire::detach`] left running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpirePids {
    /// `spire-server run`.
    pub server: u32,
    /// `spire-agent run`.
    pub agent: u32,
}

/// A SPIRE server and agent started by [`Spire::start`]; stopped on drop unless detached.
#[derive(Debug)]
pub struct Spire {
    server: SpireServer,
    workload_api: WorkloadApi,
    dir: PathBuf,
    /// Server then agent; empty once stopped or detached.
    children: Vec<(&'static str, Child)>,
}

impl Spire {
    /// Makes a root CA (EC P-256, 10 years, URI SAN `spiffe://<trust domain>`), writes
    /// `server.conf` and `agent.conf` (server on 127.0.0.1, Workload API on
    /// `<dir>/agent.sock`), starts the server and waits until it is healthy, issues a
    /// join token, starts the agent and waits until it is healthy. `progress` hears of
    /// each step. Each process runs in its own process group, cwd `dir`, logging to
    /// `<dir>/spire-server.log` and `<dir>/spire-agent.log`.
    ///
    /// A healthy agent may still answer "no identity issued" for a few seconds (until
    /// it has synced its entries): see [`WorkloadApi::wait_for_svid`].
    pub fn start(settings: &SpireSettings<'_>, progress: &mut dyn FnMut(&str)) -> Result<Self, SpireError> {
        let SpireSettings { binaries, trust_domain, dir } = *settings;
        check_trust_domain(trust_domain)?;
        fs::create_dir_all(dir).map_err(|source| file_error(dir, source))?;
        let dir = dir.canonicalize().map_err(|source| file_error(dir, source))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(|source| file_error(&dir, source))?;
        let layout = Files::new(&dir);
        for socket in [&layout.server_socket, &layout.agent_socket] {
            if socket.as_os_str().len() > MAX_SOCKET_PATH {
                return Err(SpireError::Invalid {
                    what: "SPIRE directory",
                    value: dir.display().to_string(),
                    reason: "is too long for the unix sockets inside it",
                });
            }
        }
        for data in [&layout.server_data, &layout.agent_data] {
            fs::create_dir_all(data).map_err(|source| file_error(data, source))?;
        }

        progress(&format!("making the SPIRE root CA (spiffe://{trust_domain})"));
        make_root_ca(trust_domain, &layout.root_cert, &layout.root_key)?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|probe| probe.local_addr())
            .map_err(|source| SpireError::Start { what: "a free loopback port for spire-server", source })?
            .port();
        write_private(&layout.server_conf, server_conf(&layout, trust_domain, port).as_bytes())?;

        let server = SpireServer {
            bin: binaries.server(),
            socket: layout.server_socket.clone(),
            trust_domain: trust_domain.to_owned(),
        };
        let workload_api = WorkloadApi { bin: binaries.agent(), socket: layout.agent_socket.clone() };
        let mut spire = Self { server, workload_api, dir: dir.clone(), children: Vec::new() };

        progress(&format!("starting spire-server on 127.0.0.1:{port}"));
        let started = Instant::now();
        spire.spawn("spire-server", &binaries.server(), &layout.server_conf, &layout.server_log)?;
        let server = spire.server.clone();
        spire.wait_healthy("spire-server", &layout.server_log, "", || server.healthy())?;
        progress(&format!("spire-server healthy after {:.1} s", started.elapsed().as_secs_f64()));

        let token = spire.server.join_token()?;
        write_private(&layout.agent_conf, agent_conf(&layout, trust_domain, port, &token).as_bytes())?;
        progress(&format!("starting spire-agent (join token for {})", spire.server.node_id()));
        let started = Instant::now();
        spire.spawn("spire-agent", &binaries.agent(), &layout.agent_conf, &layout.agent_log)?;
        let workload_api = spire.workload_api.clone();
        spire.wait_healthy("spire-agent", &layout.agent_log, &token, || workload_api.healthy())?;
        progress(&format!("spire-agent healthy after {:.1} s", started.elapsed().as_secs_f64()));
        Ok(spire)
    }

    /// The server's registration API.
    pub fn server(&self) -> &SpireServer {
        &self.server
    }

    /// The agent's Workload API.
    pub fn workload_api(&self) -> &WorkloadApi {
        &self.workload_api
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.server.trust_domain
    }

    /// The directory everything lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The root CA certificate (PEM), the anchor of every SVID this SPIRE issues.
    pub fn root_cert(&self) -> PathBuf {
        Files::new(&self.dir).root_cert
    }

    /// The root CA's private key (PEM, mode 0600), e.g. for proving possession to OpenZiti.
    pub fn root_key(&self) -> PathBuf {
        Files::new(&self.dir).root_key
    }

    /// Leaves the server and the agent running past this value (e.g. past `ziti-up`),
    /// returning their pids for whoever stops them later.
    pub fn detach(mut self) -> SpirePids {
        let pid = |what: &str| self.children.iter().find(|(name, _)| *name == what).map_or(0, |(_, c)| c.id());
        let pids = SpirePids { server: pid("spire-server"), agent: pid("spire-agent") };
        self.children.clear();
        pids
    }

    /// Stops the agent, then the server: SIGTERM, SIGKILL after a grace period.
    pub fn stop(mut self) -> Result<(), SpireError> {
        self.stop_children()
    }

    /// Stops the agent only (SIGTERM, then SIGKILL after a grace period): its Workload
    /// API goes away, the server and the entries stay. Nothing to stop is no error.
    pub fn stop_agent(&mut self) -> Result<(), SpireError> {
        match self.children.iter().position(|(name, _)| *name == "spire-agent") {
            Some(index) => {
                let (what, child) = self.children.remove(index);
                stop_child(what, child)
            }
            None => Ok(()),
        }
    }

    /// Starts the agent again after [`Spire::stop_agent`] and waits until it is healthy.
    /// It resumes with the node identity it keeps in its data directory (the join
    /// token was good for one attestation), so it must not have been stopped for
    /// longer than that identity lives (SPIRE's default: one hour).
    pub fn start_agent(&mut self) -> Result<(), SpireError> {
        if self.children.iter().any(|(name, _)| *name == "spire-agent") {
            return Ok(());
        }
        let files = Files::new(&self.dir);
        let bin = self.workload_api.bin.clone();
        self.spawn("spire-agent", &bin, &files.agent_conf, &files.agent_log)?;
        let workload_api = self.workload_api.clone();
        // The agent's log names its join token (in its own SPIFFE ID): blank it out of errors.
        let config = fs::read_to_string(&files.agent_conf).unwrap_or_default();
        let token = config
            .lines()
            .find_map(|line| line.trim().strip_prefix("join_token = "))
            .map(|value| value.trim_matches('"').to_owned())
            .unwrap_or_default();
        self.wait_healthy("spire-agent", &files.agent_log, &token, || workload_api.healthy())
    }

    fn stop_children(&mut self) -> Result<(), SpireError> {
        while let Some((what, child)) = self.children.pop() {
            stop_child(what, child)?;
        }
        Ok(())
    }

    fn spawn(&mut self, what: &'static str, bin: &Path, config: &Path, log: &Path) -> Result<(), SpireError> {
        use std::os::unix::process::CommandExt;
        let out = fs::File::options().create(true).append(true).open(log).map_err(|source| file_error(log, source))?;
        let err = out.try_clone().map_err(|source| file_error(log, source))?;
        let child = Command::new(bin)
            .arg("run")
            .arg("-config")
            .arg(config)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own group: a Ctrl-C aimed at whoever started it does not reach it.
            .process_group(0)
            .spawn()
            .map_err(|source| SpireError::Start { what, source })?;
        self.children.push((what, child));
        Ok(())
    }

    /// Polls `healthy` until it says yes, failing early if the process exits. `secret`
    /// is blanked out of the log lines quoted in an error.
    fn wait_healthy(
        &mut self,
        what: &'static str,
        log: &Path,
        secret: &str,
        healthy: impl Fn() -> bool,
    ) -> Result<(), SpireError> {
        let started = Instant::now();
        loop {
            if healthy() {
                return Ok(());
            }
            let exited =
                self.children.iter_mut().find(|(name, _)| *name == what).and_then(|(_, c)| c.try_wait().ok()?);
            if let Some(status) = exited {
                return Err(SpireError::Exited {
                    what,
                    status,
                    log: log.to_path_buf(),
                    tail: crate::tail(log, 20, secret),
                });
            }
            if started.elapsed() >= START_TIMEOUT {
                return Err(SpireError::Timeout {
                    what: format!("{what} becoming healthy"),
                    waited: START_TIMEOUT,
                    log: log.to_path_buf(),
                    tail: crate::tail(log, 20, secret),
                });
            }
            sleep(POLL);
        }
    }
}

/// SIGTERM, then SIGKILL after [`STOP_GRACE`]; returns once `child` is reaped.
fn stop_child(what: &'static str, mut child: Child) -> Result<(), SpireError> {
    crate::terminate(&mut child, STOP_GRACE).map_err(|source| SpireError::Start { what, source })
}

impl Drop for Spire {
    fn drop(&mut self) {
        let _ = self.stop_children();
    }
}

/// A running SPIRE server, reached through its admin socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpireServer {
    bin: PathBuf,
    socket: PathBuf,
    trust_domain: String,
}

impl SpireServer {
    /// The server of `trust_domain` listening on `socket`, driven by the `spire-server`
    /// in `bin_dir`.
    pub fn new(bin_dir: &Path, socket: &Path, trust_domain: &str) -> Self {
        Self { bin: bin_dir.join("spire-server"), socket: socket.to_path_buf(), trust_domain: trust_domain.to_owned() }
    }

    /// Its admin socket (`-socketPath`).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The trust domain it issues in.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The SPIFFE ID the agent is known by (its join token's alias): the parent of
    /// every workload entry.
    pub fn node_id(&self) -> String {
        format!("spiffe://{}/ziti-net/node", self.trust_domain)
    }

    /// Whether `spire-server healthcheck` passes.
    pub fn healthy(&self) -> bool {
        quietly(Command::new(&self.bin).arg("healthcheck").arg("-socketPath").arg(&self.socket))
    }

    /// Registers `spiffe_id` for workloads running as `uid` on this server's agent,
    /// its X.509-SVIDs living `x509_svid_ttl` (whole seconds, at least one). Returns
    /// the entry's id. The agent learns of it at its next sync (about 5 s). An entry of
    /// the same SPIFFE ID, parent and uid is [`SpireError::EntryExists`].
    pub fn create_entry(&self, spiffe_id: &str, uid: u32, x509_svid_ttl: Duration) -> Result<String, SpireError> {
        let prefix = format!("spiffe://{}/", self.trust_domain);
        if !spiffe_id.strip_prefix(&prefix).is_some_and(|path| !path.is_empty() && !path.contains(char::is_whitespace))
        {
            return Err(SpireError::Invalid {
                what: "SPIFFE ID",
                value: spiffe_id.to_owned(),
                reason: "must be a path in this server's trust domain",
            });
        }
        let ttl = x509_svid_ttl.as_secs();
        if ttl == 0 {
            return Err(SpireError::Invalid {
                what: "X.509-SVID TTL",
                value: format!("{x509_svid_ttl:?}"),
                reason: "must be at least one second",
            });
        }
        let step = "spire-server entry create";
        let output = output_of(
            Command::new(&self.bin)
                .args(["entry", "create", "-output", "json", "-socketPath"])
                .arg(&self.socket)
                .args(["-parentID", &self.node_id(), "-spiffeID", spiffe_id])
                .args(["-selector", &format!("unix:uid:{uid}"), "-x509SVIDTTL", &ttl.to_string()]),
            step,
        )?;
        let json: serde_json::Value = parse_json(&output, step)?;
        let result = &json["results"][0];
        // gRPC's AlreadyExists: "similar entry already exists".
        if result["status"]["code"] == 6 {
            return Err(SpireError::EntryExists { spiffe_id: spiffe_id.to_owned() });
        }
        if result["status"]["code"] != 0 {
            let message = result["status"]["message"].as_str().unwrap_or("no message");
            return Err(SpireError::Unexpected { step, reason: format!("refused: {message}") });
        }
        result["entry"]["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| SpireError::Unexpected { step, reason: "no entry id in its answer".to_owned() })
    }

    /// The ids of the entries that issue `spiffe_id`.
    pub fn entry_ids(&self, spiffe_id: &str) -> Result<Vec<String>, SpireError> {
        let step = "spire-server entry show";
        let output = output_of(
            Command::new(&self.bin)
                .args(["entry", "show", "-output", "json", "-socketPath"])
                .arg(&self.socket)
                .args(["-spiffeID", spiffe_id]),
            step,
        )?;
        let json: serde_json::Value = parse_json(&output, step)?;
        let entries = json["entries"].as_array().map(Vec::as_slice).unwrap_or_default();
        Ok(entries.iter().filter_map(|entry| entry["id"].as_str().map(str::to_owned)).collect())
    }
    /// An X.509-SVID for `spiffe_id` signed by this server, without an entry or an
    /// agent (`spire-server x509 mint`): a workload of any SPIFFE ID, for tests.
    pub fn mint_x509(&self, spiffe_id: &str, ttl: Duration) -> Result<X509Svid, SpireError> {
        let step = "spire-server x509 mint";
        let output =
            output_of(
                Command::new(&self.bin)
                    .args(["x509", "mint", "-output", "json", "-socketPath"])
                    .arg(&self.socket)
                    .args(["-spiffeID", spiffe_id, "-ttl", &format!("{}s", ttl.as_secs().max(1))]),
                step,
            )?;
        let json: serde_json::Value = parse_json(&output, step)?;
        let minted = &json[0];
        let unexpected = |reason: &str| SpireError::Unexpected { step, reason: reason.to_owned() };
        let ders = |field: &str| -> Result<Vec<Vec<u8>>, SpireError> {
            minted[field]
                .as_array()
                .ok_or_else(|| unexpected(&format!("no `{field}` list in its answer")))?
                .iter()
                .map(|item| {
                    item.as_str()
                        .and_then(|b64| BASE64.decode(b64).ok())
                        .ok_or_else(|| unexpected("a certificate is not base64"))
                })
                .collect()
        };
        let key = minted["private_key"]
            .as_str()
            .and_then(|b64| BASE64.decode(b64).ok())
            .ok_or_else(|| unexpected("no base64 `private_key` in its answer"))?;
        Ok(X509Svid {
            spiffe_id: spiffe_id.to_owned(),
            chain_pem: ders("x509_svid")?.iter().map(|der| pem("CERTIFICATE", der)).collect(),
            key_pem: pem("PRIVATE KEY", &key),
            bundle_pem: ders("root_cas")?.iter().map(|der| pem("CERTIFICATE", der)).collect(),
        })
    }

    /// Deletes the entry `entry_id` (from [`SpireServer::create_entry`]).
    pub fn delete_entry(&self, entry_id: &str) -> Result<(), SpireError> {
        let step = "spire-server entry delete";
        let output = output_of(
            Command::new(&self.bin)
                .args(["entry", "delete", "-output", "json", "-socketPath"])
                .arg(&self.socket)
                .args(["-entryID", entry_id]),
            step,
        )?;
        let json: serde_json::Value = parse_json(&output, step)?;
        match json["results"][0]["status"]["code"].as_i64() {
            Some(0) => Ok(()),
            _ => {
                let message = json["results"][0]["status"]["message"].as_str().unwrap_or("no message");
                Err(SpireError::Unexpected { step, reason: format!("entry {entry_id:?}: {message}") })
            }
        }
    }

    /// The `iss` of the JWT-SVIDs it mints, see [`jwt_issuer`].
    pub fn jwt_issuer(&self) -> String {
        jwt_issuer(&self.trust_domain)
    }

    /// A JWT-SVID for `spiffe_id` (any ID of this trust domain, no entry needed) and
    /// `audience`, living `ttl` (whole seconds, at least one), signed by the server's
    /// current JWT key: `spire-server jwt mint`.
    pub fn mint_jwt(&self, spiffe_id: &str, audience: &str, ttl: Duration) -> Result<String, SpireError> {
        let ttl = ttl.as_secs();
        if ttl == 0 {
            return Err(SpireError::Invalid {
                what: "JWT-SVID TTL",
                value: format!("{ttl}s"),
                reason: "must be at least one second",
            });
        }
        let step = "spire-server jwt mint";
        let ttl = format!("{ttl}s");
        let output = output_of(
            Command::new(&self.bin)
                .args(["jwt", "mint", "-socketPath"])
                .arg(&self.socket)
                .args(["-spiffeID", spiffe_id, "-audience", audience])
                .args(["-ttl", &ttl]),
            step,
        )?;
        let token = String::from_utf8_lossy(&output).trim().to_owned();
        // A JWS in compact form: three base64url parts.
        if token.split('.').count() != 3 || token.contains(char::is_whitespace) {
            return Err(SpireError::Unexpected { step, reason: "its output is not a JWT".to_owned() });
        }
        Ok(token)
    }

    /// The server's trust bundle as a JWKS in SPIFFE format (`spire-server bundle show
    /// -format spiffe`): its X.509 roots (`"use": "x509-svid"`) and its JWT keys
    /// (`"use": "jwt-svid"`).
    pub fn bundle_jwks(&self) -> Result<String, SpireError> {
        let step = "spire-server bundle show";
        let output = output_of(
            Command::new(&self.bin).args(["bundle", "show", "-format", "spiffe", "-socketPath"]).arg(&self.socket),
            step,
        )?;
        let bundle: serde_json::Value = parse_json(&output, step)?;
        if !bundle["keys"].is_array() {
            return Err(SpireError::Unexpected { step, reason: "its output has no `keys`".to_owned() });
        }
        Ok(String::from_utf8_lossy(&output).into_owned())
    }

    /// A one-use join token whose agent becomes [`SpireServer::node_id`]; it is redeemed
    /// at once, so it lives two minutes.
    fn join_token(&self) -> Result<String, SpireError> {
        let step = "spire-server token generate";
        let output = output_of(
            Command::new(&self.bin)
                .args(["token", "generate", "-output", "json", "-ttl", "120", "-socketPath"])
                .arg(&self.socket)
                .args(["-spiffeID", &self.node_id()]),
            step,
        )?;
        let json: serde_json::Value = parse_json(&output, step)?;
        json["value"]
            .as_str()
            .filter(|token| !token.is_empty() && token.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            .map(str::to_owned)
            .ok_or_else(|| SpireError::Unexpected { step, reason: "no usable token in its answer".to_owned() })
    }
}

/// A SPIRE agent's Workload API, reached through its socket as the calling uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadApi {
    bin: PathBuf,
    socket: PathBuf,
}

/// An X.509-SVID as the Workload API hands it out. `Debug` leaves the key out.
#[derive(Clone, PartialEq, Eq)]
pub struct X509Svid {
    /// Its SPIFFE ID, e.g. `spiffe://ziti-gateway.test/gateway`.
    pub spiffe_id: String,
    /// The leaf then SPIRE's intermediate(s), PEM: the chain a client presents.
    pub chain_pem: String,
    /// The leaf's private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The trust domain's roots, PEM.
    pub bundle_pem: String,
}

impl fmt::Debug for X509Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509Svid")
            .field("spiffe_id", &self.spiffe_id)
            .field("chain_pem", &self.chain_pem)
            .field("key_pem", &"<redacted>")
            .field("bundle_pem", &self.bundle_pem)
            .finish()
    }
}

impl WorkloadApi {
    /// The agent listening on `socket`, queried with the `spire-agent` in `bin_dir`.
    pub fn new(bin_dir: &Path, socket: &Path) -> Self {
        Self { bin: bin_dir.join("spire-agent"), socket: socket.to_path_buf() }
    }

    /// Its socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `unix://<absolute socket path>`: the value of `SPIFFE_ENDPOINT_SOCKET`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Whether `spire-agent healthcheck` passes.
    pub fn healthy(&self) -> bool {
        quietly(Command::new(&self.bin).arg("healthcheck").arg("-socketPath").arg(&self.socket))
    }

    /// The X.509-SVIDs the agent gives the calling process (its uid), once.
    pub fn fetch_x509(&self) -> Result<Vec<X509Svid>, SpireError> {
        let step = "spire-agent api fetch x509";
        let output = output_of(
            Command::new(&self.bin)
                .args(["api", "fetch", "x509", "-output", "json", "-timeout", "5s", "-socketPath"])
                .arg(&self.socket),
            step,
        )?;
        let json: serde_json::Value = parse_json(&output, step)?;
        let svids = json["svids"]
            .as_array()
            .ok_or_else(|| SpireError::Unexpected { step, reason: "no `svids` list in its answer".to_owned() })?;
        svids.iter().map(|svid| svid_from_json(svid, step)).collect()
    }

    /// Fetches until an SVID for `spiffe_id` comes (a new agent or a new entry takes
    /// a few seconds), or `within` passes.
    pub fn wait_for_svid(&self, spiffe_id: &str, within: Duration) -> Result<X509Svid, SpireError> {
        let started = Instant::now();
        loop {
            let last = match self.fetch_x509() {
                Ok(svids) => match svids.into_iter().find(|svid| svid.spiffe_id == spiffe_id) {
                    Some(svid) => return Ok(svid),
                    None => format!("the agent gives this uid no SVID for {spiffe_id}"),
                },
                Err(err) => err.to_string(),
            };
            if started.elapsed() >= within {
                return Err(SpireError::NoSvid {
                    spiffe_id: spiffe_id.to_owned(),
                    socket: self.socket.clone(),
                    waited: within,
                    last,
                });
            }
            sleep(Duration::from_millis(250));
        }
    }
}

/// The uid this process runs as: what the agent's `unix` attestor sees of it, for
/// [`SpireServer::create_entry`].
pub fn current_uid() -> Result<u32, SpireError> {
    use std::os::unix::fs::MetadataExt;
    // `/proc/self` belongs to the process's effective uid; no libc call needed.
    let path = Path::new("/proc/self");
    fs::metadata(path).map(|meta| meta.uid()).map_err(|source| file_error(path, source))
}

/// One entry of `fetch x509 -output json`: base64 DER (the chain is concatenated DER).
fn svid_from_json(svid: &serde_json::Value, step: &'static str) -> Result<X509Svid, SpireError> {
    let field = |name: &str| -> Result<Vec<u8>, SpireError> {
        let text = svid[name]
            .as_str()
            .ok_or_else(|| SpireError::Unexpected { step, reason: format!("an SVID without `{name}`") })?;
        BASE64.decode(text).map_err(|_| SpireError::Unexpected { step, reason: format!("`{name}` is not base64") })
    };
    let spiffe_id = svid["spiffe_id"]
        .as_str()
        .ok_or_else(|| SpireError::Unexpected { step, reason: "an SVID without `spiffe_id`".to_owned() })?;
    let (chain, bundle) = (field("x509_svid")?, field("bundle")?);
    let chain = split_der(&chain).ok_or_else(|| SpireError::Unexpected {
        step,
        reason: "`x509_svid` is not a DER certificate chain".to_owned(),
    })?;
    let bundle = split_der(&bundle)
        .ok_or_else(|| SpireError::Unexpected { step, reason: "`bundle` is not DER certificates".to_owned() })?;
    Ok(X509Svid {
        spiffe_id: spiffe_id.to_owned(),
        chain_pem: chain.iter().map(|der| pem("CERTIFICATE", der)).collect(),
        key_pem: pem("PRIVATE KEY", &field("x509_svid_key")?),
        bundle_pem: bundle.iter().map(|der| pem("CERTIFICATE", der)).collect(),
    })
}

/// Concatenated DER SEQUENCEs, split; `None` if the bytes are not that.
fn split_der(mut bytes: &[u8]) -> Option<Vec<&[u8]>> {
    let mut items = Vec::new();
    while !bytes.is_empty() {
        if bytes.first() != Some(&0x30) {
            return None;
        }
        let first = usize::from(*bytes.get(1)?);
        let (header, length) = if first < 0x80 {
            (2, first)
        } else {
            let count = first & 0x7f;
            if count == 0 || count > 4 {
                return None;
            }
            let length = bytes.get(2..2 + count)?.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (2 + count, length)
        };
        let end = header.checked_add(length)?;
        items.push(bytes.get(..end)?);
        bytes = &bytes[end..];
    }
    (!items.is_empty()).then_some(items)
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = BASE64.encode(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        text.push_str(&String::from_utf8_lossy(line));
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    text
}

/// Where a started SPIRE's files are.
struct Files {
    root_cert: PathBuf,
    root_key: PathBuf,
    server_conf: PathBuf,
    agent_conf: PathBuf,
    server_data: PathBuf,
    agent_data: PathBuf,
    server_socket: PathBuf,
    agent_socket: PathBuf,
    server_log: PathBuf,
    agent_log: PathBuf,
}

impl Files {
    fn new(dir: &Path) -> Self {
        Self {
            root_cert: dir.join("root.crt"),
            root_key: dir.join("root.key"),
            server_conf: dir.join("server.conf"),
            agent_conf: dir.join("agent.conf"),
            server_data: dir.join("server-data"),
            agent_data: dir.join("agent-data"),
            server_socket: dir.join("server.sock"),
            agent_socket: dir.join("agent.sock"),
            server_log: dir.join("spire-server.log"),
            agent_log: dir.join("spire-agent.log"),
        }
    }
}

fn server_conf(files: &Files, trust_domain: &str, port: u16) -> String {
    format!(
        r#"server {{
    bind_address = "127.0.0.1"
    bind_port = "{port}"
    socket_path = "{server_socket}"
    trust_domain = "{trust_domain}"
    data_dir = "{server_data}"
    log_level = "INFO"
    ca_key_type = "ec-p256"
    ca_ttl = "24h"
    default_x509_svid_ttl = "1h"
    jwt_issuer = "{jwt_issuer}"
}}
plugins {{
    DataStore "sql" {{ plugin_data {{ database_type = "sqlite3"  connection_string = "{server_data}/datastore.sqlite3" }} }}
    NodeAttestor "join_token" {{ plugin_data {{}} }}
    KeyManager "memory" {{ plugin_data {{}} }}
    UpstreamAuthority "disk" {{ plugin_data {{ cert_file_path = "{root_cert}"  key_file_path = "{root_key}" }} }}
}}
"#,
        jwt_issuer = jwt_issuer(trust_domain),
        server_socket = files.server_socket.display(),
        server_data = files.server_data.display(),
        root_cert = files.root_cert.display(),
        root_key = files.root_key.display(),
    )
}

/// The `iss` of the JWT-SVIDs of the server of `trust_domain`: SPIRE leaves `iss` out
/// unless its config names one, and a JWT verifier wants an issuer to check.
pub fn jwt_issuer(trust_domain: &str) -> String {
    format!("{JWT_ISSUER_PREFIX}{trust_domain}")
}

/// What [`jwt_issuer`] puts before the trust domain.
pub const JWT_ISSUER_PREFIX: &str = "https://spire.";

/// The join token goes in the config (mode 0600), not on the command line that every
/// local user can read.
fn agent_conf(files: &Files, trust_domain: &str, port: u16, join_token: &str) -> String {
    format!(
        r#"agent {{
    data_dir = "{agent_data}"
    log_level = "INFO"
    server_address = "127.0.0.1"
    server_port = "{port}"
    socket_path = "{agent_socket}"
    trust_bundle_path = "{root_cert}"
    trust_domain = "{trust_domain}"
    join_token = "{join_token}"
}}
plugins {{
    NodeAttestor "join_token" {{ plugin_data {{}} }}
    KeyManager "disk" {{ plugin_data {{ directory = "{agent_data}" }} }}
    WorkloadAttestor "unix" {{ plugin_data {{}} }}
}}
"#,
        agent_data = files.agent_data.display(),
        agent_socket = files.agent_socket.display(),
        root_cert = files.root_cert.display(),
    )
}

/// A self-signed EC P-256 CA valid for ten years from today, URI SAN
/// `spiffe://<trust domain>`, written as `cert` and `key` (0600).
fn make_root_ca(trust_domain: &str, cert: &Path, key: &Path) -> Result<(), SpireError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
    let err = |e: rcgen::Error| SpireError::RootCa(e.to_string());
    let key_pair = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::OrganizationName, "ziti-net SPIRE");
    params.distinguished_name.push(DnType::CommonName, format!("SPIRE upstream root {trust_domain}"));
    let uri = format!("spiffe://{trust_domain}").try_into().map_err(err)?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let today = days_since_epoch();
    let (y, m, d) = civil_from_days(today - 1);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = civil_from_days(today + 3650);
    params.not_after = rcgen::date_time_ymd(y, m, d);
    let certificate = params.self_signed(&key_pair).map_err(err)?;
    write_private(key, key_pair.serialize_pem().as_bytes())?;
    write_private(cert, certificate.pem().as_bytes())
}

fn days_since_epoch() -> i64 {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
    i64::try_from(secs / 86_400).unwrap_or(0)
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (i32::try_from(year).unwrap_or(i32::MAX), u8::try_from(month).unwrap_or(1), u8::try_from(day).unwrap_or(1))
}

/// Lowercase letters, digits, `.`, `-` and `_` (the SPIFFE spec's trust domain name).
fn check_trust_domain(trust_domain: &str) -> Result<(), SpireError> {
    let valid = !trust_domain.is_empty()
        && trust_domain.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'));
    if valid {
        return Ok(());
    }
    Err(SpireError::Invalid {
        what: "trust domain",
        value: trust_domain.to_owned(),
        reason: "may hold only lowercase letters, digits, '.', '-' and '_'",
    })
}

/// Creates `path` with mode 0600 from the start, replacing any earlier file.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SpireError> {
    crate::write_private(path, bytes).map_err(|source| file_error(path, source))
}

fn quietly(command: &mut Command) -> bool {
    command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Runs a SPIRE CLI step, returning its stdout (never quoted in errors: it may hold
/// keys or tokens).
fn output_of(command: &mut Command, step: &'static str) -> Result<Vec<u8>, SpireError> {
    let output = command.stdin(Stdio::null()).output().map_err(|source| SpireError::Start { what: step, source })?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    let message = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    Err(SpireError::Failed { step, status: output.status, message })
}

fn parse_json(output: &[u8], step: &'static str) -> Result<serde_json::Value, SpireError> {
    serde_json::from_slice(output)
        .map_err(|err| SpireError::Unexpected { step, reason: format!("its output is not the expected JSON ({err})") })
}

fn file_error(path: &Path, source: std::io::Error) -> SpireError {
    SpireError::File { path: path.to_path_buf(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_computed_from_day_counts() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_000), (2024, 10, 4));
    }

    #[test]
    fn a_der_chain_is_split_into_its_certificates() {
        let chain = [&[0x30, 0x02, 1, 2][..], &[0x30, 0x81, 0x01, 9][..]].concat();
        assert_eq!(split_der(&chain), Some(vec![&[0x30, 0x02, 1, 2][..], &[0x30, 0x81, 0x01, 9][..]]));
        assert_eq!(split_der(&[0x30, 0x05, 1]), None, "truncated");
        assert_eq!(split_der(&[0x31, 0x00]), None, "not a SEQUENCE");
        assert_eq!(split_der(&[]), None);
    }

    #[test]
    fn trust_domains_spire_would_refuse_are_refused_first() {
        assert!(check_trust_domain("ziti-gateway.test").is_ok());
        for bad in ["", "Example.org", "a/b", "spiffe://x", "a b"] {
            assert!(check_trust_domain(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_svid_prints_without_its_key() {
        let svid = X509Svid {
            spiffe_id: "spiffe://td/w".to_owned(),
            chain_pem: String::new(),
            key_pem: "THE-KEY".to_owned(),
            bundle_pem: String::new(),
        };
        assert!(!format!("{svid:?}").contains("THE-KEY"));
    }

    #[test]
    fn the_root_ca_is_a_ten_year_spiffe_ca_with_a_private_key_file() {
        let dir = std::env::temp_dir().join(format!("ziti-net-kit-root-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("root.crt"), dir.join("root.key"));
        make_root_ca("example.org", &cert, &key).unwrap();
        let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        let text = Command::new("openssl").args(["x509", "-noout", "-text", "-in"]).arg(&cert).output();
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(mode, 0o600);
        let out = text.expect("openssl reads the certificate");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("URI:spiffe://example.org") && text.contains("CA:TRUE"), "{text}");
        assert!(text.contains("prime256v1") || text.contains("P-256"), "{text}");
        let year =
            |label: &str| text.split(label).nth(1).and_then(|rest| rest.split_whitespace().nth(3)?.parse::<i32>().ok());
        assert_eq!(
            year("Not After :").zip(year("Not Before:")).map(|(after, before)| after - before),
            Some(10),
            "{text}"
        );
    }
}
