//! `ModelVersion`: one immutable, verified model artifact with its lineage.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{LocalObjectRef, SecretRef};

/// Message of the rule that refuses exporting a version imported from MLflow.
pub const IMPORTED_EXPORT_MESSAGE: &str = "spec.mlflow registers this version in MLflow; a version whose artifact.uri is \
     models:/... is in MLflow already: leave spec.mlflow out";

/// What `spec.artifact.uri` accepts: a storage URI (see Dataset `source`)
/// or an MLflow Model Registry reference, `models:/<name>/<version>` or
/// `models:/<name>@<alias>`.
pub const ARTIFACT_URI_PATTERN: &str =
    r"^((s3|gs|az|https?|pvc|file)://.+|models:/[^/@\s]{1,256}(/[1-9][0-9]{0,9}|@[A-Za-z0-9_-]{1,255}))$";

/// Message of the rule that keeps a ModelVersion's spec immutable.
pub const IMMUTABLE_SPEC_MESSAGE: &str =
    "ModelVersion spec is immutable: register a new version instead (labels in metadata may change)";

/// One immutable, verified model artifact with its lineage: the registry entry.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "hone.dev",
    version = "v1alpha1",
    kind = "ModelVersion",
    namespaced,
    derive = "PartialEq",
    status = "ModelVersionStatus",
    shortname = "mv",
    category = "hone",
    doc = "ModelVersion is one immutable, verified model artifact with its lineage: the model registry entry.",
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.model"),
    printcolumn(name = "Version", type_ = "integer", json_path = ".spec.version"),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Verifying, Ready or Failed"
    ),
    printcolumn(
        name = "Accuracy",
        type_ = "number",
        json_path = ".status.evaluation.metrics.accuracy",
        description = "Accuracy Hone measured on the held-out test split"
    ),
    printcolumn(
        name = "Val-Accuracy",
        type_ = "number",
        json_path = ".spec.metrics.val_accuracy",
        description = "Validation accuracy the trainer reported",
        priority = 1
    ),
    printcolumn(
        name = "Training-Job",
        type_ = "string",
        json_path = ".spec.lineage.trainingJob",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self == oldSelf").message(IMMUTABLE_SPEC_MESSAGE).reason(Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new("!has(self.mlflow) || !self.artifact.uri.startsWith('models:/')").message(IMPORTED_EXPORT_MESSAGE))]
#[serde(rename_all = "camelCase")]
pub struct ModelVersionSpec {
    /// Model name (a DNS label) this is a version of.
    #[schemars(length(min = 1, max = 50), regex(pattern = crate::common::DNS_LABEL_PATTERN))]
    pub model: String,
    /// Version number, unique per model in the namespace.
    #[schemars(range(min = 1))]
    pub version: i64,
    /// The model file.
    pub artifact: Artifact,
    /// What the model takes and returns.
    pub signature: Signature,
    /// Where the model came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<Lineage>,
    /// Metrics the trainer reported about itself, e.g. `val_accuracy: 0.97`.
    /// Informational: gates read the metrics Hone measures (`status.evaluation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<BTreeMap<String, f64>>,
    /// How Hone measures this version: on which Dataset's held-out test split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<EvaluationSpec>,
    /// Register this version in the operator's MLflow Model Registry once it
    /// is verified (`status.mlflow` tells how far it got). The TrainingJob
    /// controller sets it on what it registers when the TrainingJob has
    /// `tracking.mlflow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow: Option<MlflowExport>,
}

/// A ModelVersion's entry in an MLflow Model Registry.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MlflowExport {
    /// Registered model name in MLflow (created when missing).
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^[^/@\s]+$"))]
    pub registered_model: String,
    /// The MLflow run that produced the model, recorded on the model version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub run_id: Option<String>,
}

/// An MLflow Model Registry reference in `spec.artifact.uri`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryReference {
    /// `models:/<name>/<version>`.
    Version {
        /// Registered model name.
        model: String,
        /// Version number.
        version: u64,
    },
    /// `models:/<name>@<alias>`.
    Alias {
        /// Registered model name.
        model: String,
        /// Alias, e.g. `champion`.
        alias: String,
    },
}

