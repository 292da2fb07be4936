//! The rollout's progress deadline: reached, not reached, and reset by progress.

use std::time::Duration;

use hone_crds::inferenceservice::{InferenceServicePhase, REASON_PROGRESS_DEADLINE_EXCEEDED, RolloutStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::status::{compute, condition};
use super::*;
use crate::inferenceservice::deadline::{self, Wait, human_duration, waits};
use crate::inferenceservice::names::ANALYSIS_POLL;
use crate::inferenceservice::rollout::{Input, reasons};

/// A canary of `a` to digits-v2 with a 5-minute progress deadline.
const CANARY_WITH_DEADLINE: &str = "
variants: [{name: a, modelVersion: digits-v2, weight: 100}]
rollout:
  strategy: Canary
  steps: [10, 50]
  stepInterval: 1m
  progressDeadline: 5m
  analysis: {maxErrorRate: 0.05, maxP99LatencyMs: 100, minRequests: 20}
";

fn canary() -> ValidService {
    valid(CANARY_WITH_DEADLINE, &three_versions())
}

fn metrics(requests: f64) -> Result<RouterMetrics, String> {
    canary_metrics(requests, 0.0)
}

fn unavailable() -> Result<RouterMetrics, String> {
    Err("no router pod is running".to_owned())
}

/// One reconcile at `now` seconds from `previous`, with `ready` predictors and `metrics`.
fn run(
    valid: &ValidService,
    previous: &InferenceServiceStatus,
    ready: &[&str],
    metrics: Option<&Result<RouterMetrics, String>>,
    now: i64,
) -> Plan {
    let ready: BTreeSet<String> = ready.iter().map(|s| (*s).to_owned()).collect();
    rollout::plan(&Input { valid, previous, ready: &ready, metrics, now: at(now) })
}

/// The status after `plan`, as the next reconcile reads it.
fn after(plan: &Plan) -> InferenceServiceStatus {
    let mut status = serving(&[("a", "digits-v1")]);
    status.rollout = plan.rollout.clone();
    status.aborted_rollouts = plan.aborted.clone();
    status
}

fn waiting(plan: &Plan) -> (Option<&str>, Option<Time>) {
    let r = plan.rollout.as_ref().expect("a rollout in progress");
    (r.waiting_for.as_deref(), r.waiting_since.clone())
}

const OLD: &[&str] = &["digits-a-v1"];
const BOTH: &[&str] = &["digits-a-v1", "digits-a-v2"];

#[test]
fn predictors_that_never_become_ready_abort_the_rollout_at_the_deadline() {
    let started = run(&canary(), &serving(&[("a", "digits-v1")]), OLD, None, 0);
    assert_eq!(waiting(&started), (Some(waits::PREDICTORS), Some(Time(at(0)))));
    assert_eq!(started.requeue_after, Some(Duration::from_secs(300)), "look again at the deadline");

    let before = run(&canary(), &after(&started), OLD, None, 299);
    assert_eq!(before.rollout, started.rollout, "not reached: nothing changes, nothing is written");
    assert!(before.aborted.is_empty() && before.events.is_empty());
    assert_eq!(before.requeue_after, Some(Duration::from_secs(1)));

    let past = run(&canary(), &after(&started), OLD, None, 300);
    assert_eq!(past.rollout, None);
    assert_eq!(past.progress, None);
    assert_eq!(past.variants[0].stable.as_ref().unwrap().name, "digits-v1");
    assert_eq!(past.variants[0].canary, None, "all traffic on the old version");
    let aborted = &past.aborted[0];
    assert_eq!(
        (aborted.variant.as_str(), aborted.to_version.as_str(), aborted.generation),
        ("a", "digits-v2", 2)
    );
    assert_eq!(aborted.reason.as_deref(), Some(REASON_PROGRESS_DEADLINE_EXCEEDED));
    assert!(aborted.message.contains("progressDeadline (5m)"), "{}", aborted.message);
    assert!(
        aborted.message.contains("Deployment digits-a-v2"),
        "says what it waited for: {}",
        aborted.message
    );
    assert_eq!(past.events.len(), 1);
    assert_eq!(past.events[0].reason, reasons::PROGRESS_DEADLINE_EXCEEDED);
    assert!(past.events[0].warning);

    // The aborted version is not retried at this generation, even once its predictors are ready.
    let later = run(&canary(), &after(&past), BOTH, Some(&metrics(0.0)), 400);
    assert_eq!(later.rollout, None);
    assert!(later.pending[0].contains("aborted"), "{:?}", later.pending);
}

#[test]
fn an_aborted_rollout_leaves_the_service_degraded_with_the_deadline_reason() {
    let valid = canary();
    let started = run(&valid, &serving(&[("a", "digits-v1")]), OLD, None, 0);
    let progressing = compute(&valid, &started, 1, &serving(&[("a", "digits-v1")]));
    assert_eq!(progressing.phase, Some(InferenceServicePhase::Progressing));
    let past = run(&valid, &progressing, OLD, None, 301);
    let degraded = compute(&valid, &past, 1, &progressing);
    assert_eq!(degraded.phase, Some(InferenceServicePhase::Degraded));
    let (holds, reason, message) = condition(&degraded, "Degraded");
    assert_eq!((holds.as_str(), reason.as_str()), ("True", REASON_PROGRESS_DEADLINE_EXCEEDED));
    assert!(message.contains("all traffic is back on digits-v1"), "{message}");
    assert_eq!(degraded.rollout, None);
    assert_eq!(degraded.variants[0].model_version.as_deref(), Some("digits-v1"));
}

#[test]
fn ready_predictors_are_progress_and_restart_the_clock() {
    let started = run(&canary(), &serving(&[("a", "digits-v1")]), OLD, None, 0);
    // Ready at 250 s, but the router's metrics cannot be read: a new wait starts.
    let blind = run(&canary(), &after(&started), BOTH, Some(&unavailable()), 250);
    assert_eq!(waiting(&blind), (Some(waits::METRICS), Some(Time(at(250)))));
    assert_eq!(blind.requeue_after, Some(ANALYSIS_POLL));
    let still = run(&canary(), &after(&blind), BOTH, Some(&unavailable()), 500);
    assert!(still.aborted.is_empty(), "300 s from the start, but only 250 s from the last progress");
    assert_eq!(still.rollout, blind.rollout);
    let past = run(&canary(), &after(&blind), BOTH, Some(&unavailable()), 550);
    assert_eq!(past.aborted[0].reason.as_deref(), Some(REASON_PROGRESS_DEADLINE_EXCEEDED));
    assert!(past.aborted[0].message.contains("router's metrics"), "{}", past.aborted[0].message);
}

#[test]
fn a_step_on_schedule_clears_the_clock_and_waiting_for_requests_starts_it() {
    let waited = run(&canary(), &serving(&[("a", "digits-v1")]), OLD, None, 0);
    let stepped = run(&canary(), &after(&waited), BOTH, Some(&metrics(0.0)), 100);
    let r = stepped.rollout.clone().unwrap();
    assert_eq!((r.canary_weight, r.waiting_for, r.waiting_since), (10, None, None));
    // Within the step's interval: on schedule, no clock.
    let within = run(&canary(), &after(&stepped), BOTH, Some(&metrics(5.0)), 130);
    assert_eq!(within.rollout, stepped.rollout);
    // The interval is over with too few requests: the wait starts then.
    let thin = run(&canary(), &after(&stepped), BOTH, Some(&metrics(5.0)), 160);
    assert_eq!(waiting(&thin), (Some(waits::REQUESTS), Some(Time(at(160)))));
    // Enough requests: the next step, and the clock is gone.
    let next = run(&canary(), &after(&thin), BOTH, Some(&metrics(30.0)), 200);
    let r = next.rollout.unwrap();
    assert_eq!((r.canary_weight, r.waiting_for, r.waiting_since), (50, None, None));
}

#[test]
fn alternating_between_metrics_and_requests_is_no_progress() {
    let waited = run(&canary(), &serving(&[("a", "digits-v1")]), OLD, None, 0);
    let stepped = run(&canary(), &after(&waited), BOTH, Some(&metrics(0.0)), 100);
    let thin = run(&canary(), &after(&stepped), BOTH, Some(&metrics(5.0)), 160);
    let blind = run(&canary(), &after(&thin), BOTH, Some(&unavailable()), 300);
    assert_eq!(waiting(&blind), (Some(waits::METRICS), Some(Time(at(160)))), "the clock runs on");
    let thin_again = run(&canary(), &after(&blind), BOTH, Some(&metrics(6.0)), 400);
    assert_eq!(waiting(&thin_again), (Some(waits::REQUESTS), Some(Time(at(160)))));
    assert_eq!(thin_again.requeue_after, Some(ANALYSIS_POLL));
    let near = run(&canary(), &after(&thin_again), BOTH, Some(&metrics(6.0)), 455);
    assert_eq!(near.requeue_after, Some(Duration::from_secs(5)), "look again at the deadline, not later");
    let past = run(&canary(), &after(&thin_again), BOTH, Some(&metrics(6.0)), 460);
    assert_eq!(past.rollout, None);
    assert_eq!(past.variants[0].canary, None, "the 10% goes back to the old version");
    assert_eq!(past.aborted[0].reason.as_deref(), Some(REASON_PROGRESS_DEADLINE_EXCEEDED));
    assert!(past.aborted[0].message.contains("waiting for at least 20 canary requests"));
}

#[test]
fn an_immediate_rollout_has_the_deadline_too() {
    let yaml =
        "variants: [{name: a, modelVersion: digits-v2, weight: 100}]\nrollout: {progressDeadline: 30s}";
    let immediate = valid(yaml, &three_versions());
    let started = run(&immediate, &serving(&[("a", "digits-v1")]), OLD, None, 0);
    assert_eq!(started.requeue_after, Some(Duration::from_secs(30)));
    let past = run(&immediate, &after(&started), OLD, None, 45);
    assert_eq!(past.aborted[0].reason.as_deref(), Some(REASON_PROGRESS_DEADLINE_EXCEEDED));
    assert!(past.aborted[0].message.contains("(30s)"), "{}", past.aborted[0].message);
    // Ready in time: promoted, nothing aborted.
    let switched = run(&immediate, &after(&started), BOTH, None, 29);
    assert_eq!(switched.variants[0].stable.as_ref().unwrap().name, "digits-v2");
    assert!(switched.aborted.is_empty());
}

#[test]
fn the_clock_survives_only_while_waiting() {
    let fresh = RolloutStatus { variant: "a".into(), ..Default::default() };
    let Wait::Within(first, left) = deadline::wait(fresh, waits::METRICS, at(10), Duration::from_secs(60))
    else {
        panic!("a new wait is within its deadline")
    };
    assert_eq!((first.waiting_since.clone(), left), (Some(Time(at(10))), Duration::from_secs(60)));
    let Wait::Within(second, left) =
        deadline::wait(first.clone(), waits::REQUESTS, at(40), Duration::from_secs(60))
    else {
        panic!("30 s of 60")
    };
    assert_eq!((second.waiting_since, left), (Some(Time(at(10))), Duration::from_secs(30)));
    assert!(matches!(
        deadline::wait(first.clone(), waits::METRICS, at(70), Duration::from_secs(60)),
        Wait::Exceeded(r) if r.waiting_since == Some(Time(at(10)))
    ));
    // A start in the future (clock skew between replicas) is no time waited.
    assert!(matches!(
        deadline::wait(first, waits::METRICS, at(0), Duration::from_secs(60)),
        Wait::Within(_, left) if left == Duration::from_secs(60)
    ));
    assert_eq!(human_duration(Duration::from_secs(600)), "10m");
    assert_eq!(human_duration(Duration::from_secs(7200)), "2h");
    assert_eq!(human_duration(Duration::from_secs(90)), "90s");
}
