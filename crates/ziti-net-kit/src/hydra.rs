//! ORY Hydra on loopback: an OAuth2 / OIDC provider (in-memory store, JWT access
//! tokens) whose client-credentials tokens OpenZiti trusts through an ext-jwt signer
//! (see [`crate::ext_jwt`]).
//!
//! [`Hydra::start`] runs one; [`HydraAdmin`] reaches a running one by its URLs (the
//! tests reach the network's this way): it creates and deletes clients and fetches
//! their tokens. Client secrets and tokens never appear in errors or progress messages.
//!
//! A token of a client granted scopes looks like this (RS256, with a `kid`):
//! `{"aud":["openziti"],"client_id":"gateway-idp","exp":…,"ext":{},"iat":…,
//! "iss":"http://127.0.0.1:<public>","jti":"…","nbf":…,"scp":["gateway-hosts","gateway-clients"],
//! "sub":"gateway-idp"}`; `scp` holds the scopes asked for (`[]` when none were).

use std::fmt;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use thiserror::Error;

/// The variable naming the `hydra` executable.
pub const BIN_ENV: &str = "HYDRA_BIN";

/// The installer of the Hydra release carried beside the workspace, relative to its root.
const SHARED_INSTALLER: &str = "../shared/hydra/install";

/// How long access tokens live unless [`HydraSettings::access_token_ttl`] says otherwise.
/// One minute: short enough that a test sees several tokens replaced in a few minutes.
pub const DEFAULT_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(60);

/// How long Hydra may take to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one admin or token request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopped Hydra may take to exit on SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);
/// How often a slow start is reported.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Something about Hydra that failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HydraError {
    /// No `hydra` was found.
    #[error(
        "no ORY Hydra found ({reason}): set {BIN_ENV} to the hydra executable, put `hydra` on PATH, \
         or keep the shared copy in {SHARED_INSTALLER}"
    )]
    NotFound {
        /// What was tried and why it did not do.
        reason: String,
    },
    /// Something could not be started (Hydra, its installer, an HTTP client).
    #[error("cannot run {what}: {source}")]
    Start {
        /// What, e.g. `hydra serve all`.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// Hydra exited while it was awaited.
    #[error("hydra exited ({status}); {} ends with:\n{tail}", log.display())]
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// Its log.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
    /// Hydra did not become ready in time.
    #[error("hydra was not ready within {waited:?}; {} ends with:\n{tail}", log.display())]
    Timeout {
        /// How long.
        waited: Duration,
        /// Its log.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
    /// A request to Hydra could not be made or answered.
    #[error("{step}: {source}")]
    Http {
        /// The request, e.g. `POST /oauth2/token`.
        step: &'static str,
        /// Why (names the URL, never a secret).
        source: reqwest::Error,
    },
    /// Hydra answered a request with an error.
    #[error("{step}: Hydra answered {status}: {error}{}", if description.is_empty() { String::new() } else { format!(" ({description})") })]
    Refused {
        /// The request, e.g. `POST /oauth2/token`.
        step: &'static str,
        /// The HTTP status.
        status: u16,
        /// Hydra's error code, e.g. `invalid_scope`.
        error: String,
        /// Hydra's explanation.
        description: String,
    },
    /// A client of that id exists already.
    #[error("Hydra already has a client {client_id:?}")]
    ClientExists {
        /// The client id.
        client_id: String,
    },
    /// A file could not be written or read.
    #[error("{}: {source}", path.display())]
    File {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An argument Hydra would refuse or misread.
    #[error("{what} {value:?} {reason}")]
    Invalid {
        /// Which argument, e.g. `access token TTL`.
        what: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An answer was not what was needed.
    #[error("{step}: {reason}")]
    Unexpected {
        /// The request or command.
        step: &'static str,
        /// What was wrong (never the answer itself, which may hold a secret or a token).
        reason: String,
    },
}

/// Where `hydra` was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Found {
    /// In [`BIN_ENV`].
    BinEnv,
    /// On `PATH`.
    Path,
    /// Unpacked by the shared copy's installer.
    SharedCopy,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BinEnv => BIN_ENV,
            Self::Path => "PATH",
            Self::SharedCopy => SHARED_INSTALLER,
        })
    }
}

