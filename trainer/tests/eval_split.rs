//! `hone-trainer eval-split` on real files: the written samples are exactly
//! the held-out test split training used (raw CSV values, images as stored),
//! and a changed or split-less Dataset fails with its own category.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{file_uri, trainer_bin};
use hone_crds::contract::{
    EVAL_HEADER_FILE, EVAL_SAMPLES_FILE, EvalSample, EvalSplitHeader, InputKind, TerminationSummary, env,
};
use hone_trainer::dataset::{DataOptions, Format, seeded_split};
use hone_trainer::evalsplit::{self, EvalSplitOptions};
use sha2::{Digest, Sha256};

const CLASSES: [&str; 3] = ["setosa", "versicolor", "virginica"];
const ROWS: usize = 50;

/// Feature values of row `i` (exact in f32), in feature-column order.
fn row_features(i: usize) -> [f32; 2] {
    [100.0 + i as f32 * 1.5, -(i as f32) * 0.25]
}

/// A CSV whose label column sits between the features; returns its path.
fn write_csv(dir: &Path) -> PathBuf {
    let mut text = String::from("width,species,depth\n");
    for i in 0..ROWS {
        let [width, depth] = row_features(i);
        text.push_str(&format!("{width},{},{depth}\n", CLASSES[i % 3]));
    }
    let path = dir.join("flowers.csv");
    std::fs::write(&path, text).unwrap();
    path
}

/// The dataset digest, computed from its definition (manifest of one file).
fn csv_digest(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let name = path.file_name().unwrap().to_str().unwrap();
    let line = format!("{name}\t{}\tsha256:{}\n", bytes.len(), hex::encode(Sha256::digest(&bytes)));
    format!("sha256:{}", hex::encode(Sha256::digest(line.as_bytes())))
}

fn csv_options(csv: &Path, test: f64, out: &Path) -> EvalSplitOptions {
    EvalSplitOptions {
        data: DataOptions {
            source: file_uri(csv),
            format: Format::Csv,
            label_column: "species".into(),
            feature_columns: Vec::new(),
            width: 224,
            height: 224,
            channels: 3,
            validation: 0.1,
            test,
            split_seed: 7,
        },
        expected_digest: None,
        out: out.to_owned(),
    }
}

fn read_header(out: &Path) -> EvalSplitHeader {
    serde_json::from_slice(&std::fs::read(out.join(EVAL_HEADER_FILE)).unwrap()).unwrap()
}

fn read_samples(out: &Path) -> Vec<EvalSample> {
    std::fs::read_to_string(out.join(EVAL_SAMPLES_FILE))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The samples the CSV's test split must give, in split order.
fn expected_csv_samples() -> Vec<EvalSample> {
    seeded_split(ROWS, 0.1, 0.2, 7)
        .test
        .iter()
        .map(|&i| EvalSample {
            label: CLASSES[i % 3].to_owned(),
            features: Some(row_features(i).to_vec()),
            file: None,
        })
        .collect()
}

/// Runs the binary configured only through its environment variables;
/// returns (success, termination summary).
fn eval_split_via_env(csv: &Path, digest: &str, out: &Path) -> (bool, TerminationSummary) {
    let log = out.parent().unwrap().join("termination-log");
    let result = Command::new(trainer_bin())
        .arg("eval-split")
        .env(env::DATASET_SOURCE, file_uri(csv))
        .env(env::DATASET_FORMAT, "CSV")
        .env(env::CSV_LABEL_COLUMN, "species")
        .env(env::SPLIT_VALIDATION, "0.1")
        .env(env::SPLIT_TEST, "0.2")
        .env(env::SPLIT_SEED, "7")
        .env(env::DATASET_DIGEST, digest)
        .env(env::EVAL_OUT, out)
        .env(env::TERMINATION_LOG, &log)
        .output()
        .unwrap();
    let summary = serde_json::from_slice(&std::fs::read(&log).unwrap()).unwrap();
    (result.status.success(), summary)
}

#[test]
fn csv_split_is_the_seeded_test_rows_with_raw_values_and_class_names() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_csv(dir.path());
    let out = dir.path().join("eval");
    let digest = csv_digest(&csv);
    let (ok, summary) = eval_split_via_env(&csv, &digest, &out);
    assert!(ok, "{summary:?}");

    let samples = read_samples(&out);
    assert_eq!(samples.len(), 10, "20% of 50 rows");
    assert_eq!(samples, expected_csv_samples());
    let header = read_header(&out);
    assert_eq!(
        header,
        EvalSplitHeader {
            dataset_digest: digest,
            input: InputKind::Tabular,
            classes: CLASSES.iter().map(|c| (*c).to_owned()).collect(),
            feature_names: vec!["width".into(), "depth".into()],
            test_samples: 10,
            samples: 10,
        }
    );
    assert_eq!(summary, TerminationSummary::EvalSplit(header));
}

