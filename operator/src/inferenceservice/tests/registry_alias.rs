//! `spec.mlflowAlias`: which MLflow version the alias should name, and what
//! status says when it cannot be set yet.

use hone_crds::conditions::find_condition;
use hone_crds::consts::CONDITION_REGISTRY_SYNCED;
use hone_crds::inferenceservice::{InferenceServiceStatus, MlflowAliasStatus, VariantStatus};
use hone_crds::modelversion::RegistrySyncState;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::{at, isvc, model_version};
use crate::inferenceservice::registry_alias::{Target, sync, target};
use crate::mlflow::RegistryError;

const ALIASED: &str = "
variants: [{name: a, modelVersion: digits-v2, weight: 100}]
mlflowAlias: {alias: champion}
";

fn serving(model_version: &str, ready_replicas: i32) -> InferenceServiceStatus {
    InferenceServiceStatus {
        variants: vec![VariantStatus {
            name: "a".into(),
            model_version: Some(model_version.into()),
            weight: 100,
            replicas: 1,
            ready_replicas,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// `digits-v<v>`, Ready, registered by Hone as MLflow `digits` version `<mlflow>`.
fn registered(v: i64, mlflow: Option<&str>) -> hone_crds::ModelVersion {
    let mut mv = model_version(&format!("digits-v{v}"), "digits", v, true, &[]);
    if let (Some(status), Some(version)) = (mv.status.as_mut(), mlflow) {
        status.mlflow = serde_json::from_value(
            json!({"state": "Synced", "registeredModel": "digits", "version": version, "attempts": 1}),
        )
        .unwrap();
    }
    mv
}

#[test]
fn the_alias_names_the_registered_version_the_variant_serves() {
    let versions = [registered(1, Some("5")), registered(2, Some("6"))];
    assert_eq!(
        target(&isvc(ALIASED), &serving("digits-v2", 1), &versions),
        Some(Target::Version {
            model_version: "digits-v2".into(),
            registered_model: "digits".into(),
            version: "6".into()
        })
    );
    // No alias asked for: nothing to do.
    let plain = "variants: [{name: a, modelVersion: digits-v2, weight: 100}]";
    assert_eq!(target(&isvc(plain), &serving("digits-v2", 1), &versions), None);
}

#[test]
fn the_alias_waits_for_a_ready_replica_and_an_mlflow_identity() {
    let waiting = |status: &InferenceServiceStatus, versions: &[hone_crds::ModelVersion]| match target(
        &isvc(ALIASED),
        status,
        versions,
    ) {
        Some(Target::Waiting(message)) => message,
        other => panic!("expected Waiting, got {other:?}"),
    };
    let versions = [registered(2, Some("6"))];
    assert!(waiting(&serving("digits-v2", 0), &versions).contains("no ready replica"));
    assert!(waiting(&serving("digits-v9", 1), &versions).contains("digits-v9 is not found"));
    let unregistered = [registered(2, None)];
    assert!(waiting(&serving("digits-v2", 1), &unregistered).contains("not in the MLflow registry"));
    let elsewhere = isvc(
        "
variants: [{name: a, modelVersion: digits-v2, weight: 100}]
mlflowAlias: {alias: champion, variant: b}
",
    );
    match target(&elsewhere, &serving("digits-v2", 1), &versions) {
        Some(Target::Waiting(message)) => assert!(message.contains("\"b\" is not a variant"), "{message}"),
        other => panic!("expected Waiting, got {other:?}"),
    }
}

#[tokio::test]
async fn without_a_registry_the_alias_is_pending_with_a_reason() {
    let versions = [registered(2, Some("6"))];
    let mut next = serving("digits-v2", 1);
    let now = Time(at(0));
    let retry = sync(None, &isvc(ALIASED), &versions, &mut next, &now).await;
    assert_eq!(retry, None);
    let alias = next.mlflow_alias.clone().unwrap();
    assert_eq!((alias.alias.as_str(), alias.state), ("champion", RegistrySyncState::Pending));
    assert_eq!(alias.version.as_deref(), Some("6"));
    assert_eq!(
        find_condition(&next.conditions, CONDITION_REGISTRY_SYNCED).unwrap().reason,
        "RegistryNotConfigured"
    );
}

#[tokio::test]
async fn a_broken_registry_is_retried_with_backoff_and_a_synced_alias_is_left_alone() {
    let versions = [registered(2, Some("6"))];
    let service = isvc(ALIASED);
    let mut next = serving("digits-v2", 1);
    let down = || Some(Err(RegistryError::Unavailable("connection refused".into())));
    let retry = sync(down(), &service, &versions, &mut next, &Time(at(0))).await;
    assert_eq!(retry, Some(std::time::Duration::from_secs(10)));
    let alias = next.mlflow_alias.clone().unwrap();
    assert_eq!((alias.state, alias.attempts), (RegistrySyncState::Pending, 1));
    assert_eq!(
        find_condition(&next.conditions, CONDITION_REGISTRY_SYNCED).unwrap().reason,
        "RegistryUnavailable"
    );
    // Woken before the backoff has passed: no try, only the wait.
    let retry = sync(down(), &service, &versions, &mut next, &Time(at(4))).await;
    assert_eq!(retry, Some(std::time::Duration::from_secs(6)));
    assert_eq!(next.mlflow_alias.as_ref().unwrap().attempts, 1);
    // Once synced on this version, nothing is sent, even to a broken registry.
    next.mlflow_alias = Some(MlflowAliasStatus { state: RegistrySyncState::Synced, ..alias });
    assert_eq!(sync(down(), &service, &versions, &mut next, &Time(at(100))).await, None);
    assert_eq!(next.mlflow_alias.as_ref().unwrap().state, RegistrySyncState::Synced);
}
