//! The gRPC service (`zitimgmt.v1.ZitiManagementService`): checks requests, calls
//! the enroller, the leases or the controller, and maps each failure to the gRPC
//! code a client can act on:
//!
//! | failure | code |
//! |---|---|
//! | unknown or unspecified service type, no id or name given | `INVALID_ARGUMENT` |
//! | no such identity (resolve), no such live lease of this server (extend, release) | `NOT_FOUND` |
//! | controller unreachable, 5xx or 429, admin login refused | `UNAVAILABLE` |
//! | the new identity vanished during its enrollment | `ABORTED` |
//! | anything else the controller or this server did not expect | `INTERNAL` |

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tonic::{Code, Request, Response, Status};
use zitimgmt_grpc::proto::ziti_management_service_server::ZitiManagementService;
use zitimgmt_grpc::proto::{
    ExtendIdentityLeaseRequest, ExtendIdentityLeaseResponse, ReleaseServiceIdentityRequest,
    ReleaseServiceIdentityResponse, RequestServiceIdentityRequest, RequestServiceIdentityResponse,
    ResolveIdentityRequest, ResolveIdentityResponse, ServiceType,
};

use crate::ca_bundle::CaBundleError;
use crate::controller::{Controller, ControllerError, Identity};
use crate::enrollment::{Enroller, EnrollmentError, ServiceProfile};
use crate::lease::{LeaseError, Leases};
use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub struct ManagementService {
    controller: Arc<Controller>,
    enroller: Arc<Enroller>,
    leases: Leases,
    metrics: Arc<Metrics>,
    gateway_role_attributes: Vec<String>,
}

impl ManagementService {
    pub fn new(
        controller: Arc<Controller>,
        leases: Leases,
        metrics: Arc<Metrics>,
        gateway_role_attributes: Vec<String>,
    ) -> Self {
        let enroller = Arc::new(Enroller::new(controller.clone(), leases.ttl()));
        Self { controller, enroller, leases, metrics, gateway_role_attributes }
    }

    /// Runs one call, counting it by method and code and timing it.
    async fn observed<T>(
        &self,
        method: &'static str,
        call: impl Future<Output = Result<T, Status>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let result = call.await;
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        self.metrics.record_request(method, code, started.elapsed());
        if let Err(status) = &result {
            match code {
                Code::Internal | Code::Unavailable | Code::Aborted => {
                    tracing::warn!(method, ?code, message = status.message(), "call failed");
                }
                _ => tracing::debug!(method, ?code, message = status.message(), "call refused"),
            }
        }
        result.map(Response::new)
    }

    fn profile(&self, service_type: i32) -> Result<ServiceProfile, Status> {
        match ServiceType::try_from(service_type) {
            Ok(ServiceType::Gateway) => {
                Ok(ServiceProfile { type_name: "gateway", role_attributes: self.gateway_role_attributes.clone() })
            }
            Ok(ServiceType::Unspecified) => Err(Status::invalid_argument("service_type must be given")),
            Err(_) => Err(Status::invalid_argument(format!("unknown service_type {service_type}"))),
        }
    }

    async fn resolve(&self, request: ResolveIdentityRequest) -> Result<ResolveIdentityResponse, Status> {
        let found = match (request.ziti_identity_id.as_str(), request.ziti_identity_name.as_str()) {
            ("", "") => return Err(Status::invalid_argument("give ziti_identity_id or ziti_identity_name")),
            ("", name) => self.controller.identity_by_name(name).await,
            (id, _) => self.controller.identity(id).await,
        };
        let identity = found.map_err(|err| match err {
            ControllerError::NotFound { .. } => Status::not_found("no such identity"),
            err => controller_status(&err),
        })?;
        Ok(resolved(identity))
    }

    async fn request_identity(
        &self,
        request: RequestServiceIdentityRequest,
    ) -> Result<RequestServiceIdentityResponse, Status> {
        let profile = self.profile(request.service_type)?;
        let issued = self.enroller.issue_detached(profile).await.map_err(|err| enrollment_status(&err))?;
        Ok(RequestServiceIdentityResponse {
            ziti_identity_id: issued.id.clone(),
            // Leaves zeroizing memory here: prost owns the bytes from now on.
            identity_json: issued.identity_json.to_vec(),
            lease_expires_at: Some(issued.expires.into()),
        })
    }

