//! Unit tests of measured evaluation: which Dataset a ModelVersion is
//! evaluated on, the verify Job's `eval-split` init container, and the status
//! the evaluation leaves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hone_crds::conditions::find_condition;
use hone_crds::contract::ExpectedSignature;
use hone_crds::modelversion::{EvaluationSpec, ModelVersionPhase, Task};
use hone_crds::{Dataset, ModelVersion, ModelVersionStatus};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::desired::{self, EVAL_SPLIT_CONTAINER, EvaluationPlan, VERIFY_CONTAINER};
use super::status::{self, StatusInput};
use crate::config::OperatorConfig;
use crate::testutil::{job_with_condition, pod_terminated};

const TRAINED_ON: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const CURRENT: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn model_version(extra_spec: serde_json::Value) -> ModelVersion {
    let mut spec = json!({
        "model": "digits", "version": 2,
        "artifact": {"uri": "s3://m/run/model.pt", "secretRef": {"name": "s3"}},
        "signature": {"inputShape": [1, 8, 8], "classes": ["0", "1", "2"]},
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "hone.dev/v1alpha1", "kind": "ModelVersion",
        "metadata": {"name": "digits-v2", "namespace": "ml", "uid": "mv-uid", "generation": 1},
        "spec": spec,
    }))
    .unwrap()
}

fn trained_on_digits() -> ModelVersion {
    model_version(json!({"lineage": {"trainingJob": "tj", "dataset": "digits", "datasetDigest": TRAINED_ON}}))
}

fn dataset(name: &str, ready: bool, source: &str) -> Dataset {
    serde_json::from_value(json!({
        "apiVersion": "hone.dev/v1alpha1", "kind": "Dataset",
        "metadata": {"name": name, "namespace": "ml", "uid": "ds-uid"},
        "spec": {"source": {"uri": source, "secretRef": {"name": "data-creds"}}, "format": "ImageFolder",
                 "image": {"width": 8, "height": 8, "channels": 1}, "split": {"validation": 0.1, "test": 0.2, "seed": 7}},
        "status": {
            "phase": if ready { "Ready" } else { "Verifying" },
            "digest": CURRENT,
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }, "reason": "R",
                            "message": "reading", "lastTransitionTime": "2024-01-01T00:00:00Z"}],
        },
    }))
    .unwrap()
}

fn now() -> Time {
    Time(Timestamp::from_second(1_700_000_000).unwrap())
}

fn env_of(container: &Container) -> Vec<(String, String)> {
    container.env.iter().flatten().map(|e| (e.name.clone(), e.value.clone().unwrap_or_default())).collect()
}

fn value<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

#[test]
fn a_version_is_evaluated_on_the_split_it_was_trained_against() {
    // No Dataset named anywhere: nothing to measure on.
    assert_eq!(desired::evaluation_plan(&model_version(json!({})), None), EvaluationPlan::NoDataset);

    let mv = trained_on_digits();
    let EvaluationPlan::Waiting { message } = desired::evaluation_plan(&mv, None) else {
        panic!("a missing Dataset is waited for")
    };
    assert!(message.contains("Dataset digits does not exist"), "{message}");

    // While the Dataset is not Ready, the digest the version was trained on
    // is what eval-split must find (it refuses other content).
    let verifying = dataset("digits", false, "s3://data/digits/");
    let EvaluationPlan::On(input) = desired::evaluation_plan(&mv, Some(&verifying)) else { panic!("plan") };
    assert_eq!(input.digest, TRAINED_ON);

    // A Ready Dataset that holds other content than the version was trained
    // on has lost its held-out split: refused at once, or skipped when
    // evaluation is not required.
    let changed = dataset("digits", true, "s3://data/digits/");
    let EvaluationPlan::Refused { reason, message } = desired::evaluation_plan(&mv, Some(&changed)) else {
        panic!("plan")
    };
    assert_eq!(reason, "DatasetChanged");
    assert!(message.contains(CURRENT) && message.contains(TRAINED_ON), "{message}");
    let mut optional = mv.clone();
    optional.spec.evaluation = Some(EvaluationSpec { dataset: None, required: Some(false) });
    assert!(matches!(
        desired::evaluation_plan(&optional, Some(&changed)),
        EvaluationPlan::Skipped { reason: "DatasetChanged", .. }
    ));
    assert!(matches!(desired::evaluation_plan(&optional, None), EvaluationPlan::Skipped { .. }));
    let mut same = changed.clone();
    same.status.as_mut().unwrap().digest = Some(TRAINED_ON.to_owned());
    let EvaluationPlan::On(input) = desired::evaluation_plan(&mv, Some(&same)) else { panic!("plan") };
    assert_eq!(input.digest, TRAINED_ON);

    // Another Dataset named for evaluation is taken at its current digest,
    // once Ready.
    let other = model_version(json!({
        "lineage": {"dataset": "digits", "datasetDigest": TRAINED_ON},
        "evaluation": {"dataset": {"name": "digits-fresh"}},
    }));
    let fresh = dataset("digits-fresh", false, "s3://data/fresh/");
    assert!(matches!(desired::evaluation_plan(&other, Some(&fresh)), EvaluationPlan::Waiting { .. }));
    let fresh = dataset("digits-fresh", true, "s3://data/fresh/");
    let EvaluationPlan::On(input) = desired::evaluation_plan(&other, Some(&fresh)) else { panic!("plan") };
    assert_eq!((input.name.as_str(), input.digest.as_str()), ("digits-fresh", CURRENT));
}

