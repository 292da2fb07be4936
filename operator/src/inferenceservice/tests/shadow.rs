//! The shadow step: mirrored requests judged before any client sees the new
//! version, then the live steps; the router config that mirrors.

use hone_crds::inferenceservice::{MetricsBaseline, RolloutStatus};
use hone_crds::router::metrics::{OUTCOME_COMPARED, OUTCOME_DROPPED, OUTCOME_FAILED};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::inferenceservice::desired;
use crate::inferenceservice::rollout::{Input, reasons};

/// [`CANARY`] with a 20% shadow step before its live steps.
fn shadowed() -> ValidService {
    let yaml = CANARY.replace("  strategy: Canary\n", "  strategy: Canary\n  shadow: {percent: 20}\n");
    valid(&yaml, &three_versions())
}

/// Router metrics: stable `a` answered `stable` requests (classes 0 and 1
/// evenly, confidence 0.95); the mirror target `a-v2` compared `compared`
/// requests with `agreed` agreements, `failed` mirrors failed and `dropped`
/// were dropped, its answers split `canary_classes`.
fn metrics(
    stable: f64,
    compared: f64,
    agreed: f64,
    failed: f64,
    dropped: f64,
    canary_classes: (f64, f64),
) -> Result<RouterMetrics, String> {
    let buckets = |n: f64| [("0.01".to_owned(), n), ("+Inf".to_owned(), n)].into_iter().collect();
    let a = BackendMetrics {
        requests: stable,
        buckets: buckets(stable),
        predictions: [("0".to_owned(), stable / 2.0), ("1".to_owned(), stable / 2.0)].into_iter().collect(),
        confidence_sum: stable * 0.95,
        ..Default::default()
    };
    let shadow_total = canary_classes.0 + canary_classes.1;
    let canary = BackendMetrics {
        predictions: [("0".to_owned(), canary_classes.0), ("1".to_owned(), canary_classes.1)]
            .into_iter()
            .collect(),
        confidence_sum: shadow_total * 0.94,
        shadow_requests: [
            (OUTCOME_COMPARED.to_owned(), compared),
            (OUTCOME_FAILED.to_owned(), failed),
            (OUTCOME_DROPPED.to_owned(), dropped),
        ]
        .into_iter()
        .collect(),
        shadow_samples: compared,
        shadow_agreements: agreed,
        shadow_buckets: buckets(compared + failed),
        ..Default::default()
    };
    Ok([("a".to_owned(), a), ("a-v2".to_owned(), canary)].into_iter().collect())
}

fn run(
    valid: &ValidService,
    previous: &InferenceServiceStatus,
    metrics: &Result<RouterMetrics, String>,
    now: i64,
) -> Plan {
    let ready: BTreeSet<String> = ["digits-a-v1".to_owned(), "digits-a-v2".to_owned()].into();
    rollout::plan(&Input { valid, previous, ready: &ready, metrics: Some(metrics), now: at(now) })
}

/// Serving v1 on `a`, in the shadow step towards v2 since second 0, with empty baselines.
fn in_shadow() -> InferenceServiceStatus {
    let mut status = serving(&[("a", "digits-v1")]);
    status.rollout = Some(RolloutStatus {
        variant: "a".into(),
        from_version: "digits-v1".into(),
        to_version: "digits-v2".into(),
        shadow: true,
        started_at: Some(Time(at(0))),
        step_started_at: Some(Time(at(0))),
        baseline: Some(MetricsBaseline::default()),
        stable_baseline: Some(MetricsBaseline::default()),
        ..Default::default()
    });
    status
}

#[test]
fn ready_predictors_enter_the_shadow_step_with_no_client_traffic() {
    let mut previous = serving(&[("a", "digits-v1")]);
    previous.rollout = Some(RolloutStatus {
        variant: "a".into(),
        from_version: "digits-v1".into(),
        to_version: "digits-v2".into(),
        started_at: Some(Time(at(0))),
        ..Default::default()
    });
    let plan = run(&shadowed(), &previous, &metrics(300.0, 0.0, 0.0, 0.0, 0.0, (0.0, 0.0)), 10);
    let r = plan.rollout.clone().unwrap();
    assert!(r.shadow);
    assert_eq!(r.canary_weight, 0, "clients are answered by v1 only");
    assert_eq!(
        r.stable_baseline.as_ref().unwrap().requests,
        300,
        "stable's counters are the comparison's start"
    );
    let canary = plan.variants[0].canary.clone().unwrap();
    assert_eq!((canary.weight, canary.shadow), (0, Some(20)));
    assert!(plan.progress.as_ref().unwrap().message.contains("shadow step: 20%"), "{:?}", plan.progress);
    assert_eq!(plan.events.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(), [reasons::STEP]);
    // The router mirrors 20% of a's requests to a-v2, which has no weight.
    let valid = shadowed();
    let config = desired::build(&valid, &plan, false).router_config.unwrap();
    assert_eq!(config.mirrors.len(), 1);
    let mirror = &config.mirrors[0];
    assert_eq!((mirror.source.as_str(), mirror.target.as_str(), mirror.percent), ("a", "a-v2", 20));
    let weights: Vec<_> = config.variants.iter().map(|v| (v.name.as_str(), v.weight)).collect();
    assert_eq!(weights, [("a", 10_000), ("a-v2", 0)]);
}

