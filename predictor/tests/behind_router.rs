//! Real predictors behind the real router (`hone-router`, in process): both
//! protocols go through, and the predictor's own errors pass unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_to_real_predictors() {
    let server = common::start(common::args("mlp", &[])).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("router.yaml");
    let variants = json!({"variants": [{"name": "stable", "url": server.base, "weight": 100}]});
    std::fs::write(&config, serde_yaml::to_string(&variants).unwrap()).unwrap();
    let router = common::start_router(&config, &["--request-timeout-ms", "2000"]).await;
    let client = reqwest::Client::new();
    let r = client.post(format!("{router}/predict")).json(&json!([5.1, 3.5, 1.4, 0.2])).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-hone-variant"], "stable");
    let body: Value = r.json().await.unwrap();
    assert!(body["label"].is_string());
    let body =
        json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]});
    let r = client.post(format!("{router}/v2/models/mlp/infer")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The predictor's own errors pass through unchanged.
    let r = client.post(format!("{router}/predict")).json(&json!([1])).send().await.unwrap();
    common::expect_error(r, 422, "invalid_count").await;
}