impl RegistryReference {
    /// The reference in `uri`, when it is a `models:/` URI of either form.
    pub fn parse(uri: &str) -> Option<Self> {
        let rest = uri.trim().strip_prefix("models:/")?;
        let valid_name = |n: &str| {
            !n.is_empty() && n.len() <= 256 && !n.contains(['/', '@']) && !n.contains(char::is_whitespace)
        };
        if let Some((model, alias)) = rest.split_once('@') {
            let alias_ok = !alias.is_empty()
                && alias.len() <= 255
                && alias.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            return (valid_name(model) && alias_ok)
                .then(|| Self::Alias { model: model.to_owned(), alias: alias.to_owned() });
        }
        let (model, version) = rest.split_once('/')?;
        let version = version.parse::<u64>().ok().filter(|v| *v >= 1)?;
        valid_name(model).then(|| Self::Version { model: model.to_owned(), version })
    }

    /// The registered model's name.
    pub fn model(&self) -> &str {
        match self {
            Self::Version { model, .. } | Self::Alias { model, .. } => model,
        }
    }
}

impl std::fmt::Display for RegistryReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Version { model, version } => write!(f, "models:/{model}/{version}"),
            Self::Alias { model, alias } => write!(f, "models:/{model}@{alias}"),
        }
    }
}

impl ModelVersion {
    /// The `models:/` reference of `spec.artifact.uri`, if it is one.
    pub fn registry_reference(&self) -> Option<RegistryReference> {
        RegistryReference::parse(&self.spec.artifact.uri)
    }

    /// Where pods read the model from: `spec.artifact.uri`, or for a
    /// `models:/` URI the location the registry resolved it to (`None` until
    /// it has been resolved).
    pub fn artifact_location(&self) -> Option<&str> {
        if self.spec.artifact.uri.trim().starts_with("models:/") {
            return self.status.as_ref()?.resolved_artifact.as_ref().map(|r| r.uri.as_str());
        }
        Some(self.spec.artifact.uri.trim())
    }

    /// This version's (registered model, version) in MLflow: where it was
    /// imported from, or where Hone registered it.
    pub fn mlflow_version(&self) -> Option<(&str, &str)> {
        let status = self.status.as_ref()?;
        if let Some(resolved) = &status.resolved_artifact {
            return Some((resolved.registered_model.as_str(), resolved.version.as_str()));
        }
        let export = status.mlflow.as_ref().filter(|m| m.state == RegistrySyncState::Synced)?;
        Some((export.registered_model.as_str(), export.version.as_deref()?))
    }
}

/// Which data a ModelVersion is evaluated on.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationSpec {
    /// Dataset (same namespace) whose held-out test split the verify Job
    /// evaluates on; default `spec.lineage.dataset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<LocalObjectRef>,
    /// Whether this version must be evaluated before a `track` variant may
    /// pick it (default true). `false` lets `track` gate on the trainer's
    /// `spec.metrics` instead, for a version with no dataset to measure on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
}

impl ModelVersionSpec {
    /// The Dataset this version is evaluated on: `spec.evaluation.dataset`,
    /// else the Dataset it was trained on.
    pub fn evaluation_dataset(&self) -> Option<&str> {
        let named = self.evaluation.as_ref().and_then(|e| e.dataset.as_ref()).map(|d| d.name.as_str());
        named.or_else(|| self.lineage.as_ref().and_then(|l| l.dataset.as_deref())).filter(|n| !n.is_empty())
    }

    /// Whether `track` needs measured metrics for this version (default true).
    pub fn evaluation_required(&self) -> bool {
        self.evaluation.as_ref().and_then(|e| e.required).unwrap_or(true)
    }
}

/// A model file in storage.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// URI of the model file (see Dataset `source` for the schemes), or an
    /// MLflow Model Registry reference, `models:/<name>/<version>` or
    /// `models:/<name>@<alias>`, which the operator resolves once through its
    /// MLflow registry (`status.resolvedArtifact`; an alias is pinned to the
    /// version it named then).
    #[schemars(length(min = 1, max = 2048), regex(pattern = ARTIFACT_URI_PATTERN))]
    pub uri: String,
    /// Serialization format.
    #[serde(default)]
    pub format: ArtifactFormat,
    /// Expected `sha256:` of the file; verification fails on mismatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::common::DIGEST_PATTERN))]
    pub digest: Option<String>,
    /// Expected `sha256:` of the model card (`model.json` beside the file);
    /// verification fails on mismatch. Either way the verified card digest is
    /// recorded in `status.verifiedCardDigest` and predictors refuse any other card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::common::DIGEST_PATTERN))]
    pub card_digest: Option<String>,
    /// Secret with storage credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
}

