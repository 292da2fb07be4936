//! Unit tests of ModelVersion registration (pure parts), the Job actions and
//! the TrainingJob Events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hone_crds::contract::TrainSummary;
use hone_crds::trainingjob::{TrainingJobPhase, TrainingJobStatus};
use hone_crds::{ModelVersion, SecretRef};
use k8s_openapi::api::batch::v1::Job;
use serde_json::json;

use super::apply::{JobAction, job_action};
use super::register::{desired_model_version, model_version_name, next_version, reserved_version};
use super::tests::{ready_dataset_for_tests, training_job_for_tests};

fn mv(model: &str, version: i64) -> ModelVersion {
    serde_json::from_value(json!({
        "apiVersion": "hone.dev/v1alpha1", "kind": "ModelVersion",
        "metadata": {"name": model_version_name(model, version)},
        "spec": {"model": model, "version": version,
            "artifact": {"uri": "s3://m/model.pt", "format": "TorchScript"},
            "signature": {"inputShape": [4], "classes": ["a"]}}
    }))
    .unwrap()
}

fn summary(classes: &[&str]) -> TrainSummary {
    TrainSummary {
        epoch: 5,
        total_epochs: 5,
        metrics: [("val_accuracy".to_owned(), 0.97)].into(),
        artifact_uri: "s3://models/cnn/tj-uid/model.pt".into(),
        artifact_digest: "sha256:abc".into(),
        artifact_size_bytes: 10,
        card_digest: Some(format!("sha256:{}", "c".repeat(64))),
        dataset_digest: Some("sha256:data".into()),
        input_shape: vec![1, 32, 32],
        classes: classes.iter().map(|c| (*c).to_owned()).collect(),
        preprocessing: None,
        task: Default::default(),
        threshold: None,
        output: Default::default(),
        artifact_format: Default::default(),
        mlflow_run_id: None,
    }
}

#[test]
fn the_next_version_is_one_above_the_highest_of_that_model() {
    assert_eq!(next_version(&[], "digits"), 1);
    let existing = [mv("digits", 1), mv("digits", 7), mv("iris", 9)];
    assert_eq!(next_version(&existing, "digits"), 8);
    assert_eq!(next_version(&existing, "iris"), 10);
    assert_eq!(model_version_name("digits", 8), "digits-v8");
}

#[test]
fn a_reserved_name_is_trusted_only_when_it_is_this_models() {
    assert_eq!(reserved_version("digits-v12", "digits"), Some(12));
    assert_eq!(reserved_version("digits-cnn-v2", "digits"), None);
    assert_eq!(reserved_version("digits-v0", "digits"), None);
    assert_eq!(reserved_version("iris-v2", "digits"), None);
}

#[test]
fn the_registered_model_version_carries_lineage_metrics_and_labels() {
    let mut tj = training_job_for_tests("");
    tj.spec.register_as.labels = Some([("team".to_owned(), "vision".to_owned())].into());
    let ds = ready_dataset_for_tests();
    let secret = Some(SecretRef { name: "s3-creds".into() });
    let out = desired_model_version(&tj, &summary(&["zero", "one"]), Some(&ds), secret.clone(), 3);
    assert_eq!(out.metadata.name.as_deref(), Some("digits-cnn-v3"));
    assert_eq!(out.metadata.namespace.as_deref(), Some("ml"));
    assert!(out.metadata.owner_references.is_none(), "a registry entry outlives its TrainingJob");
    let labels = out.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["hone.dev/trainingjob-uid"], "tj-uid");
    assert_eq!(labels["hone.dev/model"], "digits-cnn");
    assert_eq!(labels["team"], "vision");
    assert_eq!(out.spec.version, 3);
    assert_eq!(out.spec.artifact.uri, "s3://models/cnn/tj-uid/model.pt");
    assert_eq!(out.spec.artifact.digest.as_deref(), Some("sha256:abc"));
    assert_eq!(out.spec.artifact.secret_ref, secret);
    assert_eq!(out.spec.signature.classes, ["zero", "one"]);
    let lineage = out.spec.lineage.as_ref().unwrap();
    assert_eq!(lineage.training_job.as_deref(), Some("cnn"));
    assert_eq!(lineage.dataset.as_deref(), Some("digits"));
    assert_eq!(lineage.dataset_digest.as_deref(), Some("sha256:data"));
    assert_eq!(out.spec.metrics.as_ref().unwrap()["val_accuracy"], 0.97);
}

