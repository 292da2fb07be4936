//! Every transition of the rollout state machine.

use std::time::Duration;

use hone_crds::inferenceservice::{AbortedRollout, MetricsBaseline, RolloutStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::inferenceservice::names::ANALYSIS_POLL;
use crate::inferenceservice::rollout::{Input, reasons};

fn canary() -> ValidService {
    valid(CANARY, &three_versions())
}

/// Status serving v1 on `a` and rolling out to v2 at `step` (0-based) with
/// `weight` percent since `started` seconds.
fn rolling(step: i32, weight: i32, started: i64, baseline_requests: i64) -> InferenceServiceStatus {
    let mut status = serving(&[("a", "digits-v1")]);
    status.rollout = Some(RolloutStatus {
        variant: "a".into(),
        from_version: "digits-v1".into(),
        to_version: "digits-v2".into(),
        step,
        canary_weight: weight,
        started_at: Some(Time(at(0))),
        step_started_at: (weight > 0).then(|| Time(at(started))),
        last_analysis: None,
        baseline: (weight > 0).then(|| MetricsBaseline { requests: baseline_requests, ..Default::default() }),
        ..Default::default()
    });
    status
}

fn run(
    valid: &ValidService,
    previous: &InferenceServiceStatus,
    metrics: Option<&Result<RouterMetrics, String>>,
    now: i64,
) -> Plan {
    let ready: BTreeSet<String> = ["digits-a-v1".to_owned(), "digits-a-v2".to_owned()].into();
    rollout::plan(&Input { valid, previous, ready: &ready, metrics, now: at(now) })
}

fn reasons_of(plan: &Plan) -> Vec<&str> {
    plan.events.iter().map(|e| e.reason.as_str()).collect()
}

#[test]
fn a_changed_model_version_starts_a_rollout_that_waits_for_ready_predictors() {
    let plan = plan_of(&canary(), &serving(&[("a", "digits-v1")]), &["digits-a-v1"], at(5));
    let rollout = plan.rollout.clone().unwrap();
    assert_eq!((rollout.from_version.as_str(), rollout.to_version.as_str()), ("digits-v1", "digits-v2"));
    assert_eq!((rollout.step, rollout.canary_weight), (0, 0));
    assert_eq!(rollout.started_at, Some(Time(at(5))));
    assert_eq!(reasons_of(&plan), [reasons::STARTED]);
    let a = &plan.variants[0];
    assert_eq!(a.stable.as_ref().unwrap().name, "digits-v1", "the old version stays stable");
    assert_eq!(a.canary.as_ref().unwrap().weight, 0, "no traffic before the predictors are ready");
    assert_eq!(a.canary.as_ref().unwrap().backend, "a-v2");
    assert_eq!(plan.progress.as_ref().unwrap().reason, "WaitingForPredictors");
    // Still not ready on the next reconcile: nothing moves.
    let again = plan_of(&canary(), &with_rollout(&plan), &["digits-a-v1"], at(30));
    assert_eq!(again.rollout, plan.rollout);
    assert!(again.events.is_empty());
}

fn with_rollout(plan: &Plan) -> InferenceServiceStatus {
    let mut status = serving(&[("a", "digits-v1")]);
    status.rollout = plan.rollout.clone();
    status
}

#[test]
fn ready_predictors_get_the_first_step_once_metrics_are_readable() {
    let previous = rolling(0, 0, 0, 0);
    let blind = run(&canary(), &previous, Some(&Err("no router pod is running".into())), 10);
    let waiting = blind.rollout.clone().unwrap();
    assert_eq!(
        (waiting.step, waiting.canary_weight),
        (0, 0),
        "without metrics there is no baseline, so no traffic yet"
    );
    assert_eq!(
        waiting.waiting_for.as_deref(),
        Some("MetricsUnavailable"),
        "the progress deadline's clock runs"
    );
    assert_eq!(blind.progress.as_ref().unwrap().reason, "MetricsUnavailable");
    assert_eq!(blind.requeue_after, Some(ANALYSIS_POLL));
    // Counters left from an earlier attempt become the baseline.
    let plan = run(&canary(), &previous, Some(&canary_metrics(7.0, 7.0)), 10);
    let rollout = plan.rollout.clone().unwrap();
    assert_eq!((rollout.step, rollout.canary_weight), (0, 10));
    assert_eq!(rollout.step_started_at, Some(Time(at(10))));
    assert_eq!(rollout.baseline.as_ref().unwrap().requests, 7);
    assert_eq!(reasons_of(&plan), [reasons::STEP]);
    assert_eq!(plan.variants[0].canary.as_ref().unwrap().weight, 10);
}

#[test]
fn too_few_requests_wait_without_failing_or_changing_status() {
    let previous = rolling(0, 10, 0, 0);
    let plan = run(&canary(), &previous, Some(&canary_metrics(5.0, 5.0)), 61);
    let waiting = plan.rollout.clone().unwrap();
    assert_eq!((waiting.step, waiting.canary_weight), (0, 10));
    assert_eq!(waiting.waiting_since, Some(Time(at(61))), "the wait starts once, for the progress deadline");
    assert_eq!(plan.progress.as_ref().unwrap().reason, "WaitingForRequests");
    assert!(plan.aborted.is_empty() && plan.events.is_empty());
    assert_eq!(plan.requeue_after, Some(ANALYSIS_POLL));
    let mut waited = previous.clone();
    waited.rollout = plan.rollout.clone();
    let again = run(&canary(), &waited, Some(&canary_metrics(8.0, 8.0)), 90);
    assert_eq!(again.rollout, plan.rollout, "polls while waiting write nothing");
}

#[test]
fn within_the_interval_a_healthy_step_waits_and_resumes_from_status() {
    // As after an operator restart mid-step: everything comes from status.
    let previous = rolling(1, 50, 100, 40);
    let plan = run(&canary(), &previous, Some(&canary_metrics(60.0, 0.0)), 130);
    assert_eq!(plan.rollout, previous.rollout, "nothing moves, so nothing is written");
    assert_eq!(plan.progress.as_ref().unwrap().reason, "CanaryStep");
    assert_eq!(plan.variants[0].canary.as_ref().unwrap().weight, 50);
    assert_eq!(plan.requeue_after, Some(ANALYSIS_POLL));
    let late = run(&canary(), &previous, Some(&canary_metrics(60.0, 0.0)), 155);
    assert_eq!(late.requeue_after, Some(Duration::from_secs(5)), "look again when the step ends");
}

#[test]
fn a_passing_step_advances() {
    let plan = run(&canary(), &rolling(0, 10, 0, 0), Some(&canary_metrics(30.0, 1.0)), 61);
    let rollout = plan.rollout.clone().unwrap();
    assert_eq!((rollout.step, rollout.canary_weight), (1, 50));
    assert_eq!(rollout.step_started_at, Some(Time(at(61))));
    assert_eq!(rollout.baseline.as_ref().unwrap().requests, 30);
    let analysis = rollout.last_analysis.unwrap();
    assert_eq!(analysis.requests, 30);
    assert!(analysis.p99_latency_ms <= 10.0);
    assert_eq!(reasons_of(&plan), [reasons::STEP]);
    assert!(plan.events[0].note.contains("step 2 of 2: 50%"), "{}", plan.events[0].note);
}

#[test]
fn passing_the_last_step_promotes() {
    let plan = run(&canary(), &rolling(1, 50, 100, 30), Some(&canary_metrics(80.0, 0.0)), 161);
    assert_eq!(plan.rollout, None);
    assert_eq!(plan.variants[0].stable.as_ref().unwrap().name, "digits-v2");
    assert_eq!(plan.variants[0].canary, None);
    assert_eq!(reasons_of(&plan), [reasons::PROMOTED]);
    assert!(!plan.events[0].warning);
    // The next reconcile, from the promoted status, starts nothing.
    let next = plan_of(&canary(), &serving(&[("a", "digits-v2")]), &["digits-a-v2"], at(170));
    assert_eq!((next.rollout, next.events.len()), (None, 0));
}

#[test]
fn failing_analysis_aborts_back_to_the_old_version() {
    // 10 of 30 requests failed: abort before the interval is over.
    let plan = run(&canary(), &rolling(0, 10, 0, 0), Some(&canary_metrics(30.0, 10.0)), 20);
    assert_eq!(plan.rollout, None);
    assert_eq!(plan.variants[0].stable.as_ref().unwrap().name, "digits-v1");
    assert_eq!(plan.variants[0].canary, None, "all traffic back on the old version");
    let aborted = &plan.aborted[0];
    assert_eq!(
        (aborted.variant.as_str(), aborted.to_version.as_str(), aborted.generation),
        ("a", "digits-v2", 2)
    );
    assert!(aborted.message.contains("error rate 33.33%"), "{}", aborted.message);
    assert_eq!(reasons_of(&plan), [reasons::ABORTED]);
    assert!(plan.events[0].warning);
}

#[test]
fn an_aborted_version_is_not_retried_until_the_spec_changes() {
    let mut previous = serving(&[("a", "digits-v1")]);
    previous.aborted_rollouts = vec![AbortedRollout {
        variant: "a".into(),
        from_version: Some("digits-v1".into()),
        to_version: "digits-v2".into(),
        generation: 2,
        message: "failed".into(),
        reason: None,
    }];
    let plan = plan_of(&canary(), &previous, &["digits-a-v1", "digits-a-v2"], at(300));
    assert_eq!(plan.rollout, None);
    assert_eq!(plan.aborted, previous.aborted_rollouts);
    assert!(plan.pending[0].contains("aborted"), "{:?}", plan.pending);
    let mut edited = canary();
    edited.generation = 3;
    let retry = plan_of(&edited, &previous, &["digits-a-v1"], at(300));
    assert!(retry.aborted.is_empty());
    assert_eq!(retry.rollout.unwrap().to_version, "digits-v2");
}

#[test]
fn immediate_switches_once_the_new_predictors_are_ready() {
    let immediate = valid("variants: [{name: a, modelVersion: digits-v2, weight: 100}]", &three_versions());
    let started = plan_of(&immediate, &serving(&[("a", "digits-v1")]), &["digits-a-v1"], at(0));
    assert_eq!(started.variants[0].stable.as_ref().unwrap().name, "digits-v1");
    assert_eq!(started.progress.as_ref().unwrap().reason, "WaitingForPredictors");
    let previous = with_rollout(&started);
    let switched = plan_of(&immediate, &previous, &["digits-a-v1", "digits-a-v2"], at(20));
    assert_eq!(switched.rollout, None);
    assert_eq!(switched.variants[0].stable.as_ref().unwrap().name, "digits-v2");
    assert_eq!(reasons_of(&switched), [reasons::PROMOTED]);
}

#[test]
fn a_track_variant_rolls_out_to_a_newer_passing_version() {
    let yaml =
        CANARY.replace("modelVersion: digits-v2", "track: {model: digits, minMetrics: {val_accuracy: 0.9}}");
    let valid = valid(&yaml, &three_versions());
    let plan = plan_of(&valid, &serving(&[("a", "digits-v2")]), &["digits-a-v2"], at(0));
    let rollout = plan.rollout.unwrap();
    assert_eq!((rollout.from_version.as_str(), rollout.to_version.as_str()), ("digits-v2", "digits-v3"));
}

#[test]
fn a_spec_change_mid_rollout_cancels_it() {
    let back = valid(&CANARY.replace("digits-v2", "digits-v1"), &three_versions());
    let plan = run(&back, &rolling(0, 10, 0, 0), Some(&canary_metrics(30.0, 0.0)), 20);
    assert_eq!(plan.rollout, None);
    assert_eq!(plan.variants[0].stable.as_ref().unwrap().name, "digits-v1");
    assert_eq!(reasons_of(&plan), [reasons::CANCELLED]);
    // Asking for a third version instead restarts from the stable one.
    let other = valid(&CANARY.replace("digits-v2", "digits-v3"), &three_versions());
    let restarted = run(&other, &rolling(0, 10, 0, 0), Some(&canary_metrics(30.0, 0.0)), 20);
    assert_eq!(reasons_of(&restarted), [reasons::CANCELLED, reasons::STARTED]);
    assert_eq!(restarted.rollout.unwrap().to_version, "digits-v3");
}

#[test]
fn one_rollout_at_a_time() {
    let yaml = CANARY.replace(
        "variants: [{name: a, modelVersion: digits-v2, weight: 100}]",
        "variants: [{name: a, modelVersion: digits-v2, weight: 50}, {name: b, modelVersion: digits-v3, weight: 50}]",
    );
    let valid = valid(&yaml, &three_versions());
    let previous = serving(&[("a", "digits-v1"), ("b", "digits-v1")]);
    let plan = plan_of(&valid, &previous, &[], at(0));
    assert_eq!(plan.rollout.unwrap().variant, "a");
    assert_eq!(plan.variants[1].stable.as_ref().unwrap().name, "digits-v1");
    assert!(plan.pending[0].contains("variant b") && plan.pending[0].contains("waits"), "{:?}", plan.pending);
}

#[test]
fn a_new_variant_serves_its_target_at_once() {
    let plan = plan_of(&canary(), &Default::default(), &[], at(0));
    assert_eq!(plan.rollout, None);
    assert_eq!(plan.variants[0].stable.as_ref().unwrap().name, "digits-v2");
    assert!(plan.events.is_empty());
}
