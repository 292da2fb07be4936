//! Per-object retry backoff for transient reconcile errors: the delay doubles
//! with each consecutive failure of one object and resets on its next success.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// First retry delay.
const BASE: Duration = Duration::from_secs(2);
/// Longest retry delay.
const MAX: Duration = Duration::from_secs(300);

/// The delay before retry number `failures` (1 for the first failure).
pub fn delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    BASE.saturating_mul(1u32 << exponent).min(MAX)
}

/// Consecutive failures per object key (`<kind>/<namespace>/<name>`).
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// Records a failure of `key` and returns how long to wait before retrying.
    pub fn failed(&self, key: &str) -> Duration {
        // A poisoned lock only means another reconcile panicked mid-update; the
        // counts are still usable, so take them rather than fail.
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = failures.entry(key.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        delay(*count)
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn succeeded(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        failures.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_and_caps() {
        assert_eq!(delay(1), Duration::from_secs(2));
        assert_eq!(delay(2), Duration::from_secs(4));
        assert_eq!(delay(5), Duration::from_secs(32));
        assert_eq!(delay(30), MAX);
    }

    #[test]
    fn success_resets_the_count() {
        let backoff = Backoff::default();
        assert_eq!(backoff.failed("ds/ns/a"), Duration::from_secs(2));
        assert_eq!(backoff.failed("ds/ns/a"), Duration::from_secs(4));
        assert_eq!(backoff.failed("ds/ns/b"), Duration::from_secs(2));
        backoff.succeeded("ds/ns/a");
        assert_eq!(backoff.failed("ds/ns/a"), Duration::from_secs(2));
    }
}
