//! `gateway`: reads its configuration, wires the adapters and runs until SIGTERM or
//! SIGINT. Exit codes: 0 after a clean shutdown, 1 on a runtime failure, 2 on bad
//! configuration.

mod management;

use std::process::ExitCode;

use anyhow::Context;
use gateway_bin::app::{self, Dependencies};
use std::sync::Arc;
use std::time::Duration;

use domain::ports::IdentityProvider;
use gateway_bin::config::{Config, IdentitySourceConfig, JwtTokenConfig, OverlayConfig};
use idp_identity::{
    ClientCredentials, ClientCredentialsSettings, FileToken, IdpIdentitySource, IdpSettings, TokenSource,
};
use spiffe_identity::{SpiffeIdentitySource, SpiffeSettings};

/// One attempt to get an SVID from the Workload API (the agent answers "no identity
/// issued" for its first seconds; start-up retries until `ZITI_ENROLLMENT_TIMEOUT`).
const SPIFFE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request to the identity provider may take.
const IDP_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let config = match Config::load() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("gateway: configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    service_kit::logging::init(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("gateway: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The one place the whole chain is printed, each cause once.
            let message = service_kit::causes::with_causes(err.as_ref());
            tracing::error!("{message}");
            eprintln!("gateway: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    if config.ignored_identity_file {
        tracing::warn!("ZITI_IDENTITY_FILE is set but ignored: the identity comes from ZITI_IDENTITY_SOURCE");
    }
    let management = match &config.overlay {
        Some(overlay) => Some(
            management::connect(overlay, SPIFFE_ATTEMPT_TIMEOUT.max(overlay.enrollment_timeout))
                .await
                .context("cannot set up the ziti-management client")?,
        ),
        None => None,
    };
    let deps = Dependencies {
        provider: config.overlay.as_ref().map(|overlay| identity_source(overlay, management.clone())).transpose()?,
        resolver: management.map(|client| client as _),
        overlay: std::sync::Arc::new(ziti_transport::ZitiBinder),
    };
    let gateway = tokio::select! {
        started = app::start(config, deps) => started.context("the gateway could not start")?,
        signal = shutdown_signal() => {
            tracing::info!(signal = signal?, "stopped during start-up");
            return Ok(());
        }
    };
    gateway
        .run_until(async {
            match shutdown_signal().await {
                Ok(signal) => tracing::info!(signal, "shutdown requested"),
                Err(err) => tracing::error!(%err, "cannot wait for signals; shutting down"),
            }
        })
        .await
        .context("the gateway stopped with an error")
}

/// The identity source `ZITI_IDENTITY_SOURCE` picks, ready to use.
fn identity_source(
    overlay: &OverlayConfig,
    management: Option<Arc<zitimgmt_grpc::ManagementClient>>,
) -> anyhow::Result<Arc<dyn IdentityProvider>> {
    Ok(match &overlay.identity_source {
        IdentitySourceConfig::Spiffe(spiffe) => Arc::new(SpiffeIdentitySource::new(SpiffeSettings {
            endpoint: spiffe.endpoint.clone(),
            spiffe_id: spiffe.spiffe_id.clone(),
            controller_url: spiffe.controller_url.clone(),
            controller_ca_pem: spiffe.controller_ca_pem.clone(),
            attempt_timeout: SPIFFE_ATTEMPT_TIMEOUT,
        })),
        IdentitySourceConfig::Jwt(jwt) => {
            let settings = IdpSettings {
                controller_url: jwt.controller_url.clone(),
                controller_ca_pem: jwt.controller_ca_pem.clone(),
            };
            let source = IdpIdentitySource::new(settings, token_source(&jwt.token)?);
            match (jwt.provision, management) {
                (true, Some(client)) => Arc::new(source.with_provisioner(Arc::new(management::Provisioner(client)))),
                _ => Arc::new(source),
            }
        }
        _ => management.context("no ziti-management client")?,
    })
}

/// Where the `jwt` source's token comes from.
fn token_source(token: &JwtTokenConfig) -> anyhow::Result<Arc<dyn TokenSource>> {
    Ok(match token {
        JwtTokenConfig::File(path) => Arc::new(FileToken::new(path)),
        JwtTokenConfig::ClientCredentials { issuer, client_id, secret_file, audience, scopes } => {
            let issuer = issuer.parse().context("ZITI_OIDC_ISSUER")?;
            Arc::new(ClientCredentials::new(ClientCredentialsSettings {
                issuer,
                client_id: client_id.clone(),
                secret_file: secret_file.clone(),
                audience: audience.clone(),
                scopes: scopes.clone(),
                timeout: IDP_REQUEST_TIMEOUT,
            })?)
        }
        _ => anyhow::bail!("this token source is not supported"),
    })
}

/// Resolves on SIGTERM or SIGINT with the signal's name.
async fn shutdown_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
