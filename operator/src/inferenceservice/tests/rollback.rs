//! Rollback by hand with no rollout in progress: the variant returns to its
//! previous good version in `status.history`, is not rolled forward again
//! (by its spec or its track) until something newer comes, and a request with
//! nothing to go back to is ignored.

use hone_crds::inferenceservice::{
    HistoryEntry, HistoryOutcome, InferenceServicePhase, RolloutActionOutcome,
};

use super::history::entry;
use super::status::condition;
use super::*;
use crate::inferenceservice::manual::{self, ActionRequest, Decision};
use crate::inferenceservice::rollout::reasons;

const PINNED: &str = "variants: [{name: a, modelVersion: digits-v2, weight: 100}]";
const TRACK: &str =
    "variants: [{name: a, track: {model: digits, minMetrics: {val_accuracy: 0.9}}, weight: 100}]";

/// `valid` with a rollback asked for as request `id`.
fn asking(mut valid: ValidService, id: &str, variant: Option<&str>) -> ValidService {
    valid.action =
        Some(ActionRequest { id: id.into(), action: "rollback".into(), variant: variant.map(str::to_owned) });
    valid
}

/// Serving v2 on `a` since t=100, promoted over v1 (served since t=0).
fn promoted() -> InferenceServiceStatus {
    let mut status = serving(&[("a", "digits-v2")]);
    status.history = vec![
        entry("digits-v1", 0, Some(100), HistoryOutcome::Replaced),
        entry("digits-v2", 100, None, HistoryOutcome::Serving),
    ];
    status
}

fn reasons_of(plan: &Plan) -> Vec<&str> {
    plan.events.iter().map(|e| e.reason.as_str()).collect()
}

/// `(version, outcome, open)` of each entry.
fn outcomes(history: &[HistoryEntry]) -> Vec<(&str, HistoryOutcome, bool)> {
    history.iter().map(|e| (e.version.as_str(), e.outcome, e.to.is_none())).collect()
}

#[test]
fn decide_sends_a_rollback_without_a_rollout_to_the_variant() {
    let request = |action: &str, variant: Option<&str>| ActionRequest {
        id: "x".into(),
        action: action.into(),
        variant: variant.map(str::to_owned),
    };
    let rollback = request("rollback", None);
    assert_eq!(manual::decide(&rollback, None, &["a"]), Decision::RollbackVariant("a".into()));
    let named = request("rollback", Some("b"));
    assert_eq!(manual::decide(&named, None, &["a", "b"]), Decision::RollbackVariant("b".into()));
    let Decision::Ignore(why) = manual::decide(&rollback, None, &["a", "b"]) else { panic!() };
    assert!(why.contains("several variants (a, b): name the one"), "{why}");
    let Decision::Ignore(why) = manual::decide(&request("rollback", Some("c")), None, &["a", "b"]) else {
        panic!()
    };
    assert!(why.contains("no variant c"), "{why}");
    // With a rollout of a in progress, a rollback of b is one of b.
    let mut rolling = at_rollout();
    rolling.variant = "a".into();
    assert_eq!(manual::decide(&named, Some(&rolling), &["a", "b"]), Decision::RollbackVariant("b".into()));
    // Promote still needs a rollout.
    let Decision::Ignore(why) = manual::decide(&request("promote", None), None, &["a"]) else { panic!() };
    assert!(why.contains("no rollout is in progress"), "{why}");
}

fn at_rollout() -> hone_crds::inferenceservice::RolloutStatus {
    hone_crds::inferenceservice::RolloutStatus {
        variant: "a".into(),
        from_version: "digits-v1".into(),
        to_version: "digits-v2".into(),
        ..Default::default()
    }
}

