//! `hone-trainer check-output URI [--summary FILE]`: tells the author of a
//! bring-your-own trainer what their output lacks before a TrainingJob finds
//! out (docs/training-contract.md).
//!
//! A pipeline of checks, each adding lines to one [`Report`]:
//! 1. fetch `model.pt`, `model.json` and `metrics.jsonl` from the output folder;
//! 2. the card: parses as [`ModelCard`], holds what the predictor relies on,
//!    its `artifactDigest` is `model.pt`'s;
//! 3. the module: loads in libtorch as TorchScript and maps zeros of the
//!    card's input shape, at batch 1 and 2, to one finite logit per class;
//! 4. `metrics.jsonl`, when present: one [`EpochMetrics`] per line;
//! 5. with `--summary`, the termination summary: fits 4 KiB, is a training
//!    summary, and says what the files are (digests, size, shape, classes),
//!    since the operator registers the ModelVersion from it alone.
//!
//! A finding is what would fail registration, verification or serving; a
//! note is what works but is worth knowing. Only findings fail the check.

use std::path::Path;

use bytes::Bytes;
use hone_crds::contract::{self, EpochMetrics, InputKind, ModelCard};
use hone_crds::modelversion::{ArtifactFormat, Preprocessing};
use hone_storage::{Location, StorageError};
use sha2::{Digest, Sha256};

/// Subject of lines about the output folder itself.
const OUTPUT: &str = "output";
/// Largest input (values per sample) the predictor accepts.
const MAX_SAMPLE_VALUES: i64 = 1 << 28;

/// How one line of the report judges what it describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// As the contract asks.
    Ok,
    /// Works, but worth knowing.
    Note,
    /// Would fail registration, verification or serving.
    Finding,
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// The judgement.
    pub verdict: Verdict,
    /// The file (or `output`, `summary`) the line is about.
    pub subject: &'static str,
    /// What was found.
    pub text: String,
}

/// Everything the check found, in the order it was found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// The lines.
    pub lines: Vec<Line>,
}

impl Report {
    fn push(&mut self, verdict: Verdict, subject: &'static str, text: impl Into<String>) {
        self.lines.push(Line { verdict, subject, text: text.into() });
    }

    fn ok(&mut self, subject: &'static str, text: impl Into<String>) {
        self.push(Verdict::Ok, subject, text);
    }

    fn note(&mut self, subject: &'static str, text: impl Into<String>) {
        self.push(Verdict::Note, subject, text);
    }

    fn finding(&mut self, subject: &'static str, text: impl Into<String>) {
        self.push(Verdict::Finding, subject, text);
    }

    /// The findings alone.
    pub fn findings(&self) -> impl Iterator<Item = &Line> {
        self.lines.iter().filter(|l| l.verdict == Verdict::Finding)
    }

    /// True when nothing was found wrong.
    pub fn passed(&self) -> bool {
        self.findings().next().is_none()
    }

    /// The report as text: one line per check, then a verdict line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            let tag = match line.verdict {
                Verdict::Ok => "ok",
                Verdict::Note => "note",
                Verdict::Finding => "FINDING",
            };
            out.push_str(&format!("{tag:<8}{}: {}\n", line.subject, line.text));
        }
        match self.findings().count() {
            0 => out.push_str("ok      the output honours the training contract\n"),
            n => out.push_str(&format!("FAILED  {n} finding(s)\n")),
        }
        out
    }
}

/// One file of the output, as read.
#[derive(Clone, Debug)]
pub enum Fetched {
    /// Its bytes.
    Found(Bytes),
    /// It does not exist.
    Missing,
    /// Reading it failed otherwise.
    Unreadable(String),
}

