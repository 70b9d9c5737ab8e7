//! Leases, kept on the controller as tags of the leased identity, so that a restart
//! or a second replica of this server loses nothing:
//!
//! | tag | value |
//! |---|---|
//! | `zitiMgmtManaged` | `true`: this server created the identity and may delete it |
//! | `zitiMgmtServiceType` | the service type it was issued for, e.g. `gateway` |
//! | `zitiMgmtLeaseExpires` | the expiry, UTC RFC 3339 with milliseconds, e.g. `2026-11-22T10:00:00.000Z` |
//! | `zitiMgmtHolder` | the principal it was issued to ([`crate::auth::Principal::to_tag`]); only it may extend or release |
//!
//! The expiry is a fixed-width string because ZitiQL compares strings by byte order,
//! which then agrees with time order (numeric tags are stored as floats and compare
//! badly), and tag names are letters only because ZitiQL identifiers allow no digits.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};
use thiserror::Error;

use crate::controller::{Controller, ControllerError};

pub const MANAGED_TAG: &str = "zitiMgmtManaged";
pub const SERVICE_TYPE_TAG: &str = "zitiMgmtServiceType";
pub const EXPIRES_TAG: &str = "zitiMgmtLeaseExpires";
pub const HOLDER_TAG: &str = "zitiMgmtHolder";
/// The holder of leases issued before leases recorded one: they were issued to
/// whoever asked, so only an anonymous caller may keep them.
const UNRECORDED_HOLDER: &str = "anonymous";

