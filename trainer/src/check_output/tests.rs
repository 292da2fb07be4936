//! A good output made from a tiny traced module, then broken one way at a time.

use std::path::{Path, PathBuf};

use hone_crds::contract::{ErrorSummary, InputKind, ModelCard, TerminationSummary, TrainSummary};
use hone_crds::modelversion::{Preprocessing, Signature};
use tch::{CModule, Device, Kind, Tensor};

use super::*;

const FEATURES: i64 = 4;
const CLASSES: [&str; 3] = ["setosa", "versicolor", "virginica"];

/// TorchScript of `x @ W` for `[batch, FEATURES]` inputs; with `batch_one`,
/// a trace that reshapes to batch 1 and so fails at any other batch size.
fn traced_module(classes: i64, batch_one: bool) -> Vec<u8> {
    let weight = Tensor::ones([FEATURES, classes], (Kind::Float, Device::Cpu));
    let example = Tensor::zeros([1, FEATURES], (Kind::Float, Device::Cpu));
    let module = tch::no_grad(|| {
        CModule::create_by_tracing("Tiny", "forward", &[example], &mut |inputs| {
            let x = if batch_one { inputs[0].view([1, -1]) } else { inputs[0].shallow_clone() };
            vec![x.matmul(&weight)]
        })
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.pt");
    module.save(&path).unwrap();
    std::fs::read(path).unwrap()
}

fn card(module: &[u8]) -> ModelCard {
    ModelCard {
        format_version: contract::MODEL_CARD_VERSION,
        input: InputKind::Tabular,
        signature: Signature {
            input_shape: vec![FEATURES],
            classes: CLASSES.iter().map(|c| (*c).to_owned()).collect(),
            preprocessing: Some(Preprocessing {
                resize: None,
                mean: Some(vec![5.8, 3.0, 3.7, 1.2]),
                std: Some(vec![0.8, 0.4, 1.7, 0.7]),
            }),
            ..Signature::default()
        },
        feature_names: vec!["a".into(), "b".into(), "c".into(), "d".into()],
        architecture: Some("tiny".into()),
        metrics: [("test_accuracy".to_owned(), 0.9)].into(),
        dataset_digest: Some(format!("sha256:{}", "d".repeat(64))),
        artifact_digest: Some(sha256_digest(module)),
        training_stats: None,
        trainer_version: None,
    }
}

fn summary(dir: &Path, module: &[u8], card: &ModelCard, card_bytes: &[u8]) -> TerminationSummary {
    TerminationSummary::Train(TrainSummary {
        epoch: 3,
        total_epochs: 3,
        metrics: card.metrics.clone(),
        artifact_uri: format!("file://{}/model.pt", dir.display()),
        artifact_digest: sha256_digest(module),
        artifact_size_bytes: module.len() as u64,
        card_digest: Some(sha256_digest(card_bytes)),
        dataset_digest: card.dataset_digest.clone(),
        input_shape: card.signature.input_shape.clone(),
        classes: card.signature.classes.clone(),
        preprocessing: card.signature.preprocessing.clone(),
        task: card.signature.task,
        threshold: card.signature.threshold,
        output: card.signature.output,
        artifact_format: Default::default(),
        mlflow_run_id: None,
    })
}

/// A complete, correct output in a temp dir, with its summary file.
struct Output {
    dir: tempfile::TempDir,
    summary: PathBuf,
}

impl Output {
    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write_summary(&self, summary: &TerminationSummary) {
        std::fs::write(&self.summary, serde_json::to_vec(summary).unwrap()).unwrap();
    }

    async fn check(&self) -> Report {
        check(self.path().to_str().unwrap(), Some(&self.summary)).await
    }
}

fn good_output() -> Output {
    let dir = tempfile::tempdir().unwrap();
    let module = traced_module(CLASSES.len() as i64, false);
    let card = card(&module);
    let card_bytes = serde_json::to_vec_pretty(&card).unwrap();
    std::fs::write(dir.path().join("model.pt"), &module).unwrap();
    std::fs::write(dir.path().join("model.json"), &card_bytes).unwrap();
    let epoch = r#"{"epoch":1,"trainLoss":1.0,"trainAccuracy":0.5,"valLoss":1.0,"valAccuracy":0.5,"learningRate":0.01,"samplesPerSecond":100.0}"#;
    std::fs::write(dir.path().join("metrics.jsonl"), format!("{epoch}\n{epoch}\n")).unwrap();
    let summary_path = dir.path().join("termination-log");
    let output = Output { summary: summary_path, dir };
    output.write_summary(&summary(output.path(), &module, &card, &card_bytes));
    output
}

/// The finding lines of `report` about `subject`.
fn findings<'a>(report: &'a Report, subject: &str) -> Vec<&'a str> {
    report.findings().filter(|l| l.subject == subject).map(|l| l.text.as_str()).collect()
}

