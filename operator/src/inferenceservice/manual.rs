//! Rollout actions asked for by hand: `hone.dev/rollout-action: promote|rollback`
//! (what `kubectl hone promote|rollback` sets), with a request id so that a
//! repeated command is a new request. Pure: the rollout state machine asks
//! [`decide`] what a request means for the rollout in progress, and records
//! the outcome in `status.lastRolloutAction`, so a request is handled once,
//! across operator restarts too. A rollback with no rollout of its variant in
//! progress returns the variant to its previous good version (see
//! [`super::rollback`]).

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
    /// No rollout of this variant is in progress: return it to its previous
    /// good version in `status.history`.
    RollbackVariant(String),
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
/// wanted by the spec) and the spec's variant names: only a rollout that
/// exists can be promoted; a rollback of the rollout in progress aborts it,
/// and one of a variant with no rollout in progress (named, or the only one)
/// returns that variant to its previous good version.
pub fn decide(request: &ActionRequest, rollout: Option<&RolloutStatus>, variants: &[&str]) -> Decision {
    let rollback = match request.action.as_str() {
        ROLLOUT_ACTION_PROMOTE => false,
        ROLLOUT_ACTION_ROLLBACK => true,
        other => {
            return Decision::Ignore(format!(
                "unknown {ANNOTATION_ROLLOUT_ACTION} {other:?}: use {ROLLOUT_ACTION_PROMOTE} or \
                 {ROLLOUT_ACTION_ROLLBACK}"
            ));
        }
    };
    let asked = request.variant.as_deref();
    if rollout.is_some_and(|r| asked.is_none_or(|v| v == r.variant)) {
        return if rollback { Decision::Rollback } else { Decision::Promote };
    }
    let not_this = match (rollout, asked) {
        (Some(r), Some(variant)) => {
            format!("the rollout in progress is of variant {}, not {variant}", r.variant)
        }
        _ => format!("no rollout is in progress, so there is nothing to {}", request.action),
    };
    if !rollback {
        return Decision::Ignore(not_this);
    }
    match asked {
        Some(variant) if variants.contains(&variant) => Decision::RollbackVariant(variant.to_owned()),
        Some(variant) => {
            let missing =
                format!("there is no variant {variant} to roll back (variants: {})", variants.join(", "));
            Decision::Ignore(if rollout.is_some() { format!("{not_this}, and {missing}") } else { missing })
        }
        None => match variants {
            [only] => Decision::RollbackVariant((*only).to_owned()),
            _ => Decision::Ignore(format!(
                "no rollout is in progress and there are several variants ({}): name the one to roll back \
                 ({ANNOTATION_ROLLOUT_ACTION_VARIANT})",
                variants.join(", ")
            )),
        },
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
        from_version: Some(r.from_version),
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
