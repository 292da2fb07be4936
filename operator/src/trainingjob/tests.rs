//! Unit tests of the TrainingJob validation, Job builder and status mapping.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use hone_crds::conditions::find_condition;
use hone_crds::trainingjob::{FailureReason, TrainingJobPhase, TrainingJobStatus, WorkersStatus};
use hone_crds::{Dataset, StorageLocation, TrainingJob};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;
use serde_json::json;

use super::desired::{self, Desired, TRAINER_CONTAINER};
use super::status::{self, DatasetGate, StatusInput};
use super::validate::{Error, ValidTrainingJob, validate};
use crate::config::OperatorConfig;
use crate::testutil::{job_with_condition, pod_terminated};

const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const BASE: &str =
    "datasetRef: {name: digits}\nmodel: {architecture: simple-cnn}\nregisterAs: {model: digits-cnn}\n";

fn training_job(extra: &str) -> TrainingJob {
    let spec = serde_yaml::from_str(&format!("{BASE}{extra}")).expect("fixture spec parses");
    let mut tj = TrainingJob::new("cnn", spec);
    tj.metadata = ObjectMeta {
        name: Some("cnn".into()),
        namespace: Some("ml".into()),
        uid: Some("tj-uid".into()),
        generation: Some(1),
        ..Default::default()
    };
    tj
}

fn ready_dataset(spec: &str) -> Dataset {
    let mut ds: Dataset = serde_json::from_value(json!({
        "apiVersion": "hone.dev/v1alpha1", "kind": "Dataset",
        "metadata": {"name": "digits", "namespace": "ml"},
        "spec": serde_yaml::from_str::<serde_json::Value>(spec).unwrap(),
        "status": {"phase": "Ready", "digest": DIGEST, "conditions": [{
            "type": "Ready", "status": "True", "reason": "Verified", "message": "ok",
            "lastTransitionTime": "2024-01-01T00:00:00Z"
        }]}
    }))
    .unwrap();
    ds.metadata.uid = Some("ds-uid".into());
    ds
}

fn config() -> OperatorConfig {
    OperatorConfig { default_output: Some(StorageLocation::new("s3://models/")), ..OperatorConfig::default() }
}

fn valid(extra: &str) -> ValidTrainingJob {
    let ds = ready_dataset(
        "source: {uri: s3://data/digits/, secretRef: {name: s3-creds}}\nimage: {width: 32, height: 32, channels: 1}",
    );
    validate(&training_job(extra), Some(&ds), &config()).unwrap()
}

fn container(desired: &Desired) -> Container {
    desired.job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].clone()
}

fn env(desired: &Desired) -> BTreeMap<String, String> {
    container(desired).env.unwrap().into_iter().map(|e| (e.name, e.value.unwrap_or_default())).collect()
}

// ---- validate ----

#[test]
fn a_missing_dataset_blocks_and_a_verifying_one_waits() {
    let tj = training_job("");
    match validate(&tj, None, &config()) {
        Err(Error::DatasetNotReady { blocked: true, message }) => assert!(message.contains("digits")),
        other => panic!("{other:?}"),
    }
    let mut ds = ready_dataset("source: {uri: s3://data/digits/}");
    ds.status = Some(serde_json::from_value(json!({"phase": "Verifying"})).unwrap());
    assert!(matches!(
        validate(&tj, Some(&ds), &config()),
        Err(Error::DatasetNotReady { blocked: false, .. })
    ));
}

#[test]
fn the_pinned_digest_wins_over_the_datasets_current_one() {
    let mut tj = training_job("");
    tj.status =
        Some(TrainingJobStatus { dataset_digest: Some("sha256:pinned".into()), ..Default::default() });
    let ds = ready_dataset("source: {uri: s3://data/digits/}");
    assert_eq!(validate(&tj, Some(&ds), &config()).unwrap().dataset.digest, "sha256:pinned");
}