#[test]
fn rollback_after_a_promotion_returns_to_the_previous_good_version() {
    let valid = asking(valid(PINNED, &three_versions()), "req-1", None);
    // v1's predictors were pruned after the promotion: v2 serves until they are back.
    let (plan, asked) = reconcile(&valid, &promoted(), &["a-v2"], 200);
    let abort = &plan.aborted[0];
    assert_eq!(
        (
            abort.variant.as_str(),
            abort.from_version.as_deref(),
            abort.to_version.as_str(),
            abort.reason.as_deref()
        ),
        ("a", Some("digits-v1"), "digits-v2", Some("ManualRollback"))
    );
    let record = plan.handled_action.clone().unwrap();
    assert_eq!((record.outcome, record.variant.as_deref()), (RolloutActionOutcome::RolledBack, Some("a")));
    assert_eq!(reasons_of(&plan), [reasons::MANUAL_ROLLBACK]);
    assert!(plan.events[0].warning);
    assert_eq!(plan.variants[0].stable.as_ref().unwrap().name, "digits-v2");
    let back = plan.variants[0].canary.as_ref().unwrap();
    assert_eq!((back.model.name.as_str(), back.weight), ("digits-v1", 0), "started, without traffic");
    assert!(plan.progress.as_ref().unwrap().message.contains("goes back to digits-v1"));
    assert_eq!(asked.phase, Some(InferenceServicePhase::Degraded));
    let (holds, reason, message) = condition(&asked, "Degraded");
    assert_eq!((holds.as_str(), reason.as_str()), ("True", "ManualRollback"));
    assert!(message.contains("goes back from digits-v2 to digits-v1"), "{message}");
    assert_eq!(asked.history, promoted().history, "nothing switched yet");
    let mut isvc = isvc(PINNED);
    isvc.status = Some(asked.clone());
    assert!(isvc.serves("digits-v1"), "the version it goes back to is kept from deletion");
    // A second request while it goes back is ignored.
    let twice = asking(valid.clone(), "req-2", Some("a"));
    let (plan2, _) = reconcile(&twice, &asked, &["a-v2"], 205);
    let record = plan2.handled_action.unwrap();
    assert_eq!(record.outcome, RolloutActionOutcome::Ignored);
    assert!(record.message.contains("already going back from digits-v2 to digits-v1"), "{}", record.message);

    // Its predictors are ready: it switches, and v2's entry closes as rolled back.
    let (plan, switched) = reconcile(&valid, &asked, &["a-v1", "a-v2"], 230);
    assert_eq!(reasons_of(&plan), [reasons::ROLLED_BACK]);
    assert_eq!(plan.handled_action, None, "the request was handled once");
    assert_eq!(switched.variants[0].model_version.as_deref(), Some("digits-v1"));
    assert_eq!(switched.phase, Some(InferenceServicePhase::Degraded));
    assert_eq!(
        outcomes(&switched.history),
        [
            ("digits-v1", HistoryOutcome::Replaced, false),
            ("digits-v2", HistoryOutcome::RolledBack, false),
            ("digits-v1", HistoryOutcome::Serving, true),
        ]
    );
    // The spec still asks for v2, which is not rolled out again: nothing moves, nothing is written.
    let (plan, still) = reconcile(&valid, &switched, &["a-v1"], 300);
    assert_eq!((plan.rollout.clone(), plan.events.len()), (None, 0));
    assert!(plan.pending[0].contains("rolled back"), "{:?}", plan.pending);
    assert_eq!(still, switched);
    // Rolling back again: v2 was rolled back and v1 serves, so there is nothing to go back to.
    let again = asking(valid.clone(), "req-3", None);
    let (plan, _) = reconcile(&again, &switched, &["a-v1"], 310);
    assert_eq!(plan.handled_action.unwrap().outcome, RolloutActionOutcome::Ignored);
    assert_eq!(plan.variants[0].stable.as_ref().unwrap().name, "digits-v1");
    // A spec change rolls v2 out again.
    let mut edited = valid.clone();
    edited.generation = 3;
    let (plan, _) = reconcile(&edited, &switched, &["a-v1"], 400);
    assert_eq!(plan.rollout.unwrap().to_version, "digits-v2");
    assert!(plan.aborted.is_empty());
}