    async fn extend(&self, request: ExtendIdentityLeaseRequest) -> Result<ExtendIdentityLeaseResponse, Status> {
        let expires = self.leases.extend(&request.ziti_identity_id).await.map_err(|err| lease_status(&err))?;
        Ok(ExtendIdentityLeaseResponse { lease_expires_at: Some(expires.into()) })
    }

    async fn release(&self, request: ReleaseServiceIdentityRequest) -> Result<ReleaseServiceIdentityResponse, Status> {
        self.leases.release(&request.ziti_identity_id).await.map_err(|err| lease_status(&err))?;
        tracing::info!(identity = %request.ziti_identity_id, "lease released; identity deleted");
        Ok(ReleaseServiceIdentityResponse {})
    }
}

#[tonic::async_trait]
impl ZitiManagementService for ManagementService {
    async fn resolve_identity(
        &self,
        request: Request<ResolveIdentityRequest>,
    ) -> Result<Response<ResolveIdentityResponse>, Status> {
        self.observed("ResolveIdentity", self.resolve(request.into_inner())).await
    }

    async fn request_service_identity(
        &self,
        request: Request<RequestServiceIdentityRequest>,
    ) -> Result<Response<RequestServiceIdentityResponse>, Status> {
        self.observed("RequestServiceIdentity", self.request_identity(request.into_inner())).await
    }

    async fn extend_identity_lease(
        &self,
        request: Request<ExtendIdentityLeaseRequest>,
    ) -> Result<Response<ExtendIdentityLeaseResponse>, Status> {
        self.observed("ExtendIdentityLease", self.extend(request.into_inner())).await
    }

    async fn release_service_identity(
        &self,
        request: Request<ReleaseServiceIdentityRequest>,
    ) -> Result<Response<ReleaseServiceIdentityResponse>, Status> {
        self.observed("ReleaseServiceIdentity", self.release(request.into_inner())).await
    }
}

fn resolved(identity: Identity) -> ResolveIdentityResponse {
    let external_id = identity.external_id.unwrap_or_default();
    let principal = if external_id.is_empty() { identity.name.clone() } else { external_id.clone() };
    ResolveIdentityResponse {
        ziti_identity_id: identity.id,
        name: identity.name,
        principal,
        role_attributes: identity.role_attributes.unwrap_or_default(),
        external_id,
    }
}

/// What a caller is told when the controller failed us. The details (the admin user,
/// TLS and network errors, the controller's own messages) are for the operator and go
/// to the log only.
pub const UNAVAILABLE_MESSAGE: &str = "the controller is unavailable; try again later";
/// What a caller is told about a failure on this side; the details are in the log.
pub const INTERNAL_MESSAGE: &str = "ziti-management could not complete the call; see its log";

fn controller_status(err: &ControllerError) -> Status {
    tracing::warn!(%err, "controller call failed");
    if err.is_unavailable() { Status::unavailable(UNAVAILABLE_MESSAGE) } else { Status::internal(INTERNAL_MESSAGE) }
}

fn lease_status(err: &LeaseError) -> Status {
    match err {
        LeaseError::NotFound { .. } => Status::not_found(err.to_string()),
        LeaseError::Controller(err) => controller_status(err),
    }
}

fn enrollment_status(err: &EnrollmentError) -> Status {
    match err {
        EnrollmentError::Controller(ControllerError::NotFound { .. }) => {
            tracing::warn!(%err, "enrollment interrupted");
            Status::aborted("the new identity vanished during its enrollment; ask again")
        }
        EnrollmentError::Controller(err) | EnrollmentError::CaBundle(CaBundleError::Controller(err)) => {
            controller_status(err)
        }
        EnrollmentError::CaBundle(_)
        | EnrollmentError::NoToken { .. }
        | EnrollmentError::Key(_)
        | EnrollmentError::Json(_)
        | EnrollmentError::Interrupted => {
            tracing::warn!(%err, "enrollment failed");
            Status::internal(INTERNAL_MESSAGE)
        }
    }
}