/// Checks the output folder `uri` (any URI `hone-storage` reads, or a local
/// path) and, when given, the termination summary in `summary_file`.
pub async fn check(uri: &str, summary_file: Option<&Path>) -> Report {
    let mut report = Report::default();
    let folder = match output_location(uri) {
        Ok(folder) => folder,
        Err(e) => {
            report.finding(OUTPUT, format!("{uri}: {e}"));
            return report;
        }
    };
    let read = |name: &str| {
        let loc = folder.join(name);
        async move {
            match loc.read().await {
                Ok(bytes) => Fetched::Found(bytes),
                Err(StorageError::NotFound { .. }) => Fetched::Missing,
                Err(e) => Fetched::Unreadable(e.to_string()),
            }
        }
    };
    let (torchscript, onnx, card, metrics) = tokio::join!(
        read(contract::MODEL_FILE),
        read(contract::ONNX_MODEL_FILE),
        read(contract::MODEL_CARD_FILE),
        read(contract::METRICS_FILE)
    );
    // An output holds model.pt, or (scikit-learn through skl2onnx, ...) model.onnx.
    let (format, module) = match (&torchscript, onnx) {
        (Fetched::Missing, onnx @ Fetched::Found(_)) => (ArtifactFormat::Onnx, onnx),
        _ => (ArtifactFormat::TorchScript, torchscript),
    };
    let module = check_module_file(&mut report, format, module);
    let card_digest = match &card {
        Fetched::Found(bytes) => Some(sha256_digest(bytes)),
        _ => None,
    };
    let card = check_card(&mut report, card, module.as_ref().map(|m| m.digest.as_str()));
    if format == ArtifactFormat::Onnx {
        report.note(
            contract::ONNX_MODEL_FILE,
            "not run here (check-output runs TorchScript): `hone-predictor verify --format ONNX --model <output>` \
             loads it on ONNX Runtime and runs the card's input through it",
        );
    } else if let Some(module) = &module {
        let bytes = module.bytes.clone();
        let shape = card.as_ref().map(|c| c.signature.input_shape.clone());
        let probe =
            tokio::task::spawn_blocking(move || probe_module(&bytes, shape.as_deref())).await.unwrap_or_else(
                |join| ModuleProbe { loaded: Err(format!("crashed: {join}")), forwards: Vec::new() },
            );
        judge_module(&mut report, &probe, card.as_ref());
    }
    check_metrics(&mut report, metrics);
    if let Some(path) = summary_file {
        match std::fs::read(path) {
            Ok(bytes) => {
                let module_loc = folder.join(format.file_name());
                let output = CheckedOutput {
                    format,
                    module_uri: module_loc.uri(),
                    module: module.as_ref(),
                    card_digest: card_digest.as_deref(),
                    card: card.as_ref(),
                };
                check_summary(&mut report, &bytes, &output);
            }
            Err(e) => report.finding(summary::SUMMARY, format!("cannot read {}: {e}", path.display())),
        }
    }
    report
}

/// The folder `uri` names: a URI, a local path, or the `model.pt` inside it.
fn output_location(uri: &str) -> Result<Location, StorageError> {
    let uri = uri.trim();
    let uri = uri.strip_suffix(&format!("/{}", contract::MODEL_FILE)).unwrap_or(uri);
    if uri.contains("://") {
        return Location::parse(uri);
    }
    let path = Path::new(uri);
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_path_buf())
    };
    Location::parse(&format!("file://{}", absolute.display()))
}

/// `sha256:<hex>` of `bytes`, the form of every digest in the contract.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// `model.pt` as read.
#[derive(Clone, Debug)]
pub struct ModuleFile {
    /// Its bytes.
    pub bytes: Bytes,
    /// [`sha256_digest`] of them.
    pub digest: String,
}

fn check_module_file(report: &mut Report, format: ArtifactFormat, fetched: Fetched) -> Option<ModuleFile> {
    let file = format.file_name();
    match fetched {
        Fetched::Found(bytes) if bytes.is_empty() => {
            report.finding(file, "is empty");
            None
        }
        Fetched::Found(bytes) => Some(ModuleFile { digest: sha256_digest(&bytes), bytes }),
        Fetched::Missing => {
            report.finding(
                file,
                "missing: save the model with torch.jit.script or torch.jit.trace and .save() \
                 (or write model.onnx, for an ONNX model)",
            );
            None
        }
        Fetched::Unreadable(e) => {
            report.finding(file, format!("unreadable: {e}"));
            None
        }
    }
}

/// Parses and checks `model.json`; returns the card when it is usable.
pub fn check_card(report: &mut Report, fetched: Fetched, module_digest: Option<&str>) -> Option<ModelCard> {
    const CARD: &str = contract::MODEL_CARD_FILE;
    let bytes = match fetched {
        Fetched::Found(bytes) => bytes,
        Fetched::Missing => {
            report.finding(
                CARD,
                "missing: write the model card (formatVersion, input, signature) beside model.pt",
            );
            return None;
        }
        Fetched::Unreadable(e) => {
            report.finding(CARD, format!("unreadable: {e}"));
            return None;
        }
    };
    let card: ModelCard = match serde_json::from_slice(&bytes) {
        Ok(card) => card,
        Err(e) => {
            report.finding(CARD, format!("is not a model card: {e}"));
            return None;
        }
    };
    let findings_before = report.findings().count();
    if card.format_version != contract::MODEL_CARD_VERSION {
        report.finding(
            CARD,
            format!("formatVersion is {}, expected {}", card.format_version, contract::MODEL_CARD_VERSION),
        );
    }
    for problem in card_problems(&card) {
        report.finding(CARD, problem);
    }
    let usable = report.findings().count() == findings_before;
    match (&card.artifact_digest, module_digest) {
        (Some(said), Some(actual)) if !said.eq_ignore_ascii_case(actual) => report.finding(
            CARD,
            format!(
                "artifactDigest is {said} but the model file's sha256 is {actual}: verify would refuse the model"
            ),
        ),
        (None, _) => report.note(CARD, "no artifactDigest (optional; the summary's pins model.pt)"),
        _ => {}
    }
    if card.dataset_digest.is_none() {
        report.note(CARD, "no datasetDigest (optional; lineage then takes the TrainingJob's pinned digest)");
    }
    if !usable {
        return None;
    }
    let sig = &card.signature;
    report.ok(
        CARD,
        format!(
            "{} {} model, inputShape {:?}, {} classes, preprocessing {}",
            match card.input {
                InputKind::Image => "image",
                InputKind::Tabular => "tabular",
            },
            sig.task,
            sig.input_shape,
            sig.classes.len(),
            if sig.preprocessing.is_some() { "set" } else { "none" },
        ),
    );
    Some(card)
}

