//! `TrainingJob`: trains one model on one verified Dataset and registers the result.

mod data;
pub use data::{DataCache, DataLoading, DataLoadingMode};

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{LocalObjectRef, StorageLocation};

/// CEL rule (on `spec`) that makes every field that shapes training
/// immutable once the TrainingJob exists; only `runPolicy.suspend` may change.
pub const IMMUTABLE_SPEC_RULE: &str = "self.datasetRef == oldSelf.datasetRef \
&& self.model == oldSelf.model \
&& self.hyperparameters == oldSelf.hyperparameters \
&& self.workers == oldSelf.workers \
&& self.registerAs == oldSelf.registerAs \
&& has(self.resources) == has(oldSelf.resources) && (!has(self.resources) || self.resources == oldSelf.resources) \
&& has(self.gpus) == has(oldSelf.gpus) && (!has(self.gpus) || self.gpus == oldSelf.gpus) \
&& has(self.nodeSelector) == has(oldSelf.nodeSelector) && (!has(self.nodeSelector) || self.nodeSelector == oldSelf.nodeSelector) \
&& has(self.tolerations) == has(oldSelf.tolerations) && (!has(self.tolerations) || self.tolerations == oldSelf.tolerations) \
&& has(self.image) == has(oldSelf.image) && (!has(self.image) || self.image == oldSelf.image) \
&& has(self.command) == has(oldSelf.command) && (!has(self.command) || self.command == oldSelf.command) \
&& has(self.args) == has(oldSelf.args) && (!has(self.args) || self.args == oldSelf.args) \
&& has(self.env) == has(oldSelf.env) && (!has(self.env) || self.env == oldSelf.env) \
&& has(self.output) == has(oldSelf.output) && (!has(self.output) || self.output == oldSelf.output) \
&& has(self.queueName) == has(oldSelf.queueName) && (!has(self.queueName) || self.queueName == oldSelf.queueName) \
&& has(self.tracking) == has(oldSelf.tracking) && (!has(self.tracking) || self.tracking == oldSelf.tracking) \
&& has(self.dataLoading) == has(oldSelf.dataLoading) && (!has(self.dataLoading) || self.dataLoading == oldSelf.dataLoading)";

/// Message of [`IMMUTABLE_SPEC_RULE`].
pub const IMMUTABLE_SPEC_MESSAGE: &str = "the fields that shape training are immutable once a TrainingJob exists \
(only spec.runPolicy.suspend may change): create a new TrainingJob instead";

/// CEL rule (on `spec.runPolicy`) that keeps the run policy's limits fixed
/// while `suspend` may toggle.
pub const IMMUTABLE_RUN_POLICY_RULE: &str = "[has(self.backoffLimit), has(self.activeDeadlineSeconds), has(self.ttlSecondsAfterFinished)] \
== [has(oldSelf.backoffLimit), has(oldSelf.activeDeadlineSeconds), has(oldSelf.ttlSecondsAfterFinished)] \
&& (!has(self.backoffLimit) || self.backoffLimit == oldSelf.backoffLimit) \
&& (!has(self.activeDeadlineSeconds) || self.activeDeadlineSeconds == oldSelf.activeDeadlineSeconds) \
&& (!has(self.ttlSecondsAfterFinished) || self.ttlSecondsAfterFinished == oldSelf.ttlSecondsAfterFinished)";

/// Trains one model on one verified Dataset in a Kubernetes Job, checkpointing
/// every epoch, and registers the result as a ModelVersion.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "hone.dev",
    version = "v1alpha1",
    kind = "TrainingJob",
    namespaced,
    derive = "PartialEq",
    status = "TrainingJobStatus",
    shortname = "tj",
    category = "hone",
    doc = "TrainingJob trains one model on one verified Dataset in a Kubernetes Job and registers the result as a ModelVersion.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Running, Succeeded, Failed or Suspended"
    ),
    printcolumn(name = "Dataset", type_ = "string", json_path = ".spec.datasetRef.name"),
    printcolumn(name = "Architecture", type_ = "string", json_path = ".spec.model.architecture"),
    printcolumn(name = "Epoch", type_ = "integer", json_path = ".status.progress.epoch"),
    printcolumn(name = "Val-Accuracy", type_ = "number", json_path = ".status.metrics.val_accuracy"),
    printcolumn(name = "Model-Version", type_ = "string", json_path = ".status.modelVersion"),
    printcolumn(
        name = "Workers-Ready",
        type_ = "integer",
        json_path = ".status.workers.ready",
        priority = 1
    ),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.failureReason", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new(IMMUTABLE_SPEC_RULE).message(IMMUTABLE_SPEC_MESSAGE).reason(Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new("!has(oldSelf.runPolicy) || has(self.runPolicy)").message("spec.runPolicy cannot be removed once set; set runPolicy.suspend instead"))]