/// The `hydra` executable and the version it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HydraBinary {
    /// The executable (what [`BIN_ENV`] names).
    pub path: PathBuf,
    /// What `hydra version` reports, e.g. `v2.3.0`.
    pub version: String,
    /// How it was found.
    pub found: Found,
}

impl HydraBinary {
    /// [`BIN_ENV`], then `hydra` on `PATH`, then the copy that
    /// `<workspace_root>/../shared/hydra/install` unpacks (it prints the path).
    pub fn locate(workspace_root: &Path) -> Result<Self, HydraError> {
        if let Some(bin) = std::env::var_os(BIN_ENV).filter(|bin| !bin.is_empty()) {
            return Self::at(Path::new(&bin), Found::BinEnv);
        }
        let on_path = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path).map(|dir| dir.join("hydra")).find(|candidate| candidate.is_file())
        });
        if let Some(bin) = on_path {
            return Self::at(&bin, Found::Path);
        }
        let installer = workspace_root.join(SHARED_INSTALLER);
        let bin = crate::run_installer(&installer).map_err(|err| match err {
            crate::InstallerError::Missing => HydraError::NotFound {
                reason: format!("{BIN_ENV} is unset, PATH has no hydra, {} is missing", installer.display()),
            },
            crate::InstallerError::Run(source) => HydraError::Start { what: "the Hydra installer", source },
            crate::InstallerError::Failed(reason) => HydraError::NotFound { reason },
        })?;
        Self::at(&bin, Found::SharedCopy)
    }

    /// The executable at `path`, checked to be there and to report a version.
    pub fn at(path: &Path, found: Found) -> Result<Self, HydraError> {
        if !path.is_file() {
            return Err(HydraError::NotFound { reason: format!("{} is not a file", path.display()) });
        }
        let output = Command::new(path)
            .arg("version")
            .env("SQA_OPT_OUT", "true")
            .stdin(Stdio::null())
            .output()
            .map_err(|source| HydraError::Start { what: "hydra version", source })?;
        // "Version:    v2.3.0" among other lines.
        let said = String::from_utf8_lossy(&output.stdout);
        let version = said
            .lines()
            .find_map(|line| line.trim().strip_prefix("Version:"))
            .map(|version| version.trim().to_owned())
            .filter(|version| version.starts_with('v'));
        match version {
            Some(version) if output.status.success() => Ok(Self { path: path.to_path_buf(), version, found }),
            _ => Err(HydraError::NotFound {
                reason: format!("{} version did not name a release: {:?}", path.display(), said.trim()),
            }),
        }
    }
}

/// What [`Hydra::start`] runs.
#[derive(Debug, Clone, Copy)]
pub struct HydraSettings<'a> {
    /// The `hydra` executable.
    pub binary: &'a HydraBinary,
    /// The directory for its config and log (made if missing, mode 0700).
    pub dir: &'a Path,
    /// How long its access tokens live (whole seconds, at least one).
    pub access_token_ttl: Duration,
}

impl<'a> HydraSettings<'a> {
    /// `binary` in `dir`, tokens living [`DEFAULT_ACCESS_TOKEN_TTL`].
    pub fn new(binary: &'a HydraBinary, dir: &'a Path) -> Self {
        Self { binary, dir, access_token_ttl: DEFAULT_ACCESS_TOKEN_TTL }
    }
}

/// A Hydra started by [`Hydra::start`]; stopped on drop unless detached.
#[derive(Debug)]
pub struct Hydra {
    admin: HydraAdmin,
    dir: PathBuf,
    /// `None` once stopped or detached.
    child: Option<Child>,
}