#[test]
fn within_the_drain_period_the_rollback_switches_at_once() {
    let valid = asking(valid(PINNED, &three_versions()), "req-1", None);
    let (plan, status) = reconcile(&valid, &promoted(), &["a-v1", "a-v2"], 150);
    assert_eq!(reasons_of(&plan), [reasons::MANUAL_ROLLBACK, reasons::ROLLED_BACK]);
    assert_eq!(status.variants[0].model_version.as_deref(), Some("digits-v1"));
    assert_eq!(plan.variants[0].canary, None);
    assert_eq!(
        outcomes(&status.history)[1..],
        [("digits-v2", HistoryOutcome::RolledBack, false), ("digits-v1", HistoryOutcome::Serving, true)]
    );
}

#[test]
fn rollback_with_nothing_to_go_back_to_is_ignored() {
    let ignored = |mvs: &[ModelVersion], history: Vec<HistoryEntry>| -> String {
        let valid = asking(valid(PINNED, mvs), "req-1", None);
        let mut previous = serving(&[("a", "digits-v2")]);
        previous.history = history;
        let (plan, status) = reconcile(&valid, &previous, &["a-v1", "a-v2"], 200);
        assert!(plan.aborted.is_empty());
        assert_eq!(reasons_of(&plan), [reasons::ACTION_IGNORED]);
        assert_eq!(status.variants[0].model_version.as_deref(), Some("digits-v2"));
        assert_eq!(status.phase, Some(InferenceServicePhase::Ready), "nothing served changed");
        let record = status.last_rollout_action.unwrap();
        assert_eq!(record.outcome, RolloutActionOutcome::Ignored);
        record.message
    };
    let current = entry("digits-v2", 100, None, HistoryOutcome::Serving);
    let why = ignored(&three_versions(), vec![current.clone()]);
    assert!(why.contains("variant a has no rollout in progress and no previous good version"), "{why}");
    for outcome in [HistoryOutcome::RolledBack, HistoryOutcome::Aborted] {
        ignored(&three_versions(), vec![entry("digits-v1", 0, Some(100), outcome), current.clone()]);
    }
    // The version before exists no more, or is not Ready.
    let good = vec![entry("digits-v1", 0, Some(100), HistoryOutcome::Replaced), current.clone()];
    ignored(&three_versions()[1..], good.clone());
    let mut unready = three_versions();
    unready[0] = model_version("digits-v1", "digits", 1, false, &[("val_accuracy", 0.91)]);
    ignored(&unready, good);
    // Then an older good version is the one to go back to.
    let older = vec![
        entry("digits-v3", 0, Some(50), HistoryOutcome::Replaced),
        entry("digits-v1", 50, Some(100), HistoryOutcome::Replaced),
        current,
    ];
    let skipping = asking(valid(PINNED, &unready), "req-1", None);
    let mut previous = serving(&[("a", "digits-v2")]);
    previous.history = older;
    let (plan, _) = reconcile(&skipping, &previous, &["a-v2", "a-v3"], 200);
    assert_eq!(plan.variants[0].stable.as_ref().unwrap().name, "digits-v3");
    // Several variants and none named.
    let two = valid(
        "variants: [{name: a, modelVersion: digits-v2, weight: 50}, {name: b, modelVersion: digits-v2, weight: 50}]",
        &three_versions(),
    );
    let (plan, _) = reconcile(&asking(two, "req-1", None), &promoted(), &["a-v2", "b-v2"], 200);
    let record = plan.handled_action.unwrap();
    assert_eq!(record.outcome, RolloutActionOutcome::Ignored);
    assert!(record.message.contains("name the one to roll back"), "{}", record.message);
}

