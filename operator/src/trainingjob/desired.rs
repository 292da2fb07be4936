//! The batch/v1 Job (and, for `workers > 1`, the headless Service) a
//! TrainingJob should have. Pure.

use std::collections::BTreeMap;

use hone_crds::StorageLocation;
use hone_crds::consts::{LABEL_KUEUE_QUEUE, LABEL_TRAINING_JOB};
use hone_crds::contract::{TERMINATION_LOG, TRAINER_METRICS_PORT};
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, EnvVar, EnvVarSource, ObjectFieldSelector,
    PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, ResourceRequirements, Service, ServicePort,
    ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::validate::{DatasetInput, GPU_RESOURCE, ValidTrainingJob, pvc_claim};
use crate::children::{
    batch_pod_spec, child_labels, child_name, pod_volumes, restricted_container_security_context,
    secret_env_from, sha256_hex,
};
use crate::dataset::desired::layout_env;
use crate::labels::{ENV_PVC_ROOT, PVC_ROOT};
use hone_crds::contract::env;

/// Name of the training container (status reads its termination message).
pub const TRAINER_CONTAINER: &str = "trainer";
/// Port torchrun's rendezvous listens on.
pub const MASTER_PORT: i32 = 29500;
/// The Job controller's `backoffLimit` when none is set.
const DEFAULT_BACKOFF_LIMIT: i32 = 6;
/// Annotation the Job controller sets on Indexed Job pods.
pub const COMPLETION_INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";
/// Name of the training container's live-figures port (PodMonitor selects it).
pub const TRAINER_METRICS_PORT_NAME: &str = "metrics";
/// Where the decoded-image cache volume is mounted (`spec.dataLoading.cache`).
pub const DATA_CACHE_PATH: &str = "/var/cache/hone/data";
/// Name of that volume.
const DATA_CACHE_VOLUME: &str = "data-cache";
/// Suffix of training Job names.
const JOB_SUFFIX: &str = "train";

/// What a TrainingJob's children should be.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// The training Job.
    pub job: Job,
    /// The headless Service of a multi-worker Job.
    pub service: Option<Service>,
}

/// The Job name of a TrainingJob: its name plus a hash of its uid, so a
/// TrainingJob deleted and recreated under the same name gets a new Job.
pub fn job_name(valid: &ValidTrainingJob) -> String {
    child_name(&valid.name, JOB_SUFFIX, &sha256_hex(valid.uid.as_bytes()))
}

/// Where this run writes: `<output>/<trainingjob>/<uid>`. The uid keeps a
/// recreated TrainingJob from resuming another's checkpoints, while a retried
/// pod of the same TrainingJob resumes its own.
pub fn run_output(valid: &ValidTrainingJob) -> String {
    format!("{}/{}/{}", valid.output.uri.trim().trim_end_matches('/'), valid.name, valid.uid)
}

/// Builds the desired Job and Service.
pub fn build(valid: &ValidTrainingJob) -> Desired {
    let name = job_name(valid);
    let spec = &valid.spec;
    let multi = spec.workers > 1;
    let mut labels = child_labels(LABEL_TRAINING_JOB, &valid.name);
    if let Some(queue) = &spec.queue_name {
        labels.insert(LABEL_KUEUE_QUEUE.to_owned(), queue.clone());
    }
    let run_policy = spec.run_policy.clone().unwrap_or_default();
    let (volumes, mounts) = volumes(valid);
    let container = Container {
        name: TRAINER_CONTAINER.to_owned(),
        image: Some(valid.image.clone()),
        command: spec.command.clone(),
        args: Some(spec.args.clone().unwrap_or_else(|| vec!["train".to_owned()])),
        env: Some(train_env(valid, &name)),
        env_from: env_from(valid),
        resources: Some(resources(valid)),
        security_context: Some(restricted_container_security_context()),
        termination_message_path: Some(TERMINATION_LOG.to_owned()),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        volume_mounts: Some(mounts),
        ports: Some(vec![ContainerPort {
            name: Some(TRAINER_METRICS_PORT_NAME.to_owned()),
            container_port: TRAINER_METRICS_PORT,
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let job_spec = JobSpec {
        // Workers fail together (a collective with a dead peer fails), so
        // each failed attempt of the group costs `workers` pod failures.
        backoff_limit: if multi {
            Some(
                run_policy
                    .backoff_limit
                    .unwrap_or(DEFAULT_BACKOFF_LIMIT)
                    .saturating_mul(to_i32(spec.workers)),
            )
        } else {
            run_policy.backoff_limit
        },
        active_deadline_seconds: run_policy.active_deadline_seconds,
        // A pod stopped by preemption, eviction or a node drain does not count
        // against backoffLimit: the trainer checkpoints on SIGTERM and the
        // next pod resumes at that step.
        pod_failure_policy: Some(PodFailurePolicy {
            rules: vec![PodFailurePolicyRule {
                action: "Ignore".to_owned(),
                on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                    type_: "DisruptionTarget".to_owned(),
                    status: "True".to_owned(),
                }]),
                ..Default::default()
            }],
        }),
        ttl_seconds_after_finished: run_policy.ttl_seconds_after_finished,
        // Kueue admits a queued Job by unsuspending it.
        suspend: Some(run_policy.suspend.unwrap_or(false) || spec.queue_name.is_some()),
        completions: Some(to_i32(spec.workers)),
        parallelism: Some(to_i32(spec.workers)),
        completion_mode: multi.then(|| "Indexed".to_owned()),
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(child_labels(LABEL_TRAINING_JOB, &valid.name)),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                subdomain: multi.then(|| name.clone()),
                node_selector: spec.node_selector.clone(),
                tolerations: spec.tolerations.clone(),
                ..batch_pod_spec(container, volumes)
            }),
        },
        ..Default::default()
    };
    let job = Job {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(valid.namespace.clone()),
            labels: Some(labels),
            owner_references: Some(vec![valid.owner.clone()]),
            ..Default::default()
        },
        spec: Some(job_spec),
        status: None,
    };
    let service = multi.then(|| headless_service(valid, &name));
    Desired { job, service }
}

