//! The trainer's output contract, shared by the trainer (writes it), the
//! predictor (loads it) and the operator (reads the termination summary).
//!
//! Under `<output>/<trainingjob>/<attempt>/` the trainer writes `model.pt`
//! (TorchScript), `model.json` ([`ModelCard`]), `metrics.jsonl` (one
//! [`EpochMetrics`] per line), `report.png` and `checkpoints/`. The same
//! summary, under 4 KiB, goes to the termination log ([`TerminationSummary`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::modelversion::Signature;

pub mod env;

/// File name of the TorchScript module.
pub const MODEL_FILE: &str = "model.pt";
/// File name of an ONNX model (`artifact.format: ONNX`).
pub const ONNX_MODEL_FILE: &str = "model.onnx";
/// File name of the model card.
pub const MODEL_CARD_FILE: &str = "model.json";
/// File name of the per-epoch metrics.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// File name of the training report.
pub const REPORT_FILE: &str = "report.png";
/// Folder of the per-epoch checkpoints.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// Default path of the termination log.
pub const TERMINATION_LOG: &str = "/dev/termination-log";
/// Most bytes Kubernetes keeps of a termination message.
pub const TERMINATION_MESSAGE_MAX_BYTES: usize = 4096;

/// Port of a training pod's `GET /metrics` (the built-in trainer's live
/// `hone_trainer_*` figures, which the operator reads into `status.progress`).
pub const TRAINER_METRICS_PORT: i32 = 9091;
/// Where `pvc://` claims are mounted in pods when [`env::PVC_ROOT`] is unset.
pub const DEFAULT_PVC_ROOT: &str = "/mnt/pvc";
/// Version of the [`ModelCard`] layout.
pub const MODEL_CARD_VERSION: u32 = 1;
/// Where the verify Job's containers share the held-out test split: the
/// trainer's `eval-split` writes it, the predictor's `verify` reads it.
pub const EVAL_DIR: &str = "/eval";
/// File (in [`EVAL_DIR`]) describing the split: one [`EvalSplitHeader`].
pub const EVAL_HEADER_FILE: &str = "split.json";
/// File (in [`EVAL_DIR`]) of the samples: one [`EvalSample`] per line.
pub const EVAL_SAMPLES_FILE: &str = "samples.jsonl";
/// Folder (in [`EVAL_DIR`]) of the test images, as stored in the Dataset.
pub const EVAL_IMAGES_DIR: &str = "images";
/// Most test samples one evaluation reads: the first ones of the test split,
/// in split order (the split is a seeded shuffle, so they are a fair sample).
pub const EVAL_MAX_SAMPLES: usize = 10_000;

/// Names of the metrics Hone measures (`status.evaluation.metrics`), the
/// names `track.minMetrics` gates on.
pub mod metric {
    /// Share of test samples answered with their true class.
    pub const ACCURACY: &str = "accuracy";
    /// Unweighted mean of the per-class precisions.
    pub const MACRO_PRECISION: &str = "macro_precision";
    /// Unweighted mean of the per-class recalls.
    pub const MACRO_RECALL: &str = "macro_recall";
    /// Unweighted mean of the per-class F1 scores.
    pub const MACRO_F1: &str = "macro_f1";
    /// Mean top-1 probability the model gave its answers.
    pub const MEAN_CONFIDENCE: &str = "mean_confidence";
    /// Area under the ROC curve of the second class's probability (two classes only).
    pub const ROC_AUC: &str = "roc_auc";
    /// Every measured metric name.
    pub const ALL: &[&str] = &[ACCURACY, MACRO_PRECISION, MACRO_RECALL, MACRO_F1, MEAN_CONFIDENCE, ROC_AUC];
}

/// Most bytes of class names [`ExpectedSignature`] carries in full; past
/// this it carries their digest (an environment variable holds 128 KiB).
pub const EXPECTED_CLASSES_MAX_BYTES: usize = 64 * 1024;

/// The signature `verify` checks the card against (the ModelVersion's
/// `spec.signature`), as the operator passes it in one environment variable.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExpectedSignature {
    /// `spec.signature.inputShape`.
    pub input_shape: Vec<i64>,
    /// `spec.signature.classes`, when their names fit [`EXPECTED_CLASSES_MAX_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    /// Number of classes.
    pub class_count: usize,
    /// [`classes_digest`] of the classes, always.
    pub classes_digest: String,
    /// `spec.signature.preprocessing`; when absent the card's is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocessing: Option<crate::modelversion::Preprocessing>,
    /// `spec.signature.task`.
    #[serde(default, skip_serializing_if = "crate::modelversion::Task::is_classification")]
    pub task: crate::modelversion::Task,
    /// `spec.signature.threshold`; when absent the card's is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// `spec.signature.output`.
    #[serde(default, skip_serializing_if = "crate::modelversion::OutputKind::is_logits")]
    pub output: crate::modelversion::OutputKind,
}

