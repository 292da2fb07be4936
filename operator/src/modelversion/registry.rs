//! A ModelVersion and the operator's MLflow Model Registry: a `models:/`
//! artifact URI is resolved once, before verification; a verified version
//! with `spec.mlflow` is registered, retried with backoff while the registry
//! is down (`status.mlflow` keeps the pending state, so nothing is lost).

use std::time::Duration;

use hone_crds::ModelVersionStatus;
use hone_crds::conditions::{ConditionStatus, DesiredCondition, set_condition};
use hone_crds::consts::{CONDITION_READY, CONDITION_REGISTRY_SYNCED};
use hone_crds::modelversion::{
    MlflowRegistration, ModelVersion, ModelVersionPhase, RegistrySyncState, ResolvedArtifact,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::mlflow::{Export, Registry, RegistryError, Resolved, folder_of, tags};

/// Longest wait between two tries against the registry.
pub const MAX_RETRY: Duration = Duration::from_secs(600);
/// Message while the operator has no registry.
pub const NOT_CONFIGURED: &str = "the operator has no MLflow registry: set mlflow.uri in the chart \
     (--mlflow-uri, HONE_MLFLOW_URI)";

/// Wait after `attempts` failed tries: 10 s doubling, at most [`MAX_RETRY`].
pub fn retry_delay(attempts: u32) -> Duration {
    let factor = 1u64 << attempts.saturating_sub(1).min(6);
    Duration::from_secs(10 * factor).min(MAX_RETRY)
}

/// Whether `mv` still needs its `models:/` URI resolved.
pub fn needs_resolution(mv: &ModelVersion) -> bool {
    mv.spec.artifact.uri.trim().starts_with("models:/")
        && mv.status.as_ref().and_then(|s| s.resolved_artifact.as_ref()).is_none()
}

/// The status after resolving: the resolved artifact, or why not (Pending
/// while retrying, Failed when the registry has no such version).
pub fn resolution_status(
    previous: &ModelVersionStatus,
    generation: Option<i64>,
    outcome: Result<Resolved, RegistryError>,
    now: &Time,
) -> ModelVersionStatus {
    let mut status = previous.clone();
    status.observed_generation = generation;
    let (phase, reason, message) = match outcome {
        Ok(resolved) => {
            let message = format!(
                "resolved to MLflow {} version {} at {}",
                resolved.registered_model, resolved.version, resolved.uri
            );
            status.resolved_artifact = Some(ResolvedArtifact {
                uri: resolved.uri,
                registered_model: resolved.registered_model,
                version: resolved.version,
                run_id: resolved.run_id,
                source: resolved.source,
                resolved_at: Some(now.clone()),
            });
            (ModelVersionPhase::Pending, "Resolved", message)
        }
        Err(e) if e.retryable() => (ModelVersionPhase::Pending, e.reason(), e.to_string()),
        Err(e) => (ModelVersionPhase::Failed, e.reason(), e.to_string()),
    };
    status.phase = Some(phase);
    let ready = DesiredCondition::new(CONDITION_READY, ConditionStatus::False, reason, &message, generation);
    set_condition(&mut status.conditions, ready, now);
    status
}

/// The status while the operator has no registry to resolve through.
pub fn unconfigured_status(
    previous: &ModelVersionStatus,
    generation: Option<i64>,
    now: &Time,
) -> ModelVersionStatus {
    let mut status = previous.clone();
    status.observed_generation = generation;
    status.phase = Some(ModelVersionPhase::Pending);
    let message = format!("cannot resolve the models:/ artifact URI: {NOT_CONFIGURED}");
    let ready = DesiredCondition::new(
        CONDITION_READY,
        ConditionStatus::False,
        "RegistryNotConfigured",
        message,
        generation,
    );
    set_condition(&mut status.conditions, ready, now);
    status
}

/// What registering `mv` sends: its folder as the source, the run, and
/// Hone's lineage as tags.
pub fn export_of(mv: &ModelVersion) -> Option<Export> {
    let spec = mv.spec.mlflow.as_ref()?;
    let uri = mv.artifact_location()?;
    let lineage = mv.spec.lineage.clone().unwrap_or_default();
    let namespace = mv.namespace().unwrap_or_default();
    let mut tag_list = vec![
        (tags::MODEL_VERSION.to_owned(), format!("{namespace}/{}", mv.name_any())),
        (tags::MODEL_VERSION_UID.to_owned(), mv.metadata.uid.clone().unwrap_or_default()),
    ];
    let optional = [
        (tags::TRAINING_JOB, lineage.training_job.map(|tj| format!("{namespace}/{tj}"))),
        (tags::DATASET, lineage.dataset.map(|d| format!("{namespace}/{d}"))),
        (tags::DATASET_DIGEST, lineage.dataset_digest),
        (
            tags::ARTIFACT_DIGEST,
            mv.spec
                .artifact
                .digest
                .clone()
                .or_else(|| mv.status.as_ref().and_then(|s| s.verified_digest.clone())),
        ),
    ];
    tag_list.extend(optional.into_iter().filter_map(|(k, v)| Some((k.to_owned(), v?))));
    Some(Export {
        registered_model: spec.registered_model.clone(),
        source: folder_of(uri),
        run_id: spec.run_id.clone(),
        description: format!(
            "Hone ModelVersion {namespace}/{} (model {} version {}), {} format",
            mv.name_any(),
            mv.spec.model,
            mv.spec.version,
            mv.spec.artifact.format
        ),
        tags: tag_list,
    })
}

/// Whether `status` (about to be written) calls for registering now.
pub fn wants_export(mv: &ModelVersion, status: &ModelVersionStatus) -> bool {
    mv.spec.mlflow.is_some()
        && status.phase == Some(ModelVersionPhase::Ready)
        && !matches!(
            status.mlflow.as_ref().map(|m| m.state),
            Some(RegistrySyncState::Synced | RegistrySyncState::Failed)
        )
}

/// How long until the next try is due (None: now). A failed try is not
/// repeated before its backoff has passed, whatever wakes the reconcile.
pub fn export_wait(status: &ModelVersionStatus, now: &Time) -> Option<Duration> {
    let registration = status.mlflow.as_ref().filter(|m| m.state == RegistrySyncState::Pending)?;
    backoff_left(registration.attempts, registration.last_attempt.as_ref()?, now)
}

/// How long is left of the backoff after `attempts` failed tries, the last
/// at `last` (None: a try is due now). The export and the alias share it.
pub fn backoff_left(attempts: u32, last: &Time, now: &Time) -> Option<Duration> {
    let due = retry_delay(attempts.max(1)).as_secs() as i64;
    let elapsed = now.0.as_second() - last.0.as_second();
    (elapsed < due).then(|| Duration::from_secs((due - elapsed).max(1) as u64))
}

/// Records the outcome of one try in `status`; returns when to try again.
pub fn record_export(
    mv: &ModelVersion,
    status: &mut ModelVersionStatus,
    outcome: Result<String, RegistryError>,
    now: &Time,
) -> Option<Duration> {
    let registered_model = mv.spec.mlflow.as_ref().map(|m| m.registered_model.clone()).unwrap_or_default();
    let attempts = status.mlflow.as_ref().map_or(0, |m| m.attempts).saturating_add(1);
    let (registration, condition, retry) = match outcome {
        Ok(version) => {
            let message = format!("registered in MLflow as {registered_model} version {version}");
            let condition = (ConditionStatus::True, "Registered", message);
            let registration = MlflowRegistration {
                state: RegistrySyncState::Synced,
                registered_model,
                version: Some(version),
                attempts,
                message: None,
                last_attempt: Some(now.clone()),
            };
            (registration, condition, None)
        }
        Err(e) => {
            let retry = e.retryable().then(|| retry_delay(attempts));
            let state = if retry.is_some() { RegistrySyncState::Pending } else { RegistrySyncState::Failed };
            let message = match retry {
                Some(wait) => format!("{e}; try {attempts} failed, next in {}s", wait.as_secs()),
                None => e.to_string(),
            };
            let condition = (ConditionStatus::False, e.reason(), message.clone());
            let registration = MlflowRegistration {
                state,
                registered_model,
                version: None,
                attempts,
                message: Some(message),
                last_attempt: Some(now.clone()),
            };
            (registration, condition, retry)
        }
    };
    status.mlflow = Some(registration);
    let (cond_status, reason, message) = condition;
    let desired = DesiredCondition::new(
        CONDITION_REGISTRY_SYNCED,
        cond_status,
        reason,
        message,
        mv.metadata.generation,
    );
    set_condition(&mut status.conditions, desired, now);
    retry
}

/// Records that there is no registry to register in (no retry: a
/// reconfigured operator restarts and reconciles everything).
pub fn record_unconfigured(mv: &ModelVersion, status: &mut ModelVersionStatus, now: &Time) {
    let registered_model = mv.spec.mlflow.as_ref().map(|m| m.registered_model.clone()).unwrap_or_default();
    let previous_attempts = status.mlflow.as_ref().map_or(0, |m| m.attempts);
    status.mlflow = Some(MlflowRegistration {
        state: RegistrySyncState::Pending,
        registered_model,
        version: None,
        attempts: previous_attempts,
        message: Some(NOT_CONFIGURED.to_owned()),
        last_attempt: None,
    });
    let desired = DesiredCondition::new(
        CONDITION_REGISTRY_SYNCED,
        ConditionStatus::False,
        "RegistryNotConfigured",
        NOT_CONFIGURED,
        mv.metadata.generation,
    );
    set_condition(&mut status.conditions, desired, now);
}

/// A client of the operator's registry, or why there is none.
pub fn registry(config: &crate::config::OperatorConfig) -> Option<Result<Registry, RegistryError>> {
    config.mlflow.as_ref().map(Registry::new)
}