#[test]
fn output_is_required_and_writable() {
    let ds = ready_dataset("source: {uri: s3://data/digits/}");
    let no_default = OperatorConfig::default();
    let Err(Error::InvalidSpec(message)) = validate(&training_job(""), Some(&ds), &no_default) else {
        panic!()
    };
    assert!(message.contains("--default-output"), "{message}");
    let http = training_job("output: {uri: 'https://example.invalid/models'}");
    let Err(Error::InvalidSpec(message)) = validate(&http, Some(&ds), &config()) else { panic!() };
    assert!(message.contains("read-only"), "{message}");
}

#[test]
fn the_built_in_trainer_takes_several_workers_and_gpus_must_agree() {
    let ds = ready_dataset("source: {uri: s3://data/digits/}");
    assert!(validate(&training_job("workers: 2"), Some(&ds), &config()).is_ok());
    let clash = "gpus: 1\nresources: {limits: {nvidia.com/gpu: '2'}}";
    let Err(Error::InvalidSpec(message)) = validate(&training_job(clash), Some(&ds), &config()) else {
        panic!()
    };
    assert!(message.contains("set one of them"), "{message}");
    // Several GPUs in one pod: the built-in trainer refuses them up front; a BYO image may use them.
    for many in ["gpus: 4\nworkers: 2", "resources: {limits: {nvidia.com/gpu: '4'}}\nworkers: 2"] {
        let Err(Error::InvalidSpec(message)) = validate(&training_job(many), Some(&ds), &config()) else {
            panic!("{many} was accepted")
        };
        assert!(message.contains("set gpus: 1 and workers: 8"), "{message}");
    }
    assert!(validate(&training_job("gpus: 4\nimage: my/ddp:1"), Some(&ds), &config()).is_ok());
    assert!(validate(&training_job("gpus: 1\nworkers: 2"), Some(&ds), &config()).is_ok());
}

// ---- desired ----

#[test]
fn training_job_carries_every_training_field() {
    let desired = desired::build(&valid(
        "hyperparameters: {epochs: 5, batchSize: 64, learningRate: 0.01, optimizer: adamw, scheduler: cosine, \
         warmupEpochs: 1, earlyStoppingPatience: 3, seed: 7, weightDecay: 0.0001, \
         augmentation: {horizontalFlip: true, rotationDegrees: 10, colorJitter: 0.2}}\n\
         tracking: {mlflow: {uri: 'http://mlflow:5000', experiment: digits}}",
    ));
    let env = env(&desired);
    let expected = [
        ("HONE_DATASET_SOURCE", "s3://data/digits/"),
        ("HONE_DATASET_FORMAT", "ImageFolder"),
        ("HONE_DATASET_DIGEST", DIGEST),
        ("HONE_IMAGE_WIDTH", "32"),
        ("HONE_IMAGE_CHANNELS", "1"),
        ("HONE_SPLIT_SEED", "42"),
        ("HONE_OUTPUT", "s3://models/cnn/tj-uid"),
        ("HONE_ARCHITECTURE", "simple-cnn"),
        ("HONE_EPOCHS", "5"),
        ("HONE_BATCH_SIZE", "64"),
        ("HONE_LEARNING_RATE", "0.01"),
        ("HONE_OPTIMIZER", "adamw"),
        ("HONE_WEIGHT_DECAY", "0.0001"),
        ("HONE_SCHEDULER", "cosine"),
        ("HONE_WARMUP_EPOCHS", "1"),
        ("HONE_EARLY_STOPPING_PATIENCE", "3"),
        ("HONE_SEED", "7"),
        ("HONE_AUG_HORIZONTAL_FLIP", "true"),
        ("HONE_AUG_ROTATION_DEGREES", "10"),
        ("HONE_AUG_COLOR_JITTER", "0.2"),
        ("HONE_DEVICE", "cpu"),
        ("HONE_MLFLOW_URI", "http://mlflow:5000"),
        ("HONE_MLFLOW_EXPERIMENT", "digits"),
        ("HONE_RUN_NAME", "cnn"),
    ];
    for (name, value) in expected {
        assert_eq!(env.get(name).map(String::as_str), Some(value), "{name}");
    }
    let c = container(&desired);
    assert_eq!(c.args, Some(vec!["train".to_owned()]));
    assert_eq!(c.image.as_deref(), Some("hone.local/trainer:dev"));
    assert_eq!(c.env_from.unwrap()[0].secret_ref.as_ref().unwrap().name, "s3-creds");
    assert_eq!(c.termination_message_path.as_deref(), Some("/dev/termination-log"));
    let sc = c.security_context.unwrap();
    assert_eq!((sc.run_as_non_root, sc.read_only_root_filesystem), (Some(true), Some(true)));
    let meta = &desired.job.metadata;
    assert!(meta.name.as_ref().unwrap().starts_with("cnn-train-"));
    assert_eq!(meta.labels.as_ref().unwrap()["hone.dev/trainingjob"], "cnn");
    assert_eq!(meta.owner_references.as_ref().unwrap()[0].kind, "TrainingJob");
    assert!(desired.service.is_none());
}

