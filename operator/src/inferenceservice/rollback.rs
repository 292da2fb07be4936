//! Rollback by hand with no rollout of the variant in progress (after a
//! promotion finished): the variant returns to its previous good version in
//! `status.history`. Pure.
//!
//! It is recorded as the [`AbortedRollout`] a canary rollback leaves behind,
//! with `fromVersion` the previous version and `toVersion` the current one,
//! so the rollout state machine does not roll the current version out again
//! (until the spec changes, or a track picks another version). The switch
//! itself waits, as an Immediate rollout does, for the previous version's
//! predictors to be ready (they were pruned after the promotion): until then
//! the current version keeps serving.

use hone_crds::inferenceservice::{
    AbortedRollout, REASON_MANUAL_ROLLBACK, RolloutActionOutcome, RolloutActionRecord,
};

use super::deadline::waits;
use super::manual::{self, ActionRequest};
use super::names::{ANALYSIS_POLL, canary_backend, predictor_name};
use super::rollout::{Canary, Input, Plan, Progress, VariantPlan, reasons};
use super::validate::ModelRef;
use crate::context::EventSpec;

/// A rollback of `variant` decided: the abort to record, the request's record and the Event's note.
type Decided = (AbortedRollout, RolloutActionRecord, String);

/// Handles `request`, a rollback of `variant` with no rollout of it in
/// progress: the abort to record (none when there is nothing to go back to),
/// the Event, and the request's record (`RolledBack` or `Ignored`).
pub fn handle(
    input: &Input<'_>,
    variants: &[VariantPlan],
    aborted: &[AbortedRollout],
    variant: &str,
    request: &ActionRequest,
) -> (Option<AbortedRollout>, EventSpec, RolloutActionRecord) {
    match decide(input, variants, aborted, variant, request) {
        Ok((abort, record, note)) => (Some(abort), event(true, REASON_MANUAL_ROLLBACK, note), record),
        Err(why) => (
            None,
            manual::ignored_event(request, &why),
            manual::record(request, Some(variant), RolloutActionOutcome::Ignored, &why),
        ),
    }
}

/// Returns `variant` (in `variants`, the plan so far) to its previous good
/// version: the newest earlier `status.history` entry of it that was not
/// rolled back or aborted, is not the version it serves, and whose
/// ModelVersion still exists and is Ready. `Err` says why there is nothing
/// to do, for an Ignored record.
fn decide(
    input: &Input<'_>,
    variants: &[VariantPlan],
    aborted: &[AbortedRollout],
    variant: &str,
    request: &ActionRequest,
) -> Result<Decided, String> {
    let valid = input.valid;
    let current =
        variants.iter().find(|v| v.name == variant).and_then(|v| v.stable.as_ref()).ok_or_else(|| {
            format!("variant {variant} serves no version yet, so there is nothing to roll back")
        })?;
    if let Some(going) = returning(aborted, variant, &current.name) {
        return Err(format!("variant {variant} is already going back from {} to {going}", current.name));
    }
    let previous = input
        .previous
        .rollback_candidates(variant)
        .into_iter()
        .filter(|name| *name != current.name && valid.ready_models.contains(*name))
        .find_map(|name| valid.models.get(name))
        .ok_or_else(|| {
            format!(
                "variant {variant} has no rollout in progress and no previous good version to go back to: \
                 status.history holds no earlier version of it (other than {}) that was neither rolled back \
                 nor aborted and whose ModelVersion still exists and is Ready",
                current.name
            )
        })?;
    let message = format!(
        "rolled back by hand (request {}): variant {variant} goes back from {} to {}, its previous good \
         version; {} is not rolled out again until the spec changes (for a track: until it picks another \
         version)",
        request.id, current.name, previous.name, current.name
    );
    let record = manual::record(request, Some(variant), RolloutActionOutcome::RolledBack, &message);
    let abort = AbortedRollout {
        variant: variant.to_owned(),
        from_version: Some(previous.name.clone()),
        to_version: current.name.clone(),
        generation: valid.generation,
        message: message.clone(),
        reason: Some(REASON_MANUAL_ROLLBACK.to_owned()),
    };
    Ok((abort, record, message))
}

/// The version `variant` is going back to, when a rollback by hand left it
/// serving `current` with an abort of `current` that names another version.
fn returning<'a>(aborted: &'a [AbortedRollout], variant: &str, current: &str) -> Option<&'a str> {
    aborted.iter().find_map(|a| {
        let back = a.from_version.as_deref()?;
        let by_hand = a.reason.as_deref() == Some(REASON_MANUAL_ROLLBACK);
        (by_hand && a.variant == variant && a.to_version == current && back != current).then_some(back)
    })
}

/// Moves each variant that a rollback by hand sends back, and that still
/// serves the version it left, to the version it goes back to once that
/// version's predictors are ready; until then they start as a canary without
/// traffic, and the plan says so.
pub fn advance(input: &Input<'_>, variants: &mut [VariantPlan], plan: &mut Plan) {
    let valid = input.valid;
    for variant in variants.iter_mut().filter(|v| v.canary.is_none()) {
        let Some(current) = variant.stable.clone() else { continue };
        let Some(back) = returning(&plan.aborted, &variant.name, &current.name) else { continue };
        let Some(model) = valid.models.get(back) else { continue };
        let deployment = predictor_name(&valid.name, &variant.name, model.version);
        if input.ready.contains(&deployment) {
            plan.events.push(switched(&variant.name, &current, model));
            variant.stable = Some(model.clone());
            continue;
        }
        variant.canary = Some(Canary {
            model: model.clone(),
            weight: 0,
            backend: canary_backend(&variant.name, model.version),
            shadow: None,
        });
        plan.requeue_after = Some(plan.requeue_after.map_or(ANALYSIS_POLL, |t| t.min(ANALYSIS_POLL)));
        if plan.progress.is_none() {
            plan.progress = Some(Progress {
                reason: waits::PREDICTORS,
                message: format!(
                    "variant {} goes back to {}: waiting for its predictors (Deployment {deployment}) to be \
                     ready; {} serves until then",
                    variant.name, model.name, current.name
                ),
            });
        }
    }
}

fn switched(variant: &str, from: &ModelRef, to: &ModelRef) -> EventSpec {
    let note =
        format!("variant {variant} serves {} again in place of {} (rolled back by hand)", to.name, from.name);
    event(false, reasons::ROLLED_BACK, note)
}

fn event(warning: bool, reason: &str, note: String) -> EventSpec {
    EventSpec { warning, reason: reason.to_owned(), note, action: "Rollout".to_owned() }
}