#[test]
fn an_agreeing_shadow_moves_on_to_the_first_live_step() {
    let plan = run(&shadowed(), &in_shadow(), &metrics(500.0, 100.0, 97.0, 0.0, 4.0, (50.0, 50.0)), 61);
    let r = plan.rollout.clone().unwrap();
    assert!(!r.shadow);
    assert_eq!((r.step, r.canary_weight), (0, 10));
    let last = r.last_analysis.clone().unwrap();
    assert_eq!(last.shadow_agreement, Some(0.97));
    assert_eq!(last.shadow_dropped, Some(4));
    assert_eq!(
        r.baseline.as_ref().unwrap().shadow_samples,
        100,
        "the live step starts from the counters now"
    );
    let config = desired::build(&shadowed(), &plan, false).router_config.unwrap();
    assert!(config.mirrors.is_empty(), "live steps mirror nothing");
}

#[test]
fn a_disagreeing_shadow_aborts_before_any_client_sees_it() {
    let plan = run(&shadowed(), &in_shadow(), &metrics(500.0, 100.0, 60.0, 0.0, 0.0, (50.0, 50.0)), 20);
    assert!(plan.rollout.is_none());
    let abort = &plan.aborted[0];
    assert!(abort.message.contains("minShadowAgreement"), "{}", abort.message);
    assert!(abort.message.contains("no client was answered by it"), "{}", abort.message);
    assert!(
        abort.message.contains("agreement 60.0% of 100"),
        "the figures are in the message: {}",
        abort.message
    );
    assert!(plan.variants[0].canary.is_none());
}

#[test]
fn failing_mirrors_abort_on_the_error_rate_of_mirrored_requests() {
    let plan = run(&shadowed(), &in_shadow(), &metrics(500.0, 50.0, 50.0, 50.0, 0.0, (25.0, 25.0)), 20);
    let abort = &plan.aborted[0];
    assert!(
        abort.message.contains("maxErrorRate") && abort.message.contains("mirrored requests"),
        "{}",
        abort.message
    );
}

#[test]
fn a_shifted_prediction_distribution_aborts_the_shadow() {
    // Agreement is not asked of this canary, but its classes are 95/5 where stable answers 50/50.
    let mut valid = shadowed();
    valid.analysis.min_shadow_agreement = 0.0;
    let plan = run(&valid, &in_shadow(), &metrics(1000.0, 200.0, 100.0, 0.0, 0.0, (190.0, 10.0)), 20);
    let abort = &plan.aborted[0];
    assert!(abort.message.contains("maxPredictionPsi"), "{}", abort.message);
}

#[test]
fn too_few_compared_requests_wait_in_the_shadow_step() {
    let plan = run(&shadowed(), &in_shadow(), &metrics(500.0, 5.0, 5.0, 0.0, 300.0, (3.0, 2.0)), 61);
    let r = plan.rollout.clone().unwrap();
    assert!(r.shadow && r.canary_weight == 0);
    assert_eq!(plan.progress.as_ref().unwrap().reason, "WaitingForRequests");
    assert!(plan.progress.as_ref().unwrap().message.contains("compared mirrored"), "{:?}", plan.progress);
}

#[test]
fn shadow_needs_the_router_and_a_canary() {
    let immediate =
        CANARY.replace("  strategy: Canary\n", "  strategy: Immediate\n  shadow: {percent: 20}\n");
    let error = validate(&isvc(&immediate), &three_versions(), "p", "r", false).unwrap_err().to_string();
    assert!(error.contains("rollout.shadow needs rollout.strategy Canary"), "{error}");
    let gateway = format!(
        "{}traffic: {{provider: GatewayAPI, gateway: {{parentRefs: [{{name: gw}}]}}}}\n",
        CANARY.replace("  strategy: Canary\n", "  strategy: Canary\n  shadow: {percent: 20}\n")
    );
    let error = validate(&isvc(&gateway), &three_versions(), "p", "r", false).unwrap_err().to_string();
    assert!(error.contains("traffic.provider Router"), "{error}");
}