impl Hydra {
    /// Writes `<dir>/hydra.yaml` (mode 0600: in-memory store, public and admin APIs on
    /// free 127.0.0.1 ports, issuer `http://127.0.0.1:<public>`, JWT access tokens, a
    /// fresh random system secret), starts `hydra serve all --dev --sqa-opt-out` in its
    /// own process group (cwd `dir`, log `<dir>/hydra.log`), and waits until its admin
    /// API is ready and its public API serves signing keys. `progress` hears of each
    /// step and of a slow start.
    ///
    /// `--dev` lets the issuer be plain HTTP (loopback only); `--sqa-opt-out` keeps it
    /// from sending usage reports off the machine.
    pub fn start(settings: &HydraSettings<'_>, progress: &mut dyn FnMut(&str)) -> Result<Self, HydraError> {
        let HydraSettings { binary, dir, access_token_ttl } = *settings;
        let ttl = access_token_ttl.as_secs();
        if ttl == 0 {
            return Err(HydraError::Invalid {
                what: "access token TTL",
                value: format!("{access_token_ttl:?}"),
                reason: "must be at least one second",
            });
        }
        fs::create_dir_all(dir).map_err(|source| file_error(dir, source))?;
        let dir = dir.canonicalize().map_err(|source| file_error(dir, source))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(|source| file_error(&dir, source))?;
        let (public, admin) = (free_port()?, free_port()?);
        let issuer = format!("http://127.0.0.1:{public}");
        let system_secret = random_secret()?;
        let config = dir.join("hydra.yaml");
        let yaml = hydra_yaml(public, admin, &issuer, &system_secret, ttl);
        crate::write_private(&config, yaml.as_bytes()).map_err(|source| file_error(&config, source))?;

        let log = dir.join("hydra.log");
        progress(&format!("starting ORY Hydra {}: public {issuer}, admin 127.0.0.1:{admin}", binary.version));
        let child = spawn(&binary.path, &config, &dir, &log)?;
        let mut hydra =
            Self { admin: HydraAdmin::new(&format!("http://127.0.0.1:{admin}"), &issuer), dir, child: Some(child) };

        let started = Instant::now();
        let mut reported = Duration::ZERO;
        loop {
            if hydra.admin.ready() && hydra.admin.serves_signing_keys() {
                break;
            }
            let exited = hydra.child.as_mut().and_then(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                hydra.child = None;
                return Err(HydraError::Exited { status, tail: crate::tail(&log, 20, &system_secret), log });
            }
            let waited = started.elapsed();
            if waited >= START_TIMEOUT {
                return Err(HydraError::Timeout { waited, tail: crate::tail(&log, 20, &system_secret), log });
            }
            if waited >= reported + PROGRESS_EVERY {
                reported = waited;
                progress(&format!("still waiting for Hydra to be ready ({} s)", waited.as_secs()));
            }
            sleep(POLL);
        }
        progress(&format!("Hydra ready after {:.1} s", started.elapsed().as_secs_f64()));
        Ok(hydra)
    }

    /// Its admin API and token endpoint.
    pub fn admin(&self) -> &HydraAdmin {
        &self.admin
    }

    /// The `iss` of its tokens, `http://127.0.0.1:<public>`.
    pub fn issuer(&self) -> &str {
        self.admin.issuer()
    }

    /// The directory its config and log live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its log.
    pub fn log(&self) -> PathBuf {
        self.dir.join("hydra.log")
    }

    /// Leaves Hydra running past this value (e.g. past `ziti-up`), returning its pid for
    /// whoever stops it later.
    pub fn detach(mut self) -> u32 {
        self.child.take().map_or(0, |child| child.id())
    }

    /// Stops it: SIGTERM, SIGKILL after a grace period.
    pub fn stop(mut self) -> Result<(), HydraError> {
        self.stop_child()
    }

