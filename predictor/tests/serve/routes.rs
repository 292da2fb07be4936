//! Every route answering what it should.

use serde_json::{Value, json};

use crate::common::{self, args, gray_png, post_json, rgb_jpeg, start};

async fn get_json(url: String) -> Value {
    let r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.json().await.unwrap()
}

fn infer_body(data: Value, shape: Value, datatype: &str) -> Value {
    json!({"id": "req-1", "inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metadata_and_readiness() {
    let server = start(args("cnn", &["--model-version", "v7"])).await;
    assert_eq!(get_json(server.url("/v2/health/live")).await["live"], true);
    assert_eq!(get_json(server.url("/v2/health/ready")).await["ready"], true);
    let meta = get_json(server.url("/v2")).await;
    assert!(meta["extensions"].as_array().unwrap().contains(&json!("binary_tensor_data")));
    let model = get_json(server.url("/v2/models/cnn")).await;
    assert_eq!(model["name"], "cnn");
    assert_eq!(model["versions"], json!(["v7"]));
    assert_eq!(model["inputs"][0]["shape"], json!([-1, 1, 8, 8]));
    assert_eq!(model["outputs"][0]["shape"], json!([-1, 3]));
    assert_eq!(get_json(server.url("/v2/models/cnn/versions/v7")).await["name"], "cnn");
    assert_eq!(get_json(server.url("/v2/models/cnn/ready")).await["ready"], true);
    assert_eq!(get_json(server.url("/v2/models/cnn/versions/v7/ready")).await["ready"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infer_batches_give_the_same_rows_as_single_requests() {
    let server = start(args("cnn", &[])).await;
    let client = reqwest::Client::new();
    let samples: Vec<Vec<f32>> =
        (0..3).map(|s| (0..64).map(|i| ((i * (s + 1)) % 7) as f32 / 7.0).collect()).collect();
    let flat: Vec<f32> = samples.concat();
    let batch: Value = post_json(
        &client,
        &server.url("/v2/models/cnn/infer"),
        &infer_body(json!(flat), json!([3, 1, 8, 8]), "FP32"),
    )
    .await;
    assert_eq!(batch["id"], "req-1");
    assert_eq!(batch["model_name"], "cnn");
    assert_eq!(batch["outputs"][0]["name"], "logits");
    assert_eq!(batch["outputs"][0]["shape"], json!([3, 3]));
    let probabilities: Vec<f64> = serde_json::from_value(batch["outputs"][1]["data"].clone()).unwrap();
    for row in probabilities.chunks(3) {
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-5);
    }
    let batch_logits: Vec<f32> = serde_json::from_value(batch["outputs"][0]["data"].clone()).unwrap();
    for (i, sample) in samples.iter().enumerate() {
        // Nested data, one sample per request, concurrently so they batch together.
        let nested: Vec<Vec<Vec<f32>>> = vec![sample.chunks(8).map(<[f32]>::to_vec).collect()];
        let single: Value = post_json(
            &client,
            &server.url("/v2/models/cnn/infer"),
            &infer_body(json!(nested), json!([1, 1, 8, 8]), "FP64"),
        )
        .await;
        let logits: Vec<f32> = serde_json::from_value(single["outputs"][0]["data"].clone()).unwrap();
        for (a, b) in logits.iter().zip(&batch_logits[i * 3..i * 3 + 3]) {
            assert!((a - b).abs() < 1e-4, "sample {i}: {logits:?} vs batch {batch_logits:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infer_accepts_integer_datatypes_and_binary_tensors() {
    let server = start(args("mlp", &[])).await;
    let client = reqwest::Client::new();
    let ints: Value = post_json(
        &client,
        &server.url("/v2/models/mlp/infer"),
        &infer_body(json!([[1, 2, 3, 4]]), json!([1, 4]), "INT64"),
    )
    .await;
    let json_logits: Vec<f32> = serde_json::from_value(ints["outputs"][0]["data"].clone()).unwrap();

    let header = json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
        "parameters": {"binary_data_size": 16}}],
        "outputs": [{"name": "logits", "parameters": {"binary_data": true}},
                    {"name": "probabilities", "parameters": {"classification": 2}}]})
    .to_string();
    let mut body = header.clone().into_bytes();
    for v in [1.0f32, 2.0, 3.0, 4.0] {
        body.extend_from_slice(&v.to_le_bytes());
    }
    let response = client
        .post(server.url("/v2/models/mlp/infer"))
        .header("inference-header-content-length", header.len())
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let json_len: usize =
        response.headers()["inference-header-content-length"].to_str().unwrap().parse().unwrap();
    let bytes = response.bytes().await.unwrap();
    let head: Value = serde_json::from_slice(&bytes[..json_len]).unwrap();
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 12);
    let binary_logits: Vec<f32> =
        bytes[json_len..].chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_eq!(binary_logits, json_logits, "INT64 JSON and FP32 binary inputs agree");
    let labels = head["outputs"][1]["data"].as_array().unwrap();
    assert_eq!(labels.len(), 2);
    assert!(labels[0].as_str().unwrap().split(':').nth(2).is_some_and(|l| !l.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_images_raw_jpeg_and_multipart() {
    let server = start(args("cnn", &[])).await;
    let client = reqwest::Client::new();
    let png = gray_png(16, 16, 200);
    let raw: Value = client
        .post(server.url("/predict"))
        .header("content-type", "image/png")
        .body(png.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(raw["label"].as_str().unwrap().starts_with("class_"));
    let confidence = raw["confidence"].as_f64().unwrap();
    assert!(confidence > 1.0 / 3.0 - 1e-6 && confidence <= 1.0);
    assert_eq!(raw["top"][0]["classIndex"], raw["classIndex"]);
    assert_eq!(raw["model"], "cnn");

    let form = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(png).file_name("x.png").mime_str("image/png").unwrap());
    let multipart: Value =
        client.post(server.url("/predict")).multipart(form).send().await.unwrap().json().await.unwrap();
    assert_eq!(multipart["classIndex"], raw["classIndex"]);
    assert_eq!(multipart["confidence"], raw["confidence"]);

    let jpeg = client
        .post(server.url("/predict"))
        .header("content-type", "image/jpeg")
        .body(rgb_jpeg(20, 12))
        .send()
        .await
        .unwrap();
    assert_eq!(jpeg.status(), 200, "RGB JPEG is converted to the model's gray 8x8");

    let mut form = reqwest::multipart::Form::new();
    for (i, v) in [0u8, 128, 255].iter().enumerate() {
        let part = reqwest::multipart::Part::bytes(gray_png(8, 8, *v)).file_name(format!("{i}.png"));
        form = form.part(format!("file{i}"), part);
    }
    let batch: Value =
        client.post(server.url("/predict/batch")).multipart(form).send().await.unwrap().json().await.unwrap();
    assert_eq!(batch["predictions"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_feature_rows_and_batches() {
    let server = start(args("mlp", &[])).await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| client.post(server.url(path)).json(&body).send();
    let by_array: Value = post("/predict", json!([5.1, 3.5, 1.4, 0.2])).await.unwrap().json().await.unwrap();
    let by_name: Value = post(
        "/predict",
        json!({"features": {"petal_width": 0.2, "sepal_length": 5.1, "petal_length": 1.4, "sepal_width": 3.5}}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert!(["setosa", "versicolor", "virginica"].contains(&by_array["label"].as_str().unwrap()));
    assert_eq!(by_array["classIndex"], by_name["classIndex"]);
    assert_eq!(by_array["confidence"], by_name["confidence"]);
    let batch: Value =
        post("/predict/batch", json!({"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let predictions = batch["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 2);
    assert_eq!(predictions[0]["classIndex"], by_array["classIndex"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_model_and_version_and_count_traffic() {
    let server = start(args("mlp", &["--model-version", "v2"])).await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let r = client.post(server.url("/predict")).json(&json!([5.1, 3.5, 1.4, 0.2])).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let bad = client.post(server.url("/predict")).json(&json!([1.0])).send().await.unwrap();
    assert_eq!(bad.status(), 422);
    let text = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    let labels = r#"model="mlp",version="v2""#;
    for needle in [
        format!(r#"hone_predictor_requests_total{{{labels},route="/predict",status_class="2xx"}} 3"#),
        format!(r#"hone_predictor_requests_total{{{labels},route="/predict",status_class="4xx"}} 1"#),
        format!("hone_predictor_model_loaded{{{labels}}} 1"),
        format!("hone_predictor_queue_depth{{{labels}}} 0"),
        format!("hone_predictor_batch_size_count{{{labels}}}"),
        format!("hone_predictor_inference_duration_seconds_bucket{{{labels},le="),
        format!("hone_predictor_confidence_count{{{labels}}} 3"),
        format!(r#"hone_predictor_drift_psi{{{labels},feature="sepal_length"}}"#),
        format!(r#"hone_predictor_request_duration_seconds_count{{{labels},route="/predict"}} 4"#),
    ] {
        assert!(text.contains(&needle), "missing {needle}\n{text}");
    }
    let predictions: f64 = text
        .lines()
        .filter(|l| l.starts_with("hone_predictor_predictions_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(predictions, 3.0);
    for line in text.lines().filter(|l| l.starts_with("hone_")) {
        assert!(line.contains(labels), "series without model/version: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_reports_ks_and_psi_against_training_stats() {
    let server = start(args("mlp", &["--drift-window", "50"])).await;
    let client = reqwest::Client::new();
    let empty: Value = reqwest::get(server.url("/drift")).await.unwrap().json().await.unwrap();
    assert_eq!(empty["referenceAvailable"], true);
    assert_eq!(empty["features"], json!([]));
    // In-distribution for three features, petal_length shifted far right.
    let rows: Vec<Value> = (0..50)
        .map(|i| {
            let t = (i as f64 + 0.5) / 50.0 - 0.5;
            json!([5.8 + 1.6 * t, 3.0 + 0.8 * t, 12.0 + t, 1.2 + 1.4 * t])
        })
        .collect();
    let r = client.post(server.url("/predict/batch")).json(&json!({"instances": rows})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let report: Value = reqwest::get(server.url("/drift")).await.unwrap().json().await.unwrap();
    let features = report["features"].as_array().unwrap();
    assert_eq!(features.len(), 4);
    let by_name = |n: &str| features.iter().find(|f| f["name"] == n).unwrap().clone();
    let shifted = by_name("petal_length");
    assert_eq!(shifted["samples"], 50);
    assert!(shifted["ks"].as_f64().unwrap() > 0.9, "{shifted}");
    assert!(shifted["psi"].as_f64().unwrap() > 1.0, "{shifted}");
    assert!(shifted["ksPValue"].as_f64().unwrap() < 1e-6);
    let calm = by_name("sepal_length");
    assert!(calm["ks"].as_f64().unwrap() < 0.3, "{calm}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_serve_the_openapi_document() {
    let server = start(args("mlp", &[])).await;
    let doc: Value = reqwest::get(server.url("/docs")).await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in
        ["/v2/models/{name}/infer", "/predict", "/predict/batch", "/drift", "/metrics", "/v2/health/ready"]
    {
        assert!(doc["paths"].get(path).is_some(), "missing {path}");
    }
    assert!(doc["components"]["schemas"].get("ErrorBody").is_some());
    let _ = common::models();
}