#[tokio::test]
async fn a_good_output_passes_with_its_summary() {
    let output = good_output();
    let report = output.check().await;
    assert!(report.passed(), "{}", report.render());
    let ok: Vec<&str> = report.lines.iter().filter(|l| l.verdict == Verdict::Ok).map(|l| l.subject).collect();
    for subject in ["model.pt", "model.json", "metrics.jsonl", "summary"] {
        assert!(ok.contains(&subject), "no ok line for {subject}: {}", report.render());
    }
    assert!(report.render().ends_with("ok      the output honours the training contract\n"));
}

#[tokio::test]
async fn a_missing_card_is_named_and_the_module_still_loads() {
    let output = good_output();
    std::fs::remove_file(output.path().join("model.json")).unwrap();
    let report = output.check().await;
    assert!(!report.passed());
    assert!(findings(&report, "model.json")[0].starts_with("missing"), "{}", report.render());
    assert!(report.lines.iter().any(|l| l.subject == "model.pt" && l.text == "loads as TorchScript"));
    assert!(report.render().contains("FINDING model.json: missing"));
}

#[tokio::test]
async fn a_missing_or_foreign_module_is_a_finding() {
    let output = good_output();
    std::fs::write(output.path().join("model.pt"), b"a state_dict is not TorchScript").unwrap();
    let report = check(output.path().to_str().unwrap(), None).await;
    let found = findings(&report, "model.pt");
    assert!(found.iter().any(|f| f.starts_with("does not load as TorchScript")), "{}", report.render());
    // The card's artifactDigest is the old module's.
    assert!(findings(&report, "model.json").iter().any(|f| f.contains("artifactDigest")));

    std::fs::remove_file(output.path().join("model.pt")).unwrap();
    let report = check(output.path().to_str().unwrap(), None).await;
    assert!(findings(&report, "model.pt")[0].starts_with("missing"), "{}", report.render());
}

#[tokio::test]
async fn classes_must_match_the_outputs_per_sample() {
    let output = good_output();
    let module = traced_module(2, false);
    std::fs::write(output.path().join("model.pt"), &module).unwrap();
    let card_bytes = serde_json::to_vec(&card(&module)).unwrap();
    std::fs::write(output.path().join("model.json"), card_bytes).unwrap();
    let report = check(output.path().to_str().unwrap(), None).await;
    let found = findings(&report, "model.pt");
    assert_eq!(found.len(), 1, "{}", report.render());
    assert!(
        found[0].starts_with("returns 2 outputs per sample but model.json's signature needs 3"),
        "{}",
        found[0]
    );
}

#[tokio::test]
async fn a_trace_that_only_runs_at_batch_one_is_a_finding() {
    let output = good_output();
    let module = traced_module(3, true);
    std::fs::write(output.path().join("model.pt"), &module).unwrap();
    std::fs::write(output.path().join("model.json"), serde_json::to_vec(&card(&module)).unwrap()).unwrap();
    let report = check(output.path().to_str().unwrap(), None).await;
    let found = findings(&report, "model.pt");
    assert_eq!(found.len(), 1, "{}", report.render());
    assert!(found[0].starts_with("forward on zeros of shape [2, 4] fails"), "{}", found[0]);
}

#[tokio::test]
async fn a_card_that_does_not_parse_names_the_field() {
    let output = good_output();
    std::fs::write(output.path().join("model.json"), br#"{"formatVersion":1,"input":"tabular"}"#).unwrap();
    let report = check(output.path().to_str().unwrap(), None).await;
    let found = findings(&report, "model.json");
    assert!(found[0].contains("missing field `signature`"), "{}", report.render());
    assert!(report.lines.iter().any(|l| l.verdict == Verdict::Note && l.subject == "model.pt"));
}

#[test]
fn card_problems_are_what_the_predictor_refuses() {
    let mut card = card(b"x");
    assert!(card_problems(&card).is_empty());
    card.feature_names.pop();
    card.signature.preprocessing =
        Some(Preprocessing { resize: None, mean: Some(vec![0.0; 2]), std: Some(vec![0.0]) });
    let problems = card_problems(&card);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].starts_with("featureNames has 3 names"));
    assert!(problems[1].starts_with("signature.preprocessing.mean has 2 values, expected 4"));
    assert_eq!(problems[2], "signature.preprocessing.std has a zero");

    card.input = InputKind::Image;
    card.signature.preprocessing = None;
    card.signature.classes.clear();
    let problems = card_problems(&card);
    assert!(
        problems.iter().any(|p| p.starts_with("signature.classes must name at least one class")),
        "{problems:?}"
    );
    assert!(problems.iter().any(|p| p.starts_with("image models need inputShape")), "{problems:?}");
}

