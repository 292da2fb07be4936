//! Output heads beyond softmax (`signature.task`): binary, multilabel and
//! regression models made with torch in the test setup (one also exported
//! to ONNX) answer over real HTTP what torch.jit (or onnxruntime) in Python
//! computes, on `/predict/batch` and OIP, and keep the metrics their task
//! calls for; `verify` holds a model to its task.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use hone_crds::contract::{ExpectedSignature, MODEL_CARD_FILE, MODEL_FILE, ModelCard, ONNX_MODEL_FILE};
use hone_crds::modelversion::{ArtifactFormat, Task};
use hone_crds::predictor::env;
use hone_predictor::verify::verify;
use serde_json::{Value, json};

use common::{args_at, fixture, make_models, post_json, python, start};

/// The tabular models' preprocessing (make_models.py's `make_tabular`).
const MEAN: [f32; 4] = [5.8, 3.0, 3.7, 1.2];
const STD: [f32; 4] = [0.8, 0.4, 1.7, 0.7];

fn models() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        make_models(&["binary", "multilabel", "regression", "regression-onnx", "mlp", "sklearn-onnx"])
    })
    .path()
}

fn folder(name: &str) -> String {
    models().join(name).display().to_string()
}

/// `n` feature rows spread over about +-2.5 standard deviations.
fn rows(n: usize) -> Vec<[f32; 4]> {
    (0..n)
        .map(|i| {
            std::array::from_fn(|j| {
                MEAN[j] + STD[j] * (((i * 37 + j * 11 + i * j * 7 + i * i) % 41) as f32 / 8.0 - 2.5)
            })
        })
        .collect()
}

/// The model input of `rows`, standardised as the predictor does.
fn standardized(rows: &[[f32; 4]]) -> Vec<f32> {
    rows.iter().flat_map(|r| (0..4).map(move |j| (r[j] - MEAN[j]) / STD[j])).collect()
}

/// torch's answer for `input` (`n` samples of 4): raw output, sigmoid, softmax.
struct Reference {
    width: usize,
    raw: Vec<f32>,
    sigmoid: Vec<f32>,
}