/// Model file formats the predictor loads.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ArtifactFormat {
    /// A TorchScript module (`torch.jit.save` or a traced tch module).
    #[default]
    TorchScript,
    /// An ONNX model (`torch.onnx.export`) run by ONNX Runtime; its first
    /// input and output need a dynamic batch dimension.
    #[serde(rename = "ONNX")]
    Onnx,
}

impl ArtifactFormat {
    /// Every format, for parsing and messages.
    pub const ALL: [Self; 2] = [Self::TorchScript, Self::Onnx];

    /// The name in `spec.artifact.format` and in the predictor's `HONE_MODEL_FORMAT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TorchScript => "TorchScript",
            Self::Onnx => "ONNX",
        }
    }

    /// Whether this is the default, TorchScript (left out of JSON).
    pub fn is_torchscript(&self) -> bool {
        *self == Self::TorchScript
    }

    /// The model file's name in a model folder (the artifact URI names it).
    pub fn file_name(self) -> &'static str {
        match self {
            Self::TorchScript => crate::contract::MODEL_FILE,
            Self::Onnx => crate::contract::ONNX_MODEL_FILE,
        }
    }
}

impl std::fmt::Display for ArtifactFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ArtifactFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|f| f.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|f| f.as_str()).collect();
            format!("unknown model format {s:?}: use one of {}", names.join(", "))
        })
    }
}

/// Message of the rule that gives a binary model two class names.
pub const BINARY_CLASSES_MESSAGE: &str = "signature.task binary needs exactly two classes, [negative, positive]: the model's one logit is the positive class's";
/// Message of the rule that gives classifiers class names.
pub const CLASSES_NEEDED_MESSAGE: &str = "signature.classes must name at least one class (only task regression may leave it empty: one unnamed output)";
/// Message of the rule on `output`.
pub const OUTPUT_MESSAGE: &str = "signature.output probabilities is for classifiers (task classification, binary or multilabel), not regression";
/// Message of the rule on `threshold`.
pub const THRESHOLD_MESSAGE: &str =
    "signature.threshold is for task binary or multilabel only, and lies strictly between 0 and 1";

/// What the model takes and returns.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.task) && self.task == 'regression') || (has(self.classes) && size(self.classes) >= 1)").message(CLASSES_NEEDED_MESSAGE))]
#[x_kube(validation = Rule::new("!has(self.task) || self.task != 'binary' || (has(self.classes) && size(self.classes) == 2)").message(BINARY_CLASSES_MESSAGE))]
#[x_kube(validation = Rule::new("!has(self.output) || self.output != 'probabilities' || !has(self.task) || self.task != 'regression'").message(OUTPUT_MESSAGE))]
#[x_kube(validation = Rule::new("!has(self.threshold) || (has(self.task) && (self.task == 'binary' || self.task == 'multilabel') && self.threshold > 0.0 && self.threshold < 1.0)").message(THRESHOLD_MESSAGE))]
pub struct Signature {
    /// Shape of one input sample, without the batch dimension, e.g. `[3, 224, 224]`.
    #[schemars(length(min = 1, max = 8))]
    pub input_shape: Vec<i64>,
    /// Class names, in output-index order (`binary`: `[negative, positive]`);
    /// for `regression`, the names of the outputs (optional: empty means one
    /// unnamed output).
    #[serde(default)]
    #[schemars(length(max = 100000))]
    pub classes: Vec<String>,
    /// What the output means: `classification` (default: one logit per
    /// class, softmax), `binary` (one logit, sigmoid), `multilabel` (one
    /// logit per class, sigmoid each) or `regression` (the numbers themselves).
    #[serde(default, skip_serializing_if = "Task::is_classification")]
    pub task: Task,
    /// What the model's output holds: `logits` (default; the predictor
    /// applies softmax or sigmoid) or `probabilities` (already; e.g. a
    /// scikit-learn model exported by skl2onnx with `zipmap: False`).
    #[serde(default, skip_serializing_if = "OutputKind::is_logits")]
    pub output: OutputKind,
    /// Probability at or above which a class is answered (`binary`: the
    /// positive class; `multilabel`: each class); default 0.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// How raw input becomes the input tensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocessing: Option<Preprocessing>,
}

/// The threshold `binary` and `multilabel` models use when none is set.
pub const DEFAULT_THRESHOLD: f64 = 0.5;

