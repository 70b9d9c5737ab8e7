//! The gRPC service (`zitimgmt.v1.ZitiManagementService`): checks requests, calls
//! the enroller, the leases or the controller, and maps each failure to the gRPC
//! code a client can act on:
//!
//! | failure | code |
//! |---|---|
//! | no credentials, or credentials that do not verify | `UNAUTHENTICATED` |
//! | a principal the policy does not allow this | `PERMISSION_DENIED` |
//! | provisioning asked by a caller not authenticated by an IdP token | `PERMISSION_DENIED` |
//! | provisioning over an identity with the caller's external id that this server did not provision | `FAILED_PRECONDITION` |
//! | provisioning not enabled on this server | `UNIMPLEMENTED` |
//! | unknown or unspecified service type, no id or name given | `INVALID_ARGUMENT` |
//! | no such identity (resolve), no such live lease of this server held by the caller (extend, release) | `NOT_FOUND` |
//! | controller unreachable, 5xx or 429, admin login refused | `UNAVAILABLE` |
//! | the new identity vanished during its enrollment | `ABORTED` |
//! | anything else the controller or this server did not expect | `INTERNAL` |

use std::sync::Arc;
use std::time::Instant;

use tonic::{Code, Request, Response, Status};
use zitimgmt_grpc::proto::ziti_management_service_server::ZitiManagementService;
use zitimgmt_grpc::proto::{
    ExtendIdentityLeaseRequest, ExtendIdentityLeaseResponse, ProvisionIdentityRequest, ProvisionIdentityResponse,
    ReleaseServiceIdentityRequest, ReleaseServiceIdentityResponse, RequestServiceIdentityRequest,
    RequestServiceIdentityResponse, ResolveIdentityRequest, ResolveIdentityResponse, ServiceType,
};

use crate::auth::{Authenticator, Caller, Principal};
use crate::ca_bundle::CaBundleError;
use crate::controller::{Controller, ControllerError, Identity};
use crate::enrollment::{Enroller, EnrollmentError, ServiceProfile};
use crate::lease::{LeaseError, Leases, holder, is_managed};
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::provision::{ProvisionError, Provisioner};

#[derive(Debug, Clone)]
pub struct ManagementService {
    controller: Arc<Controller>,
    enroller: Arc<Enroller>,
    leases: Leases,
    metrics: Arc<Metrics>,
    authenticator: Authenticator,
    policy: Arc<Policy>,
    provisioner: Option<Arc<Provisioner>>,
}

impl ManagementService {
    pub fn new(
        controller: Arc<Controller>,
        leases: Leases,
        metrics: Arc<Metrics>,
        authenticator: Authenticator,
        policy: Arc<Policy>,
    ) -> Self {
        let enroller = Arc::new(Enroller::new(controller.clone(), leases.ttl()));
        Self { controller, enroller, leases, metrics, authenticator, policy, provisioner: None }
    }

    /// Serves `ProvisionIdentity` with this provisioner (else it is UNIMPLEMENTED).
    pub fn with_provisioner(self, provisioner: Arc<Provisioner>) -> Self {
        Self { provisioner: Some(provisioner), ..self }
    }

    /// Authenticates one call and runs it, counting it by method, code and principal
    /// class and timing it.
    async fn observed<M, T>(
        &self,
        method: &'static str,
        request: Request<M>,
        call: impl AsyncFnOnce(Caller, M) -> Result<T, Status>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let (class, result) = match self.authenticator.authenticate_caller(&request).await {
            Ok(caller) => (caller.principal.class(), call(caller, request.into_inner()).await),
            Err(err) if err.is_unavailable() => {
                tracing::warn!(method, %err, "cannot authenticate the caller");
                ("unauthenticated", Err(Status::unavailable("cannot check the bearer token now; try again later")))
            }
            Err(err) => ("unauthenticated", Err(Status::unauthenticated(err.to_string()))),
        };
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        self.metrics.record_request(method, code, class, started.elapsed());
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

    fn service_type(service_type: i32) -> Result<&'static str, Status> {
        match ServiceType::try_from(service_type) {
            Ok(ServiceType::Gateway) => Ok("gateway"),
            Ok(ServiceType::Unspecified) => Err(Status::invalid_argument("service_type must be given")),
            Err(_) => Err(Status::invalid_argument(format!("unknown service_type {service_type}"))),
        }
    }