#[x_kube(validation = Rule::new("has(oldSelf.runPolicy) || !has(self.runPolicy) || (!has(self.runPolicy.backoffLimit) && !has(self.runPolicy.activeDeadlineSeconds) && !has(self.runPolicy.ttlSecondsAfterFinished))").message("only spec.runPolicy.suspend may be added after a TrainingJob exists"))]
#[serde(rename_all = "camelCase")]
pub struct TrainingJobSpec {
    /// The Dataset to train on. Training waits until it is Ready and records
    /// the digest it trained on.
    pub dataset_ref: LocalObjectRef,
    /// The network to train.
    pub model: ModelSpec,
    /// How to train.
    #[serde(default)]
    pub hyperparameters: Hyperparameters,
    /// CPU and memory for each training pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// GPUs per training pod (shortcut for the `nvidia.com/gpu` limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 16))]
    pub gpus: Option<u32>,
    /// Node labels the training pods must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations for the training pods (e.g. for GPU node taints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub tolerations: Option<Vec<Toleration>>,
    /// Trainer image. Unset: the operator's default trainer image. A custom
    /// image must honour the same output contract.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// Entrypoint override for a bring-your-own trainer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub command: Option<Vec<String>>,
    /// Arguments for a bring-your-own trainer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub args: Option<Vec<String>>,
    /// Extra environment for the training container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub env: Option<Vec<EnvVar>>,
    /// Number of training pods. More than 1 gives an Indexed Job, a headless
    /// Service and the torchrun variables MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK.
    #[serde(default = "default_workers")]
    #[schemars(range(min = 1, max = 64))]
    pub workers: u32,
    /// Where the trainer writes `<trainingjob>/<attempt>/`. Unset: the
    /// operator's default output location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<StorageLocation>,
    /// How the Job runs: retries, deadline, clean-up, suspension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_policy: Option<RunPolicy>,
    /// Kueue LocalQueue. Sets the `kueue.x-k8s.io/queue-name` label and creates
    /// the Job suspended so Kueue admits it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub queue_name: Option<String>,
    /// How the trained model is registered.
    pub register_as: RegisterAs,
    /// Experiment tracking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<Tracking>,
    /// How the built-in trainer holds decoded images: in memory, or
    /// streamed through a decode pool and an optional on-disk cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_loading: Option<DataLoading>,
}

fn default_workers() -> u32 {
    1
}

/// The network to train.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// Network architecture.
    pub architecture: Architecture,
    /// Output head: `softmax` (default: one logit per class, cross-entropy),
    /// `sigmoid` (one logit for a two-class Dataset, binary cross-entropy;
    /// the model is registered with `signature.task: binary`) or
    /// `regression` (one number, mean squared error on a CSV Dataset's label
    /// column read as numbers; registered with `signature.task: regression`).
    #[serde(default, skip_serializing_if = "ModelHead::is_softmax")]
    pub head: ModelHead,
    /// Initial weights to fine-tune from (a TorchScript or checkpoint file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<StorageLocation>,
}

/// The output layer the built-in trainer puts on the network.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModelHead {
    /// One logit per class, softmax cross-entropy (`signature.task: classification`).
    #[default]
    Softmax,
    /// One logit of the second class of a two-class Dataset, sigmoid binary
    /// cross-entropy (`signature.task: binary`), as a cats-vs-dogs model has.
    Sigmoid,
    /// One number: the CSV label column read as a number, mean squared error
    /// on it standardised; the exported model answers in the label's own
    /// units (`signature.task: regression`, the output named after the column).
    Regression,
}

impl ModelHead {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Softmax => "softmax",
            Self::Sigmoid => "sigmoid",
            Self::Regression => "regression",
        }
    }

    /// Whether this is the default, `softmax` (left out of JSON).
    pub fn is_softmax(&self) -> bool {
        *self == Self::Softmax
    }
}