    fn stop_child(&mut self) -> Result<(), HydraError> {
        match self.child.take() {
            Some(mut child) => crate::terminate(&mut child, STOP_GRACE)
                .map_err(|source| HydraError::Start { what: "kill hydra", source }),
            None => Ok(()),
        }
    }
}

impl Drop for Hydra {
    fn drop(&mut self) {
        let _ = self.stop_child();
    }
}

fn spawn(bin: &Path, config: &Path, dir: &Path, log: &Path) -> Result<Child, HydraError> {
    use std::os::unix::process::CommandExt;
    let out = fs::File::options().create(true).append(true).open(log).map_err(|source| file_error(log, source))?;
    let err = out.try_clone().map_err(|source| file_error(log, source))?;
    Command::new(bin)
        .args(["serve", "all", "--dev", "--sqa-opt-out", "-c"])
        .arg(config)
        .env("SQA_OPT_OUT", "true")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own group: a Ctrl-C aimed at whoever started it does not reach it.
        .process_group(0)
        .spawn()
        .map_err(|source| HydraError::Start { what: "hydra serve all", source })
}

fn hydra_yaml(public: u16, admin: u16, issuer: &str, system_secret: &str, ttl_secs: u64) -> String {
    format!(
        "# Written by ziti-net-kit: ORY Hydra on loopback for a local OpenZiti network.\n\
         dsn: memory\n\
         serve:\n  public: {{ host: 127.0.0.1, port: {public} }}\n  admin: {{ host: 127.0.0.1, port: {admin} }}\n\
         urls:\n  self:\n    issuer: \"{issuer}\"\n\
         strategies:\n  access_token: jwt\n\
         secrets:\n  system: [\"{system_secret}\"]\n\
         ttl:\n  access_token: {ttl_secs}s\n"
    )
}

/// A running Hydra's admin API (clients) and public token endpoint, on loopback.
///
/// Every call blocks and makes its request on a thread of its own, so it may be made
/// from synchronous code and from inside an async runtime alike (e.g. in a `Drop` of a
/// `#[tokio::test]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HydraAdmin {
    admin_url: String,
    issuer: String,
}

impl HydraAdmin {
    /// The Hydra whose admin API is at `admin_url` (e.g. `http://127.0.0.1:4445`) and
    /// whose issuer, the base of its public API, is `issuer`.
    pub fn new(admin_url: &str, issuer: &str) -> Self {
        Self { admin_url: admin_url.trim_end_matches('/').to_owned(), issuer: issuer.trim_end_matches('/').to_owned() }
    }

    /// The admin API's base URL.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// The `iss` of its tokens (and the base of its public API).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Where its signing keys are served: `<issuer>/.well-known/jwks.json`.
    pub fn jwks_url(&self) -> String {
        format!("{}/.well-known/jwks.json", self.issuer)
    }

    /// Whether its admin API answers `/health/ready` with 200.
    pub fn ready(&self) -> bool {
        let url = format!("{}/health/ready", self.admin_url);
        send("GET /health/ready", |client| client.get(url)).is_ok_and(|(status, _)| status == 200)
    }

    /// Whether its public API serves at least one signing key (it makes them on first use).
    fn serves_signing_keys(&self) -> bool {
        let url = self.jwks_url();
        send("GET /.well-known/jwks.json", |client| client.get(url)).is_ok_and(|(status, body)| {
            status == 200
                && serde_json::from_slice::<serde_json::Value>(&body)
                    .is_ok_and(|jwks| jwks["keys"].as_array().is_some_and(|keys| !keys.is_empty()))
        })
    }

