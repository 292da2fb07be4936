//! `promote` and `rollback`: checked against the InferenceService's status
//! first (a rollout in progress, or for a rollback a previous good version in
//! `status.history`), then asked of the operator with annotations (pure parts).

use hone_crds::InferenceService;
use hone_crds::inferenceservice::{
    ANNOTATION_ROLLOUT_ACTION, ANNOTATION_ROLLOUT_ACTION_ID, ANNOTATION_ROLLOUT_ACTION_VARIANT,
    ROLLOUT_ACTION_PROMOTE, ROLLOUT_ACTION_ROLLBACK, RolloutActionOutcome, RolloutActionRecord,
    RolloutStatus,
};
use serde_json::{Value, json};

/// A manual rollout action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Skip the remaining canary steps and promote now.
    Promote,
    /// Abort the rollout in progress and return all traffic to the old
    /// version; with none in progress, return the variant to its previous
    /// good version.
    Rollback,
}

impl Action {
    /// The `hone.dev/rollout-action` value.
    pub fn value(self) -> &'static str {
        match self {
            Self::Promote => ROLLOUT_ACTION_PROMOTE,
            Self::Rollback => ROLLOUT_ACTION_ROLLBACK,
        }
    }
}

/// What an action would act on.
#[derive(Clone, Debug, PartialEq)]
pub enum Target<'a> {
    /// The rollout in progress.
    Rollout(&'a RolloutStatus),
    /// A variant with no rollout of it in progress, returned to the version it served before.
    Previous {
        /// The variant.
        variant: String,
        /// What it serves now.
        current: String,
        /// The version it goes back to, if the operator still finds its ModelVersion Ready.
        previous: String,
    },
}

/// Why an action cannot be asked for.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// Nothing is rolling out (and, for a rollback, nothing to go back to).
    #[error(
        "InferenceService {namespace}/{name} has no rollout in progress (phase {phase}): there is nothing to {action}"
    )]
    NoRollout {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Its phase.
        phase: String,
        /// The action asked for.
        action: &'static str,
    },
    /// No rollout of the variant is in progress and it has no earlier good version.
    #[error(
        "InferenceService {namespace}/{name} has no rollout in progress (phase {phase}) and variant {variant} has \
         no previous good version in status.history (one it served before that was neither rolled back nor \
         aborted): there is nothing to roll back"
    )]
    NothingToRollBack {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Its phase.
        phase: String,
        /// The variant.
        variant: String,
    },
    /// No rollout is in progress and the variant to roll back is not said.
    #[error(
        "InferenceService {namespace}/{name} has no rollout in progress and several variants ({variants}): name \
         the one to roll back with --variant"
    )]
    NameTheVariant {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Its variants, comma-separated.
        variants: String,
    },
    /// The rollout in progress is of another variant.
    #[error(
        "InferenceService {namespace}/{name} is rolling out variant {rolling}, not {asked}: leave out --variant or name {rolling}"
    )]
    OtherVariant {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The variant rolling out.
        rolling: String,
        /// The variant asked for.
        asked: String,
    },
}

/// What `action` would act on, or why there is nothing: the rollout in
/// progress (of `variant`, when named); for a rollback with no rollout of the
/// variant in progress, the variant (named, or the only one) and the version
/// in `status.history` it goes back to.
pub fn check<'a>(
    isvc: &'a InferenceService,
    action: Action,
    variant: Option<&str>,
) -> Result<Target<'a>, Refusal> {
    let namespace = isvc.metadata.namespace.clone().unwrap_or_default();
    let name = isvc.metadata.name.clone().unwrap_or_default();
    let status = isvc.status.as_ref();
    let phase = status.and_then(|s| s.phase).map_or_else(|| "Unknown".to_owned(), |p| format!("{p:?}"));
    let rollout = status.and_then(|s| s.rollout.as_ref());
    if let Some(rollout) = rollout.filter(|r| variant.is_none_or(|v| v == r.variant)) {
        return Ok(Target::Rollout(rollout));
    }
    let refused = |namespace: String, name: String| match (rollout, variant) {
        (Some(r), Some(asked)) => {
            Refusal::OtherVariant { namespace, name, rolling: r.variant.clone(), asked: asked.to_owned() }
        }
        _ => Refusal::NoRollout { namespace, name, phase: phase.clone(), action: action.value() },
    };
    if action == Action::Promote {
        return Err(refused(namespace, name));
    }
    let variants: Vec<&str> = isvc.spec.variants.iter().map(|v| v.name.as_str()).collect();
    let chosen = match (variant, variants.as_slice()) {
        (Some(asked), _) => asked,
        (None, [only]) => only,
        (None, _) => {
            return Err(Refusal::NameTheVariant { namespace, name, variants: variants.join(", ") });
        }
    };
    let previous = status.and_then(|s| Some((s.serving(chosen)?, *s.rollback_candidates(chosen).first()?)));
    match previous {
        Some((current, previous)) => Ok(Target::Previous {
            variant: chosen.to_owned(),
            current: current.to_owned(),
            previous: previous.to_owned(),
        }),
        None if rollout.is_some() => Err(refused(namespace, name)),
        None => Err(Refusal::NothingToRollBack { namespace, name, phase, variant: chosen.to_owned() }),
    }
}

/// The merge patch that asks for `action` as request `id` (a variant of
/// an earlier request is removed when none is named).
pub fn patch(action: Action, id: &str, variant: Option<&str>) -> Value {
    json!({"metadata": {"annotations": {
        ANNOTATION_ROLLOUT_ACTION: action.value(),
        ANNOTATION_ROLLOUT_ACTION_ID: id,
        ANNOTATION_ROLLOUT_ACTION_VARIANT: variant,
    }}})
}

/// A request id unique to this command: the time and a random part.
pub fn request_id() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let now = k8s_openapi::jiff::Timestamp::now();
    format!("{now}-{:08x}", hasher.finish() as u32)
}

/// The operator's answer to request `id`, once `status.lastRolloutAction` has it.
pub fn answer<'a>(isvc: &'a InferenceService, id: &str) -> Option<&'a RolloutActionRecord> {
    isvc.status.as_ref()?.last_rollout_action.as_ref().filter(|r| r.id == id)
}

/// True when the operator did what was asked.
pub fn done(record: &RolloutActionRecord) -> bool {
    record.outcome != RolloutActionOutcome::Ignored
}