impl Signature {
    /// Values per sample the model returns: one per class, one for
    /// `binary`, one per named output (at least one) for `regression`.
    pub fn output_width(&self) -> usize {
        match self.task {
            Task::Classification | Task::Multilabel => self.classes.len(),
            Task::Binary => 1,
            Task::Regression => self.classes.len().max(1),
        }
    }

    /// `threshold`, or [`DEFAULT_THRESHOLD`].
    pub fn threshold_or_default(&self) -> f64 {
        self.threshold.unwrap_or(DEFAULT_THRESHOLD)
    }

    /// What the CRD's rules check, for a card that never went through the
    /// apiserver (`model.json`, `hone-trainer check-output`).
    pub fn check_head(&self) -> Result<(), String> {
        match self.task {
            Task::Regression => {}
            _ if self.classes.is_empty() => return Err(CLASSES_NEEDED_MESSAGE.to_owned()),
            Task::Binary if self.classes.len() != 2 => {
                return Err(format!("{BINARY_CLASSES_MESSAGE} (it has {})", self.classes.len()));
            }
            _ => {}
        }
        if self.task == Task::Regression && self.output == OutputKind::Probabilities {
            return Err(OUTPUT_MESSAGE.to_owned());
        }
        match (self.threshold, self.task) {
            (None, _) => Ok(()),
            (Some(t), Task::Binary | Task::Multilabel) if t > 0.0 && t < 1.0 => Ok(()),
            (Some(t), _) => Err(format!("{THRESHOLD_MESSAGE} (task {}, threshold {t})", self.task)),
        }
    }
}

/// What a classifier's output holds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// Logits: the predictor applies the task's softmax or sigmoid.
    #[default]
    Logits,
    /// Probabilities, used as they are (a probability per class; `binary`:
    /// one, of the positive class).
    Probabilities,
}

impl OutputKind {
    /// The name in `signature.output`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logits => "logits",
            Self::Probabilities => "probabilities",
        }
    }

    /// Whether this is the default, `logits` (left out of JSON).
    pub fn is_logits(&self) -> bool {
        *self == Self::Logits
    }
}

impl std::fmt::Display for OutputKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a model's output means, and so how the predictor answers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// One logit per class; softmax; the top class answers.
    #[default]
    Classification,
    /// One logit; its sigmoid is the probability of `classes[1]`, answered
    /// when at or above `threshold`, else `classes[0]`.
    Binary,
    /// One logit per class; a sigmoid each; every class at or above
    /// `threshold` is answered.
    Multilabel,
    /// The outputs are the answer: numbers, named by `classes`.
    Regression,
}

impl Task {
    /// Every task, for parsing and messages.
    pub const ALL: [Self; 4] = [Self::Classification, Self::Binary, Self::Multilabel, Self::Regression];

    /// The name in `signature.task`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Classification => "classification",
            Self::Binary => "binary",
            Self::Multilabel => "multilabel",
            Self::Regression => "regression",
        }
    }

    /// Whether this is the default, `classification` (left out of JSON).
    pub fn is_classification(&self) -> bool {
        *self == Self::Classification
    }

    /// Whether each answer is one class out of `classes` (classification,
    /// binary): what accuracy, the confusion matrix and the router's
    /// prediction analysis measure.
    pub fn is_single_label(self) -> bool {
        matches!(self, Self::Classification | Self::Binary)
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Task {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|t| t.as_str()).collect();
            format!("unknown task {s:?}: use one of {}", names.join(", "))
        })
    }
}

/// Input preprocessing applied by the predictor before the forward pass.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Preprocessing {
    /// Images are resized to `[height, width]` before normalisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 2))]
    pub resize: Option<Vec<u32>>,
    /// Per-channel (or per-feature) mean subtracted after scaling to [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<Vec<f64>>,
    /// Per-channel (or per-feature) standard deviation divided by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<Vec<f64>>,
}

/// Where a model came from.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Lineage {
    /// TrainingJob that produced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_job: Option<String>,
    /// Dataset it was trained on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// Digest of the Dataset content it was trained on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_digest: Option<String>,
}

/// Lifecycle phase of a ModelVersion.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ModelVersionPhase {
    /// Accepted, not yet verified.
    #[default]
    Pending,
    /// The verify Job is fetching and loading the artifact.
    Verifying,
    /// The artifact was fetched, its digest checked, and it ran a forward pass.
    Ready,
    /// Verification failed; see the Ready condition.
    Failed,
}