impl ExpectedSignature {
    /// What `verify` is given for `signature`.
    pub fn of(signature: &Signature) -> Self {
        let bytes: usize = signature.classes.iter().map(|c| c.len() + 4).sum();
        Self {
            input_shape: signature.input_shape.clone(),
            classes: (bytes <= EXPECTED_CLASSES_MAX_BYTES).then(|| signature.classes.clone()),
            class_count: signature.classes.len(),
            classes_digest: classes_digest(&signature.classes),
            preprocessing: signature.preprocessing.clone(),
            task: signature.task,
            threshold: signature.threshold,
            output: signature.output,
        }
    }
}

/// `sha256:` over the class names, each followed by a newline.
pub fn classes_digest(classes: &[String]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for class in classes {
        hasher.update(class.as_bytes());
        hasher.update(b"\n");
    }
    format!("sha256:{:x}", hasher.finalize())
}

/// What `hone-trainer eval-split` wrote: the held-out test split of a Dataset.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EvalSplitHeader {
    /// Digest of the Dataset content the split was taken from.
    pub dataset_digest: String,
    /// Image or tabular samples.
    pub input: InputKind,
    /// The Dataset's class names.
    pub classes: Vec<String>,
    /// Feature names, in column order (tabular).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feature_names: Vec<String>,
    /// Samples in the whole test split.
    pub test_samples: u64,
    /// Samples written (at most [`EVAL_MAX_SAMPLES`]).
    pub samples: u64,
}

/// One held-out test sample: its true class and its raw input.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EvalSample {
    /// True class name.
    pub label: String,
    /// Raw feature values, in the header's column order (tabular).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<f32>>,
    /// Image file, relative to [`EVAL_DIR`] (images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// What kind of input a model takes, which decides how `/predict` decodes a request.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    /// Images (PNG, JPEG), resized and normalised per `signature.preprocessing`.
    Image,
    /// Rows of numeric features, standardised per `signature.preprocessing`.
    Tabular,
}

/// `model.json`: everything a server needs to use `model.pt` correctly.
///
/// A hand-written file with `formatVersion`, `input` and `signature` is enough
/// for a model exported from Python; the rest is optional.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelCard {
    /// Layout version, [`MODEL_CARD_VERSION`].
    pub format_version: u32,
    /// Image or tabular input.
    pub input: InputKind,
    /// Shape (without batch), classes and preprocessing.
    pub signature: Signature,
    /// Feature names, in input order (tabular models).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feature_names: Vec<String>,
    /// Architecture name, e.g. `simple-cnn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// Final metrics, e.g. `val_accuracy`, `test_accuracy`.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// Digest of the dataset content the model was trained on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_digest: Option<String>,
    /// `sha256:` of the model file (`model.pt` or `model.onnx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_digest: Option<String>,
    /// Distribution of the training inputs, the reference for drift detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_stats: Option<InputStats>,
    /// Trainer version that wrote the card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trainer_version: Option<String>,
}

/// Reference distribution of the training inputs, one entry per feature.
/// For images a "feature" is the mean intensity of one channel of an image
/// (after scaling to [0, 1], before normalisation).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InputStats {
    /// Training samples the statistics were computed from.
    pub samples: u64,
    /// One entry per feature (or image channel).
    pub features: Vec<FeatureStats>,
}

/// Reference distribution of one feature.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FeatureStats {
    /// Feature name (or `channel_<i>`).
    pub name: String,
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub std: f64,
    /// Smallest value seen.
    pub min: f64,
    /// Largest value seen.
    pub max: f64,
    /// Inner bin edges for PSI (ascending; `n` edges make `n + 1` bins).
    pub bin_edges: Vec<f64>,
    /// Fraction of training samples in each bin (sums to 1).
    pub bin_fractions: Vec<f64>,
    /// A sorted, evenly spaced subsample (at most 256 values) for the KS test.
    pub reference: Vec<f64>,
}

/// One line of `metrics.jsonl`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EpochMetrics {
    /// 1-based epoch.
    pub epoch: u32,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training accuracy (left out, NaN here, for a regression model).
    #[serde(default = "no_accuracy", skip_serializing_if = "is_nan")]
    pub train_accuracy: f64,
    /// Validation loss.
    pub val_loss: f64,
    /// Validation accuracy (left out, NaN here, for a regression model).
    #[serde(default = "no_accuracy", skip_serializing_if = "is_nan")]
    pub val_accuracy: f64,
    /// Learning rate used in the epoch.
    pub learning_rate: f64,
    /// Training samples per second.
    pub samples_per_second: f64,
    /// Data-parallel runs: mean milliseconds per step spent all-reducing
    /// gradients (this rank's wall time, waiting for peers included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allreduce_ms_per_step: Option<f64>,
}