/// Built-in network architectures.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Architecture {
    /// Multi-layer perceptron, for tabular (CSV) data or tiny images.
    #[serde(rename = "mlp")]
    Mlp,
    /// Four Conv-BN-ReLU-MaxPool blocks and a three-layer classifier.
    #[serde(rename = "simple-cnn")]
    SimpleCnn,
    /// ResNet-18.
    #[serde(rename = "resnet18")]
    Resnet18,
    /// ResNet-34.
    #[serde(rename = "resnet34")]
    Resnet34,
    /// EfficientNet-B0.
    #[serde(rename = "efficientnet-b0")]
    EfficientNetB0,
}

impl Architecture {
    /// The wire name, e.g. `simple-cnn`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mlp => "mlp",
            Self::SimpleCnn => "simple-cnn",
            Self::Resnet18 => "resnet18",
            Self::Resnet34 => "resnet34",
            Self::EfficientNetB0 => "efficientnet-b0",
        }
    }
}

/// Optimizers the trainer offers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// Adam.
    #[default]
    Adam,
    /// Adam with decoupled weight decay.
    Adamw,
    /// Stochastic gradient descent with momentum 0.9.
    Sgd,
}

/// Learning-rate schedules the trainer offers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    /// Constant learning rate (after warm-up, if any).
    #[default]
    None,
    /// Cosine decay to zero after `warmupEpochs` of linear warm-up.
    Cosine,
    /// Multiply by 0.1 every third of the epochs.
    Step,
}

/// How to train.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Hyperparameters {
    /// Passes over the training set.
    #[serde(default = "default_epochs")]
    #[schemars(range(min = 1, max = 10000))]
    pub epochs: u32,
    /// Samples per optimizer step (per worker).
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 65536))]
    pub batch_size: u32,
    /// Peak learning rate.
    #[serde(default = "default_learning_rate")]
    #[schemars(range(min = 0.0, max = 10.0))]
    pub learning_rate: f64,
    /// Optimizer.
    #[serde(default)]
    pub optimizer: Optimizer,
    /// L2 (or decoupled, for adamw) weight decay.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub weight_decay: f64,
    /// Learning-rate schedule.
    #[serde(default)]
    pub scheduler: Scheduler,
    /// Epochs of linear learning-rate warm-up.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub warmup_epochs: u32,
    /// Stop after this many epochs without validation-loss improvement; 0 disables.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub early_stopping_patience: u32,
    /// Seed for weight initialisation, shuffling and augmentation.
    #[serde(default = "crate::dataset::default_seed")]
    pub seed: u64,
    /// Training-time augmentation (images only).
    #[serde(default)]
    pub augmentation: Augmentation,
}

impl Default for Hyperparameters {
    fn default() -> Self {
        Self {
            epochs: default_epochs(),
            batch_size: default_batch_size(),
            learning_rate: default_learning_rate(),
            optimizer: Optimizer::default(),
            weight_decay: 0.0,
            scheduler: Scheduler::default(),
            warmup_epochs: 0,
            early_stopping_patience: 0,
            seed: crate::dataset::default_seed(),
            augmentation: Augmentation::default(),
        }
    }
}

fn default_epochs() -> u32 {
    10
}

fn default_batch_size() -> u32 {
    32
}

fn default_learning_rate() -> f64 {
    0.001
}

/// Seeded training-time augmentation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Augmentation {
    /// Flip images left-right with probability 0.5.
    #[serde(default)]
    pub horizontal_flip: bool,
    /// Rotate by a uniform angle in [-d, d] degrees; 0 disables.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 180.0))]
    pub rotation_degrees: f64,
    /// Scale brightness, contrast and saturation by a factor in [1-j, 1+j]; 0 disables.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub color_jitter: f64,
}

/// How the Job runs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(IMMUTABLE_RUN_POLICY_RULE).message("runPolicy limits are immutable once a TrainingJob exists; only suspend may change").reason(Reason::FieldValueForbidden))]
pub struct RunPolicy {
    /// Failed attempts tolerated before the Job fails (Job `backoffLimit`,
    /// default 6; with `workers > 1` the Job's limit is this times `workers`,
    /// as the workers of an attempt fail together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub backoff_limit: Option<i32>,
    /// Wall-clock limit for the whole Job in seconds (Job `activeDeadlineSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: Option<i64>,
    /// Delete the finished Job (not the TrainingJob) after this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,
    /// Suspend the Job: running pods stop, and resume from the last checkpoint
    /// when set back to false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
}

