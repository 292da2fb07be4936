//! Rollout actions asked for by hand (`hone.dev/rollout-action`): every
//! transition they make, and that each request is handled once.

use std::collections::BTreeMap;

use hone_crds::inferenceservice::{
    InferenceServicePhase, MetricsBaseline, RolloutActionOutcome, RolloutActionRecord, RolloutStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::status::{compute, condition};
use super::*;
use crate::inferenceservice::manual::{self, ActionRequest, Decision};
use crate::inferenceservice::rollout::reasons;

/// The canary service with `action` (id `req-1`) asked for.
fn asking(action: &str, variant: Option<&str>) -> ValidService {
    let mut valid = valid(CANARY, &three_versions());
    valid.action = Some(ActionRequest {
        id: "req-1".into(),
        action: action.into(),
        variant: variant.map(str::to_owned),
    });
    valid
}

/// Status serving v1 on `a` and rolling out to v2 at 10% since t=0.
fn at_first_step() -> InferenceServiceStatus {
    let mut status = serving(&[("a", "digits-v1")]);
    status.rollout = Some(RolloutStatus {
        variant: "a".into(),
        from_version: "digits-v1".into(),
        to_version: "digits-v2".into(),
        step: 0,
        canary_weight: 10,
        started_at: Some(Time(at(0))),
        step_started_at: Some(Time(at(0))),
        last_analysis: None,
        baseline: Some(MetricsBaseline::default()),
        ..Default::default()
    });
    status
}

/// `previous` after `plan` was written, as status::compute would.
fn after(plan: &Plan, previous: &InferenceServiceStatus) -> InferenceServiceStatus {
    let mut next = previous.clone();
    next.rollout = plan.rollout.clone();
    next.aborted_rollouts = plan.aborted.clone();
    next.variants[0].model_version = plan.variants[0].stable.as_ref().map(|m| m.name.clone());
    if let Some(handled) = &plan.handled_action {
        next.last_rollout_action = Some(handled.clone());
    }
    next
}

fn reasons_of(plan: &Plan) -> Vec<&str> {
    plan.events.iter().map(|e| e.reason.as_str()).collect()
}

const READY: &[&str] = &["digits-a-v1", "digits-a-v2"];

#[test]
fn requests_are_read_from_the_annotations() {
    let annotations = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    };
    assert_eq!(manual::request(&annotations(&[("other", "x")])), None);
    let full = annotations(&[
        ("hone.dev/rollout-action", "promote"),
        ("hone.dev/rollout-action-id", "2026-01-01T00:00:00Z-1"),
        ("hone.dev/rollout-action-variant", "a"),
    ]);
    assert_eq!(
        manual::request(&full),
        Some(ActionRequest {
            id: "2026-01-01T00:00:00Z-1".into(),
            action: "promote".into(),
            variant: Some("a".into())
        })
    );
    // Annotated by hand without an id: the action itself identifies the request.
    let bare = manual::request(&annotations(&[("hone.dev/rollout-action", "rollback")])).unwrap();
    assert_eq!((bare.id.as_str(), bare.variant), ("rollback", None));
    // validate() carries the request to the state machine.
    let mut isvc = isvc(CANARY);
    isvc.metadata.annotations = Some(full);
    let valid = validate(&isvc, &three_versions(), "img", "router-img", false).unwrap();
    assert_eq!(valid.action.unwrap().action, "promote");
}