#[test]
fn gpus_node_placement_and_run_policy_map_to_the_job() {
    let desired = desired::build(&valid(
        "gpus: 2\nimage: my/trainer:1\nnodeSelector: {gpu: a100}\ntolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]\n\
         runPolicy: {backoffLimit: 2, activeDeadlineSeconds: 3600, ttlSecondsAfterFinished: 600, suspend: true}",
    ));
    let spec = desired.job.spec.clone().unwrap();
    assert_eq!(spec.backoff_limit, Some(2));
    assert_eq!(spec.active_deadline_seconds, Some(3600));
    assert_eq!(spec.ttl_seconds_after_finished, Some(600));
    assert_eq!(spec.suspend, Some(true));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.node_selector.unwrap()["gpu"], "a100");
    assert_eq!(pod.tolerations.unwrap()[0].key.as_deref(), Some("nvidia.com/gpu"));
    let limits = container(&desired).resources.unwrap().limits.unwrap();
    assert_eq!(limits["nvidia.com/gpu"].0, "2");
    assert_eq!(env(&desired)["HONE_DEVICE"], "cuda");
}

#[test]
fn a_disrupted_pod_is_not_a_failed_attempt_and_the_trainer_serves_its_figures() {
    let desired = desired::build(&valid(""));
    let rules = desired.job.spec.clone().unwrap().pod_failure_policy.unwrap().rules;
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].action, "Ignore");
    let on = rules[0].on_pod_conditions.clone().unwrap();
    assert_eq!((on[0].type_.as_str(), on[0].status.as_str()), ("DisruptionTarget", "True"));
    assert_eq!(env(&desired)["HONE_METRICS_ADDR"], "0.0.0.0:9091");
    let port = &container(&desired).ports.unwrap()[0];
    assert_eq!((port.name.as_deref(), port.container_port), (Some("metrics"), 9091));
}

#[test]
fn queue_name_labels_the_job_and_creates_it_suspended() {
    let desired = desired::build(&valid("queueName: team-a"));
    assert_eq!(desired.job.metadata.labels.as_ref().unwrap()["kueue.x-k8s.io/queue-name"], "team-a");
    assert_eq!(desired.job.spec.as_ref().unwrap().suspend, Some(true));
    assert_eq!(desired::build(&valid("")).job.spec.unwrap().suspend, Some(false));
}

#[test]
fn several_workers_get_an_indexed_job_a_headless_service_and_torchrun_env() {
    let desired = desired::build(&valid("workers: 3\nimage: registry.example/ddp:1"));
    let name = desired.job.metadata.name.clone().unwrap();
    let spec = desired.job.spec.clone().unwrap();
    assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
    assert_eq!((spec.completions, spec.parallelism), (Some(3), Some(3)));
    assert_eq!(spec.template.spec.as_ref().unwrap().subdomain.as_deref(), Some(name.as_str()));
    let service = desired.service.clone().unwrap();
    assert_eq!(service.metadata.name.as_deref(), Some(name.as_str()));
    assert_eq!(service.spec.as_ref().unwrap().cluster_ip.as_deref(), Some("None"));
    let env = env(&desired);
    assert_eq!(env["MASTER_ADDR"], format!("{name}-0.{name}"));
    assert_eq!(env["MASTER_PORT"], "29500");
    assert_eq!(env["WORLD_SIZE"], "3");
    let rank = container(&desired).env.unwrap().into_iter().find(|e| e.name == "RANK").unwrap();
    assert!(rank.value_from.unwrap().field_ref.unwrap().field_path.contains("job-completion-index"));
    assert_eq!(container(&desired).image.as_deref(), Some("registry.example/ddp:1"));
    assert_eq!(spec.backoff_limit, Some(18), "6 failed attempts of 3 workers each");
    let limited = desired::build(&valid("workers: 2\nrunPolicy: {backoffLimit: 1}"));
    assert_eq!(limited.job.spec.unwrap().backoff_limit, Some(2));
    assert_eq!(
        desired::build(&valid("runPolicy: {backoffLimit: 1}")).job.spec.unwrap().backoff_limit,
        Some(1)
    );
}

