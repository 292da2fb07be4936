//! `verify` end to end on real TorchScript models traced here: the card's
//! digest and signature are checked against what the ModelVersion pinned,
//! and the model is measured on a held-out test split written as the
//! trainer's `eval-split` writes it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use hone_crds::contract::{
    EVAL_HEADER_FILE, EVAL_SAMPLES_FILE, EvalSample, EvalSplitHeader, ExpectedSignature, InputKind,
    ModelCard, metric,
};
use hone_crds::modelversion::ArtifactFormat;
use hone_predictor::model::sha256_digest;
use hone_predictor::verify::{VerifySummary, verify};
use serde_json::json;
use tch::{Device, Kind, Tensor};

/// Traces `forward` on one zero sample of `shape` and writes it as `dir/model.pt`.
fn write_module(dir: &Path, shape: &[i64], forward: impl Fn(&Tensor) -> Tensor) {
    let mut example_shape = vec![1];
    example_shape.extend_from_slice(shape);
    let example = Tensor::zeros(example_shape.as_slice(), (Kind::Float, Device::Cpu));
    let module = tch::no_grad(|| {
        tch::CModule::create_by_tracing("TestModel", "forward", &[example], &mut |inputs| {
            vec![forward(&inputs[0])]
        })
    })
    .unwrap();
    module.save(dir.join("model.pt")).unwrap();
}

/// A tabular model whose logits are its (standardised) input: it answers
/// the class of the largest feature.
fn tabular_model(dir: &Path, classes: &[&str]) -> ModelCard {
    write_module(dir, &[3], |x| x.matmul(&Tensor::eye(3, (Kind::Float, Device::Cpu))));
    // Feature f1 is centred on 10: without standardisation it would win most rows.
    write_card(
        dir,
        json!({
            "formatVersion": 1,
            "input": "tabular",
            "featureNames": ["f0", "f1", "f2"],
            "signature": {
                "inputShape": [3],
                "classes": classes,
                "preprocessing": {"mean": [0.0, 10.0, 0.0], "std": [1.0, 1.0, 1.0]},
            },
        }),
    )
}

/// An image model over 1x2x2 grayscale: "dark" when the mean normalised
/// pixel is below 0, "light" above.
fn image_model(dir: &Path) -> ModelCard {
    write_module(dir, &[1, 2, 2], |x| {
        let mean = x.flatten(1, -1).mean_dim(-1, true, Kind::Float);
        Tensor::cat(&[-&mean, mean], 1)
    });
    write_card(
        dir,
        json!({
            "formatVersion": 1,
            "input": "image",
            "signature": {
                "inputShape": [1, 2, 2],
                "classes": ["dark", "light"],
                "preprocessing": {"mean": [0.5], "std": [0.5]},
            },
        }),
    )
}

fn write_card(dir: &Path, card: serde_json::Value) -> ModelCard {
    std::fs::write(dir.join("model.json"), card.to_string()).unwrap();
    serde_json::from_value(card).unwrap()
}

fn write_split(
    dir: &Path,
    input: InputKind,
    classes: &[&str],
    feature_names: &[&str],
    samples: &[EvalSample],
) {
    let header = EvalSplitHeader {
        dataset_digest: "sha256:testsplit".into(),
        input,
        classes: classes.iter().map(|c| (*c).to_owned()).collect(),
        feature_names: feature_names.iter().map(|c| (*c).to_owned()).collect(),
        test_samples: samples.len() as u64 * 2,
        samples: samples.len() as u64,
    };
    let lines: Vec<String> = samples.iter().map(|s| serde_json::to_string(s).unwrap()).collect();
    std::fs::write(dir.join(EVAL_SAMPLES_FILE), lines.join("\n") + "\n").unwrap();
    std::fs::write(dir.join(EVAL_HEADER_FILE), serde_json::to_string(&header).unwrap()).unwrap();
}

fn row(label: &str, features: [f32; 3]) -> EvalSample {
    EvalSample { label: label.into(), features: Some(features.to_vec()), file: None }
}

/// Six rows: four answered right (one only after standardisation), one
/// wrong, one whose label is no class of the model.
fn tabular_split(dir: &Path) {
    let samples = [
        row("a", [3.0, 10.0, 0.0]),
        row("b", [0.0, 13.0, 1.0]),
        row("c", [0.0, 10.0, 2.0]),
        row("a", [1.0, 5.0, 0.0]),
        row("c", [2.0, 10.0, 0.0]),
        row("zebra", [0.0, 10.0, 1.0]),
    ];
    write_split(dir, InputKind::Tabular, &["a", "b", "c"], &["f0", "f1", "f2"], &samples);
}

fn metric_of(summary: &VerifySummary, name: &str) -> f64 {
    summary.evaluation.as_ref().unwrap_or_else(|| panic!("no evaluation: {summary:?}")).metrics[name]
}

#[tokio::test]
async fn verify_measures_the_model_on_the_test_split() {
    let (model, split) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let card = tabular_model(model.path(), &["a", "b", "c"]);
    tabular_split(split.path());
    let card_digest = sha256_digest(&std::fs::read(model.path().join("model.json")).unwrap());
    let mut args = common::verify_args(model.path(), ArtifactFormat::TorchScript, None);
    args.card_digest = Some(card_digest.clone());
    args.expected_signature = Some(serde_json::to_string(&ExpectedSignature::of(&card.signature)).unwrap());
    args.eval_dir = Some(split.path().to_owned());

    let summary = verify(&args).await;
    assert!(summary.ok, "{summary:?}");
    assert_eq!(summary.card_digest.as_deref(), Some(card_digest.as_str()));
    assert!(summary.forward_ms.is_some());
    assert_eq!(metric_of(&summary, metric::ACCURACY), 0.666667);
    let evaluation = summary.evaluation.unwrap();
    assert_eq!((evaluation.samples, evaluation.unknown_labels), (6, 1));
    assert_eq!(evaluation.dataset_digest, "sha256:testsplit");
    assert_eq!(evaluation.confusion_matrix, Some(vec![vec![2, 0, 0], vec![0, 1, 0], vec![1, 0, 1]]));
    assert_eq!(evaluation.per_class.iter().map(|c| c.support).collect::<Vec<_>>(), vec![2, 1, 2]);
}

