//! The lineage tree and its rendering, and the action checks, on objects
//! built from small YAML fixtures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use hone_crds::{Dataset, InferenceService, ModelVersion, TrainingJob};

use crate::action::{self, Action, Refusal, Target};
use crate::lineage::{self, Objects};
use crate::render;

fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
    serde_yaml::from_str(yaml).unwrap()
}

fn dataset() -> Dataset {
    parse(
        "
apiVersion: hone.dev/v1alpha1
kind: Dataset
metadata: {name: digits, namespace: ml}
spec: {source: {uri: 's3://data/digits'}, format: ImageFolder}
status:
  phase: Ready
  samples: 1797
  classes: ['0', '1', '2']
  digest: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
",
    )
}

fn training_job(name: &str, phase: &str, model_version: Option<&str>) -> TrainingJob {
    let mut tj: TrainingJob = parse(&format!(
        "
apiVersion: hone.dev/v1alpha1
kind: TrainingJob
metadata: {{name: {name}, namespace: ml}}
spec:
  datasetRef: {{name: digits}}
  model: {{architecture: mlp}}
  registerAs: {{model: digits}}
status:
  phase: {phase}
  metrics: {{val_accuracy: 0.97222, test_accuracy: 0.96111, train_loss: 0.1}}
  progress: {{epoch: 3, totalEpochs: 10}}
"
    ));
    tj.status.as_mut().unwrap().model_version = model_version.map(str::to_owned);
    tj
}

fn model_version(name: &str, version: i64, job: Option<&str>, served_by: &[&str]) -> ModelVersion {
    let mut mv: ModelVersion = parse(&format!(
        "
apiVersion: hone.dev/v1alpha1
kind: ModelVersion
metadata: {{name: {name}, namespace: ml}}
spec:
  model: digits
  version: {version}
  artifact: {{uri: 's3://models/{name}/model.pt'}}
  signature: {{inputShape: [1, 8, 8], classes: ['0', '1', '2']}}
  metrics: {{val_accuracy: 0.97222, test_accuracy: 0.96111}}
status: {{phase: Ready}}
"
    ));
    mv.spec.lineage =
        job.map(|j| hone_crds::modelversion::Lineage { training_job: Some(j.into()), ..Default::default() });
    mv.status.as_mut().unwrap().served_by = served_by.iter().map(|s| (*s).to_owned()).collect();
    mv
}

/// InferenceService `digits` serving v1 on `a` and rolling out v2 at 10% (step 1 of 2).
fn canary_service() -> InferenceService {
    parse(
        "
apiVersion: hone.dev/v1alpha1
kind: InferenceService
metadata: {name: digits, namespace: ml}
spec:
  variants: [{name: a, modelVersion: digits-v2, weight: 100}]
  rollout: {strategy: Canary, steps: [10, 50]}
status:
  phase: Progressing
  url: http://digits-router.ml.svc:8080
  variants: [{name: a, modelVersion: digits-v1, weight: 100, replicas: 2, readyReplicas: 2}]
  rollout: {variant: a, fromVersion: digits-v1, toVersion: digits-v2, step: 0, canaryWeight: 10}
  conditions:
  - {type: Ready, status: 'True', reason: Serving, message: ok, lastTransitionTime: '2026-01-01T00:00:00Z'}
  - {type: RolloutProgressing, status: 'True', reason: CanaryStep, message: 'step 1 of 2', lastTransitionTime: '2026-01-01T00:00:00Z'}
",
    )
}

fn world() -> Objects {
    Objects {
        datasets: vec![dataset()],
        training_jobs: vec![
            training_job("digits-train", "Succeeded", Some("digits-v1")),
            training_job("digits-train-2", "Succeeded", None),
        ],
        model_versions: vec![
            model_version("digits-v1", 1, Some("digits-train"), &["digits"]),
            model_version("digits-v2", 2, Some("digits-train-2"), &["digits"]),
            model_version("imported-v1", 1, None, &[]),
        ],
        inference_services: vec![canary_service()],
    }
}