#[test]
fn training_pods_get_threads_from_their_cpu_limit() {
    let threads = |resources: &str| env(&desired::build(&valid(resources))).get("HONE_THREADS").cloned();
    assert_eq!(threads(""), None, "no CPU limit: libtorch's own choice");
    assert_eq!(threads("resources: {requests: {cpu: 2500m}}"), None, "a request does not cap the pod");
    assert_eq!(threads("resources: {limits: {cpu: 500m}}").as_deref(), Some("1"));
    assert_eq!(threads("resources: {limits: {cpu: '2'}, requests: {cpu: '1'}}").as_deref(), Some("2"));
    assert_eq!(threads("resources: {limits: {cpu: 2500m}}").as_deref(), Some("3"));
    assert_eq!(threads("resources: {limits: {cpu: '1.5'}}").as_deref(), Some("2"));
    assert_eq!(threads("resources: {limits: {cpu: 0m}}"), None);
    let own = "resources: {limits: {cpu: '4'}}\nenv: [{name: HONE_THREADS, value: '1'}]";
    assert_eq!(threads(own).as_deref(), Some("1"), "spec.env wins");
}

#[test]
fn bring_your_own_command_args_and_env_override() {
    let desired = desired::build(&valid(
        "image: my/trainer:1\ncommand: [python, train.py]\nargs: [--fast]\nenv: [{name: HONE_EPOCHS, value: '1'}, {name: EXTRA, value: x}]",
    ));
    let c = container(&desired);
    assert_eq!(c.command, Some(vec!["python".to_owned(), "train.py".to_owned()]));
    assert_eq!(c.args, Some(vec!["--fast".to_owned()]));
    let vars = c.env.unwrap();
    assert_eq!(vars.iter().filter(|e| e.name == "HONE_EPOCHS").count(), 1, "no duplicate names under SSA");
    let env = env(&desired);
    assert_eq!(env["HONE_EPOCHS"], "1");
    assert_eq!(env["EXTRA"], "x");
}

#[test]
fn pvc_output_is_mounted_writable_and_pvc_source_read_only() {
    let ds = ready_dataset("source: {uri: pvc://data/digits}");
    let tj = training_job("output: {uri: pvc://models/out}");
    let desired = desired::build(&validate(&tj, Some(&ds), &config()).unwrap());
    let mounts = container(&desired).volume_mounts.unwrap();
    let find = |path: &str| mounts.iter().find(|m| m.mount_path == path).unwrap().read_only;
    assert_eq!(find("/mnt/pvc/data"), Some(true));
    assert_eq!(find("/mnt/pvc/models"), Some(false));
    assert_eq!(env(&desired)["HONE_PVC_ROOT"], "/mnt/pvc");
}