#[test]
fn multilabel_and_regression_versions_are_not_evaluated_on_single_label_splits() {
    let ready = dataset("digits", true, "s3://data/digits/");
    let mut same = ready.clone();
    same.status.as_mut().unwrap().digest = Some(TRAINED_ON.to_owned());
    for task in [Task::Multilabel, Task::Regression] {
        let mut mv = trained_on_digits();
        mv.spec.signature.task = task;
        let EvaluationPlan::Refused { reason, message } = desired::evaluation_plan(&mv, Some(&same)) else {
            panic!("a required evaluation of a {task} model is refused")
        };
        assert_eq!(reason, "EvaluationUnsupported");
        assert!(
            message.contains(&format!("a {task} model")) && message.contains("required: false"),
            "{message}"
        );
        mv.spec.evaluation = Some(EvaluationSpec { dataset: None, required: Some(false) });
        assert!(matches!(
            desired::evaluation_plan(&mv, Some(&same)),
            EvaluationPlan::Skipped { reason: "EvaluationUnsupported", .. }
        ));
    }
    // Binary answers one class per sample: evaluated like classification.
    let mut binary = trained_on_digits();
    binary.spec.signature.task = Task::Binary;
    assert!(matches!(desired::evaluation_plan(&binary, Some(&same)), EvaluationPlan::On(_)));
}

#[test]
fn the_verify_job_takes_the_split_in_an_init_container_and_checks_the_card() {
    let mut mv = trained_on_digits();
    mv.spec.artifact.card_digest = Some(CURRENT.to_owned());
    let valid = desired::validate(&mv, &OperatorConfig::default()).unwrap();
    let ds = dataset("digits", false, "pvc://datasets/digits/");
    let plan = desired::evaluation_plan(&mv, Some(&ds));
    let job = desired::verify_job(&valid, plan.input());
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();

    let init = &pod.init_containers.as_ref().unwrap()[0];
    assert_eq!(init.name, EVAL_SPLIT_CONTAINER);
    assert_eq!(init.image.as_deref(), Some(OperatorConfig::default().trainer_image.as_str()));
    assert_eq!(init.args.as_deref(), Some(&["eval-split".to_owned()][..]));
    let env = env_of(init);
    assert_eq!(value(&env, "HONE_DATASET_SOURCE"), Some("pvc://datasets/digits/"));
    assert_eq!(value(&env, "HONE_DATASET_DIGEST"), Some(TRAINED_ON));
    assert_eq!(value(&env, "HONE_SPLIT_TEST"), Some("0.2"));
    assert_eq!(value(&env, "HONE_SPLIT_SEED"), Some("7"));
    assert_eq!(value(&env, "HONE_EVAL_OUT"), Some("/eval"));
    assert_eq!(init.env_from.as_ref().unwrap()[0].secret_ref.as_ref().unwrap().name, "data-creds");
    let sc = init.security_context.as_ref().unwrap();
    assert_eq!((sc.read_only_root_filesystem, sc.allow_privilege_escalation), (Some(true), Some(false)));
    let mounts = init.volume_mounts.as_ref().unwrap();
    assert!(mounts.iter().any(|m| m.mount_path == "/eval" && m.read_only.is_none()));
    assert!(mounts.iter().any(|m| m.mount_path.ends_with("/datasets") && m.read_only == Some(true)));

    let verify = &pod.containers[0];
    assert_eq!(verify.name, VERIFY_CONTAINER);
    let env = env_of(verify);
    assert_eq!(value(&env, "HONE_EVAL_DIR"), Some("/eval"));
    assert_eq!(value(&env, "HONE_MODEL_CARD_DIGEST"), Some(CURRENT));
    let expected: ExpectedSignature =
        serde_json::from_str(value(&env, "HONE_EXPECTED_SIGNATURE").unwrap()).unwrap();
    assert_eq!(expected, ExpectedSignature::of(&mv.spec.signature));
    let shared = verify.volume_mounts.as_ref().unwrap().iter().find(|m| m.mount_path == "/eval").unwrap();
    assert_eq!(shared.read_only, Some(true), "verify only reads the split");
    let eval_volume = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == shared.name).unwrap();
    assert!(eval_volume.empty_dir.as_ref().unwrap().size_limit.is_some(), "the split's disk use is bounded");

    // Without an evaluation Dataset the Job is the plain verify Job.
    let job = desired::verify_job(&valid, None);
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert!(pod.init_containers.is_none());
    assert_eq!(value(&env_of(&pod.containers[0]), "HONE_EVAL_DIR"), None);
}