#[test]
fn decide_needs_a_rollout_of_the_named_variant_and_a_known_action() {
    let rollout = at_first_step().rollout.unwrap();
    let request = |action: &str, variant: Option<&str>| ActionRequest {
        id: "x".into(),
        action: action.into(),
        variant: variant.map(str::to_owned),
    };
    assert_eq!(manual::decide(&request("promote", None), Some(&rollout), &["a"]), Decision::Promote);
    assert_eq!(manual::decide(&request("rollback", Some("a")), Some(&rollout), &["a"]), Decision::Rollback);
    let Decision::Ignore(why) = manual::decide(&request("promote", None), None, &["a"]) else { panic!() };
    assert!(why.contains("no rollout is in progress"), "{why}");
    let Decision::Ignore(why) = manual::decide(&request("promote", Some("b")), Some(&rollout), &["a"]) else {
        panic!()
    };
    assert!(why.contains("of variant a, not b"), "{why}");
    let Decision::Ignore(why) = manual::decide(&request("abort", None), Some(&rollout), &["a"]) else {
        panic!()
    };
    assert!(why.contains("unknown") && why.contains("\"abort\""), "{why}");
}

#[test]
fn promote_skips_the_remaining_steps_once() {
    let previous = at_first_step();
    // 5 s into a 1 min step at 10%, with no requests at all: promoted now.
    let plan = plan_of(&asking("promote", Some("a")), &previous, READY, at(5));
    assert_eq!(plan.rollout, None);
    assert_eq!(plan.progress, None);
    assert_eq!(plan.variants[0].stable.as_ref().unwrap().name, "digits-v2");
    assert_eq!(plan.variants[0].canary, None);
    assert_eq!(reasons_of(&plan), [reasons::MANUAL_PROMOTION]);
    assert!(!plan.events[0].warning);
    assert!(plan.events[0].note.contains("req-1"), "{}", plan.events[0].note);
    let record = plan.handled_action.clone().unwrap();
    assert_eq!(
        (record.id.as_str(), record.variant.as_deref(), record.outcome),
        ("req-1", Some("a"), RolloutActionOutcome::Promoted)
    );
    let status = compute(&asking("promote", None), &plan, 1, &previous);
    assert_eq!(status.last_rollout_action, Some(record));
    assert_eq!(status.phase, Some(InferenceServicePhase::Ready));
    assert_eq!(status.variants[0].model_version.as_deref(), Some("digits-v2"));
    // The next reconcile (or a restarted operator) sees the request handled.
    let next = plan_of(&asking("promote", Some("a")), &after(&plan, &previous), &["digits-a-v2"], at(6));
    assert_eq!((next.rollout, next.events.len(), next.handled_action), (None, 0, None));
}

#[test]
fn promote_waits_for_the_new_predictors() {
    let mut previous = at_first_step();
    if let Some(r) = previous.rollout.as_mut() {
        r.canary_weight = 0;
    }
    let waiting = plan_of(&asking("promote", None), &previous, &["digits-a-v1"], at(5));
    assert_eq!(
        untimed(&waiting.rollout),
        untimed(&previous.rollout),
        "no traffic to predictors that are not ready"
    );
    assert_eq!(waiting.handled_action, None, "still to be done");
    assert!(waiting.events.is_empty());
    let progress = waiting.progress.unwrap();
    assert_eq!(progress.reason, "WaitingForPredictors");
    assert!(progress.message.contains("a manual promotion waits for them"), "{}", progress.message);
    let ready = plan_of(&asking("promote", None), &previous, READY, at(9));
    assert_eq!(ready.variants[0].stable.as_ref().unwrap().name, "digits-v2");
    assert_eq!(reasons_of(&ready), [reasons::MANUAL_PROMOTION]);
}

