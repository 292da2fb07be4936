//! `promote` and `rollback`: checked against the InferenceService's status
//! first, then asked of the operator with annotations (pure parts).

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
    /// Abort the rollout and return all traffic to the old version.
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

/// Why an action cannot be asked for.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// Nothing is rolling out.
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

/// The rollout `action` would act on, or why there is none.
pub fn check<'a>(
    isvc: &'a InferenceService,
    action: Action,
    variant: Option<&str>,
) -> Result<&'a RolloutStatus, Refusal> {
    let namespace = isvc.metadata.namespace.clone().unwrap_or_default();
    let name = isvc.metadata.name.clone().unwrap_or_default();
    let status = isvc.status.as_ref();
    let Some(rollout) = status.and_then(|s| s.rollout.as_ref()) else {
        let phase = status.and_then(|s| s.phase).map_or_else(|| "Unknown".to_owned(), |p| format!("{p:?}"));
        return Err(Refusal::NoRollout { namespace, name, phase, action: action.value() });
    };
    match variant {
        Some(asked) if asked != rollout.variant => Err(Refusal::OtherVariant {
            namespace,
            name,
            rolling: rollout.variant.clone(),
            asked: asked.to_owned(),
        }),
        _ => Ok(rollout),
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