#[test]
fn data_loading_sets_the_mode_reads_and_a_cache_volume() {
    let plain = desired::build(&valid(""));
    assert!(!env(&plain).contains_key("HONE_DATA_MODE"), "unset: the trainer's own default (auto)");
    let volumes = |d: &desired::Desired| d.job.spec.clone().unwrap().template.spec.unwrap().volumes.unwrap();
    assert!(!volumes(&plain).iter().any(|v| v.name == "data-cache"));

    let desired = desired::build(&valid("dataLoading: {mode: stream, reads: 8, cache: {sizeLimit: 20Gi}}"));
    let env = env(&desired);
    assert_eq!(env["HONE_DATA_MODE"], "stream");
    assert_eq!(env["HONE_DATA_READS"], "8");
    assert_eq!(env["HONE_DATA_CACHE"], desired::DATA_CACHE_PATH);
    let cache = volumes(&desired).into_iter().find(|v| v.name == "data-cache").unwrap();
    assert_eq!(cache.empty_dir.unwrap().size_limit.unwrap().0, "20Gi");
    let mount =
        container(&desired).volume_mounts.unwrap().into_iter().find(|m| m.name == "data-cache").unwrap();
    assert_eq!(mount.mount_path, desired::DATA_CACHE_PATH);
    assert_ne!(mount.read_only, Some(true));

    let claimed = desired::build(&valid("dataLoading: {cache: {claimName: decoded, sizeLimit: 1Gi}}"));
    let cache = volumes(&claimed).into_iter().find(|v| v.name == "data-cache").unwrap();
    assert!(cache.empty_dir.is_none(), "a claim replaces the emptyDir");
    assert_eq!(cache.persistent_volume_claim.unwrap().claim_name, "decoded");
    assert_eq!(self::env(&claimed)["HONE_DATA_MODE"], "auto");
}

#[test]
fn job_name_is_stable_per_trainingjob() {
    let a = desired::job_name(&valid(""));
    assert_eq!(a, desired::job_name(&valid("")));
    let mut other = valid("");
    other.uid = "another-uid".into();
    assert_ne!(a, desired::job_name(&other));
}

// ---- status ----

fn time(seconds: i64) -> Time {
    Time(Timestamp::from_second(1_700_000_000 + seconds).unwrap())
}

fn ready_gate() -> DatasetGate {
    DatasetGate::Ready { digest: DIGEST.into() }
}

fn compute(job: Option<&Job>, pods: &[Pod], mv: Option<&str>) -> TrainingJobStatus {
    let previous = TrainingJobStatus::default();
    let gate = ready_gate();
    status::compute(
        StatusInput {
            generation: Some(1),
            previous: &previous,
            dataset: &gate,
            job,
            pods,
            model_version: mv,
        },
        &time(0),
    )
}

fn cond(status: &TrainingJobStatus, type_: &str) -> (String, String) {
    let c = find_condition(&status.conditions, type_).unwrap();
    (c.status.clone(), c.reason.clone())
}

fn named(mut job: Job) -> Job {
    job.metadata.name = Some("cnn-train-1".into());
    job
}

fn trainer_pod(message: &str) -> Pod {
    pod_terminated("cnn-train-1", TRAINER_CONTAINER, "2024-01-01T00:09:00Z", message)
}

#[test]
fn waiting_for_the_dataset_is_pending_not_failed() {
    let previous = TrainingJobStatus::default();
    let gate = DatasetGate::Waiting { message: "Dataset digits is Verifying".into() };
    let input = StatusInput {
        generation: Some(1),
        previous: &previous,
        dataset: &gate,
        job: None,
        pods: &[],
        model_version: None,
    };
    let s = status::compute(input, &time(0));
    assert_eq!(s.phase, Some(TrainingJobPhase::Pending));
    assert_eq!(cond(&s, "Ready"), ("False".into(), "DatasetNotReady".into()));
    assert_eq!(s.failure_reason, None);
    let blocked = DatasetGate::Blocked { message: "Dataset digits does not exist".into() };
    let s = status::compute(StatusInput { dataset: &blocked, ..input }, &time(0));
    assert_eq!(s.failure_reason, Some(FailureReason::DatasetNotReady));
}

#[test]
fn a_running_job_is_running_and_records_the_digest() {
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "cnn-train-1"}, "spec": {"template": {}},
        "status": {"active": 1, "startTime": "2024-01-01T00:00:00Z"}
    }))
    .unwrap();
    let s = compute(Some(&job), &[], None);
    assert_eq!(s.phase, Some(TrainingJobPhase::Running));
    assert_eq!(cond(&s, "Running").0, "True");
    assert_eq!(s.job_name.as_deref(), Some("cnn-train-1"));
    assert_eq!(s.dataset_digest.as_deref(), Some(DIGEST));
    assert_eq!(s.attempts, Some(1));
    assert!(s.start_time.is_some());
}

