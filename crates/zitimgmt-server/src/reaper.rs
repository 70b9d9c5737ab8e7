//! The reaper: every interval, deletes the managed identities whose lease ran out,
//! and counts the leases still held. It reads the leases from the controller, so
//! it also reaps what another replica, or this server before a restart, issued.
//!
//! With provisioning on, it also deletes the provisioned identities nobody used for
//! the idle time: not provisioned again within it and not logged in now (an API session).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use futures_util::stream;
use tokio::time::MissedTickBehavior;

use crate::controller::{Controller, ControllerError};
use crate::lease::{expired_filter, expiry, held_filter, is_managed};
use crate::metrics::Metrics;
use crate::provision::{idle_filter, is_provisioned, provisioned_at};
use crate::service::AUDIT;

/// A lease is reaped this long after its expiry, so that an extension that read the
/// lease just before it ran out can still land its update.
const GRACE: Duration = Duration::from_secs(1);
/// Listing page size (the controller allows up to 500).
const PAGE: u32 = 200;
/// At most this many deletions per pass; the rest wait for the next one.
const MAX_PER_PASS: usize = 2_000;
/// Deletions in flight at once: quick without crowding out the gRPC calls.
const PARALLEL_DELETES: usize = 8;

#[derive(Debug, Clone)]
pub struct Reaper {
    controller: Arc<Controller>,
    metrics: Arc<Metrics>,
    interval: Duration,
    /// Provisioned identities unused this long are deleted; `None`: provisioning is off.
    provisioned_idle: Option<Duration>,
}

impl Reaper {
    pub fn new(controller: Arc<Controller>, metrics: Arc<Metrics>, interval: Duration) -> Self {
        Self { controller, metrics, interval, provisioned_idle: None }
    }

    /// Also deletes provisioned identities unused for `idle`.
    pub fn with_provisioned_idle(self, idle: Duration) -> Self {
        Self { provisioned_idle: Some(idle), ..self }
    }

    /// Passes at once and then every interval, until `shutdown` resolves.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticks.tick() => {}
            }
            tokio::select! {
                () = &mut shutdown => return,
                passed = self.pass() => match passed {
                    Ok(0) => {}
                    Ok(reaped) => tracing::info!(reaped, "deleted identities whose lease ran out"),
                    Err(err) => tracing::warn!(%err, "reaper pass failed; trying again next interval"),
                },
            }
        }
    }

    /// One pass: deletes what expired, then counts what is held. Returns how many it deleted.
    pub async fn pass(&self) -> Result<u64, ControllerError> {
        let now = SystemTime::now();
        let expired = self.expired(now - GRACE).await?;
        let reaped = self.reap(expired).await;
        self.metrics.record_reaped(reaped);
        let held = self.controller.list_identities(&held_filter(now), 1, 0).await?;
        self.metrics.set_leases_held(held.total);
        if let Some(idle) = self.provisioned_idle {
            let deleted = self.delete_idle(now, idle).await?;
            if deleted > 0 {
                tracing::info!(deleted, "deleted provisioned identities nobody used");
            }
        }
        Ok(reaped)
    }

    /// Deletes the provisioned identities last provisioned more than `idle` before
    /// `now` that have no API session, each re-read right before: it may have been
    /// provisioned again, or logged in, since the listing. Returns how many it deleted.
    pub async fn delete_idle(&self, now: SystemTime, idle: Duration) -> Result<u64, ControllerError> {
        let Some(before) = now.checked_sub(idle) else { return Ok(0) };
        let listed = self.listed(&idle_filter(before)).await?;
        let deleted = stream::iter(listed)
            .map(|id| async move {
                let identity = match self.controller.identity(&id).await {
                    Ok(identity) => identity,
                    Err(ControllerError::NotFound { .. }) => return false,
                    Err(err) => {
                        tracing::warn!(identity = %id, %err, "cannot re-read an idle provisioned identity; leaving it for now");
                        return false;
                    }
                };
                let tags = identity.tags();
                let idle_now = is_provisioned(&tags)
                    && provisioned_at(&tags).is_none_or(|at| at < before)
                    && !identity.has_api_session;
                if !idle_now {
                    return false;
                }
                match self.controller.delete_identity(&id).await {
                    Ok(()) => {
                        tracing::info!(
                            target: AUDIT,
                            event = "identity.deleted_idle",
                            identity = %id,
                            external_id = identity.external_id.as_deref().unwrap_or_default(),
                            idle = %humantime::format_duration(idle),
                            "provisioned identity unused for the idle time; deleted"
                        );
                        true
                    }
                    Err(ControllerError::NotFound { .. }) => false,
                    Err(err) => {
                        tracing::warn!(identity = %id, %err, "cannot delete an idle provisioned identity");
                        false
                    }
                }
            })
            .buffer_unordered(PARALLEL_DELETES)
            .filter(|deleted| std::future::ready(*deleted))
            .count()
            .await;
        Ok(deleted as u64)
    }

    /// Deletes the identities of leases listed as run out, each only if its expiry,
    /// read again right before, still says so: an extension may have landed since the
    /// listing. Returns how many it deleted.
    pub async fn reap(&self, listed: Vec<String>) -> u64 {
        stream::iter(listed)
            .map(|id| async move {
                match self.still_expired(&id).await {
                    Ok(true) => {}
                    Ok(false) => return false,
                    Err(err) => {
                        tracing::warn!(identity = %id, %err, "cannot re-read a lease that ran out; leaving it for now");
                        return false;
                    }
                }
                match self.controller.delete_identity(&id).await {
                    Ok(()) => {
                        tracing::info!(identity = %id, "lease ran out; identity deleted");
                        true
                    }
                    // Gone already: released, or reaped by another replica.
                    Err(ControllerError::NotFound { .. }) => false,
                    Err(err) => {
                        tracing::warn!(identity = %id, %err, "cannot delete an identity whose lease ran out");
                        false
                    }
                }
            })
            .buffer_unordered(PARALLEL_DELETES)
            .filter(|deleted| std::future::ready(*deleted))
            .count()
            .await as u64
    }

    /// Whether the identity is still a managed lease that ran out more than [`GRACE`] ago.
    async fn still_expired(&self, id: &str) -> Result<bool, ControllerError> {
        let identity = match self.controller.identity(id).await {
            Ok(identity) => identity,
            // Gone already: released, or reaped by another replica.
            Err(ControllerError::NotFound { .. }) => return Ok(false),
            Err(err) => return Err(err),
        };
        let tags = identity.tags();
        let expired = is_managed(&tags) && expiry(&tags).is_none_or(|expires| expires + GRACE < SystemTime::now());
        if !expired {
            tracing::info!(identity = %id, "lease extended since it was listed as run out; kept");
        }
        Ok(expired)
    }

    /// Ids of managed identities whose lease ran out before `before`, page by page.
    pub async fn expired(&self, before: SystemTime) -> Result<Vec<String>, ControllerError> {
        self.listed(&expired_filter(before)).await
    }

    /// Ids of the identities matching `filter`, page by page, at most [`MAX_PER_PASS`].
    async fn listed(&self, filter: &str) -> Result<Vec<String>, ControllerError> {
        let mut ids = Vec::new();
        loop {
            let page = self.controller.list_identities(filter, PAGE, ids.len() as u64).await?;
            let fetched = page.identities.len();
            ids.extend(page.identities.into_iter().map(|identity| identity.id));
            if fetched == 0 || ids.len() as u64 >= page.total || ids.len() >= MAX_PER_PASS {
                return Ok(ids);
            }
        }
    }
}