#[tokio::test]
async fn the_summary_must_describe_the_files() {
    let output = good_output();
    let summary: TerminationSummary =
        serde_json::from_slice(&std::fs::read(&output.summary).unwrap()).unwrap();
    let TerminationSummary::Train(mut train) = summary else { panic!("not a train summary") };
    train.artifact_digest = format!("sha256:{}", "0".repeat(64));
    train.artifact_size_bytes += 1;
    train.card_digest = Some(format!("sha256:{}", "1".repeat(64)));
    train.input_shape = vec![5];
    train.classes.reverse();
    output.write_summary(&TerminationSummary::Train(train));
    let report = output.check().await;
    let found = findings(&report, "summary");
    for field in ["artifactDigest", "artifactSizeBytes", "cardDigest", "inputShape", "classes"] {
        assert!(found.iter().any(|f| f.starts_with(field)), "no finding on {field}: {}", report.render());
    }
    assert_eq!(report.findings().count(), 5, "only the summary is wrong: {}", report.render());
}

#[tokio::test]
async fn summaries_that_are_not_a_training_summary_are_findings() {
    let output = good_output();
    output.write_summary(&TerminationSummary::Error(ErrorSummary {
        reason: "InvalidData".into(),
        message: "iris.csv line 3: not a number".into(),
    }));
    let report = output.check().await;
    assert_eq!(
        findings(&report, "summary"),
        ["reports a failure: InvalidData: iris.csv line 3: not a number"]
    );

    std::fs::write(&output.summary, r#"{"kind":"worker","rank":1,"worldSize":2,"epoch":3,"message":"done"}"#)
        .unwrap();
    let report = output.check().await;
    assert!(findings(&report, "summary")[0].starts_with("is rank 1's worker summary"), "{}", report.render());

    std::fs::write(&output.summary, "training finished").unwrap();
    let report = output.check().await;
    assert!(findings(&report, "summary")[0].starts_with("is not a termination summary"));
}

#[tokio::test]
async fn a_summary_over_four_kib_is_a_finding() {
    let output = good_output();
    let summary: TerminationSummary =
        serde_json::from_slice(&std::fs::read(&output.summary).unwrap()).unwrap();
    let TerminationSummary::Train(mut train) = summary else { panic!("not a train summary") };
    train.metrics = (0..200).map(|i| (format!("metric_{i:03}"), f64::from(i))).collect();
    output.write_summary(&TerminationSummary::Train(train));
    let report = output.check().await;
    let found = findings(&report, "summary");
    assert_eq!(found.len(), 1, "{}", report.render());
    assert!(found[0].contains("Kubernetes keeps 4096"), "{}", found[0]);
}

#[tokio::test]
async fn metrics_are_optional_but_must_parse() {
    let output = good_output();
    std::fs::write(output.path().join("metrics.jsonl"), "{\"epoch\":1}\n").unwrap();
    let report = output.check().await;
    assert!(findings(&report, "metrics.jsonl")[0].starts_with("line 1 is not an epoch's metrics"));

    std::fs::remove_file(output.path().join("metrics.jsonl")).unwrap();
    let report = output.check().await;
    assert!(report.passed(), "{}", report.render());
    assert!(report.lines.iter().any(|l| l.verdict == Verdict::Note && l.subject == "metrics.jsonl"));
}

#[tokio::test]
async fn the_output_may_be_named_by_uri_path_or_model_file() {
    let output = good_output();
    let path = output.path().display().to_string();
    for uri in [format!("file://{path}"), format!("{path}/"), format!("{path}/model.pt")] {
        let report = check(&uri, None).await;
        assert!(report.passed(), "{uri}: {}", report.render());
    }
    let report = check("ftp://host/run", None).await;
    assert_eq!(findings(&report, "output").len(), 1, "{}", report.render());
}