/// What the predictor relies on in a card (its `validate_card`), as sentences.
pub fn card_problems(card: &ModelCard) -> Vec<String> {
    let mut problems = Vec::new();
    let shape = &card.signature.input_shape;
    if shape.is_empty() || shape.iter().any(|&d| d <= 0) {
        problems.push(format!("signature.inputShape {shape:?} must be non-empty and positive"));
    } else if shape.iter().try_fold(1i64, |acc, &d| acc.checked_mul(d)).is_none_or(|n| n > MAX_SAMPLE_VALUES)
    {
        problems.push(format!("signature.inputShape {shape:?} is too large"));
    }
    if let Err(problem) = card.signature.check_head() {
        problems.push(problem);
    }
    let width = match card.input {
        InputKind::Image if shape.len() != 3 || !(shape[0] == 1 || shape[0] == 3) => {
            problems.push(format!("image models need inputShape [1|3, height, width], got {shape:?}"));
            None
        }
        InputKind::Tabular if shape.len() != 1 => {
            problems.push(format!("tabular models need inputShape [features], got {shape:?}"));
            None
        }
        _ => shape.first().map(|&w| w as usize),
    };
    if card.input == InputKind::Tabular
        && !card.feature_names.is_empty()
        && Some(card.feature_names.len()) != width
    {
        problems
            .push(format!("featureNames has {} names but inputShape is {shape:?}", card.feature_names.len()));
    }
    if let Some(pre) = &card.signature.preprocessing {
        problems.extend(preprocessing_problems(pre, width));
    }
    problems
}

fn preprocessing_problems(pre: &Preprocessing, width: Option<usize>) -> Vec<String> {
    let mut problems = Vec::new();
    for (what, values) in [("mean", &pre.mean), ("std", &pre.std)] {
        let Some(values) = values else { continue };
        if let Some(width) = width
            && values.len() != width
            && values.len() != 1
        {
            problems.push(format!(
                "signature.preprocessing.{what} has {} values, expected {width} (or 1)",
                values.len()
            ));
        }
        if values.iter().any(|v| !v.is_finite()) {
            problems.push(format!("signature.preprocessing.{what} has a non-finite value"));
        }
    }
    if pre.std.as_ref().is_some_and(|s| s.contains(&0.0)) {
        problems.push("signature.preprocessing.std has a zero".into());
    }
    if let Some(resize) = &pre.resize
        && (resize.len() != 2 || resize.contains(&0))
    {
        problems.push(format!("signature.preprocessing.resize {resize:?} must be [height, width]"));
    }
    problems
}

/// Checks `metrics.jsonl`, which is optional.
pub fn check_metrics(report: &mut Report, fetched: Fetched) {
    const METRICS: &str = contract::METRICS_FILE;
    let bytes = match fetched {
        Fetched::Found(bytes) => bytes,
        Fetched::Missing => {
            report.note(METRICS, "absent (optional: one line per epoch shows training progress)");
            return;
        }
        Fetched::Unreadable(e) => {
            report.finding(METRICS, format!("unreadable: {e}"));
            return;
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut epochs = 0;
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        if let Err(e) = serde_json::from_str::<EpochMetrics>(line) {
            report.finding(METRICS, format!("line {} is not an epoch's metrics: {e}", i + 1));
            return;
        }
        epochs += 1;
    }
    report.ok(METRICS, format!("{epochs} epochs"));
}

mod module;
mod summary;

pub use module::{Forward, ForwardOutput, ModuleProbe, judge_module, probe_module};
pub use summary::{CheckedOutput, check_summary};

#[cfg(test)]
mod tests;
