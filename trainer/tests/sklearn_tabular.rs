//! The scikit-learn example (`examples/sklearn-tabular/train.py`:
//! StandardScaler + LogisticRegression through skl2onnx) fits on the wine
//! CSV with the variables a TrainingJob pod gets: it reads the digest Hone
//! pins, writes an ONNX output whose summary registers an ONNX ModelVersion
//! with probabilities as its output, and `hone-trainer check-output` passes it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{check_output, exported_data, file_uri, inspected_digest, train_summary};
use hone_crds::contract::{TerminationSummary, env};
use hone_crds::modelversion::{ArtifactFormat, OutputKind};

fn python() -> Option<PathBuf> {
    match std::env::var("HONE_VENV") {
        Ok(v) if !v.is_empty() => Some(Path::new(&v).join("bin/python")),
        _ => {
            eprintln!(
                "SKIPPED: HONE_VENV is unset; run `eval \"$(hack/env.sh)\"` to test the scikit-learn example"
            );
            None
        }
    }
}

/// Runs train.py on wine into `out` with `digest` pinned; returns whether it succeeded.
fn fit(python: &Path, out: &Path, digest: &str) -> bool {
    fit_on(python, &exported_data().join("wine.csv"), out, digest)
}

/// Runs train.py on the CSV at `csv` into `out` with `digest` pinned (empty: none).
fn fit_on(python: &Path, csv: &Path, out: &Path, digest: &str) -> bool {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sklearn-tabular/train.py");
    Command::new(python)
        .arg(script)
        .env(env::DATASET_SOURCE, file_uri(csv))
        .env(env::DATASET_FORMAT, "CSV")
        .env(env::CSV_LABEL_COLUMN, "label")
        .env(env::SPLIT_VALIDATION, "0.2")
        .env(env::SPLIT_TEST, "0.3")
        .env(env::SPLIT_SEED, "7")
        .env(env::DATASET_DIGEST, digest)
        .env(env::OUTPUT, file_uri(out))
        .env(env::TERMINATION_LOG, out.join("termination-log"))
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn the_sklearn_example_writes_an_onnx_output_that_registers_and_checks() {
    let Some(python) = python() else { return };
    let digest = inspected_digest(&file_uri(&exported_data().join("wine.csv")));
    let out = tempfile::tempdir().unwrap();
    assert!(
        fit(&python, out.path(), &digest),
        "{:?}",
        std::fs::read_to_string(out.path().join("termination-log"))
    );
    let summary = train_summary(&out.path().join("termination-log"));
    assert_eq!(summary.artifact_format, ArtifactFormat::Onnx);
    assert_eq!(summary.output, OutputKind::Probabilities);
    assert_eq!(summary.artifact_uri, format!("{}/model.onnx", file_uri(out.path())));
    assert_eq!(summary.dataset_digest.as_deref(), Some(digest.as_str()), "the script reads Hone's digest");
    assert_eq!(summary.classes, ["class_0", "class_1", "class_2"]);
    // 54 held-out wines (Hone's split); the reference pipeline separates them well.
    assert!(summary.metrics["test_accuracy"] >= 0.9, "{:?}", summary.metrics);
    let (passed, report) = check_output(out.path(), Some(&out.path().join("termination-log")));
    assert!(passed, "check-output found problems:\n{report}");
    assert!(report.contains("model.onnx: not run here"), "{report}");

    // Another pinned digest: the data changed since verification.
    let changed = tempfile::tempdir().unwrap();
    assert!(!fit(&python, changed.path(), &format!("sha256:{}", "0".repeat(64))));
    match serde_json::from_slice(&std::fs::read(changed.path().join("termination-log")).unwrap()).unwrap() {
        TerminationSummary::Error(e) => assert_eq!(e.reason, "DatasetChanged", "{e:?}"),
        other => panic!("expected an error summary, got {other:?}"),
    }

    // A row without its label is bad data, named by its line.
    let short = tempfile::tempdir().unwrap();
    let csv = short.path().join("short.csv");
    std::fs::write(&csv, "a,b,label\n1,2,x\n3,4,y\n5,6\n").unwrap();
    assert!(!fit_on(&python, &csv, short.path(), ""));
    match serde_json::from_slice(&std::fs::read(short.path().join("termination-log")).unwrap()).unwrap() {
        TerminationSummary::Error(e) => {
            assert_eq!(e.reason, "InvalidData", "{e:?}");
            assert!(e.message.contains("line 4"), "{e:?}");
        }
        other => panic!("expected an error summary, got {other:?}"),
    }
}
