//! `spec.mlflowAlias`: keep an alias in the operator's MLflow registry on
//! the model version a variant serves as stable, moved after each
//! promotion. While the registry is down the alias is Pending and retried
//! with backoff; serving never waits for it.

use std::time::Duration;

use hone_crds::conditions::{ConditionStatus, DesiredCondition, set_condition};
use hone_crds::consts::CONDITION_REGISTRY_SYNCED;
use hone_crds::inferenceservice::{InferenceService, InferenceServiceStatus, MlflowAliasStatus};
use hone_crds::modelversion::{ModelVersion, RegistrySyncState};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::mlflow::{Registry, RegistryError};
use crate::modelversion::registry::{NOT_CONFIGURED, backoff_left, retry_delay};

/// What the alias should name now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Not yet known; the message says why (nothing is written to MLflow).
    Waiting(String),
    /// This MLflow model version, served as `model_version`.
    Version {
        /// The ModelVersion served.
        model_version: String,
        /// Its registered model in MLflow.
        registered_model: String,
        /// Its MLflow version.
        version: String,
    },
}

/// What `spec.mlflowAlias` should name, from the status about to be written
/// (the variant's stable ModelVersion, once it has a ready replica) and the
/// namespace's ModelVersions. Pure.
pub fn target(
    isvc: &InferenceService,
    status: &InferenceServiceStatus,
    versions: &[ModelVersion],
) -> Option<Target> {
    let spec = isvc.spec.mlflow_alias.as_ref()?;
    let variant_name = spec.variant.clone().or_else(|| isvc.spec.variants.first().map(|v| v.name.clone()))?;
    let Some(variant) = status.variants.iter().find(|v| v.name == variant_name) else {
        return Some(Target::Waiting(format!(
            "spec.mlflowAlias.variant {variant_name:?} is not a variant of this service"
        )));
    };
    let Some(name) = variant.model_version.clone() else {
        return Some(Target::Waiting(format!("variant {variant_name} serves no ModelVersion yet")));
    };
    if variant.ready_replicas < 1 {
        return Some(Target::Waiting(format!("variant {variant_name} has no ready replica of {name} yet")));
    }
    let Some(mv) = versions.iter().find(|mv| mv.metadata.name.as_deref() == Some(name.as_str())) else {
        return Some(Target::Waiting(format!("ModelVersion {name} is not found")));
    };
    let Some((registered_model, version)) = mv.mlflow_version() else {
        return Some(Target::Waiting(format!(
            "ModelVersion {name} is not in the MLflow registry: import it (artifact.uri models:/...) or register \
             it (spec.mlflow, or tracking.mlflow on its TrainingJob)"
        )));
    };
    Some(Target::Version {
        model_version: name,
        registered_model: registered_model.to_owned(),
        version: version.to_owned(),
    })
}

/// Moves the alias when it names something else, recording the outcome in
/// `next`; returns when to try again.
pub async fn sync(
    registry: Option<Result<Registry, RegistryError>>,
    isvc: &InferenceService,
    versions: &[ModelVersion],
    next: &mut InferenceServiceStatus,
    now: &Time,
) -> Option<Duration> {
    let Some(target) = target(isvc, next, versions) else {
        next.mlflow_alias = None;
        next.conditions.retain(|c| c.type_ != CONDITION_REGISTRY_SYNCED);
        return None;
    };
    let alias = isvc.spec.mlflow_alias.as_ref().map(|a| a.alias.clone()).unwrap_or_default();
    let generation = isvc.metadata.generation;
    let previous = next.mlflow_alias.clone().filter(|p| p.alias == alias);
    let Target::Version { model_version, registered_model, version } = target else {
        let Target::Waiting(message) = target else { return None };
        let mut status = previous.unwrap_or_default();
        status.alias = alias;
        status.state = RegistrySyncState::Pending;
        status.message = Some(message.clone());
        next.mlflow_alias = Some(status);
        condition(next, ConditionStatus::False, "AliasWaiting", &message, generation, now);
        return None;
    };
    let same = |p: &MlflowAliasStatus| {
        p.registered_model.as_deref() == Some(registered_model.as_str())
            && p.version.as_deref() == Some(version.as_str())
    };
    if let Some(p) = previous.as_ref().filter(|p| same(p)) {
        if p.state == RegistrySyncState::Synced {
            return None;
        }
        if let Some(wait) = p.last_attempt.as_ref().and_then(|last| backoff_left(p.attempts, last, now)) {
            return Some(wait);
        }
    }
    let attempts = previous.as_ref().filter(|p| same(p)).map_or(0, |p| p.attempts).saturating_add(1);
    let outcome = match registry {
        None => Err(None),
        Some(Err(e)) => Err(Some(e)),
        Some(Ok(client)) => client.set_alias(&registered_model, &alias, &version).await.map_err(Some),
    };
    let mut status = MlflowAliasStatus {
        alias: alias.clone(),
        state: RegistrySyncState::Synced,
        model_version: Some(model_version.clone()),
        registered_model: Some(registered_model.clone()),
        version: Some(version.clone()),
        attempts,
        message: None,
        last_attempt: Some(now.clone()),
    };
    let retry = match outcome {
        Ok(()) => {
            let message =
                format!("alias {alias} names {registered_model} version {version} ({model_version})");
            condition(next, ConditionStatus::True, "AliasSet", &message, generation, now);
            None
        }
        Err(None) => {
            status.state = RegistrySyncState::Pending;
            status.message = Some(NOT_CONFIGURED.to_owned());
            status.last_attempt = None;
            condition(next, ConditionStatus::False, "RegistryNotConfigured", NOT_CONFIGURED, generation, now);
            None
        }
        Err(Some(e)) => {
            tracing::warn!(alias = %alias, error = %e, "setting the MLflow alias failed");
            let retry = e.retryable().then(|| retry_delay(attempts));
            status.state =
                if retry.is_some() { RegistrySyncState::Pending } else { RegistrySyncState::Failed };
            let message = match retry {
                Some(wait) => format!("{e}; try {attempts} failed, next in {}s", wait.as_secs()),
                None => e.to_string(),
            };
            status.message = Some(message.clone());
            condition(next, ConditionStatus::False, e.reason(), &message, generation, now);
            retry
        }
    };
    next.mlflow_alias = Some(status);
    retry
}

fn condition(
    status: &mut InferenceServiceStatus,
    holds: ConditionStatus,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let desired = DesiredCondition::new(CONDITION_REGISTRY_SYNCED, holds, reason, message, generation);
    set_condition(&mut status.conditions, desired, now);
}