fn evaluating_job() -> Job {
    let mut job = job_with_condition("Complete", None, None);
    let template = json!({"spec": {"initContainers": [{"name": EVAL_SPLIT_CONTAINER}], "containers": [{"name": VERIFY_CONTAINER}]}});
    job.spec = Some(serde_json::from_value(json!({"template": template})).unwrap());
    job
}

/// What the controller computes status from, for `mv` (its spec's digest and evaluation Dataset).
fn input<'a>(
    mv: &'a ModelVersion,
    previous: &'a ModelVersionStatus,
    job: Option<&'a Job>,
    pods: &'a [Pod],
) -> StatusInput<'a> {
    super::status_input(mv, previous, job, pods, &[])
}

const EVALUATED: &str = r#"{"ok":true,"model":"s3://m/run/model.pt","digest":"sha256:1","cardDigest":"sha256:2",
  "evaluation":{"datasetDigest":"sha256:aaaa","samples":180,"metrics":{"accuracy":0.12,"macro_f1":0.1},
  "perClass":[{"class":"0","precision":0.1,"recall":0.1,"f1":0.1,"support":60}],"confusionMatrix":[[6,54,0],[0,0,60],[60,0,0]]}}"#;

#[test]
fn a_measured_evaluation_lands_in_status_with_its_dataset_and_time() {
    let mv = trained_on_digits();
    let previous = ModelVersionStatus::default();
    let job = evaluating_job();
    let pods = [pod_terminated("j", VERIFY_CONTAINER, "2024-01-01T00:09:00Z", &EVALUATED.replace('\n', ""))];
    let s = status::compute(input(&mv, &previous, Some(&job), &pods), &now());
    // Low accuracy does not fail verification: gates decide where it may serve.
    assert_eq!(s.phase, Some(ModelVersionPhase::Ready));
    assert_eq!(s.verified_card_digest.as_deref(), Some("sha256:2"));
    let evaluation = s.evaluation.as_ref().unwrap();
    assert_eq!(evaluation.dataset.as_deref(), Some("digits"));
    assert_eq!((evaluation.samples, evaluation.metrics["accuracy"]), (180, 0.12));
    assert_eq!(evaluation.confusion_matrix.as_ref().unwrap()[2], [60, 0, 0]);
    assert_eq!(evaluation.evaluated_at, Some(now()));
    let evaluated = find_condition(&s.conditions, "Evaluated").unwrap();
    assert_eq!((evaluated.status.as_str(), evaluated.reason.as_str()), ("True", "Measured"));
    assert!(
        evaluated.message.contains("accuracy 0.12") && evaluated.message.contains("180 held-out samples")
    );
    let events = status::events(&previous, &s);
    assert!(events.iter().any(|e| e.reason == "Evaluated" && e.note.contains("Dataset digits")));

    // A later reconcile keeps the time it was measured at: status stays still.
    let later = Time(Timestamp::from_second(1_700_000_600).unwrap());
    let again = status::compute(input(&mv, &s, Some(&job), &pods), &later);
    assert_eq!(again, s);
}

