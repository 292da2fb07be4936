//! Why `verify` could not evaluate a model on its test split.

use std::path::PathBuf;

use crate::input::InputError;

/// Why the model could not be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A file of the split could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// A file is larger than its limit.
    #[error("{path} is larger than {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        limit: usize,
    },
    /// `split.json` is not an [`hone_crds::contract::EvalSplitHeader`].
    #[error("{path} is not a test split header: {reason}")]
    Header {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The split does not fit the model (input kind, features).
    #[error("the test split does not fit the model: {0}")]
    Mismatch(String),
    /// A line of `samples.jsonl` is not a usable sample.
    #[error("{path} line {line}: {reason}")]
    Sample {
        /// `samples.jsonl`.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A line of `samples.jsonl` is longer than [`super::EVAL_MAX_LINE_BYTES`].
    #[error("{path} line {line} is longer than {limit} bytes")]
    LineTooLong {
        /// `samples.jsonl`.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// `samples.jsonl` holds more than [`hone_crds::contract::EVAL_MAX_SAMPLES`] samples.
    #[error("{path} holds more than {limit} samples")]
    TooManySamples {
        /// `samples.jsonl`.
        path: PathBuf,
        /// The limit.
        limit: usize,
    },
    /// `samples.jsonl` holds another number of samples than `split.json` says.
    #[error("{path} holds {found} samples but split.json says {expected}: the split is incomplete")]
    Count {
        /// `samples.jsonl`.
        path: PathBuf,
        /// `samples` of the header.
        expected: u64,
        /// Samples read.
        found: u64,
    },
    /// A sample's input is not one `/predict` would accept.
    #[error("test sample {sample} cannot be used as model input: {source}")]
    Input {
        /// The image file, or the line of a tabular row.
        sample: String,
        /// Why, as `/predict` would answer it.
        #[source]
        source: InputError,
    },
    /// A forward pass on test samples failed.
    #[error("forward pass on test samples {first}..={last}: {message}")]
    Forward {
        /// 1-based line of the batch's first sample.
        first: usize,
        /// 1-based line of its last.
        last: usize,
        /// The libtorch error.
        message: String,
    },
    /// The split holds no samples.
    #[error("{0} holds no samples: there is nothing to evaluate on")]
    Empty(PathBuf),
    /// The model's task answers something a test split's one class per
    /// sample cannot score.
    #[error(
        "a {0} model cannot be evaluated on a Dataset's test split, whose samples have one class each: \
         set spec.evaluation.required: false on the ModelVersion (track then gates on spec.metrics)"
    )]
    UnsupportedTask(hone_crds::modelversion::Task),
}

impl EvalError {
    /// The verify summary's reason.
    pub fn category(&self) -> &'static str {
        match self {
            Self::UnsupportedTask(_) => "EvaluationUnsupported",
            _ => "EvaluationFailed",
        }
    }
}