#[test]
fn the_tree_follows_dataset_ref_model_version_lineage_and_serving() {
    let tree = lineage::build("ml", &world());
    let names: Vec<(&str, &str)> = tree.roots.iter().map(|n| (n.kind, n.name.as_str())).collect();
    assert_eq!(
        names,
        [("Dataset", "digits"), ("ModelVersion", "imported-v1")],
        "imported versions are roots"
    );
    let jobs = &tree.roots[0].children;
    assert_eq!(jobs.len(), 2);
    // Found by status.modelVersion, and by spec.lineage.trainingJob.
    assert_eq!(jobs[0].children[0].name, "digits-v1");
    assert_eq!(jobs[1].children[0].name, "digits-v2");
    // The service serves v1 and rolls out v2: under both.
    assert_eq!(jobs[0].children[0].children[0].name, "digits");
    assert_eq!(jobs[1].children[0].children[0].name, "digits");
    let isvc = &jobs[0].children[0].children[0];
    assert_eq!(
        (isvc.phase.as_str(), isvc.reason.as_deref(), isvc.message.as_deref()),
        ("Progressing", Some("CanaryStep"), Some("step 1 of 2"))
    );
    assert_eq!(tree.roots[0].reason, None, "a Ready object has no reason");
}

#[test]
fn the_text_tree_shows_phases_reasons_and_key_metrics() {
    let text = render::text(&[lineage::build("ml", &world())]);
    let expected = "\
Namespace ml
Dataset/digits  Ready  samples=1797  classes=3
│     digest: sha256:0123456789ab
├── TrainingJob/digits-train  Succeeded  val_accuracy=0.9722  test_accuracy=0.9611
│   └── ModelVersion/digits-v1  Ready  val_accuracy=0.9722  test_accuracy=0.9611
│       │     model: digits v1
│       └── InferenceService/digits  Progressing (CanaryStep: step 1 of 2)  canaryWeight=10
│                 variant a: digits-v1, weight 100%, 2/2 ready
│                 rollout: variant a: digits-v1 -> digits-v2
│                 step: 1/2
│                 url: http://digits-router.ml.svc:8080
└── TrainingJob/digits-train-2  Succeeded  val_accuracy=0.9722  test_accuracy=0.9611
    └── ModelVersion/digits-v2  Ready  val_accuracy=0.9722  test_accuracy=0.9611
        │     model: digits v2
        └── InferenceService/digits  Progressing (CanaryStep: step 1 of 2)  canaryWeight=10
                  variant a: digits-v1, weight 100%, 2/2 ready
                  rollout: variant a: digits-v1 -> digits-v2
                  step: 1/2
                  url: http://digits-router.ml.svc:8080
ModelVersion/imported-v1  Ready  val_accuracy=0.9722  test_accuracy=0.9611
      model: digits v1
";
    assert_eq!(text, expected, "\n{text}");
}

#[test]
fn failures_and_missing_parents_are_explained() {
    let mut failed = training_job("broken", "Failed", None);
    let status = failed.status.as_mut().unwrap();
    status.failure_reason = Some(hone_crds::trainingjob::FailureReason::DeadlineExceeded);
    status.message = Some("activeDeadlineSeconds 60 passed".into());
    failed.spec.dataset_ref.name = "gone".into();
    let mut running = training_job("running", "Running", None);
    running.status.as_mut().unwrap().metrics = None;
    let mut lonely: InferenceService = canary_service();
    lonely.metadata.name = Some("lonely".into());
    lonely.spec.variants[0].model_version = Some("nowhere".into());
    lonely.status = None;
    let objects = Objects {
        datasets: vec![dataset()],
        training_jobs: vec![failed, running],
        inference_services: vec![lonely],
        ..Default::default()
    };
    let text = render::text(&[lineage::build("ml", &objects)]);
    assert!(text.contains("└── TrainingJob/running  Running\n"), "{text}");
    assert!(text.contains("      epoch: 3/10"), "{text}");
    assert!(
        text.contains("TrainingJob/broken  Failed (DeadlineExceeded: activeDeadlineSeconds 60 passed)"),
        "{text}"
    );
    assert!(text.contains("dataset: gone (not found)"), "{text}");
    assert!(text.contains("InferenceService/lonely  Unknown\n"), "{text}");
    assert!(text.contains("variant a: nowhere (spec), weight 100%"), "{text}");
}