    /// Creates a client-credentials client `client_id` with `secret`, allowed to ask for
    /// tokens for `audience` with `scopes`; its access tokens are JWTs.
    /// [`HydraError::ClientExists`] if one of that id exists.
    pub fn create_client(
        &self,
        client_id: &str,
        secret: &str,
        audience: &[&str],
        scopes: &[&str],
    ) -> Result<(), HydraError> {
        let step = "POST /admin/clients";
        let body = serde_json::json!({
            "client_id": client_id,
            "client_secret": secret,
            "grant_types": ["client_credentials"],
            "audience": audience,
            "scope": scopes.join(" "),
            "access_token_strategy": "jwt",
        });
        let url = format!("{}/admin/clients", self.admin_url);
        // The answer echoes the secret: only its status is read.
        let (status, answer) = send(step, |client| client.post(url).json(&body))?;
        match status {
            201 => Ok(()),
            409 => Err(HydraError::ClientExists { client_id: client_id.to_owned() }),
            _ => Err(refused(step, status, &answer)),
        }
    }

    /// Deletes the client `client_id`; a client that does not exist is no error.
    pub fn delete_client(&self, client_id: &str) -> Result<(), HydraError> {
        let step = "DELETE /admin/clients/{id}";
        let url = format!("{}/admin/clients/{}", self.admin_url, percent_encode(client_id));
        let (status, answer) = send(step, |client| client.delete(url))?;
        match status {
            204 | 404 => Ok(()),
            _ => Err(refused(step, status, &answer)),
        }
    }

    /// An access token (a JWT) for the client `client_id` by the client-credentials grant,
    /// for `audience` (none when empty: OpenZiti refuses such a token) with `scopes`.
    pub fn token(&self, client_id: &str, secret: &str, audience: &str, scopes: &[&str]) -> Result<String, HydraError> {
        let step = "POST /oauth2/token";
        let mut form = vec![("grant_type", "client_credentials".to_owned())];
        if !audience.is_empty() {
            form.push(("audience", audience.to_owned()));
        }
        if !scopes.is_empty() {
            form.push(("scope", scopes.join(" ")));
        }
        let url = format!("{}/oauth2/token", self.issuer);
        // RFC 6749 §2.3.1: the id and secret are form-encoded before basic authentication.
        let (user, password) = (percent_encode(client_id), percent_encode(secret));
        let (status, answer) = send(step, |client| client.post(url).basic_auth(user, Some(password)).form(&form))?;
        if status != 200 {
            return Err(refused(step, status, &answer));
        }
        let json: serde_json::Value = serde_json::from_slice(&answer)
            .map_err(|_| HydraError::Unexpected { step, reason: "its answer is not JSON".to_owned() })?;
        json["access_token"]
            .as_str()
            .filter(|token| token.split('.').count() == 3)
            .map(str::to_owned)
            .ok_or_else(|| HydraError::Unexpected { step, reason: "its answer holds no JWT access token".to_owned() })
    }
}

/// Makes one request on a thread of its own with its own runtime (see [`HydraAdmin`]),
/// returning the status and body.
fn send(
    step: &'static str,
    request: impl FnOnce(&reqwest::Client) -> reqwest::RequestBuilder + Send,
) -> Result<(u16, Vec<u8>), HydraError> {
    std::thread::scope(|scope| {
        let call = scope.spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| HydraError::Start { what: "an HTTP client runtime", source })?;
            runtime.block_on(async move {
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .timeout(REQUEST_TIMEOUT)
                    .build()
                    .map_err(|source| HydraError::Http { step, source })?;
                let response = request(&client).send().await.map_err(|source| HydraError::Http { step, source })?;
                let status = response.status().as_u16();
                let body = response.bytes().await.map_err(|source| HydraError::Http { step, source })?;
                Ok((status, body.to_vec()))
            })
        });
        call.join().unwrap_or_else(|_| {
            Err(HydraError::Unexpected { step, reason: "the thread making the request panicked".to_owned() })
        })
    })
}

/// Hydra's error answer: only its `error` and `error_description` (never the rest).
fn refused(step: &'static str, status: u16, answer: &[u8]) -> HydraError {
    let json: serde_json::Value = serde_json::from_slice(answer).unwrap_or_default();
    let field = |name: &str| json[name].as_str().unwrap_or_default().to_owned();
    let error = match field("error") {
        error if error.is_empty() => "no error code".to_owned(),
        error => error,
    };
    HydraError::Refused { step, status, error, description: field("error_description") }
}