    /// Refuses a principal that no rule of the policy names.
    fn admitted(&self, principal: &Principal) -> Result<(), Status> {
        if self.policy.admits(principal) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!("{principal} is not admitted by ziti-management's policy")))
        }
    }

    async fn resolve(
        &self,
        principal: Principal,
        request: ResolveIdentityRequest,
    ) -> Result<ResolveIdentityResponse, Status> {
        self.admitted(&principal)?;
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
        principal: Principal,
        request: RequestServiceIdentityRequest,
    ) -> Result<RequestServiceIdentityResponse, Status> {
        let service_type = Self::service_type(request.service_type)?;
        let Some(grant) = self.policy.grant(&principal, service_type) else {
            tracing::info!(target: AUDIT, event = "identity.refused", %principal, service_type, "not allowed by the policy");
            return Err(Status::permission_denied(format!("{principal} may not request {service_type} identities")));
        };
        let profile = ServiceProfile {
            type_name: service_type,
            role_attributes: grant.role_attributes,
            holder: principal.to_tag(),
        };
        let issued = self.enroller.issue_detached(profile).await.map_err(|err| enrollment_status(&err))?;
        tracing::info!(target: AUDIT, event = "identity.issued", %principal, identity = %issued.id, service_type, "identity issued");
        Ok(RequestServiceIdentityResponse {
            ziti_identity_id: issued.id.clone(),
            // Leaves zeroizing memory here: prost owns the bytes from now on.
            identity_json: issued.identity_json.to_vec(),
            lease_expires_at: Some(issued.expires.into()),
        })
    }

    async fn extend(
        &self,
        principal: Principal,
        request: ExtendIdentityLeaseRequest,
    ) -> Result<ExtendIdentityLeaseResponse, Status> {
        self.admitted(&principal)?;
        let id = request.ziti_identity_id;
        let expires = self.leases.extend(&id, &principal.to_tag()).await.map_err(|err| {
            audit_refusal("lease.extension_refused", &principal, &id, &err);
            lease_status(&err)
        })?;
        Ok(ExtendIdentityLeaseResponse { lease_expires_at: Some(expires.into()) })
    }

    async fn release(
        &self,
        principal: Principal,
        request: ReleaseServiceIdentityRequest,
    ) -> Result<ReleaseServiceIdentityResponse, Status> {
        self.admitted(&principal)?;
        let id = request.ziti_identity_id;
        let service_type = self.leases.release(&id, &principal.to_tag()).await.map_err(|err| {
            audit_refusal("lease.release_refused", &principal, &id, &err);
            lease_status(&err)
        })?;
        tracing::info!(
            target: AUDIT,
            event = "lease.released",
            %principal,
            identity = %id,
            service_type,
            "lease released; identity deleted"
        );
        Ok(ReleaseServiceIdentityResponse {})
    }

    async fn provision(
        &self,
        caller: Caller,
        _request: ProvisionIdentityRequest,
    ) -> Result<ProvisionIdentityResponse, Status> {
        let Some(provisioner) = &self.provisioner else {
            return Err(Status::unimplemented(
                "this ziti-management does not provision identities (ZITI_MGMT_PROVISION_AUTH_POLICY is not set)",
            ));
        };
        let principal = &caller.principal;
        let (Principal::Jwt(external_id), Some(claims)) = (principal, &caller.claims) else {
            tracing::info!(target: AUDIT, event = "identity.provision_refused", %principal, reason = "not an IdP token", "refused");
            return Err(Status::permission_denied(format!(
                "{principal} may not provision an identity: only callers authenticated by their identity provider's \
                 bearer token may"
            )));
        };
        let provisioned = provisioner.provision(external_id, claims).await.map_err(|err| {
            if let ProvisionError::NotProvisioned { id, .. } | ProvisionError::NameTaken { name: id } = &err {
                tracing::info!(target: AUDIT, event = "identity.provision_refused", %principal, identity = %id, reason = %err, "refused");
            }
            provision_status(&err)
        })?;
        let event = if provisioned.created { "identity.provisioned" } else { "identity.provision_updated" };
        tracing::info!(
            target: AUDIT,
            event,
            %principal,
            identity = %provisioned.id,
            role_attributes = ?provisioned.role_attributes,
            refused_role_attributes = ?provisioned.refused_roles,
            "identity provisioned from the caller's token"
        );
        Ok(ProvisionIdentityResponse {
            ziti_identity_id: provisioned.id,
            name: provisioned.name,
            external_id: provisioned.external_id,
            role_attributes: provisioned.role_attributes,
            created: provisioned.created,
        })
    }
}