#[test]
fn a_finished_pod_before_the_job_completes_is_still_running() {
    // The Job controller marks the Job a moment after its pod succeeded:
    // the phase must not drop back to Pending in between.
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "cnn-train-1"}, "spec": {"template": {}},
        "status": {"active": 0, "startTime": "2024-01-01T00:00:00Z"}
    }))
    .unwrap();
    let mut pod = trainer_pod("{}");
    pod.status.get_or_insert_with(Default::default).phase = Some("Succeeded".to_owned());
    let s = compute(Some(&job), &[pod], None);
    assert_eq!(s.phase, Some(TrainingJobPhase::Running));
    assert_eq!(cond(&s, "Running").0, "True");
    let starting = compute(Some(&job), &[], None);
    assert_eq!(starting.phase, Some(TrainingJobPhase::Pending));
}

#[test]
fn a_suspended_job_is_suspended() {
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "cnn-train-1", "labels": {"kueue.x-k8s.io/queue-name": "team-a"}},
        "spec": {"suspend": true, "template": {}}, "status": {}
    }))
    .unwrap();
    let s = compute(Some(&job), &[], None);
    assert_eq!(s.phase, Some(TrainingJobPhase::Suspended));
    assert_eq!(cond(&s, "Suspended").0, "True");
    assert!(s.message.unwrap().contains("team-a"));
}

#[test]
fn success_maps_metrics_artifact_and_model_version() {
    let summary = json!({
        "kind": "train", "epoch": 5, "totalEpochs": 5, "metrics": {"val_accuracy": 0.97},
        "artifactUri": "s3://models/cnn/tj-uid/model.pt", "artifactDigest": DIGEST, "artifactSizeBytes": 1000,
        "datasetDigest": DIGEST, "inputShape": [1, 32, 32]
    });
    let job = named(job_with_condition("Complete", None, None));
    let registering = compute(Some(&job), &[trainer_pod(&summary.to_string())], None);
    assert_eq!(registering.phase, Some(TrainingJobPhase::Running));
    assert_eq!(cond(&registering, "Ready"), ("False".into(), "Registering".into()));
    let done = compute(Some(&job), &[trainer_pod(&summary.to_string())], Some("digits-cnn-v1"));
    assert_eq!(done.phase, Some(TrainingJobPhase::Succeeded));
    assert_eq!(cond(&done, "Ready").0, "True");
    assert_eq!(cond(&done, "Succeeded").0, "True");
    assert_eq!(done.metrics.unwrap()["val_accuracy"], 0.97);
    assert_eq!(done.progress.unwrap().epoch, 5);
    let artifact = done.artifact.unwrap();
    assert_eq!((artifact.uri.as_str(), artifact.size_bytes), ("s3://models/cnn/tj-uid/model.pt", Some(1000)));
    assert_eq!(done.model_version.as_deref(), Some("digits-cnn-v1"));
    assert!(done.completion_time.is_some());
}