#[tokio::test]
async fn a_card_with_permuted_classes_scores_low_but_still_verifies() {
    let (model, split) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    tabular_model(model.path(), &["b", "a", "c"]);
    tabular_split(split.path());
    let mut args = common::verify_args(model.path(), ArtifactFormat::TorchScript, None);
    args.eval_dir = Some(split.path().to_owned());
    let summary = verify(&args).await;
    assert!(summary.ok, "low accuracy is for gates to judge: {summary:?}");
    assert_eq!(metric_of(&summary, metric::ACCURACY), 0.166667);
}

#[tokio::test]
async fn a_card_that_is_not_the_pinned_one_fails() {
    let model = tempfile::tempdir().unwrap();
    tabular_model(model.path(), &["a", "b", "c"]);
    let pinned = format!("sha256:{}", "c".repeat(64));
    let mut args = common::verify_args(model.path(), ArtifactFormat::TorchScript, None);
    args.card_digest = Some(pinned.clone());
    let summary = verify(&args).await;
    assert!(!summary.ok);
    assert_eq!(summary.reason.as_deref(), Some("CardDigestMismatch"), "{summary:?}");
    let found = sha256_digest(&std::fs::read(model.path().join("model.json")).unwrap());
    let message = summary.message.unwrap();
    assert!(
        message.contains(&pinned) && message.contains(&found) && message.contains("model.json"),
        "{message}"
    );
    assert_eq!(summary.card_digest, Some(found), "the digest read is reported even on a mismatch");
}

#[tokio::test]
async fn a_card_whose_signature_is_not_the_model_versions_fails() {
    let model = tempfile::tempdir().unwrap();
    let card = tabular_model(model.path(), &["a", "b", "c"]);
    let mut spec = card.signature.clone();
    spec.classes[2] = "d".into();
    let mut args = common::verify_args(model.path(), ArtifactFormat::TorchScript, None);
    args.expected_signature = Some(serde_json::to_string(&ExpectedSignature::of(&spec)).unwrap());
    let summary = verify(&args).await;
    assert!(!summary.ok);
    assert_eq!(summary.reason.as_deref(), Some("SignatureMismatch"), "{summary:?}");
    assert_eq!(
        summary.message.as_deref(),
        Some(r#"spec.signature.classes[2] is "d" but model.json says "c""#)
    );
    assert!(summary.forward_ms.is_none(), "the module is not run for a card that does not match");
}

#[tokio::test]
async fn a_split_that_cannot_be_read_fails_verification_after_the_forward_pass() {
    let (model, split) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    tabular_model(model.path(), &["a", "b", "c"]);
    let short = EvalSample { label: "a".into(), features: Some(vec![1.0, 2.0]), file: None };
    write_split(split.path(), InputKind::Tabular, &["a", "b", "c"], &[], &[row("a", [1.0, 0.0, 0.0]), short]);
    let mut args = common::verify_args(model.path(), ArtifactFormat::TorchScript, None);
    args.eval_dir = Some(split.path().to_owned());
    let summary = verify(&args).await;
    assert!(!summary.ok);
    assert_eq!(summary.reason.as_deref(), Some("EvaluationFailed"), "{summary:?}");
    assert!(summary.message.as_deref().unwrap().contains("line 2"), "{summary:?}");
    assert!(summary.forward_ms.is_some() && summary.evaluation.is_none());
}

#[tokio::test]
async fn images_are_decoded_resized_and_normalised_as_predict_does() {
    let (model, split) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    image_model(model.path());
    std::fs::create_dir(split.path().join("images")).unwrap();
    let gray = |name: &str, size: u32, value: u8| {
        let img = image::GrayImage::from_pixel(size, size, image::Luma([value]));
        img.save(split.path().join("images").join(name)).unwrap();
        name.to_owned()
    };
    let image = |label: &str, file: String| EvalSample {
        label: label.into(),
        features: None,
        file: Some(format!("images/{file}")),
    };
    let samples = [
        image("dark", gray("0.png", 2, 10)),
        image("light", gray("1.png", 2, 250)),
        image("light", gray("2.png", 5, 200)),
        image("dark", gray("3.png", 3, 180)),
    ];
    write_split(split.path(), InputKind::Image, &["dark", "light"], &[], &samples);
    let mut args = common::verify_args(model.path(), ArtifactFormat::TorchScript, None);
    args.eval_dir = Some(split.path().to_owned());
    let summary = verify(&args).await;
    assert!(summary.ok, "{summary:?}");
    assert_eq!(metric_of(&summary, metric::ACCURACY), 0.75);
    assert!(summary.evaluation.as_ref().unwrap().metrics.contains_key(metric::ROC_AUC));

    std::fs::write(split.path().join("images/3.png"), b"not a png").unwrap();
    let summary = verify(&args).await;
    assert!(!summary.ok);
    assert_eq!(summary.reason.as_deref(), Some("EvaluationFailed"), "{summary:?}");
    assert!(summary.message.as_deref().unwrap().contains("images/3.png"), "{summary:?}");
}