/// `application/x-www-form-urlencoded` bytes: unreserved characters as they are, the
/// rest `%XX`.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(byte).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// 32 random bytes as 64 hex characters: a client secret, or Hydra's system secret.
pub fn random_secret() -> Result<String, HydraError> {
    let path = Path::new("/dev/urandom");
    let mut bytes = [0u8; 32];
    fs::File::open(path)
        .and_then(|mut urandom| std::io::Read::read_exact(&mut urandom, &mut bytes))
        .map_err(|source| file_error(path, source))?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Writes a client secret to `path`, readable by its owner only (0600) from the start.
pub fn write_secret_file(path: &Path, secret: &str) -> Result<(), HydraError> {
    crate::write_private(path, secret.as_bytes()).map_err(|source| file_error(path, source))
}

fn free_port() -> Result<u16, HydraError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|probe| probe.local_addr())
        .map(|addr| addr.port())
        .map_err(|source| HydraError::Start { what: "a free loopback port for hydra", source })
}

fn file_error(path: &Path, source: std::io::Error) -> HydraError {
    HydraError::File { path: path.to_path_buf(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_keeps_hydra_on_loopback_with_jwt_tokens() {
        let yaml = hydra_yaml(4444, 4445, "http://127.0.0.1:4444", "s3cret", 120);
        assert!(yaml.contains("dsn: memory"), "{yaml}");
        assert!(yaml.contains("public: { host: 127.0.0.1, port: 4444 }"), "{yaml}");
        assert!(yaml.contains("admin: { host: 127.0.0.1, port: 4445 }"), "{yaml}");
        assert!(yaml.contains("issuer: \"http://127.0.0.1:4444\""), "{yaml}");
        assert!(yaml.contains("access_token: jwt") && yaml.contains("access_token: 120s"), "{yaml}");
        assert!(!yaml.contains("0.0.0.0"), "{yaml}");
    }

    #[test]
    fn secrets_are_long_random_and_differ() {
        let (a, b) = (random_secret().unwrap(), random_secret().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn credentials_are_form_encoded() {
        assert_eq!(percent_encode("gateway-idp_1.x~"), "gateway-idp_1.x~");
        assert_eq!(percent_encode("a b:c/%"), "a%20b%3Ac%2F%25");
    }

    #[test]
    fn an_error_answer_is_reported_by_its_code_only() {
        let answer = br#"{"error":"invalid_scope","error_description":"not allowed","client_secret":"THE-SECRET"}"#;
        let err = refused("POST /oauth2/token", 400, answer).to_string();
        assert!(err.contains("invalid_scope") && err.contains("not allowed"), "{err}");
        assert!(!err.contains("THE-SECRET"), "{err}");
        let err = refused("POST /oauth2/token", 500, b"access_token=THE-TOKEN").to_string();
        assert!(err.contains("500") && !err.contains("THE-TOKEN"), "{err}");
    }

    #[test]
    fn a_missing_executable_is_not_found() {
        let err = HydraBinary::at(Path::new("/nonexistent/hydra"), Found::BinEnv).unwrap_err();
        assert!(matches!(err, HydraError::NotFound { .. }), "{err}");
    }

    #[test]
    fn a_zero_token_ttl_is_refused_before_anything_starts() {
        let binary =
            HydraBinary { path: PathBuf::from("/nonexistent/hydra"), version: "v0".to_owned(), found: Found::Path };
        let dir = std::env::temp_dir().join(format!("ziti-net-kit-hydra-ttl-{}", std::process::id()));
        let settings = HydraSettings { binary: &binary, dir: &dir, access_token_ttl: Duration::ZERO };
        let err = Hydra::start(&settings, &mut |_| {}).unwrap_err();
        assert!(matches!(err, HydraError::Invalid { .. }), "{err}");
        assert!(!dir.exists());
    }
}
