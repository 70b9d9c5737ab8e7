//! Wiring: the controller client, the gRPC service, the reaper and the admin
//! listener, run together until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;
use thiserror::Error;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use zitimgmt_grpc::proto::ziti_management_service_server::ZitiManagementServiceServer;

use crate::admin::serve_admin;
use crate::auth::Authenticator;
use crate::auth::jwt::{JwtError, JwtVerifier};
use crate::auth::spiffe::{SpiffeClientVerifier, SpiffeError};
use crate::config::{Config, GrpcTls};
use crate::controller::{Controller, ControllerError};
use crate::lease::Leases;
use crate::metrics::Metrics;
use crate::provision::{ProvisionError, Provisioner};
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
    #[error("the spiffe method cannot start")]
    Spiffe(#[from] SpiffeError),
    #[error("the jwt method cannot start")]
    Jwt(#[from] JwtError),
    #[error("the gRPC TLS settings are unusable: {0}")]
    Tls(String),
    #[error("provisioning cannot start: {0}")]
    Provision(#[source] ProvisionError),
}

/// Starts everything and serves until `shutdown` resolves.
///
/// Bad admin credentials stop the start. A controller that cannot be reached does
/// not: the server starts, `/readyz` says why it is not ready, calls answer
/// UNAVAILABLE, and the next call or probe logs in once the controller is back.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    if config.serves_unauthenticated_on_network() {
        tracing::warn!(
            grpc = %config.grpc_addr,
            "INSECURE: ZITI_MGMT_ALLOW_UNAUTHENTICATED=true, so callers without credentials are handed identities \
             on an address other machines can reach"
        );
    }
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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let spiffe = match &config.auth.spiffe {
        Some(settings) => Some(Arc::new(SpiffeClientVerifier::start(settings, provider.clone()).await?)),
        None => None,
    };
    let jwt = config.auth.jwt.clone().map(JwtVerifier::new).transpose()?;
    let authenticator = Authenticator::new(jwt, spiffe.is_some(), config.auth.none);
    let mut service =
        ManagementService::new(controller.clone(), leases, metrics.clone(), authenticator, config.policy.clone());
    if let Some(settings) = &config.provision {
        let provisioner = Arc::new(Provisioner::new(controller.clone(), settings.clone()));
        // A missing auth policy is a configuration mistake: say so now. A controller
        // that cannot be asked yet is asked again on the first call.
        match provisioner.auth_policy_id().await {
            Ok(_) => {}
            Err(err @ ProvisionError::NoAuthPolicy { .. }) => return Err(StartError::Provision(err)),
            Err(err) => tracing::warn!(%err, "cannot look up the provisioning auth policy yet; trying on first use"),
        }
        service = service.with_provisioner(provisioner);
    }
    let tls = match &config.grpc_tls {
        Some(tls) => Some(tls_acceptor(tls, spiffe.clone(), provider)?),
        None => None,
    };

    let stop = CancellationToken::new();
    let mut reaper = Reaper::new(controller.clone(), metrics.clone(), config.reaper_interval);
    if let Some(settings) = &config.provision {
        reaper = reaper.with_provisioned_idle(settings.idle);
    }
    let reaper = tokio::spawn(reaper.run(stop.clone().cancelled_owned()));
    let admin = tokio::spawn(serve_admin(admin, controller, metrics, stop.clone().cancelled_owned()));

    tracing::info!(
        grpc = %config.grpc_addr,
        admin = %config.admin_addr,
        controller = %url,
        lease_ttl = %humantime::format_duration(config.lease_ttl),
        reaper_interval = %humantime::format_duration(config.reaper_interval),
        tls = config.grpc_tls.is_some(),
        auth = %methods(&config),
        policy_rules = config.policy.rule_count(),
        provision_auth_policy = config.provision.as_ref().map(|settings| settings.auth_policy.as_str()),
        provision_idle = config.provision.as_ref().map(|settings| humantime::format_duration(settings.idle).to_string()),
        "ziti-management serving"
    );
    let routes = Server::builder().add_service(ZitiManagementServiceServer::new(service));
    let server: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> = match tls {
        Some(acceptor) => {
            let incoming = tls_incoming(grpc, acceptor, stop.clone());
            Box::pin(routes.serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned()))
        }
        None => {
            // TCP_NODELAY, as on the TLS path: see `tls_incoming`.
            let incoming = TcpIncoming::from(grpc).with_nodelay(Some(true));
            Box::pin(routes.serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned()))
        }
    };
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

/// The enabled methods, for the start-up line.
fn methods(config: &Config) -> String {
    let auth = &config.auth;
    let named = [(auth.spiffe.is_some(), "spiffe"), (auth.jwt.is_some(), "jwt"), (auth.none, "none")];
    named.iter().filter(|(on, _)| *on).map(|(_, name)| *name).collect::<Vec<_>>().join(",")
}

/// The server's TLS: its certificate from the files, and with the spiffe method the
/// callers' SVIDs verified against the trust bundle.
fn tls_acceptor(
    tls: &GrpcTls,
    spiffe: Option<Arc<SpiffeClientVerifier>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<TlsAcceptor, StartError> {
    let unusable = |what: &str| StartError::Tls(what.to_owned());
    let chain = CertificateDer::pem_slice_iter(&tls.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| unusable("ZITI_MGMT_TLS_CERT holds no readable certificate"))?;
    let key = PrivateKeyDer::from_pem_slice(&tls.key_pem)
        .map_err(|_| unusable("ZITI_MGMT_TLS_KEY holds no readable private key"))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| StartError::Tls(err.to_string()))?;
    let builder = match spiffe {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut server_config = builder.with_single_cert(chain, key).map_err(|err| StartError::Tls(err.to_string()))?;
    server_config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server_config)))
}

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepted connections after their TLS handshake. Handshakes run in tasks of their
/// own, so a slow or refused client holds up nobody else.
fn tls_incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    stop: CancellationToken,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (ready, incoming) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(%err, "accepting a gRPC connection failed");
                    continue;
                }
            };
            // Answers are small and go at once; Nagle would hold them for the peer's ACK.
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(%peer, %err, "cannot set TCP_NODELAY");
            }
            let acceptor = acceptor.clone();
            let ready = ready.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        ready.send(Ok(stream)).await.ok();
                    }
                    Ok(Err(err)) => tracing::info!(%peer, %err, "TLS handshake refused"),
                    Err(_) => tracing::info!(%peer, "TLS handshake not done within {HANDSHAKE_TIMEOUT:?}"),
                }
            });
        }
    });
    ReceiverStream::new(incoming)
}

fn grpc_error(err: tonic::transport::Error) -> StartError {
    StartError::Grpc(service_kit::causes::with_causes(&err))
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Listen { what, addr, source })
}
