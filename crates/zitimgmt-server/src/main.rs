//! `ziti-management`: reads its configuration, logs in to the controller and serves
//! gRPC until SIGTERM or SIGINT. Exit codes: 0 after a clean shutdown, 1 when it
//! cannot start or stops with an error (e.g. the controller refused the admin
//! credentials), 2 on bad configuration.

use std::process::ExitCode;

use service_kit::logging::LogFormat;
use zitimgmt_server::config::Config;

fn main() -> ExitCode {
    let config = match Config::load() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("ziti-management: configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    service_kit::logging::init(LogFormat::Text);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("ziti-management: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(zitimgmt_server::server::run(config, shutdown_signal())) {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(err) => {
            // Each error's message carries its causes already.
            tracing::error!("{err}");
            eprintln!("ziti-management: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM or SIGINT (or at once when signals cannot be watched).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (term, int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(err), _) | (_, Err(err)) => {
            tracing::error!(%err, "cannot listen for signals; stopping");
            return;
        }
    };
    let (mut term, mut int) = (term, int);
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutdown requested");
}
