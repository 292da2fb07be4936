//! `status.history`: entries open and close with what each variant serves,
//! an unchanged world writes the same history, and it stays bounded.

use hone_crds::inferenceservice::{
    HISTORY_PER_VARIANT, HistoryEntry, HistoryOutcome, MetricsBaseline, RolloutStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::inferenceservice::history;

const IMMEDIATE: &str = "variants: [{name: a, modelVersion: digits-v1, weight: 100}]";

/// `(variant, version, from, to, outcome)` of each entry, times in seconds from [`at`].
fn entries(history: &[HistoryEntry]) -> Vec<(&str, &str, i64, Option<i64>, HistoryOutcome)> {
    let seconds = |t: &Time| t.0.as_second() - at(0).as_second();
    history
        .iter()
        .map(|e| {
            (e.variant.as_str(), e.version.as_str(), seconds(&e.from), e.to.as_ref().map(seconds), e.outcome)
        })
        .collect()
}

/// An entry of variant `a` for tests that build a history by hand.
pub(super) fn entry(version: &str, from: i64, to: Option<i64>, outcome: HistoryOutcome) -> HistoryEntry {
    HistoryEntry {
        variant: "a".into(),
        version: version.into(),
        from: Time(at(from)),
        to: to.map(|t| Time(at(t))),
        outcome,
    }
}

#[test]
fn an_entry_opens_when_a_variant_first_serves_and_an_unchanged_world_keeps_it() {
    let valid = valid(IMMEDIATE, &three_versions());
    let (_, first) = reconcile(&valid, &Default::default(), &["a-v1"], 0);
    assert_eq!(entries(&first.history), [("a", "digits-v1", 0, None, HistoryOutcome::Serving)]);
    let (_, again) = reconcile(&valid, &first, &["a-v1"], 500);
    assert_eq!(again, first, "nothing changed, so no status patch");
}

#[test]
fn an_immediate_switch_closes_the_old_entry_as_replaced() {
    let (_, v1) = reconcile(&valid(IMMEDIATE, &three_versions()), &Default::default(), &["a-v1"], 0);
    let v2 = valid(&IMMEDIATE.replace("digits-v1", "digits-v2"), &three_versions());
    // Waiting for the new predictors: the old version still serves, history unchanged.
    let (_, waiting) = reconcile(&v2, &v1, &["a-v1"], 10);
    assert!(waiting.rollout.is_some());
    assert_eq!(waiting.history, v1.history);
    let (_, switched) = reconcile(&v2, &waiting, &["a-v1", "a-v2"], 20);
    assert_eq!(switched.variants[0].model_version.as_deref(), Some("digits-v2"));
    assert_eq!(
        entries(&switched.history),
        [
            ("a", "digits-v1", 0, Some(20), HistoryOutcome::Replaced),
            ("a", "digits-v2", 20, None, HistoryOutcome::Serving),
        ]
    );
    let (_, again) = reconcile(&v2, &switched, &["a-v2"], 30);
    assert_eq!(again.history, switched.history);
}

/// Status serving v1 on `a` since t=0 and rolling out to v2 at 50% (the last step) since t=100.
fn at_last_step() -> InferenceServiceStatus {
    let mut status = serving(&[("a", "digits-v1")]);
    status.history = vec![entry("digits-v1", 0, None, HistoryOutcome::Serving)];
    status.rollout = Some(RolloutStatus {
        variant: "a".into(),
        from_version: "digits-v1".into(),
        to_version: "digits-v2".into(),
        step: 1,
        canary_weight: 50,
        started_at: Some(Time(at(40))),
        step_started_at: Some(Time(at(100))),
        baseline: Some(MetricsBaseline::default()),
        ..Default::default()
    });
    status
}

/// The status after one canary reconcile at `now` with `metrics`.
fn canary_status(
    valid: &ValidService,
    previous: &InferenceServiceStatus,
    metrics: &Result<RouterMetrics, String>,
    now: i64,
) -> InferenceServiceStatus {
    reconcile_with(valid, previous, &["a-v1", "a-v2"], Some(metrics), now).1
}

#[test]
fn a_promoted_canary_replaces_the_old_version() {
    let canary = valid(CANARY, &three_versions());
    let promoted = canary_status(&canary, &at_last_step(), &canary_metrics(80.0, 0.0), 161);
    assert_eq!(promoted.variants[0].model_version.as_deref(), Some("digits-v2"));
    assert_eq!(
        entries(&promoted.history),
        [
            ("a", "digits-v1", 0, Some(161), HistoryOutcome::Replaced),
            ("a", "digits-v2", 161, None, HistoryOutcome::Serving),
        ]
    );
}

#[test]
fn an_aborted_canary_gets_a_closed_entry_of_its_own() {
    // 10 of 30 requests failed: aborted; v1 keeps serving and its entry stays open.
    let canary = valid(CANARY, &three_versions());
    let aborted = canary_status(&canary, &at_last_step(), &canary_metrics(30.0, 10.0), 120);
    assert_eq!(aborted.variants[0].model_version.as_deref(), Some("digits-v1"));
    assert_eq!(
        entries(&aborted.history),
        [
            ("a", "digits-v1", 0, None, HistoryOutcome::Serving),
            ("a", "digits-v2", 40, Some(120), HistoryOutcome::Aborted),
        ]
    );
    // The abort is recorded once: the next reconcile adds nothing.
    let again = canary_status(&canary, &aborted, &canary_metrics(30.0, 10.0), 130);
    assert_eq!(again.history, aborted.history);
}

#[test]
fn a_canary_rolled_back_by_hand_is_aborted_too() {
    let mut canary = valid(CANARY, &three_versions());
    canary.action = Some(crate::inferenceservice::manual::ActionRequest {
        id: "req-1".into(),
        action: "rollback".into(),
        variant: None,
    });
    let (_, status) = reconcile(&canary, &at_last_step(), &["a-v1", "a-v2"], 120);
    assert_eq!(
        entries(&status.history),
        [
            ("a", "digits-v1", 0, None, HistoryOutcome::Serving),
            ("a", "digits-v2", 40, Some(120), HistoryOutcome::Aborted),
        ]
    );
}

#[test]
fn history_keeps_the_open_entry_and_the_newest_closed_ones_per_variant() {
    // Variant a: served v1 since t=0, then 14 canaries aborted; variant b: two entries.
    let mut long = vec![entry("digits-v1", 0, None, HistoryOutcome::Serving)];
    for i in 1..=14 {
        long.push(entry(&format!("digits-v{}", i + 1), i * 10, Some(i * 10 + 5), HistoryOutcome::Aborted));
    }
    let b = |version: &str, to: Option<i64>, outcome| HistoryEntry {
        variant: "b".into(),
        ..entry(version, 3, to, outcome)
    };
    long.insert(3, b("digits-v1", Some(4), HistoryOutcome::Replaced));
    long.push(b("digits-v2", None, HistoryOutcome::Serving));
    let kept = history::bound(long.clone());
    let of_a: Vec<&HistoryEntry> = kept.iter().filter(|e| e.variant == "a").collect();
    assert_eq!(of_a.len(), HISTORY_PER_VARIANT);
    assert_eq!(of_a[0].outcome, HistoryOutcome::Serving, "the open entry is never dropped");
    let versions: Vec<&str> = of_a[1..].iter().map(|e| e.version.as_str()).collect();
    assert_eq!(
        versions,
        (7..=15).map(|v| format!("digits-v{v}")).collect::<Vec<_>>(),
        "the newest closed ones, in order"
    );
    assert_eq!(kept.iter().filter(|e| e.variant == "b").count(), 2);
    assert_eq!(history::bound(kept.clone()), kept, "a bounded history stays as it is");

    // Through status: one more switch drops the closed entry of a that ended first.
    let mut previous = serving(&[("a", "digits-v1")]);
    previous.history = kept.into_iter().filter(|e| e.variant == "a").collect();
    let valid = valid(&IMMEDIATE.replace("digits-v1", "digits-v2"), &three_versions());
    let (_, next) = reconcile(&valid, &previous, &["a-v1", "a-v2"], 1000);
    assert_eq!(next.history.len(), HISTORY_PER_VARIANT);
    let last = next.history.last().unwrap();
    assert_eq!((last.version.as_str(), last.to.is_none()), ("digits-v2", true));
    assert_eq!(
        (next.history[0].version.as_str(), next.history[0].outcome),
        ("digits-v1", HistoryOutcome::Replaced),
        "v1 ended last of the closed entries, so it stays: it is what a rollback returns to"
    );
    assert!(next.history.iter().all(|e| e.version != "digits-v7"), "the closed entry that ended first went");
}

#[test]
fn entries_of_variants_no_longer_in_the_spec_are_dropped() {
    let mut previous = serving(&[("a", "digits-v1"), ("old", "digits-v1")]);
    previous.history = vec![
        entry("digits-v1", 0, None, HistoryOutcome::Serving),
        HistoryEntry { variant: "old".into(), ..entry("digits-v1", 0, None, HistoryOutcome::Serving) },
    ];
    let (_, next) = reconcile(&valid(IMMEDIATE, &three_versions()), &previous, &["a-v1"], 10);
    assert_eq!(entries(&next.history), [("a", "digits-v1", 0, None, HistoryOutcome::Serving)]);
}
