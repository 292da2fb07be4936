//! Status computation and the Events it implies.

use hone_crds::conditions::find_condition;
use hone_crds::inferenceservice::{InferenceServicePhase, RolloutStatus};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::DynamicObject;
use serde_json::json;

use super::*;
use crate::inferenceservice::desired::{self, Desired};
use crate::inferenceservice::status::{self, StatusInput};

const AB: &str = "variants: [{name: a, modelVersion: digits-v1, weight: 75}, {name: b, modelVersion: digits-v2, weight: 25}]";

/// `desired`'s Deployments with `ready` ready replicas each.
fn applied(desired: &Desired, ready: i32) -> Vec<Deployment> {
    desired
        .deployments
        .iter()
        .cloned()
        .map(|mut d| {
            d.status = Some(DeploymentStatus {
                replicas: Some(2),
                ready_replicas: Some(ready),
                ..Default::default()
            });
            d
        })
        .collect()
}

pub(super) fn compute(
    valid: &ValidService,
    plan: &Plan,
    ready: i32,
    previous: &InferenceServiceStatus,
) -> InferenceServiceStatus {
    let desired = desired::build(valid, plan, true);
    let deployments = applied(&desired, ready);
    let input = StatusInput {
        valid,
        plan,
        desired: &desired,
        deployments: &deployments,
        route: None,
        gateway_api: true,
        draining: &[],
        previous,
    };
    status::compute(input, &Time(at(0)))
}

pub(super) fn condition(status: &InferenceServiceStatus, type_: &str) -> (String, String, String) {
    let c = find_condition(&status.conditions, type_).unwrap();
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[test]
fn ready_when_every_variant_and_the_router_are_ready() {
    let valid = valid(AB, &three_versions());
    let plan = plan_of(&valid, &Default::default(), &[], at(0));
    let status = compute(&valid, &plan, 2, &Default::default());
    assert_eq!(status.phase, Some(InferenceServicePhase::Ready));
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(status.url.as_deref(), Some("http://digits-router.ml.svc:8080"));
    assert_eq!(status.conditions.len(), 5);
    assert_eq!(condition(&status, "Ready").0, "True");
    assert_eq!(condition(&status, "PredictorsReady").0, "True");
    assert_eq!(condition(&status, "RouteReady").1, "RouterReady");
    assert_eq!(condition(&status, "RolloutProgressing").0, "False");
    assert_eq!(condition(&status, "Degraded").0, "False");
    let a = &status.variants[0];
    assert_eq!(
        (a.model_version.as_deref(), a.weight, a.replicas, a.ready_replicas),
        (Some("digits-v1"), 75, 2, 2)
    );
    assert_eq!(status.variants[1].model_version.as_deref(), Some("digits-v2"));
    // The same world again writes nothing new.
    let again = compute(&valid, &plan, 2, &status);
    assert_eq!(again, status);
}

#[test]
fn predictors_starting_keep_it_pending() {
    let valid = valid(AB, &three_versions());
    let plan = plan_of(&valid, &Default::default(), &[], at(0));
    let status = compute(&valid, &plan, 0, &Default::default());
    assert_eq!(status.phase, Some(InferenceServicePhase::Pending));
    assert_eq!(condition(&status, "PredictorsReady").1, "PredictorsStarting");
    assert_eq!(condition(&status, "RouteReady").1, "RouterStarting");
    assert_eq!(condition(&status, "Ready").0, "False");
}

#[test]
fn a_missing_model_version_is_a_waiting_condition_and_shares_shift() {
    let valid = valid(&AB.replace("digits-v2", "digits-v9"), &three_versions());
    let plan = plan_of(&valid, &Default::default(), &[], at(0));
    let status = compute(&valid, &plan, 1, &Default::default());
    let (holds, reason, message) = condition(&status, "PredictorsReady");
    assert_eq!((holds.as_str(), reason.as_str()), ("False", "ModelVersionNotReady"));
    assert!(message.contains("variant b: ModelVersion digits-v9 does not exist"), "{message}");
    assert_eq!(condition(&status, "Ready").1, "ModelVersionNotReady");
    assert_eq!((status.variants[0].weight, status.variants[1].weight), (100, 0));
    assert_eq!(status.variants[1].model_version, None);
}

#[test]
fn a_rollout_is_progressing_and_an_abort_is_degraded() {
    let valid = valid(
        "variants: [{name: a, modelVersion: digits-v2, weight: 100}]\nrollout: {strategy: Canary}",
        &three_versions(),
    );
    let previous = serving(&[("a", "digits-v1")]);
    let plan = plan_of(&valid, &previous, &["digits-a-v1"], at(0));
    let status = compute(&valid, &plan, 1, &previous);
    assert_eq!(status.phase, Some(InferenceServicePhase::Progressing));
    assert_eq!(condition(&status, "RolloutProgressing").1, "WaitingForPredictors");
    let rollout: &RolloutStatus = status.rollout.as_ref().unwrap();
    assert_eq!((rollout.from_version.as_str(), rollout.to_version.as_str()), ("digits-v1", "digits-v2"));
    assert_eq!(status.variants[0].model_version.as_deref(), Some("digits-v1"));
    assert_eq!(status.variants[0].replicas, 4, "stable and canary predictors both count");

    let mut aborted_plan = plan.clone();
    aborted_plan.rollout = None;
    aborted_plan.progress = None;
    aborted_plan.variants[0].canary = None;
    aborted_plan.aborted.push(hone_crds::inferenceservice::AbortedRollout {
        variant: "a".into(),
        from_version: Some("digits-v1".into()),
        to_version: "digits-v2".into(),
        generation: 2,
        message: "error rate 50%".into(),
        reason: None,
    });
    let degraded = compute(&valid, &aborted_plan, 1, &status);
    assert_eq!(degraded.phase, Some(InferenceServicePhase::Degraded));
    assert_eq!(
        condition(&degraded, "Degraded"),
        ("True".into(), "RolloutAborted".into(), "error rate 50%".into())
    );
    assert_eq!(degraded.rollout, None);
    assert_eq!(degraded.aborted_rollouts.len(), 1);
}

#[test]
fn gateway_api_route_readiness() {
    let yaml = format!("{AB}\ntraffic: {{provider: GatewayAPI, gateway: {{parentRefs: [{{name: web}}]}}}}");
    let valid = valid(&yaml, &three_versions());
    let plan = plan_of(&valid, &Default::default(), &[], at(0));
    let desired = desired::build(&valid, &plan, false);
    let deployments = applied(&desired, 1);
    let mut input = StatusInput {
        valid: &valid,
        plan: &plan,
        desired: &desired,
        deployments: &deployments,
        route: None,
        gateway_api: false,
        draining: &[],
        previous: &Default::default(),
    };
    let missing = status::compute(input, &Time(at(0)));
    assert_eq!(condition(&missing, "RouteReady").1, "GatewayAPINotInstalled");
    assert_eq!(condition(&missing, "Ready").0, "False");
    let route = |parents: serde_json::Value| -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "digits"}, "status": {"parents": parents}}))
        .unwrap()
    };
    input.gateway_api = true;
    let pending = route(json!([]));
    input.route = Some(&pending);
    assert_eq!(condition(&status::compute(input, &Time(at(0))), "RouteReady").1, "RoutePending");
    let accepted = route(json!([{"conditions": [{"type": "Accepted", "status": "True"}]}]));
    input.route = Some(&accepted);
    let status = status::compute(input, &Time(at(0)));
    assert_eq!(condition(&status, "RouteReady").1, "RouteAccepted");
    assert_eq!(status.phase, Some(InferenceServicePhase::Ready));
    let refused =
        route(json!([{"conditions": [{"type": "Accepted", "status": "False", "message": "no listener"}]}]));
    input.route = Some(&refused);
    assert_eq!(condition(&status::compute(input, &Time(at(0))), "RouteReady").2, "no listener");
}