#[test]
fn an_onnx_probability_model_registers_as_it_was_summarised() {
    let tj = training_job_for_tests("");
    let mut train = summary(&["no", "yes"]);
    train.artifact_uri = "s3://models/cnn/tj-uid/model.onnx".into();
    train.artifact_format = hone_crds::modelversion::ArtifactFormat::Onnx;
    train.output = hone_crds::modelversion::OutputKind::Probabilities;
    train.task = hone_crds::modelversion::Task::Binary;
    train.threshold = Some(0.3);
    let out = desired_model_version(&tj, &train, None, None, 1);
    assert_eq!(out.spec.artifact.format, hone_crds::modelversion::ArtifactFormat::Onnx);
    assert_eq!(out.spec.artifact.uri, "s3://models/cnn/tj-uid/model.onnx");
    let signature = &out.spec.signature;
    assert_eq!(signature.output, hone_crds::modelversion::OutputKind::Probabilities);
    assert_eq!((signature.task, signature.threshold), (hone_crds::modelversion::Task::Binary, Some(0.3)));
}

#[test]
fn a_regression_model_is_verified_unevaluated_with_its_outputs_named_by_the_summary() {
    let tj = training_job_for_tests("");
    let mut ds = ready_dataset_for_tests();
    ds.status.as_mut().unwrap().classes = Some(vec!["25.0".into(), "31.0".into()]);
    let mut train = summary(&["progression"]);
    train.task = hone_crds::modelversion::Task::Regression;
    let out = desired_model_version(&tj, &train, Some(&ds), None, 1);
    assert_eq!(out.spec.signature.classes, ["progression"]);
    let evaluation = out.spec.evaluation.unwrap();
    assert_eq!((evaluation.required, evaluation.dataset), (Some(false), None));
    // Not named: never the Dataset's label values.
    train.classes.clear();
    assert!(desired_model_version(&tj, &train, Some(&ds), None, 1).spec.signature.classes.is_empty());
    // A classifier keeps the default: evaluation required.
    assert_eq!(desired_model_version(&tj, &summary(&["a", "b"]), Some(&ds), None, 1).spec.evaluation, None);
}

#[test]
fn classes_cut_from_the_summary_come_from_the_dataset() {
    let tj = training_job_for_tests("");
    let mut ds = ready_dataset_for_tests();
    ds.status.as_mut().unwrap().classes = Some(vec!["a".into(), "b".into(), "c".into()]);
    let out = desired_model_version(&tj, &summary(&[]), Some(&ds), None, 1);
    assert_eq!(out.spec.signature.classes, ["a", "b", "c"]);
}

fn job(suspend: bool, condition: Option<&str>) -> Job {
    serde_json::from_value(json!({
        "metadata": {"name": "j"},
        "spec": {"suspend": suspend, "template": {}},
        "status": {"conditions": condition.map(|c| vec![json!({"type": c, "status": "True"})]).unwrap_or_default()}
    }))
    .unwrap()
}

#[test]
fn an_existing_job_only_ever_changes_suspend() {
    let want_running = job(false, None);
    let want_suspended = job(true, None);
    assert_eq!(job_action(&want_running, None, false, false), JobAction::Create);
    assert_eq!(
        job_action(&want_running, None, false, true),
        JobAction::Finished,
        "TTL removed a finished run"
    );
    assert_eq!(
        job_action(&want_suspended, Some(&job(false, None)), false, false),
        JobAction::SetSuspend(true)
    );
    assert_eq!(job_action(&want_running, Some(&job(true, None)), false, false), JobAction::SetSuspend(false));
    assert_eq!(job_action(&want_running, Some(&job(false, None)), false, false), JobAction::Keep);
    assert_eq!(
        job_action(&want_running, Some(&job(true, None)), true, false),
        JobAction::Keep,
        "Kueue owns suspend"
    );
    assert_eq!(
        job_action(&want_suspended, Some(&job(false, Some("Complete"))), false, false),
        JobAction::Keep
    );
}

