//! ONNX models (`artifact.format: ONNX`) end to end: a CNN exported with
//! `torch.onnx.export` served over real HTTP answers what onnxruntime in
//! Python answers, also to a stock OIP v2 client (tritonclient), and `verify`
//! refuses a file in the other format, a model without a batch axis and a
//! missing runtime.
//!
//! Needs ONNX Runtime's library in `ORT_DYLIB_PATH` (`eval "$(hack/env.sh)"`
//! sets it from the venv's onnxruntime wheel); HONE_SKIP_ONNX=1 skips the
//! tests that need it instead of failing them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use hone_crds::contract::{MODEL_CARD_FILE, MODEL_FILE, ONNX_MODEL_FILE};
use hone_crds::modelversion::ArtifactFormat;
use hone_crds::predictor::env;
use hone_predictor::verify::{VerifySummary, verify};
use serde_json::{Value, json};

use common::{args_at, fixture, gray_png, make_models, post_json, python, start};

/// ONNX Runtime's library, or `None` (after saying why) when the caller
/// asked to skip ONNX tests.
fn onnxruntime() -> Option<PathBuf> {
    match std::env::var_os(env::ONNXRUNTIME_LIB) {
        Some(path) if !path.is_empty() => Some(path.into()),
        _ if std::env::var("HONE_SKIP_ONNX").as_deref() == Ok("1") => {
            eprintln!("HONE_SKIP_ONNX=1 and {} is unset: skipping this ONNX test", env::ONNXRUNTIME_LIB);
            None
        }
        _ => panic!(
            "{} is unset: run `eval \"$(hack/env.sh)\"` (it points it at the venv's onnxruntime wheel), \
             or set HONE_SKIP_ONNX=1 to skip the ONNX tests",
            env::ONNXRUNTIME_LIB
        ),
    }
}

/// Folder with `cnn/` (TorchScript), `cnn-onnx/` and `cnn-onnx-fixed-batch/`
/// (the same CNN exported to ONNX with and without a dynamic batch axis).
fn models() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| make_models(&["cnn", "cnn-onnx", "cnn-onnx-fixed-batch"])).path()
}

/// The first output of `model` on `data` (of `shape`), run by onnxruntime in Python.
fn python_onnxruntime(model: &Path, shape: &[usize], data: &[f32]) -> Vec<f32> {
    let mut child = Command::new(python())
        .arg(fixture("onnx_reference.py"))
        .arg(model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run onnx_reference.py");
    let request = json!({"shape": shape, "data": data}).to_string();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), request.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "onnx_reference.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["shape"], json!([shape[0], 3]), "{answer}");
    serde_json::from_value(answer["data"].clone()).unwrap()
}

fn assert_close(found: &[f32], expected: &[f32], what: &str) {
    assert_eq!(found.len(), expected.len(), "{what}: {found:?} vs {expected:?}");
    for (a, b) in found.iter().zip(expected) {
        assert!((a - b).abs() <= 1e-4, "{what}: {found:?} vs onnxruntime {expected:?}");
    }
}

/// Deterministic inputs in [-2, 2), `samples` samples of 1x8x8.
fn samples(samples: usize) -> Vec<f32> {
    (0..samples * 64).map(|i| ((i * 37 + i / 64 * 11) % 101) as f32 / 25.0 - 2.0).collect()
}

fn infer_body(data: &[f32], samples: usize) -> Value {
    json!({"inputs": [{"name": "input", "shape": [samples, 1, 8, 8], "datatype": "FP32", "data": data}]})
}