#[test]
fn with_several_workers_rank_0_tells_the_outcome_and_status_counts_workers() {
    let ranked = |index: &str, message: &str, ready: bool| {
        let mut pod = trainer_pod(message);
        pod.metadata.annotations =
            Some([("batch.kubernetes.io/job-completion-index".to_owned(), index.to_owned())].into());
        let status = pod.status.get_or_insert_with(Default::default);
        if ready {
            status.phase = Some("Running".to_owned());
            status.conditions = Some(vec![k8s_openapi::api::core::v1::PodCondition {
                type_: "Ready".to_owned(),
                status: "True".to_owned(),
                ..Default::default()
            }]);
        }
        pod
    };
    let summary = json!({
        "kind": "train", "epoch": 3, "totalEpochs": 3, "metrics": {"val_accuracy": 0.9},
        "artifactUri": "s3://models/cnn/tj-uid/model.pt", "artifactDigest": DIGEST, "artifactSizeBytes": 10,
        "inputShape": [1, 8, 8]
    })
    .to_string();
    let worker = r#"{"kind":"error","reason":"Worker","message":"rank 1 of 2: rank 0 writes the summary"}"#;
    let mut job = named(job_with_condition("Complete", None, None));
    let spec = job.spec.get_or_insert_with(Default::default);
    spec.completions = Some(2);
    job.status.get_or_insert_with(Default::default).succeeded = Some(2);
    // Rank 1 finished last: its message must not stand for the run.
    let mut late = ranked("1", worker, false);
    if let Some(t) = late
        .status
        .as_mut()
        .and_then(|s| s.container_statuses.as_mut())
        .and_then(|c| c[0].state.as_mut()?.terminated.as_mut())
    {
        t.finished_at = Some(time(3600));
    }
    let s = compute(Some(&job), &[ranked("0", &summary, false), late], Some("digits-v1"));
    assert_eq!(s.phase, Some(TrainingJobPhase::Succeeded), "{:?}", s.message);
    assert_eq!(s.metrics.unwrap()["val_accuracy"], 0.9);
    assert_eq!(s.attempts, Some(1), "two pods of one attempt");
    assert_eq!(s.workers, Some(WorkersStatus { ready: 0, total: 2 }));

    // While running: one of two workers ready.
    let mut running: Job = serde_json::from_value(json!({
        "metadata": {"name": "cnn-train-1"}, "spec": {"completions": 2, "template": {}}, "status": {"active": 2, "failed": 2}
    }))
    .unwrap();
    running.metadata.name = Some("cnn-train-1".into());
    let s = compute(Some(&running), &[ranked("0", "", true), ranked("1", "", false)], None);
    assert_eq!(s.workers, Some(WorkersStatus { ready: 1, total: 2 }));
    assert_eq!(s.attempts, Some(2), "a failed attempt of two pods, then the running one");

    // A failure told by a worker other than rank 0 is still reported.
    let failed = named(job_with_condition("Failed", Some("BackoffLimitExceeded"), Some("backoff")));
    let oom = r#"{"kind":"error","reason":"Distributed","message":"rank 1: all-reduce failed: peer closed"}"#;
    let s = compute(Some(&failed), &[ranked("0", "killed", false), ranked("1", oom, false)], None);
    assert!(s.message.unwrap().contains("all-reduce failed"));
}

fn oom_pod() -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "p", "labels": {"batch.kubernetes.io/job-name": "cnn-train-1"}},
        "status": {"containerStatuses": [{
            "name": TRAINER_CONTAINER, "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}
        }]}
    }))
    .unwrap()
}

#[test]
fn each_failure_reason_is_told_apart() {
    let backoff = named(job_with_condition("Failed", Some("BackoffLimitExceeded"), Some("backoff")));
    let cases: Vec<(Job, Vec<Pod>, FailureReason, &str)> = vec![
        (backoff.clone(), vec![oom_pod()], FailureReason::OomKilled, "resources.limits.memory"),
        (
            named(job_with_condition("Failed", Some("DeadlineExceeded"), Some("deadline"))),
            vec![],
            FailureReason::DeadlineExceeded,
            "activeDeadlineSeconds",
        ),
        (
            backoff.clone(),
            vec![trainer_pod(r#"{"kind":"error","reason":"InvalidData","message":"bad.png: not a PNG"}"#)],
            FailureReason::TrainerError,
            "bad.png",
        ),
        (backoff.clone(), vec![trainer_pod("segfault")], FailureReason::BackoffLimitExceeded, "segfault"),
        (backoff, vec![], FailureReason::BackoffLimitExceeded, "kubectl logs"),
    ];
    for (job, pods, reason, hint) in cases {
        let s = compute(Some(&job), &pods, None);
        assert_eq!(s.phase, Some(TrainingJobPhase::Failed), "{reason:?}");
        assert_eq!(s.failure_reason, Some(reason));
        assert_eq!(cond(&s, "Failed").0, "True");
        assert_eq!(cond(&s, "Ready").1, status::failure_reason_name(reason));
        let message = s.message.unwrap();
        assert!(message.contains(hint), "{reason:?}: {message}");
    }
}

#[test]
fn a_failed_attempt_being_retried_says_retrying_with_the_attempt_number() {
    let job = |status: serde_json::Value| -> Job {
        serde_json::from_value(
            json!({"metadata": {"name": "cnn-train-1"}, "spec": {"template": {}}, "status": status}),
        )
        .unwrap()
    };
    let pod = |phase: &str| -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": format!("p-{phase}")}, "status": {"phase": phase}}),
        )
        .unwrap()
    };
    // Backoff after the first failure: no pod of attempt 2 yet.
    let s = compute(Some(&job(json!({"failed": 1}))), &[pod("Failed")], None);
    assert_eq!(s.phase, Some(TrainingJobPhase::Running));
    assert_eq!(cond(&s, "Ready").1, "Retrying");
    assert!(s.message.as_deref().unwrap().contains("attempt 2 is starting"), "{:?}", s.message);
    // Attempt 3's pod exists but is not running yet.
    let s = compute(Some(&job(json!({"failed": 2, "active": 1}))), &[pod("Failed"), pod("Pending")], None);
    assert_eq!(cond(&s, "Ready").1, "Retrying");
    assert!(s.message.as_deref().unwrap().contains("attempt 3"), "{:?}", s.message);
    assert_eq!(s.attempts, Some(3));
    // Once it runs, it is training again.
    let s = compute(Some(&job(json!({"failed": 2, "active": 1}))), &[pod("Failed"), pod("Running")], None);
    assert_eq!(cond(&s, "Ready").1, "Training");
    // A first attempt that has not started is still Starting (Pending).
    let s = compute(Some(&job(json!({}))), &[], None);
    assert_eq!((s.phase, cond(&s, "Ready").1), (Some(TrainingJobPhase::Pending), "Starting".to_owned()));
}