#[test]
fn every_new_phase_is_an_event_and_failures_are_warnings() {
    let running = TrainingJobStatus { phase: Some(TrainingJobPhase::Running), ..Default::default() };
    let failed = TrainingJobStatus {
        phase: Some(TrainingJobPhase::Failed),
        message: Some("OOMKilled".into()),
        ..Default::default()
    };
    let events = super::events(&running, &failed);
    assert_eq!(events.len(), 1);
    assert!(events[0].warning);
    assert!(super::events(&running, &running).is_empty());
    assert!(!super::events(&TrainingJobStatus::default(), &running)[0].warning);
}

#[test]
fn the_run_folder_is_the_one_the_trainer_was_told_to_write() {
    use hone_crds::StorageLocation;

    use super::register::run_folder;
    let tj = training_job_for_tests("");
    let config = crate::config::OperatorConfig {
        default_output: Some(StorageLocation::new("s3://models/")),
        ..Default::default()
    };
    let valid = super::validate::validate(&tj, Some(&ready_dataset_for_tests()), &config).unwrap();
    assert_eq!(run_folder(&tj, &config), Some(super::desired::run_output(&valid)));
    assert_eq!(run_folder(&tj, &config).as_deref(), Some("s3://models/cnn/tj-uid"));
    let own = training_job_for_tests("output: {uri: 's3://team/out'}\n");
    assert_eq!(run_folder(&own, &config).as_deref(), Some("s3://team/out/cnn/tj-uid"));
    assert_eq!(run_folder(&tj, &crate::config::OperatorConfig::default()), None);
}

#[test]
fn the_run_folder_is_recorded_only_for_the_trained_artifact_inside_it() {
    use super::register::run_folder_to_record;
    let train = summary(&["a"]);
    let mut registered = mv("digits", 1);
    registered.spec.artifact.uri = train.artifact_uri.clone();
    let folder = Some("s3://models/cnn/tj-uid");
    assert_eq!(run_folder_to_record(&registered, &train, folder).as_deref(), folder);
    assert_eq!(run_folder_to_record(&registered, &train, None), None);
    // Already recorded: nothing to write.
    registered.status =
        Some(hone_crds::ModelVersionStatus { run_folder: folder.map(str::to_owned), ..Default::default() });
    assert_eq!(run_folder_to_record(&registered, &train, folder), None);
    // Another artifact (a hand-made version with this run's uid label), or one outside the folder.
    let other = mv("digits", 2);
    assert_eq!(run_folder_to_record(&other, &train, folder), None);
    let mut outside = summary(&["a"]);
    outside.artifact_uri = "s3://models/shared/model.pt".into();
    let mut odd = mv("digits", 3);
    odd.spec.artifact.uri = outside.artifact_uri.clone();
    assert_eq!(run_folder_to_record(&odd, &outside, folder), None);
}

#[test]
fn a_tracked_run_is_registered_in_mlflow_with_its_run_id_when_it_is_one() {
    use hone_crds::trainingjob::{MlflowTracking, Tracking};
    let mut tj = training_job_for_tests("");
    let out = desired_model_version(&tj, &summary(&["a", "b"]), None, None, 1);
    assert_eq!(out.spec.mlflow, None, "no tracking.mlflow, no export");

    tj.spec.tracking = Some(Tracking {
        mlflow: Some(MlflowTracking {
            uri: "http://mlflow:5000".into(),
            experiment: "e".into(),
            registered_model: None,
        }),
    });
    let mut train = summary(&["a", "b"]);
    train.mlflow_run_id = Some("0123abcd".into());
    let out = desired_model_version(&tj, &train, None, None, 1);
    let export = out.spec.mlflow.unwrap();
    assert_eq!(export.registered_model, tj.spec.register_as.model, "default: registerAs.model");
    assert_eq!(export.run_id.as_deref(), Some("0123abcd"));

    if let Some(m) = tj.spec.tracking.as_mut().and_then(|t| t.mlflow.as_mut()) {
        m.registered_model = Some("fraud-detector".into());
    }
    // A run id from the pod that is not the shape of one is dropped, not sent.
    train.mlflow_run_id = Some("x' or '1'='1".into());
    let export = desired_model_version(&tj, &train, None, None, 1).spec.mlflow.unwrap();
    assert_eq!((export.registered_model.as_str(), export.run_id), ("fraud-detector", None));
}
