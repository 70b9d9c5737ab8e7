//! Caller resolution with a short-lived cache, so that a busy caller costs one
//! `ResolveIdentity` per TTL rather than one per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::caller::{CallerIdentity, Principal};
use crate::error::ResolveError;
use crate::ports::IdentityResolver;

/// Wraps a resolver; answers (including "not found") are kept for `ttl`, failures
/// are not. At most `capacity` callers are kept; when full, expired ones are dropped
/// first and, failing that, the whole cache (cheap, and only under churn).
pub struct CachingResolver {
    inner: Arc<dyn IdentityResolver>,
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<CallerIdentity, (Instant, Result<Principal, ResolveError>)>>,
}

impl std::fmt::Debug for CachingResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachingResolver").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl CachingResolver {
    pub fn new(inner: Arc<dyn IdentityResolver>, ttl: Duration, capacity: usize) -> Self {
        Self { inner, ttl, capacity: capacity.max(1), entries: Mutex::new(HashMap::new()) }
    }

    fn cached(&self, caller: &CallerIdentity) -> Option<Result<Principal, ResolveError>> {
        let entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.get(caller).filter(|(stored, _)| stored.elapsed() < self.ttl).map(|(_, answer)| answer.clone())
    }

    fn store(&self, caller: &CallerIdentity, answer: &Result<Principal, ResolveError>) {
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= self.capacity {
            entries.retain(|_, (stored, _)| stored.elapsed() < self.ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(caller.clone(), (Instant::now(), answer.clone()));
    }
}

#[async_trait]
impl IdentityResolver for CachingResolver {
    async fn resolve(&self, caller: &CallerIdentity) -> Result<Principal, ResolveError> {
        if let Some(answer) = self.cached(caller) {
            return answer;
        }
        let answer = self.inner.resolve(caller).await;
        if !matches!(answer, Err(ResolveError::Unavailable(_))) {
            self.store(caller, &answer);
        }
        answer
    }
}
