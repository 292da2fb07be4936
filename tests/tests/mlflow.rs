//! The operator and a real MLflow Model Registry (`mlflow server` from the
//! PyPI package, on loopback), on a real apiserver: a `models:/` ModelVersion
//! is resolved before its verify Job reads it; a TrainingJob with
//! `tracking.mlflow` has its ModelVersion registered with Hone's lineage,
//! across a registry outage; an InferenceService keeps an alias on what it
//! serves.
//!
//! KWOK completes the pods; the test writes the termination messages the
//! trainer and the verifier would have written (see `harness`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hone_cluster_tests::harness::{self, Env, is_ready};
use hone_cluster_tests::operator::OperatorProcess;
use hone_crds::modelversion::{ModelVersionPhase, RegistrySyncState};
use hone_crds::{InferenceService, ModelVersion, TrainingJob};
use hone_storage::testing::MlflowServer;
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::ListParams;
use serde_json::json;

const DIGEST: &str = "sha256:5e1a7b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f90";
const ARTIFACT_DIGEST: &str = "sha256:bb11bb22cc33dd44ee55ff66aa11bb22cc33dd44ee55ff66aa11bb22cc33dd44";

fn imported(name: &str, uri: &str) -> serde_json::Value {
    json!({
        "apiVersion": "hone.dev/v1alpha1", "kind": "ModelVersion", "metadata": {"name": name},
        "spec": {"model": "iris", "version": 1, "artifact": {"uri": uri, "format": "TorchScript"},
                 "signature": {"inputShape": [4], "classes": ["a", "b", "c"]}}
    })
}

/// What `hone-predictor verify` would have written for `uri`.
fn verified(uri: &str, evaluation: Option<serde_json::Value>) -> String {
    let mut summary = json!({"ok": true, "model": uri, "digest": ARTIFACT_DIGEST, "sizeBytes": 4096,
        "forwardMs": 2.0, "cardDigest": ARTIFACT_DIGEST});
    if let Some(evaluation) = evaluation {
        summary["evaluation"] = evaluation;
    }
    summary.to_string()
}

fn env_value(job: &Job, container: &str, name: &str) -> Option<String> {
    let spec = job.spec.as_ref()?.template.spec.as_ref()?;
    let container = spec.containers.iter().find(|c| c.name == container)?;
    container.env.iter().flatten().find(|e| e.name == name)?.value.clone()
}

fn registry_state(mv: &ModelVersion) -> Option<RegistrySyncState> {
    mv.status.as_ref()?.mlflow.as_ref().map(|m| m.state)
}