#[test]
fn a_rolled_back_tracked_version_is_not_picked_again_until_a_newer_one_passes() {
    let versions = three_versions();
    let (v1_v2, all) = (&versions[..2], &versions[..]);
    let (_, serving_v1) = reconcile(&valid(TRACK, &versions[..1]), &Default::default(), &["a-v1"], 0);
    // v2 passes the gates: the track rolls out to it (Immediate) and it takes over.
    let (_, started) = reconcile(&valid(TRACK, v1_v2), &serving_v1, &["a-v1"], 10);
    let (_, on_v2) = reconcile(&valid(TRACK, v1_v2), &started, &["a-v1", "a-v2"], 20);
    assert_eq!(on_v2.variants[0].model_version.as_deref(), Some("digits-v2"));

    // Rolled back after the promotion, once v1's predictors are back.
    let asked = asking(valid(TRACK, v1_v2), "req-1", None);
    let (_, going) = reconcile(&asked, &on_v2, &["a-v2"], 100);
    let (_, on_v1) = reconcile(&asked, &going, &["a-v1", "a-v2"], 110);
    assert_eq!(on_v1.variants[0].model_version.as_deref(), Some("digits-v1"));

    // The track still picks v2, which stays rolled back: no rollout, nothing written.
    let mut status = on_v1.clone();
    for now in [200, 300, 4000] {
        let (plan, next) = reconcile(&asked, &status, &["a-v1"], now);
        assert_eq!((plan.rollout.clone(), plan.events.len()), (None, 0));
        assert!(plan.pending[0].contains("track to pick a newer version"), "{:?}", plan.pending);
        assert_eq!(next, status);
        status = next;
    }

    // v3 passes: the abort is cleared and v3 rolls out as usual.
    let newer = asking(valid(TRACK, all), "req-1", None);
    let (plan, started) = reconcile(&newer, &status, &["a-v1"], 5000);
    let rollout = plan.rollout.clone().unwrap();
    assert_eq!((rollout.from_version.as_str(), rollout.to_version.as_str()), ("digits-v1", "digits-v3"));
    assert!(started.aborted_rollouts.is_empty());
    assert_eq!(condition(&started, "Degraded").0, "False");
    assert_eq!(started.phase, Some(InferenceServicePhase::Progressing));
    let (_, on_v3) = reconcile(&newer, &started, &["a-v1", "a-v3"], 5010);
    assert_eq!(on_v3.variants[0].model_version.as_deref(), Some("digits-v3"));
    assert_eq!(on_v3.phase, Some(InferenceServicePhase::Ready));
    assert_eq!(
        outcomes(&on_v3.history),
        [
            ("digits-v1", HistoryOutcome::Replaced, false),
            ("digits-v2", HistoryOutcome::RolledBack, false),
            ("digits-v1", HistoryOutcome::Replaced, false),
            ("digits-v3", HistoryOutcome::Serving, true),
        ]
    );
    // And a rollback now returns to v1, never to the rolled-back v2.
    let again = asking(valid(TRACK, all), "req-2", None);
    let (plan, _) = reconcile(&again, &on_v3, &["a-v1", "a-v3"], 5100);
    assert_eq!(plan.aborted[0].from_version.as_deref(), Some("digits-v1"));
    assert_eq!(plan.variants[0].stable.as_ref().unwrap().name, "digits-v1");
}

#[test]
fn rolling_back_twice_goes_one_more_good_version_back() {
    let mvs = three_versions();
    let pinned = valid(&PINNED.replace("digits-v2", "digits-v3"), &mvs);
    let mut previous = serving(&[("a", "digits-v3")]);
    previous.history = vec![
        entry("digits-v1", 0, Some(100), HistoryOutcome::Replaced),
        entry("digits-v2", 100, Some(200), HistoryOutcome::Replaced),
        entry("digits-v3", 200, None, HistoryOutcome::Serving),
    ];
    let (_, once) = reconcile(&asking(pinned.clone(), "req-1", None), &previous, &["a-v2", "a-v3"], 300);
    assert_eq!(once.variants[0].model_version.as_deref(), Some("digits-v2"));
    let (_, twice) = reconcile(&asking(pinned.clone(), "req-2", None), &once, &["a-v1", "a-v2"], 400);
    assert_eq!(twice.variants[0].model_version.as_deref(), Some("digits-v1"));
    assert_eq!(
        outcomes(&twice.history)[2..],
        [
            ("digits-v3", HistoryOutcome::RolledBack, false),
            ("digits-v2", HistoryOutcome::RolledBack, false),
            ("digits-v1", HistoryOutcome::Serving, true),
        ]
    );
    // Both stay rolled back: the spec's v3 does not roll out, nor does v2 come back.
    let (plan, still) = reconcile(&asking(pinned, "req-2", None), &twice, &["a-v1"], 500);
    assert_eq!((plan.rollout, plan.events.len()), (None, 0));
    assert_eq!(still, twice);
    assert_eq!(still.aborted_rollouts.len(), 2);
}
