//! Unit tests of the ModelVersion's side of the MLflow registry: resolving a
//! `models:/` URI into status, what an export sends, and the retry
//! bookkeeping while the registry is down.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use hone_crds::conditions::find_condition;
use hone_crds::consts::{CONDITION_READY, CONDITION_REGISTRY_SYNCED};
use hone_crds::modelversion::{ModelVersionPhase, RegistrySyncState};
use hone_crds::{ModelVersion, ModelVersionStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::json;

use super::registry::{
    MAX_RETRY, export_of, export_wait, needs_resolution, record_export, record_unconfigured,
    resolution_status, retry_delay, wants_export,
};
use crate::mlflow::{RegistryError, Resolved, tags};

fn model_version(uri: &str, extra_spec: serde_json::Value, status: serde_json::Value) -> ModelVersion {
    let mut spec = json!({
        "model": "iris", "version": 3,
        "artifact": {"uri": uri},
        "signature": {"inputShape": [4], "classes": ["setosa", "versicolor", "virginica"]},
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "hone.dev/v1alpha1", "kind": "ModelVersion",
        "metadata": {"name": "iris-v3", "namespace": "ml", "uid": "mv-uid", "generation": 2},
        "spec": spec,
        "status": status,
    }))
    .unwrap()
}

fn at(seconds: i64) -> Time {
    Time(Timestamp::UNIX_EPOCH.checked_add(SignedDuration::from_secs(1_800_000_000 + seconds)).unwrap())
}

fn resolved() -> Resolved {
    Resolved {
        registered_model: "iris".into(),
        version: "7".into(),
        run_id: Some("0123abcd".into()),
        source: Some("mlflow-artifacts:/1/models/m-1/artifacts".into()),
        uri: "s3://mlflow/1/models/m-1/artifacts/model.pt".into(),
    }
}

#[test]
fn retry_delay_doubles_from_ten_seconds_up_to_ten_minutes() {
    assert_eq!(retry_delay(0), Duration::from_secs(10));
    assert_eq!(retry_delay(1), Duration::from_secs(10));
    assert_eq!(retry_delay(2), Duration::from_secs(20));
    assert_eq!(retry_delay(4), Duration::from_secs(80));
    assert_eq!(retry_delay(6), Duration::from_secs(320));
    assert_eq!(retry_delay(7), MAX_RETRY);
    // An attempt counter an author wrote into status cannot overflow the shift.
    assert_eq!(retry_delay(u32::MAX), MAX_RETRY);
}

#[test]
fn only_an_unresolved_models_uri_needs_resolution() {
    assert!(needs_resolution(&model_version("models:/iris@champion", json!({}), json!({}))));
    assert!(!needs_resolution(&model_version("s3://m/iris/model.pt", json!({}), json!({}))));
    let done = model_version(
        "models:/iris/7",
        json!({}),
        json!({"resolvedArtifact": {"uri": "s3://b/model.pt", "registeredModel": "iris", "version": "7"}}),
    );
    assert!(!needs_resolution(&done));
    assert_eq!(done.artifact_location(), Some("s3://b/model.pt"));
    assert_eq!(done.mlflow_version(), Some(("iris", "7")));
    // Until it is resolved there is nowhere to read the model from.
    assert_eq!(model_version("models:/iris/7", json!({}), json!({})).artifact_location(), None);
}

#[test]
fn a_resolved_uri_is_recorded_with_its_run() {
    let status = resolution_status(&ModelVersionStatus::default(), Some(2), Ok(resolved()), &at(0));
    let artifact = status.resolved_artifact.as_ref().unwrap();
    assert_eq!(artifact.uri, "s3://mlflow/1/models/m-1/artifacts/model.pt");
    assert_eq!(artifact.run_id.as_deref(), Some("0123abcd"));
    assert_eq!(artifact.version, "7");
    assert_eq!(artifact.resolved_at, Some(at(0)));
    assert_eq!(status.phase, Some(ModelVersionPhase::Pending));
    assert_eq!(status.observed_generation, Some(2));
    let ready = find_condition(&status.conditions, CONDITION_READY).unwrap();
    assert_eq!(ready.reason, "Resolved");
    assert!(ready.message.contains("iris version 7"), "{}", ready.message);
}

#[test]
fn a_registry_that_is_down_leaves_the_version_pending_and_a_missing_one_fails_it() {
    let down = resolution_status(
        &ModelVersionStatus::default(),
        Some(2),
        Err(RegistryError::Unavailable("connection refused".into())),
        &at(0),
    );
    assert_eq!(down.phase, Some(ModelVersionPhase::Pending));
    assert!(down.resolved_artifact.is_none());
    let ready = find_condition(&down.conditions, CONDITION_READY).unwrap();
    assert_eq!(ready.reason, "RegistryUnavailable");
    assert!(ready.message.contains("connection refused"), "{}", ready.message);

    let missing = resolution_status(
        &ModelVersionStatus::default(),
        Some(2),
        Err(RegistryError::NotFound("registered model iris has no alias champion".into())),
        &at(0),
    );
    assert_eq!(missing.phase, Some(ModelVersionPhase::Failed));
    assert_eq!(find_condition(&missing.conditions, CONDITION_READY).unwrap().reason, "ModelNotInRegistry");
}