#[tokio::test]
async fn models_uris_are_imported_trained_versions_exported_and_an_alias_kept() {
    let Some(mut server) = MlflowServer::start() else { return };
    let run_id = server.register_iris("iris", "model.pt", "champion");
    let env = Env::new("hone-mlflow").await;
    let operator = OperatorProcess::start(&env.ns.name, "op-mlflow", &["--mlflow-uri", &server.uri]).unwrap();
    operator.wait_leader(harness::WAIT).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));

    // Import by alias: resolved once, and the verify Job reads what MLflow stores.
    env.create(imported("iris-champion", "models:/iris@champion")).await;
    let mv = env
        .until::<ModelVersion>("iris-champion", "resolved", |m| {
            m.status.as_ref().is_some_and(|s| s.resolved_artifact.is_some())
        })
        .await;
    let resolved = mv.status.as_ref().unwrap().resolved_artifact.clone().unwrap();
    assert_eq!((resolved.registered_model.as_str(), resolved.version.as_str()), ("iris", "1"));
    assert_eq!(resolved.run_id.as_deref(), Some(run_id.as_str()));
    assert!(
        resolved.uri.starts_with(&format!("{}/api/2.0/mlflow-artifacts/artifacts/", server.uri)),
        "{resolved:?}"
    );
    assert!(resolved.uri.ends_with("/model/model.pt"), "{resolved:?}");
    assert_eq!(mv.spec.artifact.uri, "models:/iris@champion", "the spec is left as written");
    let verify = env.job("hone.dev/modelversion", "iris-champion").await;
    assert_eq!(env_value(&verify, "verify", "HONE_MODEL_URI").as_deref(), Some(resolved.uri.as_str()));
    env.finish_pod(&verify, "verify", &verified(&resolved.uri, None)).await;
    env.until::<ModelVersion>("iris-champion", "Ready", |m| {
        m.status.as_ref().is_some_and(|s| is_ready(&s.conditions))
    })
    .await;

    // A version MLflow does not have fails at once, with no Job.
    env.create(imported("iris-missing", "models:/iris@challenger")).await;
    let failed = env
        .until::<ModelVersion>("iris-missing", "Failed", |m| {
            m.status.as_ref().is_some_and(|s| s.phase == Some(ModelVersionPhase::Failed))
        })
        .await;
    let ready =
        failed.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == "Ready").unwrap().clone();
    assert_eq!(ready.reason, "ModelNotInRegistry");
    assert!(ready.message.contains("challenger"), "{}", ready.message);
    let jobs =
        env.api::<Job>().list(&ListParams::default().labels("hone.dev/modelversion=iris-missing")).await;
    assert!(jobs.unwrap().items.is_empty());

    // Export: a TrainingJob with tracking.mlflow; its ModelVersion is
    // registered once it is Ready, and the registry is down by then.
    env.ready_dataset("digits", DIGEST).await;
    let tracking = json!({"tracking": {"mlflow": {"uri": server.uri, "experiment": "hone"}}});
    env.create(harness::training_job("cnn", "digits", tracking)).await;
    let job = env.job("hone.dev/trainingjob", "cnn").await;
    let uid = env.api::<TrainingJob>().get("cnn").await.unwrap().uid().unwrap();
    let artifact = format!("s3://hone-models/cnn/{uid}/model.pt");
    // The summary hone-trainer would have written, with the MLflow run it logged to.
    let summary = json!({"kind": "train", "epoch": 3, "totalEpochs": 3, "metrics": {"val_accuracy": 0.97},
        "artifactUri": artifact, "artifactDigest": ARTIFACT_DIGEST, "artifactSizeBytes": 4096,
        "datasetDigest": DIGEST, "inputShape": [1, 32, 32], "classes": ["0", "1"], "mlflowRunId": run_id});
    env.finish_pod(&job, "trainer", &summary.to_string()).await;
    env.until::<TrainingJob>("cnn", "registered", |t| {
        t.status.as_ref().and_then(|s| s.model_version.as_deref()) == Some("digits-v1")
    })
    .await;
    let mv = env.api::<ModelVersion>().get("digits-v1").await.unwrap();
    let export = mv.spec.mlflow.clone().expect("spec.mlflow from tracking.mlflow");
    assert_eq!(
        (export.registered_model.as_str(), export.run_id.as_deref()),
        ("digits", Some(run_id.as_str()))
    );

    server.stop();
    let verify = env.job("hone.dev/modelversion", "digits-v1").await;
    let evaluation = json!({"datasetDigest": DIGEST, "samples": 360, "metrics": {"accuracy": 0.96}});
    env.finish_pod(&verify, "verify", &verified(&artifact, Some(evaluation))).await;
    let pending = env
        .until::<ModelVersion>("digits-v1", "Ready, registration pending", |m| {
            m.status.as_ref().is_some_and(|s| is_ready(&s.conditions))
                && registry_state(m) == Some(RegistrySyncState::Pending)
        })
        .await;
    let registration = pending.status.as_ref().unwrap().mlflow.clone().unwrap();
    assert!(registration.attempts >= 1);
    assert!(registration.message.as_deref().unwrap_or_default().contains("unavailable"), "{registration:?}");
    let synced =
        pending.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == "RegistrySynced").unwrap();
    assert_eq!((synced.status.as_str(), synced.reason.as_str()), ("False", "RegistryUnavailable"));

    // Back up: the retry lands, and MLflow has the version with Hone's lineage.
    server.restart();
    let mv = env
        .until::<ModelVersion>("digits-v1", "registered in MLflow", |m| {
            registry_state(m) == Some(RegistrySyncState::Synced)
        })
        .await;
    assert_eq!(mv.status.as_ref().unwrap().mlflow.as_ref().unwrap().version.as_deref(), Some("1"));
    let ns = &env.ns.name;
    server.python(&format!(
        "from mlflow import MlflowClient\n\
         v = MlflowClient().get_model_version('digits', '1')\n\
         assert v.source == 's3://hone-models/cnn/{uid}', v.source\n\
         assert v.run_id == '{run_id}', v.run_id\n\
         want = {{'hone.model_version': '{ns}/digits-v1', 'hone.training_job': '{ns}/cnn',\n\
                 'hone.dataset': '{ns}/digits', 'hone.dataset_digest': '{DIGEST}',\n\
                 'hone.artifact_digest': '{ARTIFACT_DIGEST}'}}\n\
         assert all(v.tags.get(k) == w for k, w in want.items()), v.tags\n"
    ));

    // An alias on what an InferenceService serves.
    env.create(
        json!({"apiVersion": "hone.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": "web"},
        "spec": {"variants": [{"name": "main", "modelVersion": "digits-v1", "weight": 100}],
                 "mlflowAlias": {"alias": "production"}}}),
    )
    .await;
    let isvc = env
        .until::<InferenceService>("web", "alias set", |i| {
            i.status
                .as_ref()
                .and_then(|s| s.mlflow_alias.as_ref())
                .is_some_and(|a| a.state == RegistrySyncState::Synced)
        })
        .await;
    let alias = isvc.status.unwrap().mlflow_alias.unwrap();
    assert_eq!((alias.version.as_deref(), alias.model_version.as_deref()), (Some("1"), Some("digits-v1")));
    server.python(
        "from mlflow import MlflowClient\n\
         v = MlflowClient().get_model_version_by_alias('digits', 'production')\n\
         assert v.version == '1', v.version\n",
    );

    env.cleanup(operator).await;
}
