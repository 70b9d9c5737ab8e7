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
    entries: Mutex<HashMap<CallerIdentity, Entry>>,
}

/// An answer and when it was stored.
type Entry = (Instant, Result<Principal, ResolveError>);

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
        // Replacing a caller's entry (two misses for it at once) does not grow the cache.
        if entries.len() >= self.capacity && !entries.contains_key(caller) {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::VecDeque;

    use rstest::rstest;

    use super::*;
    use crate::ports::MockIdentityResolver;
    use crate::test_support::{ms, secs};

    const TTL: Duration = Duration::from_secs(30);

    fn caller(id: &str) -> CallerIdentity {
        CallerIdentity { id: Some(id.to_owned()), name: Some(format!("{id}-name")), verified: true }
    }

    fn principal(name: &str) -> Principal {
        Principal { name: name.to_owned(), role_attributes: vec!["gateway-users".to_owned()] }
    }

    fn unavailable() -> ResolveError {
        ResolveError::Unavailable("deadline exceeded".to_owned())
    }

    type Answer = Result<Principal, ResolveError>;

    /// An inner resolver that must be asked exactly `script`, in order: for which
    /// caller, and what it answers.
    fn inner(script: Vec<(&str, Answer)>) -> MockIdentityResolver {
        let count = script.len();
        let script: VecDeque<(String, Answer)> =
            script.into_iter().map(|(id, answer)| (id.to_owned(), answer)).collect();
        let script = Mutex::new(script);
        let mut mock = MockIdentityResolver::new();
        mock.expect_resolve().times(count).returning(move |asked| {
            let (id, answer) = script.lock().unwrap().pop_front().expect("asked more often than scripted");
            assert_eq!(asked, &caller(&id), "asked for the wrong caller");
            answer
        });
        mock
    }

    fn cache(inner: MockIdentityResolver, capacity: usize) -> CachingResolver {
        CachingResolver::new(Arc::new(inner), TTL, capacity)
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_resolve_within_the_ttl_is_answered_from_the_cache() {
        let resolver = cache(inner(vec![("a", Ok(principal("alice")))]), 16);

        assert_eq!(resolver.resolve(&caller("a")).await, Ok(principal("alice")));
        tokio::time::advance(TTL - ms(1)).await;
        assert_eq!(resolver.resolve(&caller("a")).await, Ok(principal("alice")));
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_ttl_the_inner_resolver_is_asked_again() {
        let resolver = cache(inner(vec![("a", Ok(principal("alice"))), ("a", Ok(principal("alice-renamed")))]), 16);

        assert_eq!(resolver.resolve(&caller("a")).await, Ok(principal("alice")));
        tokio::time::advance(TTL).await;
        assert_eq!(resolver.resolve(&caller("a")).await, Ok(principal("alice-renamed")));
        assert_eq!(resolver.resolve(&caller("a")).await, Ok(principal("alice-renamed")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_is_not_cached() {
        let resolver = cache(inner(vec![("a", Err(unavailable())), ("a", Ok(principal("alice")))]), 16);

        assert_eq!(resolver.resolve(&caller("a")).await, Err(unavailable()));
        assert_eq!(resolver.resolve(&caller("a")).await, Ok(principal("alice")));
        assert_eq!(resolver.resolve(&caller("a")).await, Ok(principal("alice")));
    }

    #[tokio::test(start_paused = true)]
    async fn not_found_is_cached_for_the_ttl() {
        let resolver = cache(inner(vec![("a", Err(ResolveError::NotFound)), ("a", Ok(principal("alice")))]), 16);

        assert_eq!(resolver.resolve(&caller("a")).await, Err(ResolveError::NotFound));
        tokio::time::advance(TTL - ms(1)).await;
        assert_eq!(resolver.resolve(&caller("a")).await, Err(ResolveError::NotFound));
        tokio::time::advance(ms(1)).await;
        assert_eq!(resolver.resolve(&caller("a")).await, Ok(principal("alice")));
    }

    #[tokio::test(start_paused = true)]
    async fn callers_are_cached_separately() {
        let resolver = cache(inner(vec![("a", Ok(principal("alice"))), ("b", Err(ResolveError::NotFound))]), 16);

        for _ in 0..3 {
            assert_eq!(resolver.resolve(&caller("a")).await, Ok(principal("alice")));
            assert_eq!(resolver.resolve(&caller("b")).await, Err(ResolveError::NotFound));
        }
    }

    #[rstest]
    #[case::zero_means_one(0, 1)]
    #[case::one(1, 1)]
    #[case::three(3, 3)]
    #[case::ten(10, 10)]
    #[tokio::test(start_paused = true)]
    async fn the_cache_never_holds_more_than_its_capacity(#[case] capacity: usize, #[case] bound: usize) {
        let ids: Vec<String> = (0..25).map(|n| format!("caller-{n}")).collect();
        let resolver = cache(inner(ids.iter().map(|id| (id.as_str(), Ok(principal(id)))).collect()), capacity);

        for id in &ids {
            assert_eq!(resolver.resolve(&caller(id)).await, Ok(principal(id)));
            let held = resolver.entries.lock().unwrap().len();
            assert!((1..=bound).contains(&held), "{held} entries held, capacity {capacity}");
            tokio::time::advance(secs(1)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn when_full_expired_callers_go_first() {
        let resolver = cache(
            inner(vec![("a", Ok(principal("alice"))), ("b", Ok(principal("bob"))), ("c", Ok(principal("carol")))]),
            2,
        );

        resolver.resolve(&caller("a")).await.unwrap();
        tokio::time::advance(secs(20)).await;
        resolver.resolve(&caller("b")).await.unwrap();
        tokio::time::advance(secs(11)).await; // "a" has expired, "b" has not
        resolver.resolve(&caller("c")).await.unwrap();

        // "b" is still cached: the inner resolver is not asked for it again.
        assert_eq!(resolver.resolve(&caller("b")).await, Ok(principal("bob")));
        assert_eq!(resolver.resolve(&caller("c")).await, Ok(principal("carol")));
    }

    #[tokio::test(start_paused = true)]
    async fn when_full_of_fresh_callers_the_cache_starts_over() {
        let resolver = cache(
            inner(vec![
                ("a", Ok(principal("alice"))),
                ("b", Ok(principal("bob"))),
                ("c", Ok(principal("carol"))),
                ("a", Ok(principal("alice"))),
            ]),
            2,
        );

        for id in ["a", "b", "c", "c", "a"] {
            resolver.resolve(&caller(id)).await.unwrap();
        }
    }

    /// An inner resolver that takes a second to answer.
    struct Slow(MockIdentityResolver);

    #[async_trait]
    impl IdentityResolver for Slow {
        async fn resolve(&self, caller: &CallerIdentity) -> Result<Principal, ResolveError> {
            let answer = self.0.resolve(caller).await;
            tokio::time::sleep(secs(1)).await;
            answer
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_misses_for_one_caller_keep_the_other_callers() {
        let script = vec![("b", Ok(principal("bob"))), ("a", Ok(principal("alice"))), ("a", Ok(principal("alice")))];
        let resolver = CachingResolver::new(Arc::new(Slow(inner(script))), TTL, 2);

        resolver.resolve(&caller("b")).await.unwrap();
        let a = caller("a");
        let (first, second) = tokio::join!(resolver.resolve(&a), resolver.resolve(&a));
        assert_eq!((first, second), (Ok(principal("alice")), Ok(principal("alice"))));

        // Storing "a" twice must not have flushed "b".
        assert_eq!(resolver.resolve(&caller("b")).await, Ok(principal("bob")));
    }
}