/// The `tracing` target of the audit log: one line per issuance, refusal and release,
/// naming the principal, the identity and the service type; never key material.
pub const AUDIT: &str = "audit";

fn audit_refusal(event: &'static str, principal: &Principal, id: &str, err: &LeaseError) {
    let (reason, service_type) = match err {
        LeaseError::NotFound { .. } => ("no such lease", ""),
        LeaseError::HeldByAnother { service_type, .. } => ("held by another principal", service_type.as_str()),
        LeaseError::Controller(_) => return,
    };
    tracing::info!(target: AUDIT, event, %principal, identity = %id, service_type, reason, "refused");
}

#[tonic::async_trait]
impl ZitiManagementService for ManagementService {
    async fn resolve_identity(
        &self,
        request: Request<ResolveIdentityRequest>,
    ) -> Result<Response<ResolveIdentityResponse>, Status> {
        self.observed("ResolveIdentity", request, async |caller, message| self.resolve(caller.principal, message).await)
            .await
    }

    async fn request_service_identity(
        &self,
        request: Request<RequestServiceIdentityRequest>,
    ) -> Result<Response<RequestServiceIdentityResponse>, Status> {
        self.observed("RequestServiceIdentity", request, async |caller, message| {
            self.request_identity(caller.principal, message).await
        })
        .await
    }

    async fn extend_identity_lease(
        &self,
        request: Request<ExtendIdentityLeaseRequest>,
    ) -> Result<Response<ExtendIdentityLeaseResponse>, Status> {
        self.observed("ExtendIdentityLease", request, async |caller, message| {
            self.extend(caller.principal, message).await
        })
        .await
    }

    async fn release_service_identity(
        &self,
        request: Request<ReleaseServiceIdentityRequest>,
    ) -> Result<Response<ReleaseServiceIdentityResponse>, Status> {
        self.observed("ReleaseServiceIdentity", request, async |caller, message| {
            self.release(caller.principal, message).await
        })
        .await
    }

    async fn provision_identity(
        &self,
        request: Request<ProvisionIdentityRequest>,
    ) -> Result<Response<ProvisionIdentityResponse>, Status> {
        self.observed("ProvisionIdentity", request, async |caller, message| self.provision(caller, message).await).await
    }
}

fn resolved(identity: Identity) -> ResolveIdentityResponse {
    let tags = identity.tags();
    let issued_to = if is_managed(&tags) { holder(&tags).to_owned() } else { String::new() };
    let external_id = identity.external_id.unwrap_or_default();
    let principal = if external_id.is_empty() { identity.name.clone() } else { external_id.clone() };
    ResolveIdentityResponse {
        ziti_identity_id: identity.id,
        name: identity.name,
        principal,
        role_attributes: identity.role_attributes.unwrap_or_default(),
        external_id,
        issued_to,
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

fn provision_status(err: &ProvisionError) -> Status {
    match err {
        ProvisionError::NotProvisioned { .. } | ProvisionError::NameTaken { .. } => {
            Status::failed_precondition(err.to_string())
        }
        // The operator's to fix (the name of a missing auth policy is no secret).
        ProvisionError::NoAuthPolicy { .. } => {
            tracing::warn!(%err, "cannot provision");
            Status::failed_precondition(err.to_string())
        }
        ProvisionError::Controller(err) => controller_status(err),
    }
}

fn lease_status(err: &LeaseError) -> Status {
    match err {
        LeaseError::NotFound { .. } | LeaseError::HeldByAnother { .. } => Status::not_found(err.to_string()),
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
