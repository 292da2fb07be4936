//! Per-object retry backoff for transient reconcile errors: the delay starts
//! at 200 ms, doubles with each consecutive failure of one object (up to
//! five minutes), carries ±20% jitter so objects that failed together do not
//! retry together, and resets on the object's next success. An apiserver
//! that answers 429 with a Retry-After is waited for at least that long.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;
use std::time::Duration;

/// First retry delay.
pub const BASE: Duration = Duration::from_millis(200);
/// Longest retry delay.
pub const MAX: Duration = Duration::from_secs(300);
/// Delay before retrying a write refused for a stale resourceVersion: the
/// watch brings the fresh object within moments.
pub const CONFLICT: Duration = Duration::from_millis(200);

/// The delay before retry number `failures` (1 for the first failure), before jitter.
pub fn delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    BASE.saturating_mul(1u32 << exponent).min(MAX)
}

/// `base` scaled by a factor in [0.8, 1.2) drawn from `random` (any u64).
pub fn jitter(base: Duration, random: u64) -> Duration {
    // 53 bits of `random` as a fraction in [0, 1).
    let fraction = (random >> 11) as f64 / (1u64 << 53) as f64;
    base.mul_f64(0.8 + 0.4 * fraction)
}

/// A random u64 from the process's hash seed (no RNG crate needed).
pub fn random() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
    );
    hasher.finish()
}

/// The wait an apiserver asked for: a 429 (or 5xx) `Status` whose details
/// carry `retryAfterSeconds`, anywhere in `error`'s source chain.
pub fn retry_after(error: &(dyn std::error::Error + 'static)) -> Option<Duration> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = next {
        if let Some(kube::Error::Api(status)) = current.downcast_ref::<kube::Error>() {
            let seconds = status.details.as_ref().map_or(0, |d| d.retry_after_seconds);
            if seconds > 0 {
                return Some(Duration::from_secs(u64::from(seconds)));
            }
            if status.code == 429 {
                // Throttled without a hint: the apiserver's default is one second.
                return Some(Duration::from_secs(1));
            }
        }
        next = current.source();
    }
    None
}

/// Consecutive failures per object key (`<kind>/<namespace>/<name>`).
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// Records a failure of `key` and returns how long to wait before
    /// retrying: the jittered exponential delay, or the apiserver's
    /// Retry-After when that is longer.
    pub fn failed(&self, key: &str, retry_after: Option<Duration>) -> Duration {
        // A poisoned lock only means another reconcile panicked mid-update; the
        // counts are still usable, so take them rather than fail.
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = failures.entry(key.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        jitter(delay(*count), random()).max(retry_after.unwrap_or_default())
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn succeeded(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        failures.remove(key);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn delay_doubles_and_caps() {
        assert_eq!(delay(1), Duration::from_millis(200));
        assert_eq!(delay(2), Duration::from_millis(400));
        assert_eq!(delay(5), Duration::from_millis(3200));
        assert_eq!(delay(30), MAX);
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        let base = Duration::from_secs(10);
        assert_eq!(jitter(base, 0), Duration::from_secs(8));
        assert!(jitter(base, u64::MAX) <= Duration::from_secs(12));
        assert!(jitter(base, u64::MAX) > Duration::from_millis(11_990));
    }

    #[test]
    fn success_resets_the_count() {
        let backoff = Backoff::default();
        let within = |d: Duration, base: Duration| d >= base.mul_f64(0.8) && d < base.mul_f64(1.2);
        assert!(within(backoff.failed("ds/ns/a", None), Duration::from_millis(200)));
        assert!(within(backoff.failed("ds/ns/a", None), Duration::from_millis(400)));
        assert!(within(backoff.failed("ds/ns/b", None), Duration::from_millis(200)));
        backoff.succeeded("ds/ns/a");
        assert!(within(backoff.failed("ds/ns/a", None), Duration::from_millis(200)));
    }

    #[test]
    fn retry_after_wins_when_longer() {
        let backoff = Backoff::default();
        assert_eq!(backoff.failed("k", Some(Duration::from_secs(7))), Duration::from_secs(7));
    }

    #[derive(Debug, thiserror::Error)]
    #[error("wrapped: {0}")]
    struct Wrapped(#[source] kube::Error);

    fn status(code: u16, retry: Option<u32>) -> kube::Error {
        let body = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
            "reason": "TooManyRequests", "message": "too many requests",
            "details": retry.map(|r| serde_json::json!({"retryAfterSeconds": r})),
        });
        kube::Error::Api(Box::new(serde_json::from_value(body).unwrap()))
    }

    #[test]
    fn retry_after_is_read_through_the_source_chain() {
        assert_eq!(retry_after(&Wrapped(status(429, Some(3)))), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(&Wrapped(status(429, None))), Some(Duration::from_secs(1)));
        assert_eq!(retry_after(&Wrapped(status(500, None))), None);
        assert_eq!(retry_after(&Wrapped(status(503, Some(2)))), Some(Duration::from_secs(2)));
    }
}
