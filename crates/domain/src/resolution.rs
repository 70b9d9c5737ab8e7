//! Caller resolution with a short-lived cache, so that a busy caller costs one
//! `ResolveIdentity` per TTL rather than one per request, and a bound on the calls in
//! flight, so that a flood of new callers cannot turn into a flood of calls.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::caller::{CallerIdentity, Principal};
use crate::error::ResolveError;
use crate::ports::IdentityResolver;

/// Wraps a resolver; answers (including "not found") are kept for `ttl`, failures
/// are not. At most `capacity` callers are kept; when full, the least recently used
/// one makes room, so callers in use keep their entries however many new ones come.
/// At most `max_concurrent` resolutions run at once; the others wait their turn (and
/// take an answer cached meanwhile).
pub struct CachingResolver {
    inner: Arc<dyn IdentityResolver>,
    ttl: Duration,
    permits: Semaphore,
    entries: Mutex<Lru>,
}

/// An answer and when it was stored.
type Answer = Result<Principal, ResolveError>;

impl std::fmt::Debug for CachingResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachingResolver").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl CachingResolver {
    /// `capacity` and `max_concurrent` below 1 count as 1.
    pub fn new(inner: Arc<dyn IdentityResolver>, ttl: Duration, capacity: usize, max_concurrent: usize) -> Self {
        let max_concurrent = max_concurrent.clamp(1, Semaphore::MAX_PERMITS);
        Self { inner, ttl, permits: Semaphore::new(max_concurrent), entries: Mutex::new(Lru::new(capacity.max(1))) }
    }

    fn cached(&self, caller: &CallerIdentity) -> Option<Answer> {
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.get(caller, self.ttl)
    }

    fn store(&self, caller: &CallerIdentity, answer: &Answer) {
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.insert(caller.clone(), answer.clone());
    }
}