fn logits(answer: &Value) -> Vec<f32> {
    assert_eq!(answer["outputs"][0]["name"], "logits", "{answer}");
    serde_json::from_value(answer["outputs"][0]["data"].clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_onnx_model_answers_as_onnxruntime_in_python() {
    if onnxruntime().is_none() {
        return;
    }
    let folder = models().join("cnn-onnx");
    let model_file = folder.join(ONNX_MODEL_FILE);
    let server =
        start(args_at(folder.to_str().unwrap(), "cnn", &["--format", "ONNX", "--max-batch-size", "4"])).await;
    let client = reqwest::Client::new();
    let meta: Value = client.get(server.url("/v2/models/cnn")).send().await.unwrap().json().await.unwrap();
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 1, 8, 8]));

    // A batch of 5 in one request: more than --max-batch-size, the model's
    // batch axis is dynamic.
    let data = samples(5);
    let expected = python_onnxruntime(&model_file, &[5, 1, 8, 8], &data);
    let answer = post_json(&client, &server.url("/v2/models/cnn/infer"), &infer_body(&data, 5)).await;
    assert_eq!(answer["outputs"][0]["shape"], json!([5, 3]), "{answer}");
    assert_close(&logits(&answer), &expected, "a batch of 5");

    // One sample per request, concurrently, so the batcher joins them.
    let url = server.url("/v2/models/cnn/infer");
    let singles = futures::future::join_all(data.chunks(64).map(|sample| {
        let (client, url) = (client.clone(), url.clone());
        let body = infer_body(sample, 1);
        async move { post_json(&client, &url, &body).await }
    }))
    .await;
    for (i, answer) in singles.iter().enumerate() {
        assert_close(&logits(answer), &expected[i * 3..i * 3 + 3], &format!("sample {i} alone"));
    }

    // /predict: the image is preprocessed as for TorchScript (resize,
    // /255, mean 0.5, std 0.25), then the probabilities are the softmax.
    for value in [30u8, 200] {
        let answer: Value = client
            .post(server.url("/predict"))
            .header("content-type", "image/png")
            .body(gray_png(8, 8, value))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let pixel = (f32::from(value) / 255.0 - 0.5) / 0.25;
        let logits = python_onnxruntime(&model_file, &[1, 1, 8, 8], &[pixel; 64]);
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f32 = exps.iter().sum();
        let top = answer["top"].as_array().unwrap_or_else(|| panic!("{answer}"));
        assert_eq!(top.len(), 3, "{answer}");
        for score in top {
            let class = score["classIndex"].as_u64().unwrap() as usize;
            let confidence = score["confidence"].as_f64().unwrap() as f32;
            assert_close(&[confidence], &[exps[class] / sum], &format!("/predict of gray {value}"));
        }
    }
    let metrics = client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"route="/predict",status_class="2xx"} 2"#), "{metrics}");
}

fn failed(summary: &VerifySummary, reason: &str) -> String {
    assert!(!summary.ok, "{summary:?}");
    assert_eq!(summary.reason.as_deref(), Some(reason), "{summary:?}");
    summary.message.clone().unwrap()
}

#[tokio::test]
async fn verify_passes_an_onnx_model_and_refuses_one_without_a_batch_axis() {
    let Some(runtime) = onnxruntime() else { return };
    let ok =
        verify(&common::verify_args(&models().join("cnn-onnx"), ArtifactFormat::Onnx, Some(runtime.clone())))
            .await;
    assert!(ok.ok, "{ok:?}");
    assert_eq!(ok.input_shape, Some(vec![1, 8, 8]));
    let folder = models().join("cnn-onnx-fixed-batch");
    let fixed = verify(&common::verify_args(&folder, ArtifactFormat::Onnx, Some(runtime))).await;
    let message = failed(&fixed, "InvalidModule");
    assert!(message.contains("fixed batch dimension 2") && message.contains("dynamic_axes"), "{message}");
}

/// A copy of `from`'s model file as `file` in a new folder, with its card.
fn copied_as(from: &Path, model: &str, file: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(from.join(model), dir.path().join(file)).unwrap();
    std::fs::copy(from.join(MODEL_CARD_FILE), dir.path().join(MODEL_CARD_FILE)).unwrap();
    dir
}

#[tokio::test]
async fn a_file_in_the_other_format_fails_verification_as_a_format_mismatch() {
    let Some(runtime) = onnxruntime() else { return };
    // TorchScript bytes declared ONNX (named model.onnx, so the digest and card pass).
    let torchscript = copied_as(&models().join("cnn"), MODEL_FILE, ONNX_MODEL_FILE);
    let summary = verify(&common::verify_args(torchscript.path(), ArtifactFormat::Onnx, Some(runtime))).await;
    let message = failed(&summary, "FormatMismatch");
    assert!(message.contains("declared ONNX but the file is TorchScript"), "{message}");
    assert!(summary.digest.is_some(), "the digests were read before the load: {summary:?}");

    // ONNX bytes declared TorchScript.
    let onnx = copied_as(&models().join("cnn-onnx"), ONNX_MODEL_FILE, MODEL_FILE);
    let summary = verify(&common::verify_args(onnx.path(), ArtifactFormat::TorchScript, None)).await;
    let message = failed(&summary, "FormatMismatch");
    assert!(message.contains("declared TorchScript but the file is ONNX"), "{message}");
}

#[tokio::test]
async fn an_onnx_model_without_the_runtime_library_fails_verification_saying_so() {
    let summary = verify(&common::verify_args(&models().join("cnn-onnx"), ArtifactFormat::Onnx, None)).await;
    let message = failed(&summary, "OnnxRuntimeUnavailable");
    assert!(message.contains(env::ONNXRUNTIME_LIB) && message.contains("--onnxruntime"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_oip_client_works_unchanged_on_an_onnx_model() {
    if onnxruntime().is_none() {
        return;
    }
    let folder = models().join("cnn-onnx").to_str().unwrap().to_owned();
    let server = start(args_at(&folder, "cnn", &["--format", "ONNX"])).await;
    let host = server.base.trim_start_matches("http://").to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(fixture("oip_client.py"))
            .args([host.as_str(), "cnn", &folder])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.trim_end().ends_with("ok"),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