#[test]
fn gate_failures_are_recorded_once() {
    let mut mvs = three_versions();
    mvs.push(model_version("digits-v4", "digits", 4, true, &[("val_accuracy", 0.1)]));
    let valid = valid(
        "variants: [{name: a, track: {model: digits, minMetrics: {val_accuracy: 0.9}}, weight: 100}]",
        &mvs,
    );
    let plan = plan_of(&valid, &Default::default(), &[], at(0));
    let status = compute(&valid, &plan, 1, &Default::default());
    assert_eq!(status.variants[0].gate_failures, ["digits-v4"]);
    assert!(condition(&status, "RolloutProgressing").2.contains("skips digits-v4 (val_accuracy 0.1 < 0.9)"));
    let events = status::events(&Default::default(), &status);
    let gate: Vec<_> = events.iter().filter(|e| e.reason == status::REASON_GATE_FAILED).collect();
    assert_eq!(gate.len(), 1);
    assert!(gate[0].warning && gate[0].note.contains("digits-v4"));
    assert!(status::events(&status, &status).is_empty(), "nothing new, no Event");
}

#[test]
fn an_invalid_spec_is_ready_false_and_a_warning() {
    let previous = serving(&[("a", "digits-v1")]);
    let status =
        status::invalid(&previous, Some(3), "spec.predictor.env sets A twice; keep one", &Time(at(0)));
    assert_eq!(condition(&status, "Ready").1, "InvalidSpec");
    assert_eq!(status.observed_generation, Some(3));
    assert_eq!(status.variants, previous.variants, "what is served stays recorded");
    let events = status::events(&previous, &status);
    assert!(events[0].warning && events[0].reason == "InvalidSpec");
}