/// How the trained model is registered as a ModelVersion.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisterAs {
    /// Model name (a DNS label); the ModelVersion is named `<model>-v<N>`.
    #[schemars(length(min = 1, max = 50), regex(pattern = crate::common::DNS_LABEL_PATTERN))]
    pub model: String,
    /// Labels put on the ModelVersion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// Experiment tracking.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tracking {
    /// Log parameters, per-epoch metrics and artifacts to MLflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow: Option<MlflowTracking>,
}

/// An MLflow tracking server and experiment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MlflowTracking {
    /// Tracking server URI, e.g. `http://mlflow.mlflow:5000`.
    #[schemars(length(min = 1, max = 2048))]
    pub uri: String,
    /// Experiment name (created when missing).
    #[schemars(length(min = 1, max = 256))]
    pub experiment: String,
    /// Registered model the trained ModelVersion becomes a version of in the
    /// operator's MLflow Model Registry (default `registerAs.model`); the
    /// export needs the operator's registry (`mlflow.uri` in its config) to
    /// be this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[^/@\s]+$"))]
    pub registered_model: Option<String>,
}

/// Lifecycle phase of a TrainingJob.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TrainingJobPhase {
    /// Waiting for the Dataset, admission or scheduling.
    #[default]
    Pending,
    /// Training pods are running.
    Running,
    /// Training finished and the model was registered.
    Succeeded,
    /// Training failed; see `failureReason` and `message`.
    Failed,
    /// `runPolicy.suspend` (or Kueue) holds the Job.
    Suspended,
}

/// Why a TrainingJob failed, as a value a program can switch on.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum FailureReason {
    /// A training container ran out of memory.
    #[serde(rename = "OOMKilled")]
    OomKilled,
    /// `runPolicy.activeDeadlineSeconds` passed.
    DeadlineExceeded,
    /// Pods failed more often than `runPolicy.backoffLimit` allows.
    BackoffLimitExceeded,
    /// The trainer image cannot be pulled.
    ImagePullBackOff,
    /// The Dataset is Failed or missing.
    DatasetNotReady,
    /// The trainer exited with an error (bad data, bad hyperparameters...).
    TrainerError,
    /// The spec cannot be turned into a Job.
    InvalidSpec,
}

/// Training progress: from the trainer's live figures while it trains
/// (read from rank 0's `GET /metrics`), from its summary once it is done.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Last completed epoch.
    pub epoch: u32,
    /// Epochs planned.
    pub total_epochs: u32,
    /// Optimizer steps taken (rank 0's), while training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<i64>,
    /// Optimizer steps planned (rank 0's), while training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_steps: Option<i64>,
    /// Training samples per second of rank 0 in the running epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples_per_second: Option<f64>,
    /// When training should end at the pace so far (steps left at the rate
    /// of the steps taken since the pod started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_completion_time: Option<Time>,
    /// When these figures were read from the trainer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_time: Option<Time>,
}

/// The worker pods of the current attempt.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkersStatus {
    /// Worker pods running and ready.
    pub ready: i32,
    /// Workers asked for (`spec.workers`).
    pub total: i32,
}

/// The trained artifact.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactRef {
    /// URI of `model.pt`.
    pub uri: String,
    /// `sha256:` of `model.pt`.
    #[schemars(regex(pattern = crate::common::DIGEST_PATTERN))]
    pub digest: String,
    /// Size of `model.pt` in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
}

/// What the TrainingJob has done so far.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainingJobStatus {
    /// One-word summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<TrainingJobPhase>,
    /// `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Name of the batch/v1 Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// When the Job started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the Job finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Attempts started so far (1 + retries); with several workers, one
    /// attempt is one start of the whole group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    /// Worker pods ready of those asked for, while the Job runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<WorkersStatus>,
    /// Digest of the Dataset content this job trains on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_digest: Option<String>,
    /// Epoch progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// Final metrics, e.g. `val_accuracy`, `val_loss`, `test_accuracy`;
    /// while training, the trainer's live figures (`loss` of the last batch,
    /// `accuracy`, `val_loss` and `val_accuracy` of the last finished epoch,
    /// `learning_rate`, `data_wait_ratio`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<BTreeMap<String, f64>>,
    /// The trained artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ArtifactRef>,
    /// Name of the ModelVersion this job created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// Why training failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<FailureReason>,
    /// A sentence about the current state a person can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Standard conditions: Ready, Running, Succeeded, Failed, Suspended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::schema::conditions")]
    pub conditions: Vec<Condition>,
}