#[test]
fn an_export_carries_the_folder_the_run_and_the_lineage() {
    let mv = model_version(
        "s3://models/iris/tj-1/model.pt",
        json!({
            "digest": "sha256:1111111111111111111111111111111111111111111111111111111111111111",
            "mlflow": {"registeredModel": "iris-classifier", "runId": "run42"},
            "lineage": {"trainingJob": "tj-1", "dataset": "iris", "datasetDigest": "sha256:22"},
        }),
        json!({}),
    );
    let export = export_of(&mv).unwrap();
    assert_eq!(export.registered_model, "iris-classifier");
    assert_eq!(export.source, "s3://models/iris/tj-1");
    assert_eq!(export.run_id.as_deref(), Some("run42"));
    let tag = |key: &str| export.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    assert_eq!(tag(tags::MODEL_VERSION), Some("ml/iris-v3"));
    assert_eq!(tag(tags::MODEL_VERSION_UID), Some("mv-uid"));
    assert_eq!(tag(tags::TRAINING_JOB), Some("ml/tj-1"));
    assert_eq!(tag(tags::DATASET), Some("ml/iris"));
    assert_eq!(tag(tags::DATASET_DIGEST), Some("sha256:22"));
    assert_eq!(tag(tags::ARTIFACT_DIGEST), mv.spec.artifact.digest.as_deref());

    // Without lineage only the identity tags are sent, none of them empty.
    let bare = model_version("s3://m/x/model.pt", json!({"mlflow": {"registeredModel": "x"}}), json!({}));
    let export = export_of(&bare).unwrap();
    assert_eq!(export.tags.len(), 2, "{:?}", export.tags);
    assert!(export.run_id.is_none());
    // Nothing to export without spec.mlflow.
    assert!(export_of(&model_version("s3://m/x/model.pt", json!({}), json!({}))).is_none());
}

fn exported(status: serde_json::Value) -> ModelVersion {
    model_version("s3://m/iris/model.pt", json!({"mlflow": {"registeredModel": "iris"}}), status)
}

#[test]
fn a_ready_version_is_exported_until_it_is_synced_or_refused() {
    let mv = exported(json!({}));
    let mut status = ModelVersionStatus { phase: Some(ModelVersionPhase::Ready), ..Default::default() };
    assert!(wants_export(&mv, &status));
    assert!(!wants_export(
        &mv,
        &ModelVersionStatus { phase: Some(ModelVersionPhase::Verifying), ..Default::default() }
    ));
    let unexported = model_version("s3://m/iris/model.pt", json!({}), json!({}));
    assert!(!wants_export(&unexported, &status));

    // Down: pending, tried again after the backoff, the try counted.
    let retry = record_export(&mv, &mut status, Err(RegistryError::Unavailable("503".into())), &at(0));
    assert_eq!(retry, Some(Duration::from_secs(10)));
    let registration = status.mlflow.clone().unwrap();
    assert_eq!(registration.state, RegistrySyncState::Pending);
    assert_eq!(registration.attempts, 1);
    assert!(registration.message.unwrap().contains("next in 10s"));
    let condition = find_condition(&status.conditions, CONDITION_REGISTRY_SYNCED).unwrap();
    assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("False", "RegistryUnavailable"));
    assert!(wants_export(&mv, &status));
    // Whatever wakes the reconcile, the next try waits for its backoff.
    assert_eq!(export_wait(&status, &at(4)), Some(Duration::from_secs(6)));
    assert_eq!(export_wait(&status, &at(10)), None);

    // Back: synced with the version, never sent again.
    assert_eq!(record_export(&mv, &mut status, Ok("4".into()), &at(31)), None);
    let registration = status.mlflow.clone().unwrap();
    assert_eq!(registration.state, RegistrySyncState::Synced);
    assert_eq!((registration.version.as_deref(), registration.attempts), (Some("4"), 2));
    assert_eq!(find_condition(&status.conditions, CONDITION_REGISTRY_SYNCED).unwrap().reason, "Registered");
    assert!(!wants_export(&mv, &status));
    assert_eq!(export_wait(&status, &at(31)), None);
}

#[test]
fn a_refused_export_is_failed_and_not_retried() {
    let mv = exported(json!({}));
    let mut status = ModelVersionStatus { phase: Some(ModelVersionPhase::Ready), ..Default::default() };
    let retry = record_export(
        &mv,
        &mut status,
        Err(RegistryError::Refused("INVALID_PARAMETER_VALUE: bad name".into())),
        &at(0),
    );
    assert_eq!(retry, None);
    assert_eq!(status.mlflow.as_ref().unwrap().state, RegistrySyncState::Failed);
    assert!(!wants_export(&mv, &status));
    let condition = find_condition(&status.conditions, CONDITION_REGISTRY_SYNCED).unwrap();
    assert_eq!(condition.reason, "RegistryRefused");
    assert!(condition.message.contains("bad name"));
}

#[test]
fn without_a_registry_the_export_stays_pending_with_a_reason() {
    let mv = exported(json!({}));
    let mut status = ModelVersionStatus { phase: Some(ModelVersionPhase::Ready), ..Default::default() };
    record_unconfigured(&mv, &mut status, &at(0));
    let registration = status.mlflow.clone().unwrap();
    assert_eq!((registration.state, registration.attempts), (RegistrySyncState::Pending, 0));
    assert_eq!(
        find_condition(&status.conditions, CONDITION_REGISTRY_SYNCED).unwrap().reason,
        "RegistryNotConfigured"
    );
    // Still wanted, so a reconfigured operator registers it.
    assert!(wants_export(&mv, &status));
    assert_eq!(export_wait(&status, &at(0)), None);
}
