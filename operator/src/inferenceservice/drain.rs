//! Predictors that lost their traffic stay (without traffic) for
//! [`DRAIN_PERIOD`], until every router has reloaded its config; then they
//! are pruned. Pure: the list lives in status.

use std::collections::BTreeSet;
use std::time::Duration;

use hone_crds::inferenceservice::DrainingPredictor;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::names::DRAIN_PERIOD;

/// The draining predictors after this reconcile: those still present and
/// not desired again keep their deadline until it passes; newly undesired
/// ones get `now + DRAIN_PERIOD`.
pub fn update(
    previous: &[DrainingPredictor],
    present: &BTreeSet<String>,
    desired: &BTreeSet<String>,
    now: Timestamp,
) -> Vec<DrainingPredictor> {
    let deadline = now.checked_add(SignedDuration::try_from(DRAIN_PERIOD).unwrap_or_default()).unwrap_or(now);
    present
        .difference(desired)
        .filter_map(|name| match previous.iter().find(|d| &d.name == name) {
            Some(draining) if draining.until.0 > now => Some(draining.clone()),
            Some(_) => None,
            None => Some(DrainingPredictor { name: name.clone(), until: Time(deadline) }),
        })
        .collect()
}

/// Time until the first deadline passes, to look again then.
pub fn next_deadline(draining: &[DrainingPredictor], now: Timestamp) -> Option<Duration> {
    draining
        .iter()
        .map(|d| Duration::try_from(d.until.0.duration_since(now)).unwrap_or(Duration::ZERO))
        .min()
        .map(|left| left + Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn undesired_predictors_drain_then_go() {
        let draining = update(&[], &set(&["s-a-v1", "s-a-v2"]), &set(&["s-a-v2"]), at(0));
        assert_eq!(draining, vec![DrainingPredictor { name: "s-a-v1".into(), until: Time(at(90)) }]);
        assert_eq!(next_deadline(&draining, at(30)), Some(Duration::from_secs(61)));
        // Still within the period: the same deadline, not a new one.
        assert_eq!(update(&draining, &set(&["s-a-v1", "s-a-v2"]), &set(&["s-a-v2"]), at(60)), draining);
        // Past it: no longer kept, so apply prunes it.
        assert!(update(&draining, &set(&["s-a-v1", "s-a-v2"]), &set(&["s-a-v2"]), at(91)).is_empty());
        // Desired again (a rollback) or gone: forgotten.
        assert!(update(&draining, &set(&["s-a-v1"]), &set(&["s-a-v1"]), at(10)).is_empty());
        assert!(update(&draining, &set(&[]), &set(&[]), at(10)).is_empty());
    }
}
