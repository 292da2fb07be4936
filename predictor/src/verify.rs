//! `hone-predictor verify`: what the ModelVersion verify Job runs, as a
//! pipeline. Fetch the model file and `model.json`; check both digests and
//! the card; check the card's signature against the ModelVersion's; load the
//! model in its declared format (a file in the other format is a
//! `FormatMismatch`) and run one forward pass on zeros of the signature shape; with a
//! test split, evaluate the model on it ([`crate::eval_split`]). Prints a
//! one-line JSON summary that fits the pod's termination message.
//!
//! `ok` says whether every step ran and passed: a model that evaluates
//! poorly is still verified (gates decide what score is enough), one that
//! could not be evaluated is not.

use std::path::Path;

use hone_crds::contract::{ExpectedSignature, TERMINATION_MESSAGE_MAX_BYTES};
use hone_crds::modelversion::Evaluation;
use hone_crds::predictor::env;

use crate::config::VerifyArgs;
use crate::eval_split::{self, EvalError};
use crate::model::{self, ExpectedDigests, LoadError, ModelFiles};
use crate::runtime::{self, RuntimeConfig};
use crate::signature::{self, SignatureMismatch};

pub use hone_crds::contract::VerifySummary;

/// Why a model failed verification.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A flag (or its environment variable) has an unusable value.
    #[error("{0}")]
    InvalidArgument(String),
    /// Fetching, a digest, the card, loading or the forward pass on zeros.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The card's signature is not the ModelVersion's.
    #[error(transparent)]
    Signature(#[from] SignatureMismatch),
    /// The model could not be evaluated on the test split.
    #[error(transparent)]
    Evaluation(#[from] EvalError),
    /// The blocking task that loads and runs the model panicked.
    #[error("the forward pass crashed: {0}")]
    Crashed(String),
}

impl VerifyError {
    /// The summary's `reason`.
    pub fn category(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "InvalidArgument",
            Self::Load(e) => e.category(),
            Self::Signature(_) => "SignatureMismatch",
            Self::Evaluation(e) => e.category(),
            Self::Crashed(_) => "ForwardFailed",
        }
    }
}

/// Runs every check and returns the summary (never an error: failures are in it).
pub async fn verify(args: &VerifyArgs) -> VerifySummary {
    let mut summary = VerifySummary { ok: false, model: args.model.clone(), ..VerifySummary::default() };
    match run(args, &mut summary).await {
        Ok(()) => summary.ok = true,
        Err(e) => {
            summary.reason = Some(e.category().to_owned());
            summary.message = Some(e.to_string());
        }
    }
    fit_termination_message(&mut summary);
    summary
}

/// The pipeline; fills `summary` with what each step learnt as it goes, so a
/// failure still reports the digests and shape read before it.
async fn run(args: &VerifyArgs, summary: &mut VerifySummary) -> Result<(), VerifyError> {
    let device = runtime::parse_device(&args.device).map_err(VerifyError::InvalidArgument)?;
    let runtime = RuntimeConfig::new(args.format, device, 0, args.onnxruntime.clone());
    let expected_signature = parse_expected_signature(args.expected_signature.as_deref())?;
    let fetched = model::fetch_files(&args.model, args.format).await?;
    summary.card_digest = Some(model::sha256_digest(&fetched.card));
    summary.size_bytes = Some(fetched.module.len() as u64);
    let expected = ExpectedDigests { module: args.digest.as_deref(), card: args.card_digest.as_deref() };
    let files = model::check_files(fetched, expected).inspect_err(|e| {
        if let LoadError::DigestMismatch { found, .. } = e {
            summary.digest = Some(found.clone());
        }
    })?;
    summary.digest = Some(files.digest.clone());
    summary.input_shape = Some(files.card.signature.input_shape.clone());
    summary.classes = Some(files.card.signature.classes.len());
    if let Some(expected) = &expected_signature {
        signature::check(expected, &files.card.signature)?;
    }
    let eval_dir = args.eval_dir.clone();
    let checked = tokio::task::spawn_blocking(move || run_model(&files, &runtime, eval_dir.as_deref()))
        .await
        .map_err(|join| VerifyError::Crashed(join.to_string()))??;
    summary.forward_ms = Some((checked.forward_ms * 1000.0).round() / 1000.0);
    if let Some(evaluation) = checked.evaluation {
        summary.evaluation = Some(evaluation?);
    }
    Ok(())
}

/// `--expected-signature`: unset or empty means no check.
fn parse_expected_signature(json: Option<&str>) -> Result<Option<ExpectedSignature>, VerifyError> {
    match json.map(str::trim).filter(|j| !j.is_empty()) {
        None => Ok(None),
        Some(json) => serde_json::from_str(json).map(Some).map_err(|e| {
            VerifyError::InvalidArgument(format!(
                "--expected-signature ({}) is not an ExpectedSignature JSON object: {e}",
                env::EXPECTED_SIGNATURE
            ))
        }),
    }
}

/// What running the model found.
struct ModelRun {
    /// Milliseconds of the forward pass on zeros.
    forward_ms: f64,
    /// The evaluation, when a test split was given.
    evaluation: Option<Result<Evaluation, EvalError>>,
}

/// Loads the model, runs one sample of zeros, then evaluates it on the
/// test split in `eval_dir`, if any. Blocking: the model and file reads.
fn run_model(
    files: &ModelFiles,
    runtime: &RuntimeConfig,
    eval_dir: Option<&Path>,
) -> Result<ModelRun, LoadError> {
    let device = runtime.device;
    let mut module = runtime::load_model(&files.module, &files.card, runtime)?;
    let started = std::time::Instant::now();
    runtime::forward_zeros(&mut module, &files.card, 1, device)?;
    let forward_ms = started.elapsed().as_secs_f64() * 1000.0;
    let evaluation = eval_dir.map(|dir| eval_split::evaluate(dir, &files.card, &mut module, device));
    Ok(ModelRun { forward_ms, evaluation })
}