#[test]
fn changed_dataset_fails_with_dataset_changed_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_csv(dir.path());
    let out = dir.path().join("eval");
    let trained_on = format!("sha256:{}", "0".repeat(64));
    let (ok, summary) = eval_split_via_env(&csv, &trained_on, &out);
    assert!(!ok);
    let TerminationSummary::Error(error) = summary else { panic!("not an error summary: {summary:?}") };
    assert_eq!(error.reason, "DatasetChanged");
    assert!(
        error.message.starts_with(&format!(
            "Dataset content is {} but the model was trained on {trained_on}",
            csv_digest(&csv)
        )),
        "{}",
        error.message
    );
    assert!(error.message.contains("spec.evaluation.dataset"), "{}", error.message);
    assert!(!out.join(EVAL_HEADER_FILE).exists() && !out.join(EVAL_SAMPLES_FILE).exists());
}

#[tokio::test]
async fn empty_test_split_fails_with_no_test_split() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_csv(dir.path());
    let out = dir.path().join("eval");
    let err = evalsplit::run(&csv_options(&csv, 0.0, &out)).await.unwrap_err();
    assert_eq!(err.category(), "NoTestSplit");
    let message = err.to_string();
    assert!(message.contains("has no test split"), "{message}");
    assert!(message.contains("spec.split.test"), "{message}");
    assert!(!out.join(EVAL_HEADER_FILE).exists());
}

#[tokio::test]
async fn cap_writes_the_first_samples_of_the_split_and_counts_the_whole_split() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_csv(dir.path());
    let out = dir.path().join("eval");
    let header = evalsplit::run_capped(&csv_options(&csv, 0.2, &out), 4).await.unwrap();
    assert_eq!((header.test_samples, header.samples), (10, 4));
    assert_eq!(read_header(&out), header);
    assert_eq!(read_samples(&out), expected_csv_samples()[..4].to_vec());
}

/// Writes `<class>/<name>` images of distinct pixels; returns the relative
/// paths, sorted as storage lists them.
fn write_images(root: &Path) -> Vec<String> {
    let names = ["a.png", "b.jpg", "c.PNG", "d.png", "e.jpg", "f.png"];
    let mut paths = Vec::new();
    for (c, class) in ["cat", "dog", "owl"].iter().enumerate() {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for (n, name) in names.iter().enumerate() {
            let seed = (c * names.len() + n) as u32;
            let image = image::RgbImage::from_fn(6 + seed % 3, 5, |x, y| {
                image::Rgb([(x * 40 + seed * 13) as u8, (y * 50) as u8, (seed * 29) as u8])
            });
            let format =
                if name.ends_with("jpg") { image::ImageFormat::Jpeg } else { image::ImageFormat::Png };
            let relative = format!("{class}/{name}");
            image.save_with_format(root.join(&relative), format).unwrap();
            paths.push(relative);
        }
    }
    paths.sort();
    paths
}

#[tokio::test]
async fn image_split_copies_the_stored_files_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("animals");
    let paths = write_images(&source);
    let out = dir.path().join("eval");
    let opts = EvalSplitOptions {
        data: DataOptions {
            source: file_uri(&source),
            format: Format::ImageFolder,
            label_column: "label".into(),
            feature_columns: Vec::new(),
            width: 4,
            height: 4,
            channels: 3,
            validation: 0.2,
            test: 0.35,
            split_seed: 11,
        },
        expected_digest: None,
        out: out.clone(),
    };
    let header = evalsplit::run(&opts).await.unwrap();

    let test = seeded_split(paths.len(), 0.2, 0.35, 11).test;
    assert_eq!(test.len(), 6, "35% of 18 images");
    assert_eq!((header.test_samples, header.samples), (6, 6));
    assert_eq!(header.input, InputKind::Image);
    assert_eq!(header.classes, ["cat", "dog", "owl"]);
    assert!(header.feature_names.is_empty());
    assert_eq!(read_header(&out), header);

    let samples = read_samples(&out);
    assert_eq!(samples.len(), test.len());
    assert!(
        samples.iter().any(|s| !s.file.as_deref().unwrap_or_default().ends_with(".png")),
        "the split exercises extensions other than .png: {samples:?}"
    );
    for (n, (sample, &index)) in samples.iter().zip(&test).enumerate() {
        let stored = &paths[index];
        let (class, name) = stored.split_once('/').unwrap();
        let extension = name.rsplit_once('.').unwrap().1;
        assert_eq!(sample.label, class);
        assert_eq!(sample.features, None);
        assert_eq!(sample.file.as_deref(), Some(format!("images/{n}.{extension}").as_str()));
        let copied = std::fs::read(out.join(sample.file.as_ref().unwrap())).unwrap();
        assert_eq!(copied, std::fs::read(source.join(stored)).unwrap(), "{stored} copied as stored");
    }
}