#[test]
fn image_pull_trouble_is_reported_while_pending() {
    let job: Job = serde_json::from_value(
        json!({"metadata": {"name": "cnn-train-1"}, "spec": {"template": {}}, "status": {"active": 1}}),
    )
    .unwrap();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p", "labels": {"batch.kubernetes.io/job-name": "cnn-train-1"}},
        "status": {"containerStatuses": [{
            "name": TRAINER_CONTAINER, "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}
        }]}
    }))
    .unwrap();
    let s = compute(Some(&job), &[pod], None);
    assert_eq!(s.phase, Some(TrainingJobPhase::Pending));
    assert_eq!(s.failure_reason, Some(FailureReason::ImagePullBackOff));
    assert!(s.message.unwrap().contains("spec.image"));
}

#[test]
fn success_without_summary_is_a_trainer_error() {
    let s = compute(Some(&named(job_with_condition("Complete", None, None))), &[], None);
    assert_eq!(s.failure_reason, Some(FailureReason::TrainerError));
    assert!(s.message.unwrap().contains("/dev/termination-log"));
}

#[test]
fn invalid_spec_fails_with_reason_invalid_spec() {
    let s = status::invalid(&TrainingJobStatus::default(), Some(1), "fix it", &time(0));
    assert_eq!(s.phase, Some(TrainingJobPhase::Failed));
    assert_eq!(s.failure_reason, Some(FailureReason::InvalidSpec));
    assert_eq!(cond(&s, "Ready"), ("False".into(), "InvalidSpec".into()));
}

#[test]
fn an_unchanged_world_computes_the_same_status() {
    let job = named(job_with_condition("Failed", Some("DeadlineExceeded"), None));
    let first = compute(Some(&job), &[], None);
    let gate = ready_gate();
    let again = status::compute(
        StatusInput {
            generation: Some(1),
            previous: &first,
            dataset: &gate,
            job: Some(&job),
            pods: &[],
            model_version: None,
        },
        &time(999),
    );
    assert_eq!(again, first);
}

/// A TrainingJob `cnn` in `ml` (uid `tj-uid`) with `extra` spec YAML.
pub(super) fn training_job_for_tests(extra: &str) -> TrainingJob {
    training_job(extra)
}

/// A Ready `digits` Dataset.
pub(super) fn ready_dataset_for_tests() -> Dataset {
    ready_dataset("source: {uri: s3://data/digits/}\nimage: {width: 32, height: 32, channels: 1}")
}
