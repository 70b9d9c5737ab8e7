//! Wiring: the controller client, the gRPC service, the reaper and the admin
//! listener, run together until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Identity as TlsIdentity, Server, ServerTlsConfig};
use zitimgmt_grpc::proto::ziti_management_service_server::ZitiManagementServiceServer;

use crate::admin::serve_admin;
use crate::config::Config;
use crate::controller::{Controller, ControllerError};
use crate::lease::Leases;
use crate::metrics::Metrics;
use crate::reaper::Reaper;
use crate::service::ManagementService;

/// How long calls in flight may take to finish once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum StartError {
    #[error("cannot use the controller at {url}: {source}")]
    Controller {
        url: String,
        #[source]
        source: ControllerError,
    },
    #[error("cannot listen on {addr} ({what}): {source}")]
    Listen {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the gRPC server failed: {0}")]
    Grpc(String),
}

/// Starts everything and serves until `shutdown` resolves.
///
/// Bad admin credentials stop the start. A controller that cannot be reached does
/// not: the server starts, `/readyz` says why it is not ready, calls answer
/// UNAVAILABLE, and the next call or probe logs in once the controller is back.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    if config.serves_plaintext_on_network() {
        tracing::warn!(
            grpc = %config.grpc_addr,
            "INSECURE: ZITI_MGMT_INSECURE=true, so gRPC is served in plain text on an address other machines \
             can reach; the identities it hands out, private keys included, can be read by anyone on the path"
        );
    }
    let url = config.controller_url.to_string();
    let controller = Controller::new(
        config.controller_url.clone(),
        config.controller_ca_pem.as_deref(),
        config.admin_user.clone(),
        config.admin_password.clone(),
    )
    .map_err(|source| StartError::Controller { url: url.clone(), source })?;
    let controller = Arc::new(controller);
    match controller.ensure_session().await {
        Ok(()) => {}
        Err(source @ ControllerError::BadCredentials { .. }) => return Err(StartError::Controller { url, source }),
        Err(err) => {
            tracing::warn!(controller = %url, %err, "the controller is not usable yet; starting anyway (not ready)")
        }
    }

    let grpc = bind("gRPC", config.grpc_addr).await?;
    let admin = bind("admin", config.admin_addr).await?;
    let metrics = Arc::new(Metrics::new());
    let leases = Leases::new(controller.clone(), config.lease_ttl);
    let service = ManagementService::new(controller.clone(), leases, metrics.clone(), config.gateway_role_attributes);

    let stop = CancellationToken::new();
    let reaper = Reaper::new(controller.clone(), metrics.clone(), config.reaper_interval);
    let reaper = tokio::spawn(reaper.run(stop.clone().cancelled_owned()));
    let admin = tokio::spawn(serve_admin(admin, controller, metrics, stop.clone().cancelled_owned()));

    let mut builder = Server::builder();
    if let Some(tls) = &config.grpc_tls {
        let identity = TlsIdentity::from_pem(&tls.cert_pem, tls.key_pem.as_slice());
        builder = builder.tls_config(ServerTlsConfig::new().identity(identity)).map_err(grpc_error)?;
    }
    tracing::info!(
        grpc = %config.grpc_addr,
        admin = %config.admin_addr,
        controller = %url,
        lease_ttl = %humantime::format_duration(config.lease_ttl),
        reaper_interval = %humantime::format_duration(config.reaper_interval),
        tls = config.grpc_tls.is_some(),
        "ziti-management serving"
    );
    let server = builder
        .add_service(ZitiManagementServiceServer::new(service))
        .serve_with_incoming_shutdown(TcpListenerStream::new(grpc), stop.clone().cancelled_owned());
    tokio::pin!(server);
    tokio::pin!(shutdown);
    let served = tokio::select! {
        served = &mut server => served,
        () = &mut shutdown => {
            stop.cancel();
            // Calls in flight may finish; a client that holds its connection open may not
            // keep the process alive.
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(served) => served,
                Err(_) => {
                    tracing::warn!("calls still open {SHUTDOWN_GRACE:?} after shutdown began; stopping anyway");
                    Ok(())
                }
            }
        }
    };
    stop.cancel();
    reaper.await.ok();
    admin.await.ok();
    served.map_err(grpc_error)
}

fn grpc_error(err: tonic::transport::Error) -> StartError {
    StartError::Grpc(service_kit::causes::with_causes(&err))
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Listen { what, addr, source })
}