#[async_trait]
impl IdentityResolver for CachingResolver {
    async fn resolve(&self, caller: &CallerIdentity) -> Result<Principal, ResolveError> {
        if let Some(answer) = self.cached(caller) {
            return answer;
        }
        // The semaphore is never closed; should it be, resolving unbounded is the
        // lesser evil than refusing every caller.
        let _permit = self.permits.acquire().await.ok();
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

/// A least-recently-used map of answers: each entry carries the tick of its last use,
/// and `by_use` orders the entries by it, so the eldest is found in O(log n).
#[derive(Debug)]
struct Lru {
    capacity: usize,
    tick: u64,
    entries: HashMap<CallerIdentity, LruEntry>,
    by_use: BTreeMap<u64, CallerIdentity>,
}

#[derive(Debug)]
struct LruEntry {
    stored: Instant,
    used: u64,
    answer: Answer,
}

impl Lru {
    fn new(capacity: usize) -> Self {
        Self { capacity, tick: 0, entries: HashMap::new(), by_use: BTreeMap::new() }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// The answer stored for `caller` less than `ttl` ago, marking it used; an expired
    /// one is dropped.
    fn get(&mut self, caller: &CallerIdentity, ttl: Duration) -> Option<Answer> {
        let tick = self.next_tick();
        let entry = self.entries.get_mut(caller)?;
        let old = entry.used;
        if entry.stored.elapsed() >= ttl {
            self.entries.remove(caller);
            self.by_use.remove(&old);
            return None;
        }
        entry.used = tick;
        let answer = entry.answer.clone();
        if let Some(key) = self.by_use.remove(&old) {
            self.by_use.insert(tick, key);
        }
        Some(answer)
    }

    /// Stores (or replaces) `caller`'s answer as the most recently used, first making
    /// room by dropping the least recently used entry when full.
    fn insert(&mut self, caller: CallerIdentity, answer: Answer) {
        let tick = self.next_tick();
        let entry = LruEntry { stored: Instant::now(), used: tick, answer };
        if let Some(replaced) = self.entries.insert(caller.clone(), entry) {
            self.by_use.remove(&replaced.used);
        } else if self.entries.len() > self.capacity
            && let Some((_, eldest)) = self.by_use.pop_first()
        {
            self.entries.remove(&eldest);
        }
        self.by_use.insert(tick, caller);
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
        ResolveError::Unavailable(Arc::new(std::io::Error::other("deadline exceeded")))
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
        CachingResolver::new(Arc::new(inner), TTL, capacity, 32)
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
    async fn when_full_the_least_recently_used_caller_goes() {
        let resolver = cache(
            inner(vec![
                ("a", Ok(principal("alice"))),
                ("b", Ok(principal("bob"))),
                ("c", Ok(principal("carol"))),
                ("b", Ok(principal("bob"))),
            ]),
            2,
        );

        // "a" is used again after "b", so "b" is the one that makes room for "c".
        for id in ["a", "b", "a", "c", "a", "c", "b"] {
            resolver.resolve(&caller(id)).await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_caller_survives_a_stream_of_fresh_callers() {
        let fresh: Vec<String> = (0..20).map(|n| format!("fresh-{n}")).collect();
        let mut script = vec![("busy", Ok(principal("busy")))];
        script.extend(fresh.iter().map(|id| (id.as_str(), Ok(principal(id)))));
        let resolver = cache(inner(script), 3);

        resolver.resolve(&caller("busy")).await.unwrap();
        for id in &fresh {
            resolver.resolve(&caller(id)).await.unwrap();
            tokio::time::advance(ms(100)).await;
            // Answered from the cache every time: the inner resolver is asked for it once.
            assert_eq!(resolver.resolve(&caller("busy")).await, Ok(principal("busy")));
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
        let resolver = CachingResolver::new(Arc::new(Slow(inner(script))), TTL, 2, 32);

        resolver.resolve(&caller("b")).await.unwrap();
        let a = caller("a");
        let (first, second) = tokio::join!(resolver.resolve(&a), resolver.resolve(&a));
        assert_eq!((first, second), (Ok(principal("alice")), Ok(principal("alice"))));

        // Storing "a" twice must not have flushed "b".
        assert_eq!(resolver.resolve(&caller("b")).await, Ok(principal("bob")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_waiting_for_its_turn_takes_the_answer_cached_meanwhile() {
        let resolver = CachingResolver::new(Arc::new(Slow(inner(vec![("a", Ok(principal("alice")))]))), TTL, 16, 1);

        let a = caller("a");
        let (first, second) = tokio::join!(resolver.resolve(&a), resolver.resolve(&a));

        assert_eq!((first, second), (Ok(principal("alice")), Ok(principal("alice"))));
    }

    /// An inner resolver that takes a second per answer and records how many it
    /// answers at once.
    #[derive(Default)]
    struct Gauged {
        in_flight: std::sync::atomic::AtomicUsize,
        most: std::sync::atomic::AtomicUsize,
        asked: std::sync::atomic::AtomicUsize,
    }

    #[async_trait]
    impl IdentityResolver for Gauged {
        async fn resolve(&self, caller: &CallerIdentity) -> Result<Principal, ResolveError> {
            use std::sync::atomic::Ordering::SeqCst;
            self.asked.fetch_add(1, SeqCst);
            let now = self.in_flight.fetch_add(1, SeqCst) + 1;
            self.most.fetch_max(now, SeqCst);
            tokio::time::sleep(secs(1)).await;
            self.in_flight.fetch_sub(1, SeqCst);
            Ok(principal(caller.id.as_deref().unwrap_or_default()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_than_max_concurrent_resolutions_run_at_once() {
        use std::sync::atomic::Ordering::SeqCst;
        let gauged = Arc::new(Gauged::default());
        let resolver = Arc::new(CachingResolver::new(gauged.clone(), TTL, 1000, 4));
        let started = Instant::now();

        let tasks: Vec<_> = (0..40)
            .map(|n| {
                let resolver = resolver.clone();
                tokio::spawn(async move { resolver.resolve(&caller(&format!("caller-{n}"))).await })
            })
            .collect();
        for (n, task) in tasks.into_iter().enumerate() {
            assert_eq!(task.await.unwrap(), Ok(principal(&format!("caller-{n}"))));
        }

        assert_eq!(gauged.most.load(SeqCst), 4, "resolutions in flight at most");
        assert_eq!(gauged.asked.load(SeqCst), 40);
        assert_eq!(started.elapsed(), secs(10), "40 one-second resolutions, 4 at a time");
    }
}