/// What verification found.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelVersionStatus {
    /// One-word summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ModelVersionPhase>,
    /// `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `sha256:` the verify Job computed over the artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_digest: Option<String>,
    /// `sha256:` the verify Job computed over the model card (`model.json`);
    /// predictors load only a card with this digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_card_digest: Option<String>,
    /// Artifact size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// What Hone measured on the evaluation Dataset's held-out test split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<Evaluation>,
    /// InferenceServices currently serving this version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub served_by: Vec<String>,
    /// Name of the verify Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_job_name: Option<String>,
    /// The run folder the operator created for the TrainingJob that registered
    /// this version (`<output>/<trainingjob>/<uid>`, holding the model, its
    /// card and the checkpoints). Written only by the operator, when it
    /// registers the version; never taken from a label or the spec. Under
    /// `hone.dev/artifact-policy: Delete` the purge deletes this folder when
    /// the artifact lies in it; a version without it (registered by hand)
    /// loses only its model file and the model card beside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub run_folder: Option<String>,
    /// For a `models:/` artifact URI: what the MLflow registry resolved it to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_artifact: Option<ResolvedArtifact>,
    /// With `spec.mlflow`: this version's registration in MLflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow: Option<MlflowRegistration>,
    /// Standard conditions; `Ready` summarises.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::schema::conditions")]
    pub conditions: Vec<Condition>,
}

/// What a `models:/` URI resolved to, recorded once.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedArtifact {
    /// Where the model file is read from.
    #[schemars(length(max = 4096))]
    pub uri: String,
    /// Registered model name in MLflow.
    pub registered_model: String,
    /// MLflow model version it resolved to (an alias is pinned to it).
    pub version: String,
    /// The MLflow run that produced the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// MLflow's own record of where the version came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// When it was resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// How far a write to the MLflow registry got.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RegistrySyncState {
    /// Not written yet, or the last try failed and will be retried.
    #[default]
    Pending,
    /// Written.
    Synced,
    /// Refused for a reason a retry cannot fix; see `message`.
    Failed,
}

/// A ModelVersion's registration in MLflow (`spec.mlflow`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MlflowRegistration {
    /// Pending, Synced or Failed.
    pub state: RegistrySyncState,
    /// Registered model name in MLflow.
    pub registered_model: String,
    /// The MLflow model version, once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Tries so far.
    #[serde(default)]
    pub attempts: u32,
    /// Why the last try failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When it was last tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// Metrics Hone measured by running the model on held-out data: the verify
/// Job's evaluation, also `status.evaluation`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Evaluation {
    /// The Dataset evaluated on (set by the operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// Digest of the Dataset content the test split was taken from.
    pub dataset_digest: String,
    /// Test samples the model answered.
    pub samples: u64,
    /// Measured metrics: `accuracy`, `macro_precision`, `macro_recall`,
    /// `macro_f1`, `mean_confidence`, and `roc_auc` for two classes
    /// (names in `hone_crds::contract::metric`).
    pub metrics: BTreeMap<String, f64>,
    /// Precision, recall and F1 of each class (left out when there are too
    /// many classes to fit the verify Job's 4 KiB summary).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_class: Vec<ClassMetrics>,
    /// Counts of true class (row) against predicted class (column), in the
    /// order of `perClass` (left out like `perClass`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confusion_matrix: Option<Vec<Vec<u64>>>,
    /// Test samples whose label is not one of the model's classes (counted wrong).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unknown_labels: u64,
    /// When the evaluation finished (set by the operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluated_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Measured quality of one class.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClassMetrics {
    /// Class name.
    pub class: String,
    /// Of the samples predicted as this class, the share that are.
    pub precision: f64,
    /// Of the samples of this class, the share predicted as it.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Test samples of this class.
    pub support: u64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn artifact_formats_parse_print_and_serialize_by_the_same_names() {
        for format in ArtifactFormat::ALL {
            let json = serde_json::to_value(format).unwrap();
            assert_eq!(json, format.as_str());
            assert_eq!(serde_json::from_value::<ArtifactFormat>(json).unwrap(), format);
            assert_eq!(format.as_str().parse::<ArtifactFormat>().unwrap(), format);
            assert_eq!(format.to_string(), format.as_str());
        }
        assert_eq!(ArtifactFormat::Onnx.file_name(), "model.onnx");
        assert_eq!(ArtifactFormat::TorchScript.file_name(), "model.pt");
        let err = "onnx".parse::<ArtifactFormat>().unwrap_err();
        assert!(err.contains("TorchScript, ONNX"), "{err}");
    }
}
