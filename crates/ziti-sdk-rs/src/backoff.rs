//! The SDK's one retry delay: exponential backoff with jitter, so that many hosts
//! that lost the controller or a router at the same moment do not retry in step.

use std::time::Duration;

use rand::Rng;

/// Steps of `initial`, `2 × initial`, … up to `max`; each delay is drawn from the upper
/// half of its step.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max: max.max(initial), step: initial }
    }

    /// The wait before the next attempt; the step after it doubles.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = step.saturating_mul(2).min(self.max);
        let half = step / 2;
        let jitter = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(rand::rng().random_range(0..=jitter))
    }

    /// Back to the first step, after a success.
    pub(crate) fn reset(&mut self) {
        self.step = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_and_reset() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        for step in [1u64, 2, 4, 8, 8, 8] {
            let delay = backoff.next_delay();
            let (low, high) = (Duration::from_millis(step * 500), Duration::from_secs(step));
            assert!(delay >= low && delay <= high, "{delay:?} outside {low:?}..={high:?}");
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn delays_are_jittered() {
        let mut delays: Vec<Duration> =
            (0..20).map(|_| Backoff::new(Duration::from_secs(10), Duration::from_secs(10)).next_delay()).collect();
        delays.dedup();
        assert!(delays.len() > 1, "twenty draws gave one delay: {delays:?}");
    }
}