fn no_accuracy() -> f64 {
    f64::NAN
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_nan(value: &f64) -> bool {
    value.is_nan()
}

/// What a data-parallel worker other than rank 0 leaves in its termination
/// log: rank 0 alone writes the output contract and the [`TrainSummary`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename = "worker", rename_all = "camelCase")]
pub struct WorkerSummary {
    /// This worker's rank (never 0).
    pub rank: u32,
    /// Number of workers.
    pub world_size: u32,
    /// Epochs completed.
    pub epoch: u32,
    /// A sentence for people reading `kubectl describe pod`.
    pub message: String,
}

/// The summary a trainer pod writes to its termination log.
// Parsed once per finished pod and dropped: boxing the train summary would
// save nothing worth its noise at every construction and match.
#[allow(clippy::large_enum_variant)]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TerminationSummary {
    /// Written by `hone-trainer inspect`.
    Inspect(InspectSummary),
    /// Written by `hone-trainer train`.
    Train(TrainSummary),
    /// Written by `hone-trainer eval-split`.
    EvalSplit(EvalSplitHeader),
    /// Written on failure by any command.
    Error(ErrorSummary),
}

/// What dataset inspection found.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InspectSummary {
    /// `sha256:` over the sorted manifest.
    pub digest: String,
    /// Samples read.
    pub samples: u64,
    /// Total bytes.
    pub size_bytes: u64,
    /// Class names in label order.
    pub classes: Vec<String>,
    /// Samples per class.
    pub class_counts: BTreeMap<String, u64>,
}

/// What training produced.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrainSummary {
    /// Epochs completed.
    pub epoch: u32,
    /// Epochs planned.
    pub total_epochs: u32,
    /// Final metrics.
    pub metrics: BTreeMap<String, f64>,
    /// URI of the model file (`model.pt`, or `model.onnx`).
    pub artifact_uri: String,
    /// The model file's format (default TorchScript): the registered
    /// ModelVersion's `spec.artifact.format`.
    #[serde(default, skip_serializing_if = "crate::modelversion::ArtifactFormat::is_torchscript")]
    pub artifact_format: crate::modelversion::ArtifactFormat,
    /// `sha256:` of `model.pt`.
    pub artifact_digest: String,
    /// Size of `model.pt` in bytes.
    pub artifact_size_bytes: u64,
    /// `sha256:` of `model.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_digest: Option<String>,
    /// Digest of the dataset trained on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_digest: Option<String>,
    /// Input shape without batch.
    pub input_shape: Vec<i64>,
    /// Class names in output-index order (cut when the summary would not fit
    /// the termination log; the full list is in `model.json`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    /// Preprocessing the predictor applies (from `model.json`; cut like `classes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocessing: Option<crate::modelversion::Preprocessing>,
    /// What the output means (`model.json`'s `signature.task`).
    #[serde(default, skip_serializing_if = "crate::modelversion::Task::is_classification")]
    pub task: crate::modelversion::Task,
    /// `model.json`'s `signature.threshold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// `model.json`'s `signature.output`.
    #[serde(default, skip_serializing_if = "crate::modelversion::OutputKind::is_logits")]
    pub output: crate::modelversion::OutputKind,
    /// The MLflow run the trainer logged to (`tracking.mlflow`), recorded on
    /// the MLflow model version the operator registers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow_run_id: Option<String>,
}

/// Why a trainer command failed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ErrorSummary {
    /// A CamelCase category, e.g. `InvalidData`, `Storage`, `OutOfMemory`.
    pub reason: String,
    /// The message, with the offending path and line where there is one.
    pub message: String,
}

/// The one-line JSON summary of `hone-predictor verify` (stdout and the
/// termination message of a ModelVersion's verify Job).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VerifySummary {
    /// Whether every step passed.
    pub ok: bool,
    /// The model location.
    pub model: String,
    /// `sha256:` of model.pt, when it was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Input shape (without batch), when the card was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_shape: Option<Vec<i64>>,
    /// Number of classes, when the card was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<usize>,
    /// Size of model.pt in bytes, when it was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Failure category (`DigestMismatch`, `Storage`, ...), on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Failure message, on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Milliseconds the forward pass took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_ms: Option<f64>,
    /// `sha256:` of model.json, when it was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_digest: Option<String>,
    /// What the model scored on the held-out test split, when one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<crate::modelversion::Evaluation>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regression_epoch_leaves_its_accuracy_out_and_reads_back_nan() {
        let epoch = EpochMetrics {
            epoch: 1,
            train_loss: 0.5,
            train_accuracy: f64::NAN,
            val_loss: 0.6,
            val_accuracy: f64::NAN,
            learning_rate: 0.001,
            samples_per_second: 10.0,
            allreduce_ms_per_step: None,
        };
        let line = serde_json::to_string(&epoch).unwrap_or_default();
        assert!(!line.contains("ccuracy") && !line.contains("null"), "{line}");
        let back: EpochMetrics = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(back.train_accuracy.is_nan() && back.val_accuracy.is_nan());
        let classified = EpochMetrics { train_accuracy: 0.9, val_accuracy: 0.8, ..epoch };
        let line = serde_json::to_string(&classified).unwrap_or_default();
        assert_eq!(serde_json::from_str::<EpochMetrics>(&line).ok(), Some(classified));
    }
}