#[test]
fn measured_evaluations_and_skipped_versions_are_shown() {
    let mut measured = model_version("digits-v3", 3, None, &[]);
    measured.status.as_mut().unwrap().evaluation = Some(parse(
        "{dataset: digits, datasetDigest: 'sha256:d', samples: 180, metrics: {accuracy: 0.1222, macro_f1: 0.09}}",
    ));
    let mut unmeasured = model_version("digits-v4", 4, None, &[]);
    unmeasured.status.as_mut().unwrap().conditions = vec![parse(
        "{type: Evaluated, status: 'False', reason: NoEvaluationDataset, message: 'not evaluated: no evaluation Dataset', \
         lastTransitionTime: '2024-01-01T00:00:00Z'}",
    )];
    let mut service = canary_service();
    service.status.as_mut().unwrap().variants[0].gate_failures = vec!["digits-v3".into(), "digits-v4".into()];
    let objects = Objects {
        model_versions: vec![measured, unmeasured],
        inference_services: vec![service],
        ..Default::default()
    };
    let text = render::text(&[lineage::build("ml", &objects)]);
    assert!(
        text.contains("ModelVersion/digits-v3  Ready  accuracy=0.1222  macro_f1=0.09  val_accuracy=0.9722"),
        "{text}"
    );
    assert!(text.contains("evaluated: on 180 held-out samples of Dataset digits"), "{text}");
    assert!(text.contains("evaluation: NoEvaluationDataset: not evaluated: no evaluation Dataset"), "{text}");
    assert!(text.contains("variant a skips: digits-v3, digits-v4 (they fail a minMetrics gate)"), "{text}");
}

#[test]
fn a_name_keeps_only_the_branches_through_it() {
    let tree = lineage::only(lineage::build("ml", &world()), "digits-v2").unwrap();
    assert_eq!(tree.roots.len(), 1);
    let jobs = &tree.roots[0].children;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].name, "digits-train-2");
    assert_eq!(jobs[0].children[0].children[0].name, "digits", "with everything below it");
    assert!(lineage::only(lineage::build("ml", &world()), "nothing").is_none());
}

#[test]
fn json_output_is_the_same_tree() {
    let json: serde_json::Value =
        serde_json::from_str(&render::json(&[lineage::build("ml", &world())])).unwrap();
    let dataset = &json["namespaces"][0]["roots"][0];
    assert_eq!(json["namespaces"][0]["namespace"], "ml");
    assert_eq!((dataset["kind"].as_str(), dataset["phase"].as_str()), (Some("Dataset"), Some("Ready")));
    let mv = &dataset["children"][0]["children"][0];
    assert_eq!(mv["details"][1], serde_json::json!({"name": "val_accuracy", "value": 0.97222}));
    let isvc = &mv["children"][0];
    assert_eq!(isvc["reason"], "CanaryStep");
    let canary = isvc["details"].as_array().unwrap().iter().find(|d| d["name"] == "canaryWeight").unwrap();
    assert_eq!(canary["value"], 10);
}

#[test]
fn promote_needs_a_rollout_in_progress_of_the_named_variant() {
    let isvc = canary_service();
    let Ok(Target::Rollout(rollout)) = action::check(&isvc, Action::Promote, None) else { panic!() };
    assert_eq!(rollout.to_version, "digits-v2");
    assert!(matches!(action::check(&isvc, Action::Rollback, Some("a")), Ok(Target::Rollout(_))));
    let other = action::check(&isvc, Action::Rollback, Some("b")).unwrap_err();
    assert!(matches!(other, Refusal::OtherVariant { .. }));
    assert!(other.to_string().contains("rolling out variant a, not b"), "{other}");
    let none = action::check(&idle(&isvc, &[]), Action::Promote, None).unwrap_err();
    assert_eq!(
        none.to_string(),
        "InferenceService ml/digits has no rollout in progress (phase Ready): there is nothing to promote"
    );
    // Promote never goes back in history.
    let promoted = idle(&isvc, &[("digits-v1", Some("Replaced")), ("digits-v2", None)]);
    assert!(matches!(action::check(&promoted, Action::Promote, None), Err(Refusal::NoRollout { .. })));
}