#[test]
fn rollback_aborts_to_the_old_version_and_degrades() {
    let previous = at_first_step();
    let valid = asking("rollback", None);
    let plan = plan_of(&valid, &previous, READY, at(5));
    assert_eq!(plan.rollout, None);
    assert_eq!(plan.variants[0].stable.as_ref().unwrap().name, "digits-v1");
    assert_eq!(plan.variants[0].canary, None, "all traffic back on the old version");
    assert_eq!(reasons_of(&plan), [reasons::MANUAL_ROLLBACK]);
    assert!(plan.events[0].warning);
    let aborted = &plan.aborted[0];
    assert_eq!(
        (
            aborted.variant.as_str(),
            aborted.to_version.as_str(),
            aborted.generation,
            aborted.reason.as_deref()
        ),
        ("a", "digits-v2", 2, Some("ManualRollback"))
    );
    assert_eq!(plan.handled_action.as_ref().unwrap().outcome, RolloutActionOutcome::RolledBack);
    let status = compute(&valid, &plan, 1, &previous);
    assert_eq!(status.phase, Some(InferenceServicePhase::Degraded));
    let (holds, reason, message) = condition(&status, "Degraded");
    assert_eq!((holds.as_str(), reason.as_str()), ("True", "ManualRollback"));
    assert!(message.contains("all traffic is back on digits-v1"), "{message}");
    // Not retried, not repeated, until the spec changes.
    let next = plan_of(&valid, &after(&plan, &previous), READY, at(6));
    assert_eq!((next.rollout.clone(), next.events.len(), next.handled_action.clone()), (None, 0, None));
    assert!(next.pending[0].contains("aborted"), "{:?}", next.pending);
    let mut edited = valid.clone();
    edited.generation = 3;
    let retry = plan_of(&edited, &after(&plan, &previous), READY, at(7));
    assert_eq!(retry.rollout.unwrap().to_version, "digits-v2", "a spec change retries it");
}

#[test]
fn a_stale_request_is_ignored_with_a_warning_once() {
    let valid = asking("rollback", None);
    let previous = serving(&[("a", "digits-v2")]);
    let plan = plan_of(&valid, &previous, &["digits-a-v2"], at(5));
    assert_eq!((plan.rollout.clone(), plan.aborted.len()), (None, 0));
    assert_eq!(reasons_of(&plan), [reasons::ACTION_IGNORED]);
    assert!(plan.events[0].warning);
    let note = &plan.events[0].note;
    assert!(note.contains("has no rollout in progress and no previous good version"), "{note}");
    let record = plan.handled_action.clone().unwrap();
    assert_eq!(record.outcome, RolloutActionOutcome::Ignored);
    let status = compute(&valid, &plan, 1, &previous);
    assert_eq!(status.phase, Some(InferenceServicePhase::Ready), "ignoring changes nothing served");
    let again = plan_of(&valid, &after(&plan, &previous), &["digits-a-v2"], at(6));
    assert!(again.events.is_empty() && again.handled_action.is_none());
    // A new request id is a new request.
    let mut repeated = valid.clone();
    repeated.action.as_mut().unwrap().id = "req-2".into();
    let plan = plan_of(&repeated, &after(&plan, &previous), &["digits-a-v2"], at(7));
    assert_eq!(plan.handled_action.unwrap().id, "req-2");
}

#[test]
fn a_request_for_another_variant_leaves_the_rollout_alone() {
    let previous = at_first_step();
    let plan = plan_of(&asking("promote", Some("b")), &previous, READY, at(5));
    assert_eq!(untimed(&plan.rollout), untimed(&previous.rollout));
    assert_eq!(reasons_of(&plan), [reasons::ACTION_IGNORED]);
    let record = plan.handled_action.unwrap();
    assert_eq!((record.outcome, record.variant.as_deref()), (RolloutActionOutcome::Ignored, Some("b")));
    // A handled id from before changes nothing either.
    let mut handled = previous.clone();
    handled.last_rollout_action =
        Some(RolloutActionRecord { id: "req-1".into(), action: "promote".into(), ..Default::default() });
    let plan = plan_of(&asking("rollback", None), &handled, READY, at(5));
    assert_eq!(untimed(&plan.rollout), untimed(&previous.rollout));
    assert!(plan.events.is_empty());
}

/// The rollout without the progress deadline's clock (these plans read no
/// metrics, so a canary past its first step records that it waits for them).
fn untimed(rollout: &Option<RolloutStatus>) -> Option<RolloutStatus> {
    rollout.clone().map(|r| RolloutStatus { waiting_for: None, waiting_since: None, ..r })
}