fn to_i32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// The headless Service that gives Indexed Job pods stable DNS names.
pub fn headless_service(valid: &ValidTrainingJob, name: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(valid.namespace.clone()),
            labels: Some(child_labels(LABEL_TRAINING_JOB, &valid.name)),
            owner_references: Some(vec![valid.owner.clone()]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            // Workers must find the master before it is Ready.
            publish_not_ready_addresses: Some(true),
            selector: Some(BTreeMap::from([(LABEL_TRAINING_JOB.to_owned(), valid.name.clone())])),
            ports: Some(vec![ServicePort {
                name: Some("rendezvous".to_owned()),
                port: MASTER_PORT,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// The trainer's `train` environment; entries of `spec.env` override ours.
pub fn train_env(valid: &ValidTrainingJob, job_name: &str) -> Vec<EnvVar> {
    let spec = &valid.spec;
    let hp = &spec.hyperparameters;
    let mut vars = dataset_env(&valid.dataset);
    vars.extend([
        (env::OUTPUT, run_output(valid)),
        (env::ARCHITECTURE, spec.model.architecture.as_str().to_owned()),
        (env::MODEL_HEAD, spec.model.head.as_str().to_owned()),
        (env::EPOCHS, hp.epochs.to_string()),
        (env::BATCH_SIZE, hp.batch_size.to_string()),
        (env::LEARNING_RATE, hp.learning_rate.to_string()),
        (env::OPTIMIZER, wire_name(&hp.optimizer)),
        (env::WEIGHT_DECAY, hp.weight_decay.to_string()),
        (env::SCHEDULER, wire_name(&hp.scheduler)),
        (env::WARMUP_EPOCHS, hp.warmup_epochs.to_string()),
        (env::EARLY_STOPPING_PATIENCE, hp.early_stopping_patience.to_string()),
        (env::SEED, hp.seed.to_string()),
        (env::AUG_HORIZONTAL_FLIP, hp.augmentation.horizontal_flip.to_string()),
        (env::AUG_ROTATION_DEGREES, hp.augmentation.rotation_degrees.to_string()),
        (env::AUG_COLOR_JITTER, hp.augmentation.color_jitter.to_string()),
        // Asking for GPUs and silently training on CPU would hide a broken node.
        (env::DEVICE, if spec.gpus.unwrap_or(0) > 0 { "cuda" } else { "cpu" }.to_owned()),
        (env::RUN_NAME, valid.name.clone()),
        (env::TERMINATION_LOG, TERMINATION_LOG.to_owned()),
        // Live figures the operator reads into status.progress (and a PodMonitor scrapes).
        (env::METRICS_ADDR, format!("0.0.0.0:{TRAINER_METRICS_PORT}")),
    ]);
    if let Some(pretrained) = &spec.model.pretrained {
        vars.push((env::PRETRAINED, pretrained.uri.trim().to_owned()));
    }
    if let Some(mlflow) = spec.tracking.as_ref().and_then(|t| t.mlflow.as_ref()) {
        vars.push((env::MLFLOW_URI, mlflow.uri.clone()));
        vars.push((env::MLFLOW_EXPERIMENT, mlflow.experiment.clone()));
    }
    if let Some(loading) = &spec.data_loading {
        vars.push((env::DATA_MODE, loading.mode.as_str().to_owned()));
        if let Some(reads) = loading.reads {
            vars.push((env::DATA_READS, reads.clamp(1, 256).to_string()));
        }
        if loading.cache.is_some() {
            vars.push((env::DATA_CACHE, DATA_CACHE_PATH.to_owned()));
        }
    }
    if !pvc_claims(valid).is_empty() {
        vars.push((ENV_PVC_ROOT, PVC_ROOT.to_owned()));
    }
    // libtorch would otherwise start a thread per core of the node, whatever the pod may use.
    if let Some(threads) = cpu_threads(spec.resources.as_ref()) {
        vars.push((env::THREADS, threads.to_string()));
    }
    let mut out: Vec<EnvVar> = vars
        .into_iter()
        .map(|(name, value)| EnvVar { name: name.to_owned(), value: Some(value), value_from: None })
        .collect();
    if spec.workers > 1 {
        out.extend(distributed_env(valid, job_name));
    }
    // Server-side apply refuses duplicate names, so a user's entry replaces ours.
    let user = spec.env.clone().unwrap_or_default();
    out.retain(|var| !user.iter().any(|u| u.name == var.name));
    out.extend(user);
    out
}

/// How the trainer reads the Dataset, at its pinned digest, with the same
/// split (`train` and `eval-split` alike).
pub fn dataset_env(ds: &DatasetInput) -> Vec<(&'static str, String)> {
    let mut vars = layout_env(&ds.source, ds.format, ds.csv.as_ref(), ds.image.as_ref(), &ds.split);
    vars.push((env::DATASET_DIGEST, ds.digest.clone()));
    vars
}

/// torchrun's variables for an Indexed Job behind the headless Service `job_name`.
fn distributed_env(valid: &ValidTrainingJob, job_name: &str) -> Vec<EnvVar> {
    let value =
        |name: &str, value: String| EnvVar { name: name.to_owned(), value: Some(value), value_from: None };
    vec![
        value("MASTER_ADDR", format!("{job_name}-0.{job_name}")),
        value("MASTER_PORT", MASTER_PORT.to_string()),
        value("WORLD_SIZE", valid.spec.workers.to_string()),
        EnvVar {
            name: "RANK".to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: format!("metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"),
                    api_version: None,
                }),
                ..Default::default()
            }),
        },
    ]
}

fn wire_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// Secrets of the dataset source, the output and the pretrained weights, each once.
fn env_from(valid: &ValidTrainingJob) -> Option<Vec<EnvFromSource>> {
    let locations: [Option<&StorageLocation>; 3] =
        [Some(&valid.dataset.source), Some(&valid.output), valid.spec.model.pretrained.as_ref()];
    secret_env_from(locations.into_iter().flatten().filter_map(|l| l.secret_ref.as_ref()))
}

/// Every claim the pod mounts, with whether it must be writable (the output's).
fn pvc_claims(valid: &ValidTrainingJob) -> BTreeMap<String, bool> {
    let mut claims = BTreeMap::new();
    let read_only = [
        Some(valid.dataset.source.uri.as_str()),
        valid.spec.model.pretrained.as_ref().map(|p| p.uri.as_str()),
    ];
    for claim in read_only.into_iter().flatten().filter_map(pvc_claim) {
        claims.entry(claim.to_owned()).or_insert(false);
    }
    if let Some(claim) = pvc_claim(&valid.output.uri) {
        claims.insert(claim.to_owned(), true);
    }
    claims
}

fn volumes(valid: &ValidTrainingJob) -> (Vec<Volume>, Vec<VolumeMount>) {
    let claims: Vec<(String, bool)> = pvc_claims(valid).into_iter().collect();
    let (mut volumes, mut mounts) = pod_volumes(&claims);
    let cache = valid.spec.data_loading.as_ref().and_then(|d| d.cache.as_ref());
    if let Some(cache) = cache {
        volumes.push(Volume {
            name: DATA_CACHE_VOLUME.to_owned(),
            persistent_volume_claim: cache.claim_name.as_ref().map(|claim| {
                PersistentVolumeClaimVolumeSource { claim_name: claim.clone(), read_only: Some(false) }
            }),
            empty_dir: cache.claim_name.is_none().then(|| EmptyDirVolumeSource {
                size_limit: cache.size_limit.clone().map(Quantity),
                medium: None,
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: DATA_CACHE_VOLUME.to_owned(),
            mount_path: DATA_CACHE_PATH.to_owned(),
            ..Default::default()
        });
    }
    (volumes, mounts)
}

/// Threads a trainer may use: its CPU limit, rounded up, at least 1; `None`
/// without a limit (the pod may then use every core, and so may libtorch)
/// or when the quantity does not parse.
pub fn cpu_threads(resources: Option<&ResourceRequirements>) -> Option<u32> {
    let quantity = resources?.limits.as_ref()?.get("cpu")?;
    let text = quantity.0.trim();
    let cores = match text.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().ok()? / 1000.0,
        None => text.parse::<f64>().ok()?,
    };
    (cores.is_finite() && cores > 0.0).then(|| cores.ceil().clamp(1.0, 1024.0) as u32)
}

/// `spec.resources` with `spec.gpus` as the `nvidia.com/gpu` limit.
fn resources(valid: &ValidTrainingJob) -> ResourceRequirements {
    let mut resources = valid.spec.resources.clone().unwrap_or_default();
    if let Some(gpus) = valid.spec.gpus.filter(|g| *g > 0) {
        resources
            .limits
            .get_or_insert_with(BTreeMap::new)
            .insert(GPU_RESOURCE.to_owned(), Quantity(gpus.to_string()));
    }
    resources
}