#[derive(Debug, Error)]
pub enum LeaseError {
    /// Unknown, expired, not managed by this server, or held by another principal:
    /// there is no lease this caller may act on (which of these is not said).
    #[error("no lease for identity {id:?}")]
    NotFound { id: String },
    /// The lease exists but another principal holds it. Callers are told
    /// [`LeaseError::NotFound`]'s message; the audit log says which it was.
    #[error("no lease for identity {id:?}")]
    HeldByAnother { id: String, service_type: String },
    #[error(transparent)]
    Controller(#[from] ControllerError),
}

/// The expiry as stored in [`EXPIRES_TAG`].
pub fn format_expiry(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

pub fn parse_expiry(value: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(value).ok()
}

/// The tags of a freshly issued lease.
pub fn new_lease_tags(service_type: &str, holder: &str, expires: SystemTime) -> Map<String, Value> {
    let mut tags = Map::new();
    tags.insert(MANAGED_TAG.to_owned(), Value::Bool(true));
    tags.insert(SERVICE_TYPE_TAG.to_owned(), Value::String(service_type.to_owned()));
    tags.insert(HOLDER_TAG.to_owned(), Value::String(holder.to_owned()));
    tags.insert(EXPIRES_TAG.to_owned(), Value::String(format_expiry(expires)));
    tags
}

pub fn is_managed(tags: &Map<String, Value>) -> bool {
    tags.get(MANAGED_TAG) == Some(&Value::Bool(true))
}

/// The principal a managed identity was issued to.
pub fn holder(tags: &Map<String, Value>) -> &str {
    tags.get(HOLDER_TAG).and_then(Value::as_str).unwrap_or(UNRECORDED_HOLDER)
}

/// The service type a managed identity was issued for, when recorded.
pub fn service_type(tags: &Map<String, Value>) -> Option<&str> {
    tags.get(SERVICE_TYPE_TAG).and_then(Value::as_str)
}

pub fn expiry(tags: &Map<String, Value>) -> Option<SystemTime> {
    tags.get(EXPIRES_TAG)?.as_str().and_then(parse_expiry)
}

/// ZitiQL for managed identities whose lease ran out before `before`.
pub fn expired_filter(before: SystemTime) -> String {
    format!("tags.{MANAGED_TAG} = true and tags.{EXPIRES_TAG} < \"{}\"", format_expiry(before))
}

/// ZitiQL for managed identities whose lease still runs at `at`.
pub fn held_filter(at: SystemTime) -> String {
    format!("tags.{MANAGED_TAG} = true and tags.{EXPIRES_TAG} >= \"{}\"", format_expiry(at))
}

/// Extends and releases leases on the controller.
#[derive(Debug, Clone)]
pub struct Leases {
    controller: Arc<Controller>,
    ttl: Duration,
}

impl Leases {
    pub fn new(controller: Arc<Controller>, ttl: Duration) -> Self {
        Self { controller, ttl }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Moves the expiry to now + TTL, for the lease's holder only. A lease whose expiry
    /// has passed is over even if the reaper has not been by yet: it is deleted and
    /// reported as not found.
    pub async fn extend(&self, id: &str, holder: &str) -> Result<SystemTime, LeaseError> {
        let identity = self.held(id, holder).await?;
        let mut tags = identity.tags();
        let now = SystemTime::now();
        if expiry(&tags).is_none_or(|expires| expires <= now) {
            tracing::info!(identity = %id, "lease found expired on extension; deleting the identity");
            self.delete(id).await?;
            return Err(LeaseError::NotFound { id: id.to_owned() });
        }
        let expires = now + self.ttl;
        // The whole map is replaced: keep every other tag as it was.
        tags.insert(EXPIRES_TAG.to_owned(), Value::String(format_expiry(expires)));
        self.controller.set_tags(id, &tags).await.map_err(|err| not_found_as_lease(id, err))?;
        Ok(expires)
    }

    /// Ends the lease at once by deleting the identity, for the lease's holder only;
    /// returns the service type it was issued for (for the audit log).
    pub async fn release(&self, id: &str, holder: &str) -> Result<String, LeaseError> {
        let identity = self.held(id, holder).await?;
        self.delete(id).await?;
        Ok(service_type(&identity.tags()).unwrap_or_default().to_owned())
    }

    /// The identity, if it is a lease of this server held by `holder`. Another
    /// holder's lease is reported exactly as a missing one, so that a caller learns
    /// nothing about leases that are not its own.
    async fn held(&self, id: &str, holder: &str) -> Result<crate::controller::Identity, LeaseError> {
        let identity = self.managed(id).await?;
        let recorded = identity.tags();
        if self::holder(&recorded) == holder {
            Ok(identity)
        } else {
            let service_type = service_type(&recorded).unwrap_or_default().to_owned();
            Err(LeaseError::HeldByAnother { id: id.to_owned(), service_type })
        }
    }

    async fn delete(&self, id: &str) -> Result<(), LeaseError> {
        self.controller.delete_identity(id).await.map_err(|err| not_found_as_lease(id, err))
    }

    /// The identity, if it exists and carries this server's managed tag.
    async fn managed(&self, id: &str) -> Result<crate::controller::Identity, LeaseError> {
        if id.is_empty() {
            return Err(LeaseError::NotFound { id: String::new() });
        }
        let identity = self.controller.identity(id).await.map_err(|err| not_found_as_lease(id, err))?;
        if is_managed(&identity.tags()) {
            Ok(identity)
        } else {
            tracing::debug!(identity = %id, "not a leased identity of this server; refusing to touch it");
            Err(LeaseError::NotFound { id: id.to_owned() })
        }
    }
}

fn not_found_as_lease(id: &str, err: ControllerError) -> LeaseError {
    match err {
        ControllerError::NotFound { .. } => LeaseError::NotFound { id: id.to_owned() },
        err => LeaseError::Controller(err),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn expiry_is_fixed_width_utc_with_milliseconds() {
        let at = UNIX_EPOCH + Duration::from_secs(1_795_341_600);
        assert_eq!(format_expiry(at), "2026-11-22T10:00:00.000Z");
        assert_eq!(format_expiry(at + Duration::from_millis(7)), "2026-11-22T10:00:00.007Z");
        assert_eq!(parse_expiry("2026-11-22T10:00:00.007Z"), Some(at + Duration::from_millis(7)));
    }

    #[test]
    fn string_order_of_expiries_is_time_order() {
        let base = UNIX_EPOCH + Duration::from_secs(1_795_341_600);
        let times: Vec<SystemTime> =
            [0, 1, 999, 1000, 59_999, 60_000, 86_400_000].iter().map(|ms| base + Duration::from_millis(*ms)).collect();
        for pair in times.windows(2) {
            assert!(format_expiry(pair[0]) < format_expiry(pair[1]), "{:?}", pair);
        }
    }

    #[test]
    fn tags_round_trip_and_filters_use_letter_only_names() {
        let at = UNIX_EPOCH + Duration::from_secs(1_795_341_600);
        let tags = new_lease_tags("gateway", "spiffe://td/gateway", at);
        assert!(is_managed(&tags));
        assert_eq!(holder(&tags), "spiffe://td/gateway");
        assert_eq!(service_type(&tags), Some("gateway"));
        assert_eq!(expiry(&tags), Some(at));
        assert_eq!(
            expired_filter(at),
            "tags.zitiMgmtManaged = true and tags.zitiMgmtLeaseExpires < \"2026-11-22T10:00:00.000Z\""
        );
        for name in [MANAGED_TAG, SERVICE_TYPE_TAG, EXPIRES_TAG, HOLDER_TAG] {
            assert!(name.chars().all(|c| c.is_ascii_alphabetic() || c == '_'), "{name}");
        }
    }

    #[test]
    fn a_lease_without_a_recorded_holder_is_held_by_anonymous() {
        assert_eq!(holder(&Map::new()), "anonymous");
    }

    #[test]
    fn an_unmanaged_identity_is_not_a_lease() {
        let mut tags = Map::new();
        assert!(!is_managed(&tags));
        tags.insert(MANAGED_TAG.to_owned(), Value::String("true".to_owned()));
        assert!(!is_managed(&tags));
    }
}