/// `isvc` with no rollout, phase Ready, serving digits-v2 on `a`, with
/// `history` of `a` (version, outcome of a closed entry or `None` for the open one).
fn idle(isvc: &InferenceService, history: &[(&str, Option<&str>)]) -> InferenceService {
    let mut idle = isvc.clone();
    let status = idle.status.as_mut().unwrap();
    status.rollout = None;
    status.phase = Some(hone_crds::inferenceservice::InferenceServicePhase::Ready);
    status.variants[0].model_version = Some("digits-v2".into());
    status.history = history
        .iter()
        .map(|(version, outcome)| {
            parse(&format!(
                "{{variant: a, version: {version}, from: '2026-01-01T00:00:00Z', {}}}",
                match outcome {
                    Some(outcome) => format!("to: '2026-01-02T00:00:00Z', outcome: {outcome}"),
                    None => "outcome: Serving".to_owned(),
                }
            ))
        })
        .collect();
    idle
}

#[test]
fn rollback_without_a_rollout_needs_a_previous_good_version() {
    let promoted = idle(&canary_service(), &[("digits-v1", Some("Replaced")), ("digits-v2", None)]);
    let expected =
        Target::Previous { variant: "a".into(), current: "digits-v2".into(), previous: "digits-v1".into() };
    assert_eq!(action::check(&promoted, Action::Rollback, None), Ok(expected.clone()));
    assert_eq!(action::check(&promoted, Action::Rollback, Some("a")), Ok(expected));
    // A version that was rolled back or aborted is no version to go back to.
    for outcome in ["RolledBack", "Aborted"] {
        let bad = idle(&canary_service(), &[("digits-v1", Some(outcome)), ("digits-v2", None)]);
        let refused = action::check(&bad, Action::Rollback, None).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "InferenceService ml/digits has no rollout in progress (phase Ready) and variant a has no previous \
             good version in status.history (one it served before that was neither rolled back nor aborted): \
             there is nothing to roll back"
        );
    }
    let fresh = idle(&canary_service(), &[("digits-v2", None)]);
    assert!(matches!(action::check(&fresh, Action::Rollback, None), Err(Refusal::NothingToRollBack { .. })));
    // Several variants: name one.
    let mut two = promoted.clone();
    two.spec.variants.push(parse("{name: b, modelVersion: digits-v1, weight: 0}"));
    let refused = action::check(&two, Action::Rollback, None).unwrap_err();
    assert!(refused.to_string().contains("several variants (a, b): name the one to roll back"), "{refused}");
    assert!(matches!(action::check(&two, Action::Rollback, Some("a")), Ok(Target::Previous { .. })));
    // A rollout of another variant in progress: a rollback of this one still goes back.
    let mut rolling_b = two.clone();
    rolling_b.status.as_mut().unwrap().rollout =
        Some(parse("{variant: b, fromVersion: digits-v1, toVersion: digits-v2, step: 0, canaryWeight: 10}"));
    assert!(matches!(action::check(&rolling_b, Action::Rollback, Some("a")), Ok(Target::Previous { .. })));
    assert!(matches!(action::check(&rolling_b, Action::Rollback, None), Ok(Target::Rollout(_))));
}

#[test]
fn the_request_is_three_annotations_with_a_fresh_id() {
    let patch = action::patch(Action::Rollback, "id-1", None);
    let annotations = &patch["metadata"]["annotations"];
    assert_eq!(annotations["hone.dev/rollout-action"], "rollback");
    assert_eq!(annotations["hone.dev/rollout-action-id"], "id-1");
    assert!(annotations["hone.dev/rollout-action-variant"].is_null(), "an earlier variant is removed");
    assert_eq!(
        action::patch(Action::Promote, "x", Some("a"))["metadata"]["annotations"]["hone.dev/rollout-action-variant"],
        "a"
    );
    assert_ne!(action::request_id(), action::request_id());
}
