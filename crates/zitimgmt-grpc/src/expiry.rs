//! Lease expiries: the server sends a wall-clock time, the policy wants time left.

use std::time::{Duration, SystemTime};

use prost_types::Timestamp;

/// Time left until `expires_at` as seen at `now`: zero when already past, `None` when
/// the server did not say. `Err` (with the reason) when the timestamp is not a time.
pub(crate) fn expires_in(expires_at: Option<Timestamp>, now: SystemTime) -> Result<Option<Duration>, String> {
    let Some(timestamp) = expires_at else {
        return Ok(None);
    };
    let at =
        SystemTime::try_from(timestamp).map_err(|error| format!("lease_expires_at is not a valid time: {error}"))?;
    Ok(Some(at.duration_since(now).unwrap_or(Duration::ZERO)))
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    fn at(seconds: i64, nanos: i32) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos })
    }

    const NOW: i64 = 1_700_000_000;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(NOW as u64)
    }

    #[test]
    fn unset_is_none() {
        assert_eq!(expires_in(None, now()), Ok(None));
    }

    #[test]
    fn future_is_the_time_left() {
        assert_eq!(expires_in(at(NOW + 300, 500_000_000), now()), Ok(Some(Duration::from_millis(300_500))));
    }

    #[test]
    fn past_saturates_at_zero() {
        assert_eq!(expires_in(at(NOW - 10, 0), now()), Ok(Some(Duration::ZERO)));
        assert_eq!(expires_in(at(-5, 0), now()), Ok(Some(Duration::ZERO)));
    }

    #[test]
    fn extremes_do_not_panic() {
        for (seconds, nanos) in [(i64::MAX, 999_999_999), (i64::MIN, -999_999_999), (NOW, i32::MAX), (NOW, i32::MIN)] {
            match expires_in(at(seconds, nanos), now()) {
                Ok(Some(_)) => {}
                Ok(None) => panic!("a set timestamp gave None"),
                Err(error) => assert!(error.contains("lease_expires_at"), "{error}"),
            }
        }
    }
}
