//! Rollout actions asked for by hand: `hone.dev/rollout-action: promote|rollback`
//! (what `kubectl hone promote|rollback` sets), with a request id so that a
//! repeated command is a new request. Pure: the rollout state machine asks
//! [`decide`] what a request means for the rollout in progress, and records
//! the outcome in `status.lastRolloutAction`, so a request is handled once,
//! across operator restarts too.

use std::collections::BTreeMap;

use hone_crds::inferenceservice::{
    ANNOTATION_ROLLOUT_ACTION, ANNOTATION_ROLLOUT_ACTION_ID, ANNOTATION_ROLLOUT_ACTION_VARIANT,
    AbortedRollout, REASON_MANUAL_ROLLBACK, REASON_ROLLOUT_ACTION_IGNORED, ROLLOUT_ACTION_PROMOTE,
    ROLLOUT_ACTION_ROLLBACK, RolloutActionOutcome, RolloutActionRecord, RolloutStatus,
};

use crate::context::EventSpec;

/// A rollout action read from the annotations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionRequest {
    /// The request id (`hone.dev/rollout-action-id`; the action itself when unset).
    pub id: String,
    /// The action as written.
    pub action: String,
    /// The variant it is for, if it names one.
    pub variant: Option<String>,
}

/// What a request means for the rollout in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Skip the remaining steps: promote as soon as the new predictors are ready.
    Promote,
    /// Abort now and return all traffic to the old version.
    Rollback,
    /// Nothing to act on; the message says why.
    Ignore(String),
}

/// The request in `annotations`, if any.
pub fn request(annotations: &BTreeMap<String, String>) -> Option<ActionRequest> {
    let action = annotations.get(ANNOTATION_ROLLOUT_ACTION)?.trim().to_owned();
    let id = annotations
        .get(ANNOTATION_ROLLOUT_ACTION_ID)
        .map(|id| id.trim().to_owned())
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| action.clone());
    let variant = annotations
        .get(ANNOTATION_ROLLOUT_ACTION_VARIANT)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty());
    Some(ActionRequest { id, action, variant })
}

/// `request` unless `last` says it was handled already.
pub fn unhandled<'a>(
    request: Option<&'a ActionRequest>,
    last: Option<&RolloutActionRecord>,
) -> Option<&'a ActionRequest> {
    request.filter(|r| last.is_none_or(|last| last.id != r.id))
}

/// What `request` means, given the rollout in progress (from status, still
/// wanted by the spec): only a rollout that exists can be promoted or rolled back.
pub fn decide(request: &ActionRequest, rollout: Option<&RolloutStatus>) -> Decision {
    let wanted = match request.action.as_str() {
        ROLLOUT_ACTION_PROMOTE => Decision::Promote,
        ROLLOUT_ACTION_ROLLBACK => Decision::Rollback,
        other => {
            return Decision::Ignore(format!(
                "unknown {ANNOTATION_ROLLOUT_ACTION} {other:?}: use {ROLLOUT_ACTION_PROMOTE} or \
                 {ROLLOUT_ACTION_ROLLBACK}"
            ));
        }
    };
    let Some(rollout) = rollout else {
        return Decision::Ignore(format!(
            "no rollout is in progress, so there is nothing to {}",
            request.action
        ));
    };
    match &request.variant {
        Some(variant) if *variant != rollout.variant => Decision::Ignore(format!(
            "the rollout in progress is of variant {}, not {variant}",
            rollout.variant
        )),
        _ => wanted,
    }
}

/// Aborts `r` by hand, as analysis would; the abort, the request's record and the Event's note.
pub fn roll_back(
    r: RolloutStatus,
    request: &ActionRequest,
    generation: i64,
) -> (AbortedRollout, RolloutActionRecord, String) {
    let message = format!(
        "rolled back by hand (request {}): canary {} at {}% of variant {}'s traffic; all traffic is back on {}",
        request.id, r.to_version, r.canary_weight, r.variant, r.from_version
    );
    let record = record(request, Some(&r.variant), RolloutActionOutcome::RolledBack, &message);
    let abort = AbortedRollout {
        variant: r.variant,
        to_version: r.to_version,
        generation,
        message: message.clone(),
        reason: Some(REASON_MANUAL_ROLLBACK.to_owned()),
    };
    (abort, record, message)
}

/// The status record of `request`.
pub fn record(
    request: &ActionRequest,
    variant: Option<&str>,
    outcome: RolloutActionOutcome,
    message: &str,
) -> RolloutActionRecord {
    RolloutActionRecord {
        id: request.id.clone(),
        action: request.action.clone(),
        variant: variant.map(str::to_owned).or_else(|| request.variant.clone()),
        outcome,
        message: message.to_owned(),
    }
}

/// The Warning Event of an ignored request.
pub fn ignored_event(request: &ActionRequest, why: &str) -> EventSpec {
    EventSpec {
        warning: true,
        reason: REASON_ROLLOUT_ACTION_IGNORED.to_owned(),
        note: format!("{} request {} ignored: {why}", request.action, request.id),
        action: "Rollout".to_owned(),
    }
}
