//! The termination summary against the output it describes: the operator
//! registers the ModelVersion from the summary alone, and verify then holds
//! the files to what it says.

use hone_crds::contract::{
    ModelCard, TERMINATION_MESSAGE_MAX_BYTES, TerminationSummary, TrainSummary, WorkerSummary,
};
use hone_crds::modelversion::{ArtifactFormat, Preprocessing};

use super::{ModuleFile, Report};

/// Subject of lines about the termination summary.
pub(super) const SUMMARY: &str = "summary";
/// Relative tolerance when comparing preprocessing values (they went through JSON).
const PREPROCESSING_TOLERANCE: f64 = 1e-9;

/// What the files of the output turned out to be, for the summary to match.
#[derive(Clone, Copy, Debug)]
pub struct CheckedOutput<'a> {
    /// The format of the model file found.
    pub format: ArtifactFormat,
    /// URI of the checked `model.pt` (or `model.onnx`).
    pub module_uri: &'a str,
    /// `model.pt`, when it was read.
    pub module: Option<&'a ModuleFile>,
    /// Digest of `model.json`, when it was read.
    pub card_digest: Option<&'a str>,
    /// The card, when usable.
    pub card: Option<&'a ModelCard>,
}

/// Checks a termination summary against the output it describes.
pub fn check_summary(report: &mut Report, bytes: &[u8], output: &CheckedOutput<'_>) {
    if bytes.len() > TERMINATION_MESSAGE_MAX_BYTES {
        report.finding(
            SUMMARY,
            format!(
                "is {} bytes; Kubernetes keeps {TERMINATION_MESSAGE_MAX_BYTES}, so the operator would read \
                 cut, unparseable JSON: leave out classes and preprocessing (model.json has them)",
                bytes.len()
            ),
        );
    }
    let text = String::from_utf8_lossy(bytes);
    let train = match serde_json::from_str::<TerminationSummary>(text.trim()) {
        Ok(TerminationSummary::Train(train)) => train,
        Ok(TerminationSummary::Error(e)) => {
            report.finding(SUMMARY, format!("reports a failure: {}: {}", e.reason, e.message));
            return;
        }
        Ok(_) => {
            report.finding(SUMMARY, "is not a training summary: its kind must be \"train\"");
            return;
        }
        Err(e) => {
            let text = match serde_json::from_str::<WorkerSummary>(text.trim()) {
                Ok(worker) => {
                    format!("is rank {}'s worker summary; rank 0 writes the training summary", worker.rank)
                }
                Err(_) => format!("is not a termination summary: {e}"),
            };
            report.finding(SUMMARY, text);
            return;
        }
    };
    let findings_before = report.findings().count();
    check_artifact(report, &train, output);
    if let Some(card) = output.card {
        check_signature(report, &train, card);
    }
    if report.findings().count() == findings_before {
        report.ok(
            SUMMARY,
            format!(
                "a training summary of {} bytes that matches the output ({} metrics)",
                bytes.len(),
                train.metrics.len()
            ),
        );
    }
}

/// The summary's artifact fields against the files: what registration pins.
fn check_artifact(report: &mut Report, train: &TrainSummary, output: &CheckedOutput<'_>) {
    let file = output.format.file_name();
    if train.artifact_format != output.format {
        report.finding(
            SUMMARY,
            format!(
                "artifactFormat is {} but the output holds {file}: the ModelVersion would load it as the former",
                train.artifact_format
            ),
        );
    }
    if !train.artifact_uri.trim_end_matches('/').ends_with(&format!("/{file}")) {
        report.finding(SUMMARY, format!("artifactUri {:?} must name the {file} file", train.artifact_uri));
    } else if train.artifact_uri.trim() != output.module_uri {
        report.note(
            SUMMARY,
            format!(
                "artifactUri is {}, not the checked {}: the ModelVersion loads the former",
                train.artifact_uri, output.module_uri
            ),
        );
    }
    if let Some(module) = output.module {
        if !train.artifact_digest.eq_ignore_ascii_case(&module.digest) {
            report.finding(
                SUMMARY,
                format!(
                    "artifactDigest is {:?} but {file}'s sha256 is {}: verify would refuse the model",
                    train.artifact_digest, module.digest
                ),
            );
        }
        if train.artifact_size_bytes != module.bytes.len() as u64 {
            report.finding(
                SUMMARY,
                format!(
                    "artifactSizeBytes is {} but {file} has {} bytes",
                    train.artifact_size_bytes,
                    module.bytes.len()
                ),
            );
        }
    }
    match (&train.card_digest, output.card_digest) {
        (Some(said), Some(actual)) if !said.eq_ignore_ascii_case(actual) => report.finding(
            SUMMARY,
            format!(
                "cardDigest is {said} but model.json's sha256 is {actual}: verify would refuse the model"
            ),
        ),
        (None, _) => report.note(SUMMARY, "no cardDigest: the ModelVersion will not pin model.json"),
        _ => {}
    }
}

/// The summary's signature fields against the card: the operator registers
/// `spec.signature` from the summary and verify compares it with the card.
fn check_signature(report: &mut Report, train: &TrainSummary, card: &ModelCard) {
    let sig = &card.signature;
    if train.input_shape != sig.input_shape {
        report.finding(
            SUMMARY,
            format!("inputShape is {:?} but model.json says {:?}", train.input_shape, sig.input_shape),
        );
    }
    if train.task != sig.task {
        report.finding(SUMMARY, format!("task is {} but model.json says {}", train.task, sig.task));
    }
    if train.output != sig.output {
        report.finding(SUMMARY, format!("output is {} but model.json says {}", train.output, sig.output));
    }
    if train.threshold != sig.threshold {
        report.finding(SUMMARY, "threshold differs from model.json's signature.threshold");
    }
    if train.classes.is_empty() {
        report.note(SUMMARY, "no classes: the operator takes them from the Dataset, in sorted order");
    } else if train.classes != sig.classes {
        report.finding(SUMMARY, "classes differ from model.json's signature.classes (names or order)");
    }
    if let Some(pre) = &train.preprocessing
        && !same_preprocessing(pre, &sig.preprocessing.clone().unwrap_or_default())
    {
        report.finding(SUMMARY, "preprocessing differs from model.json's signature.preprocessing");
    }
    if let (Some(said), Some(card_said)) = (&train.dataset_digest, &card.dataset_digest)
        && said != card_said
    {
        report.finding(SUMMARY, format!("datasetDigest is {said} but model.json says {card_said}"));
    }
}

fn same_preprocessing(a: &Preprocessing, b: &Preprocessing) -> bool {
    let close = |x: f64, y: f64| x == y || (x - y).abs() <= PREPROCESSING_TOLERANCE * x.abs().max(y.abs());
    let same = |x: &Option<Vec<f64>>, y: &Option<Vec<f64>>| match (x, y) {
        (Some(x), Some(y)) => x.len() == y.len() && x.iter().zip(y).all(|(&x, &y)| close(x, y)),
        (None, None) => true,
        _ => false,
    };
    a.resize == b.resize && same(&a.mean, &b.mean) && same(&a.std, &b.std)
}