#[test]
fn a_verify_job_that_was_given_a_split_must_report_its_evaluation() {
    let mv = trained_on_digits();
    let previous = ModelVersionStatus::default();
    let job = evaluating_job();
    let silent = r#"{"ok":true,"model":"s3://m/run/model.pt","digest":"sha256:1"}"#;
    let pods = [pod_terminated("j", VERIFY_CONTAINER, "2024-01-01T00:09:00Z", silent)];
    let s = status::compute(input(&mv, &previous, Some(&job), &pods), &now());
    assert_eq!(s.phase, Some(ModelVersionPhase::Failed));
    assert_eq!(find_condition(&s.conditions, "Ready").unwrap().reason, "EvaluationMissing");
}

#[test]
fn eval_split_failures_fail_verification_with_their_reason() {
    let mv = trained_on_digits();
    let previous = ModelVersionStatus::default();
    let job = job_with_condition("Failed", Some("BackoffLimitExceeded"), Some("too many"));
    let changed = r#"{"kind":"error","reason":"DatasetChanged","message":"Dataset content is sha256:b but the model was trained on sha256:a"}"#;
    let pods = [pod_terminated("j", EVAL_SPLIT_CONTAINER, "2024-01-01T00:09:00Z", changed)];
    let s = status::compute(input(&mv, &previous, Some(&job), &pods), &now());
    let ready = find_condition(&s.conditions, "Ready").unwrap();
    assert_eq!((s.phase, ready.reason.as_str()), (Some(ModelVersionPhase::Failed), "DatasetChanged"));
    assert!(ready.message.contains("held-out test split of Dataset digits"), "{}", ready.message);
}

#[test]
fn an_unevaluated_version_says_so_and_a_waiting_one_says_why() {
    let mv = model_version(json!({}));
    let previous = ModelVersionStatus::default();
    let job = job_with_condition("Complete", None, None);
    let ok = r#"{"ok":true,"model":"s3://m/run/model.pt","digest":"sha256:1"}"#;
    let pods = [pod_terminated("j", VERIFY_CONTAINER, "2024-01-01T00:09:00Z", ok)];
    let s = status::compute(input(&mv, &previous, Some(&job), &pods), &now());
    assert_eq!(s.phase, Some(ModelVersionPhase::Ready));
    let evaluated = find_condition(&s.conditions, "Evaluated").unwrap();
    assert_eq!((evaluated.status.as_str(), evaluated.reason.as_str()), ("False", "NoEvaluationDataset"));
    assert!(evaluated.message.contains("track variants skip this version"));

    let plan = EvaluationPlan::Waiting { message: "waiting to evaluate on Dataset digits: Verifying".into() };
    let mut waiting = input(&mv, &previous, None, &[]);
    waiting.plan = &plan;
    let s = status::compute(waiting, &now());
    let ready = find_condition(&s.conditions, "Ready").unwrap();
    assert_eq!((s.phase, ready.reason.as_str()), (Some(ModelVersionPhase::Pending), "WaitingForDataset"));

    let plan = EvaluationPlan::Refused { reason: "DatasetChanged", message: "the split is gone".into() };
    let mut refused = input(&mv, &previous, None, &[]);
    refused.plan = &plan;
    let s = status::compute(refused, &now());
    let ready = find_condition(&s.conditions, "Ready").unwrap();
    assert_eq!((s.phase, ready.reason.as_str()), (Some(ModelVersionPhase::Failed), "DatasetChanged"));

    // Skipped (not required): verified, unevaluated, and saying why.
    let plan = EvaluationPlan::Skipped { reason: "DatasetChanged", message: "the split is gone".into() };
    let mut skipped = input(&mv, &previous, Some(&job), &pods);
    skipped.plan = &plan;
    skipped.evaluation_required = false;
    let s = status::compute(skipped, &now());
    assert_eq!(s.phase, Some(ModelVersionPhase::Ready));
    let evaluated = find_condition(&s.conditions, "Evaluated").unwrap();
    assert_eq!(evaluated.reason, "DatasetChanged");
    assert!(evaluated.message.contains("gate on the trainer's spec.metrics"), "{}", evaluated.message);
}