fn run_reference(script: &str, model: &Path, input: &[f32]) -> Value {
    let mut child = Command::new(python())
        .arg(fixture(script))
        .arg(model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    let request = json!({"shape": [input.len() / 4, 4], "data": input}).to_string();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), request.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{script} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn torch_reference(name: &str, input: &[f32]) -> Reference {
    let answer = run_reference("torch_reference.py", &models().join(name).join(MODEL_FILE), input);
    assert_eq!(answer["shape"][0], input.len() / 4, "{answer}");
    Reference {
        width: answer["shape"][1].as_u64().unwrap() as usize,
        raw: serde_json::from_value(answer["raw"].clone()).unwrap(),
        sigmoid: serde_json::from_value(answer["sigmoid"].clone()).unwrap(),
    }
}

fn close(a: f64, b: f32) -> bool {
    (a as f32 - b).abs() <= 1e-4 * (1.0 + b.abs())
}

fn floats(value: &Value) -> Vec<f32> {
    serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{value}: {e}"))
}

fn assert_all_close(found: &[f32], expected: &[f32], what: &str) {
    assert_eq!(found.len(), expected.len(), "{what}");
    for (i, (a, b)) in found.iter().zip(expected).enumerate() {
        assert!(close(f64::from(*a), *b), "{what}[{i}]: {a} vs reference {b}");
    }
}

async fn predict_batch(server: &common::Server, rows: &[[f32; 4]]) -> Vec<Value> {
    let client = reqwest::Client::new();
    let answer = post_json(&client, &server.url("/predict/batch"), &json!({"instances": rows})).await;
    answer["predictions"].as_array().unwrap_or_else(|| panic!("{answer}")).clone()
}

async fn infer(server: &common::Server, model: &str, input: &[f32], outputs: Option<Value>) -> Value {
    let mut body = json!({"inputs": [{"name": "input", "shape": [input.len() / 4, 4], "datatype": "FP32",
                                      "data": input}]});
    if let Some(outputs) = outputs {
        body["outputs"] = outputs;
    }
    post_json(&reqwest::Client::new(), &server.url(&format!("/v2/models/{model}/infer")), &body).await
}

async fn metrics(server: &common::Server) -> String {
    reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_model_answers_by_its_threshold_as_torch_scores_it() {
    let server = start(args_at(&folder("binary"), "binary", &[])).await;
    let rows = rows(60);
    let input = standardized(&rows);
    let reference = torch_reference("binary", &input);
    assert_eq!(reference.width, 1, "one logit");

    let predictions = predict_batch(&server, &rows).await;
    assert_eq!(predictions.len(), rows.len());
    let (mut positives, mut decided_by_threshold) = (0, 0);
    for (i, p) in predictions.iter().enumerate() {
        let probability = reference.sigmoid[i];
        assert!(
            close(p["probability"].as_f64().unwrap(), probability),
            "row {i}: {p} vs torch {probability}"
        );
        let positive = probability >= 0.3;
        positives += usize::from(positive);
        decided_by_threshold += usize::from((0.3..0.5).contains(&probability));
        assert_eq!(
            p["label"],
            if positive { "malignant" } else { "benign" },
            "row {i} (p {probability}): {p}"
        );
        assert_eq!(p["classIndex"], usize::from(positive), "{p}");
        let confidence = if positive { probability } else { 1.0 - probability };
        assert!(close(p["confidence"].as_f64().unwrap(), confidence), "row {i}: {p}");
        assert_eq!(p["top"].as_array().unwrap().len(), 2, "{p}");
        assert!(p.get("values").is_none() && p.get("labels").is_none(), "{p}");
    }
    // The rows exercise the threshold: some answers differ from p >= 0.5.
    assert!(decided_by_threshold > 0 && positives > 0 && positives < rows.len(), "{positives} positives");

    let answer = infer(&server, "binary", &input, None).await;
    assert_eq!(answer["outputs"][0]["name"], "logits", "{answer}");
    assert_eq!(answer["outputs"][0]["shape"], json!([rows.len(), 1]));
    assert_all_close(&floats(&answer["outputs"][0]["data"]), &reference.raw, "OIP logits");
    assert_eq!(answer["outputs"][1]["shape"], json!([rows.len(), 2]));
    let both: Vec<f32> = reference.sigmoid.iter().flat_map(|&p| [1.0 - p, p]).collect();
    assert_all_close(&floats(&answer["outputs"][1]["data"]), &both, "OIP probabilities");

    let text = metrics(&server).await;
    // /predict/batch and OIP each counted every row.
    assert!(text.contains(&format!(r#"class="malignant"}} {}"#, 2 * positives)), "{text}");
    assert!(text.contains(&format!(r#"class="benign"}} {}"#, 2 * (rows.len() - positives))), "{text}");
    let ui: Value = reqwest::get(server.url("/ui/model")).await.unwrap().json().await.unwrap();
    assert_eq!(ui["task"], "binary", "{ui}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multilabel_model_answers_every_class_over_the_threshold() {
    let server = start(args_at(&folder("multilabel"), "multilabel", &[])).await;
    let classes = ["red", "round", "sweet"];
    let rows = rows(40);
    let input = standardized(&rows);
    let reference = torch_reference("multilabel", &input);
    assert_eq!(reference.width, 3);

    let predictions = predict_batch(&server, &rows).await;
    let mut per_class = [0usize; 3];
    let mut sets = std::collections::BTreeSet::new();
    for (i, p) in predictions.iter().enumerate() {
        let scores = &reference.sigmoid[i * 3..i * 3 + 3];
        let expected: Vec<&str> = (0..3).filter(|&c| scores[c] >= 0.5).map(|c| classes[c]).collect();
        for (c, count) in per_class.iter_mut().enumerate() {
            *count += usize::from(scores[c] >= 0.5);
        }
        assert_eq!(p["labels"], json!(expected), "row {i} (torch {scores:?}): {p}");
        sets.insert(expected.join(","));
        let top = (0..3).max_by(|&a, &b| scores[a].total_cmp(&scores[b])).unwrap();
        assert_eq!(p["label"], classes[top], "{p}");
        assert!(close(p["confidence"].as_f64().unwrap(), scores[top]), "{p}");
        for score in p["top"].as_array().unwrap() {
            let c = score["classIndex"].as_u64().unwrap() as usize;
            assert!(close(score["confidence"].as_f64().unwrap(), scores[c]), "{p}");
        }
    }
    assert!(sets.len() >= 3, "the rows should give several label sets: {sets:?}");

    let answer = infer(&server, "multilabel", &input, None).await;
    assert_all_close(&floats(&answer["outputs"][1]["data"]), &reference.sigmoid, "OIP probabilities");
    let text = metrics(&server).await;
    for (c, count) in per_class.iter().enumerate() {
        assert!(text.contains(&format!(r#"class="{}"}} {}"#, classes[c], 2 * count)), "{text}");
    }
}

/// ONNX Runtime's library, or `None` when HONE_SKIP_ONNX=1 says to skip.
fn onnxruntime() -> Option<PathBuf> {
    match std::env::var_os(env::ONNXRUNTIME_LIB) {
        Some(path) if !path.is_empty() => Some(path.into()),
        _ if std::env::var("HONE_SKIP_ONNX").as_deref() == Ok("1") => None,
        _ => {
            panic!("{} is unset: run `eval \"$(hack/env.sh)\"` or set HONE_SKIP_ONNX=1", env::ONNXRUNTIME_LIB)
        }
    }
}

async fn check_regression(server: &common::Server, name: &str, raw: &[f32], rows: &[[f32; 4]]) {
    let predictions = predict_batch(server, rows).await;
    for (i, p) in predictions.iter().enumerate() {
        let expected = &raw[i * 2..i * 2 + 2];
        assert_all_close(&floats(&p["values"]), expected, &format!("{name} row {i}"));
        assert!(close(p["outputs"]["price"].as_f64().unwrap(), expected[0]), "{p}");
        assert!(close(p["outputs"]["rent"].as_f64().unwrap(), expected[1]), "{p}");
        for absent in ["label", "classIndex", "confidence", "top", "labels", "probability"] {
            assert!(p.get(absent).is_none(), "a regression answer has no {absent}: {p}");
        }
    }
    let input = standardized(rows);
    let answer = infer(server, name, &input, None).await;
    let outputs = answer["outputs"].as_array().unwrap_or_else(|| panic!("{answer}"));
    assert_eq!(outputs.len(), 1, "{answer}");
    assert_eq!(outputs[0]["name"], "values");
    assert_eq!(outputs[0]["shape"], json!([rows.len(), 2]));
    assert_all_close(&floats(&outputs[0]["data"]), raw, &format!("{name} OIP values"));
    // A classifier's outputs are not a regression model's.
    let refused = infer(server, name, &input, Some(json!([{"name": "probabilities"}]))).await;
    assert_eq!(refused["code"], "unsupported", "{refused}");
    assert!(refused["error"].as_str().unwrap().contains(r#""values""#), "{refused}");
    let meta: Value =
        reqwest::get(server.url(&format!("/v2/models/{name}"))).await.unwrap().json().await.unwrap();
    assert_eq!(meta["outputs"], json!([{"name": "values", "datatype": "FP32", "shape": [-1, 2]}]), "{meta}");
    let text = metrics(server).await;
    let count = 2 * rows.len();
    assert!(text.contains(&format!(r#"output="price"}} {count}"#)), "{text}");
    assert!(!text.contains("hone_predictor_predictions_total{"), "no class counts for regression: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regression_model_answers_its_numbers_as_torch_computes_them() {
    let server = start(args_at(&folder("regression"), "regression", &[])).await;
    let rows = rows(30);
    let reference = torch_reference("regression", &standardized(&rows));
    assert_eq!(reference.width, 2);
    assert!(reference.raw.iter().any(|&v| v < -0.5), "outputs of both signs: {:?}", reference.raw);
    check_regression(&server, "regression", &reference.raw, &rows).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_onnx_regression_model_answers_as_onnxruntime_in_python() {
    if onnxruntime().is_none() {
        return;
    }
    let server = start(args_at(&folder("regression-onnx"), "regression", &["--format", "ONNX"])).await;
    let rows = rows(30);
    let model = models().join("regression-onnx").join(ONNX_MODEL_FILE);
    let answer = run_reference("onnx_reference.py", &model, &standardized(&rows));
    assert_eq!(answer["shape"], json!([30, 2]), "{answer}");
    check_regression(&server, "regression", &floats(&answer["data"]), &rows).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scikit_learn_pipeline_through_skl2onnx_answers_its_probabilities() {
    if onnxruntime().is_none() {
        return;
    }
    let server = start(args_at(&folder("sklearn-onnx"), "iris", &["--format", "ONNX"])).await;
    // Raw features: the scaler is inside the graph (the card has no preprocessing).
    let rows = rows(30);
    let input: Vec<f32> = rows.iter().flatten().copied().collect();
    let model = models().join("sklearn-onnx").join(ONNX_MODEL_FILE);
    let answer = run_reference("onnx_reference.py", &model, &input);
    assert_eq!(answer["shape"], json!([30, 3]), "the probabilities, not the int64 label: {answer}");
    let probabilities = floats(&answer["data"]);
    let classes = card("sklearn-onnx").signature.classes;
    let mut answered = std::collections::BTreeSet::new();
    for (i, p) in predict_batch(&server, &rows).await.iter().enumerate() {
        let row = &probabilities[i * 3..i * 3 + 3];
        let top = (0..3).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
        assert_eq!(p["label"], classes[top].as_str(), "row {i} ({row:?}): {p}");
        // Used as they are: no softmax over probabilities.
        assert!(close(p["confidence"].as_f64().unwrap(), row[top]), "row {i} ({row:?}): {p}");
        answered.insert(top);
    }
    assert!(answered.len() >= 2, "the rows should reach several classes: {answered:?}");
    let oip = infer(&server, "iris", &input, None).await;
    assert_all_close(&floats(&oip["outputs"][1]["data"]), &probabilities, "OIP probabilities");
}

fn card(name: &str) -> ModelCard {
    serde_json::from_slice(&std::fs::read(models().join(name).join(MODEL_CARD_FILE)).unwrap()).unwrap()
}

#[tokio::test]
async fn verify_holds_a_model_to_its_task() {
    let binary = models().join("binary");
    let mut args = common::verify_args(&binary, ArtifactFormat::TorchScript, None);
    let signature = card("binary").signature;
    args.expected_signature = Some(serde_json::to_string(&ExpectedSignature::of(&signature)).unwrap());
    let ok = verify(&args).await;
    assert!(ok.ok, "{ok:?}");

    // The ModelVersion says classification; the card says binary.
    let mut softmax = signature.clone();
    softmax.task = Task::Classification;
    softmax.threshold = None;
    args.expected_signature = Some(serde_json::to_string(&ExpectedSignature::of(&softmax)).unwrap());
    let mismatch = verify(&args).await;
    assert_eq!(mismatch.reason.as_deref(), Some("SignatureMismatch"), "{mismatch:?}");
    let message = mismatch.message.unwrap();
    assert!(message.contains("task is classification but model.json says binary"), "{message}");

    // A three-logit model declared binary fails its forward check, saying why.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(models().join("mlp").join(MODEL_FILE), dir.path().join(MODEL_FILE)).unwrap();
    let mut declared = serde_json::to_value(card("mlp")).unwrap();
    declared["signature"]["task"] = json!("binary");
    declared["signature"]["classes"] = json!(["no", "yes"]);
    std::fs::write(dir.path().join(MODEL_CARD_FILE), declared.to_string()).unwrap();
    let wrong = verify(&common::verify_args(dir.path(), ArtifactFormat::TorchScript, None)).await;
    assert_eq!(wrong.reason.as_deref(), Some("ForwardFailed"), "{wrong:?}");
    let message = wrong.message.unwrap();
    assert!(message.contains("expected [1, 1]") && message.contains("task binary: one logit"), "{message}");

    // A binary card with three classes is not a card.
    declared["signature"]["classes"] = json!(["a", "b", "c"]);
    std::fs::write(dir.path().join(MODEL_CARD_FILE), declared.to_string()).unwrap();
    let invalid = verify(&common::verify_args(dir.path(), ArtifactFormat::TorchScript, None)).await;
    assert_eq!(invalid.reason.as_deref(), Some("InvalidModelCard"), "{invalid:?}");
    assert!(invalid.message.unwrap().contains("exactly two classes"));
}