/// Makes the summary's JSON fit Kubernetes' termination message by dropping
/// detail, least needed first: the confusion matrix, then the per-class
/// metrics (the metrics gates read always stay), then the end of the message.
pub fn fit_termination_message(summary: &mut VerifySummary) {
    let overflow = |s: &VerifySummary| {
        serde_json::to_string(s).map_or(0, |json| json.len().saturating_sub(TERMINATION_MESSAGE_MAX_BYTES))
    };
    if overflow(summary) == 0 {
        return;
    }
    if let Some(evaluation) = &mut summary.evaluation {
        evaluation.confusion_matrix = None;
        if overflow(summary) == 0 {
            return;
        }
    }
    if let Some(evaluation) = &mut summary.evaluation {
        evaluation.per_class.clear();
    }
    let over = overflow(summary);
    if over > 0
        && let Some(message) = &mut summary.message
    {
        // Escaping can make a character longer in JSON than in the string:
        // cut generously, at a character boundary.
        let keep = message.len().saturating_sub(over * 2 + 3);
        let cut = (0..=keep).rev().find(|&i| message.is_char_boundary(i)).unwrap_or(0);
        message.truncate(cut);
        message.push_str("...");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluation;

    fn summary_with(classes: usize) -> VerifySummary {
        let names: Vec<String> = (0..classes).map(|c| format!("class_{c:03}")).collect();
        let rows: Vec<Vec<f32>> = (0..classes)
            .map(|c| {
                (0..classes)
                    .map(|i| if i == (c + 1) % classes { 0.6 } else { 0.4 / classes as f32 })
                    .collect()
            })
            .collect();
        let answers = rows.iter().enumerate().map(|(c, row)| (Some(c), row.as_slice()));
        VerifySummary {
            ok: true,
            model: "s3://models/mnist/run-1/".into(),
            digest: Some(format!("sha256:{}", "a".repeat(64))),
            card_digest: Some(format!("sha256:{}", "b".repeat(64))),
            input_shape: Some(vec![1, 28, 28]),
            classes: Some(classes),
            size_bytes: Some(1 << 20),
            forward_ms: Some(1.5),
            evaluation: Some(evaluation::evaluate(&names, "sha256:data", answers)),
            ..VerifySummary::default()
        }
    }

    fn json_len(summary: &VerifySummary) -> usize {
        serde_json::to_string(summary).unwrap().len()
    }

    #[test]
    fn a_small_summary_keeps_everything() {
        let mut summary = summary_with(3);
        let before = summary.clone();
        fit_termination_message(&mut summary);
        assert_eq!(summary, before);
        assert!(summary.evaluation.as_ref().unwrap().confusion_matrix.is_some());
    }

    #[test]
    fn a_hundred_classes_drop_the_matrix_and_per_class_metrics_but_keep_the_metrics() {
        let mut summary = summary_with(100);
        assert!(json_len(&summary) > TERMINATION_MESSAGE_MAX_BYTES);
        let metrics = summary.evaluation.as_ref().unwrap().metrics.clone();
        fit_termination_message(&mut summary);
        assert!(json_len(&summary) <= TERMINATION_MESSAGE_MAX_BYTES, "{}", json_len(&summary));
        let evaluation = summary.evaluation.unwrap();
        assert_eq!(evaluation.confusion_matrix, None);
        assert!(evaluation.per_class.is_empty());
        assert_eq!(evaluation.metrics, metrics);
        assert_eq!(evaluation.samples, 100);
    }

    #[test]
    fn the_matrix_goes_before_the_per_class_metrics() {
        // 40 classes: the matrix (1600 counts) is too much, the per-class
        // metrics alone fit.
        let mut summary = summary_with(40);
        let mut without_matrix = summary.clone();
        without_matrix.evaluation.as_mut().unwrap().confusion_matrix = None;
        assert!(json_len(&summary) > TERMINATION_MESSAGE_MAX_BYTES);
        assert!(json_len(&without_matrix) <= TERMINATION_MESSAGE_MAX_BYTES, "{}", json_len(&without_matrix));
        fit_termination_message(&mut summary);
        assert_eq!(summary, without_matrix);
    }

    #[test]
    fn a_long_message_is_cut_to_fit() {
        let mut summary = VerifySummary {
            model: "m".into(),
            reason: Some("Storage".into()),
            message: Some("\"é\" ".repeat(2000)),
            ..VerifySummary::default()
        };
        fit_termination_message(&mut summary);
        assert!(json_len(&summary) <= TERMINATION_MESSAGE_MAX_BYTES, "{}", json_len(&summary));
        assert!(summary.message.unwrap().ends_with("..."));
    }

    #[test]
    fn expected_signatures_parse_or_fail_as_invalid_arguments() {
        assert!(parse_expected_signature(None).unwrap().is_none());
        assert!(parse_expected_signature(Some(" ")).unwrap().is_none());
        let json = r#"{"inputShape":[4],"classCount":2,"classesDigest":"sha256:x","classes":["a","b"]}"#;
        assert_eq!(parse_expected_signature(Some(json)).unwrap().unwrap().class_count, 2);
        let err = parse_expected_signature(Some("{")).unwrap_err();
        assert_eq!(err.category(), "InvalidArgument");
        assert!(err.to_string().contains(env::EXPECTED_SIGNATURE), "{err}");
    }
}
