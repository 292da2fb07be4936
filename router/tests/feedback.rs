//! Signed request ids and `POST /feedback` over real HTTP on loopback: the
//! router in this process, predictor-like backends. Feedback moves only the
//! counters of the variant the signed id names, each id counts once, and the
//! endpoint never reaches a backend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Backend, Predictor, Router, expect_error, predictor_backend, start_router, sum, write_config};
use serde_json::{Value, json};

const KEY: &str = "3c1f0e9a8b7d6c5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e";
const PIN: &str = "x-hone-variant";

fn last_digit(n: u64) -> String {
    (n % 10).to_string()
}

fn next_digit(n: u64) -> String {
    ((n + 1) % 10).to_string()
}

/// Variants `a` (labels the last digit) and `b` (the next digit), 50/50,
/// both pinnable; with the feedback key when `key`.
async fn setup(key: bool) -> (Router, Backend, Backend, tempfile::TempDir) {
    let predictor = |name, label| Predictor { name, label, confidence: 0.8, delay: Duration::ZERO };
    let (a, b) = (
        predictor_backend(predictor("a", last_digit)).await,
        predictor_backend(predictor("b", next_digit)).await,
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("router.yaml");
    write(&config, &a, &b, key);
    let router = start_router(&config, &["--request-timeout-ms", "5000"]).await;
    (router, a, b, dir)
}

fn write(path: &Path, a: &Backend, b: &Backend, key: bool) {
    let mut config = json!({"variants": [
        {"name": "a", "url": a.url, "weight": 50, "pinnable": true},
        {"name": "b", "url": b.url, "weight": 50, "pinnable": true},
    ]});
    if key {
        config["feedbackKey"] = json!(KEY);
    }
    write_config(path, &config);
}

/// A prediction pinned to `variant`: the answer's headers and body.
async fn predict(
    client: &reqwest::Client,
    router: &Router,
    variant: &str,
    path: &str,
    body: &str,
    request_id: Option<&str>,
) -> (reqwest::header::HeaderMap, Value) {
    let mut request = client.post(router.url(path)).header(PIN, variant).body(body.to_owned());
    if let Some(id) = request_id {
        request = request.header("x-request-id", id);
    }
    let r = request.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let headers = r.headers().clone();
    (headers, r.json().await.unwrap())
}

/// The signed id on an answer.
fn token(headers: &reqwest::header::HeaderMap) -> String {
    headers["x-request-id"].to_str().unwrap().to_owned()
}

/// POSTs `body` to `/feedback`; the 200 answer.
async fn feedback(client: &reqwest::Client, router: &Router, body: &Value) -> Value {
    let r = client.post(router.url("/feedback")).json(body).send().await.unwrap();
    let status = r.status();
    let answer: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{answer}");
    answer
}

/// The reasons of the rejected items of a feedback answer.
fn reasons(answer: &Value) -> Vec<String> {
    answer["rejected"].as_array().unwrap().iter().map(|r| r["reason"].as_str().unwrap().to_owned()).collect()
}

fn feedback_count(metrics: &str, variant: &str, outcome: &str) -> f64 {
    sum(metrics, &format!("hone_router_feedback_total{{variant=\"{variant}\",outcome=\"{outcome}\"}}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_carry_signed_ids_and_feedback_counts_for_their_variant() {
    let (router, a, b, _dir) = setup(true).await;
    let client = reqwest::Client::new();
    // No client id: the backend sees the nonce, the client a signed id.
    let (headers, body) = predict(&client, &router, "a", "/predict", "3", None).await;
    assert_eq!(body["label"], "3");
    let on_a = token(&headers);
    let upstream = a.seen()[0].request_id.clone().unwrap();
    assert!(upstream.len() == 32 && upstream.bytes().all(|c| c.is_ascii_hexdigit()), "{upstream}");
    assert_ne!(on_a, upstream);
    assert!(headers.get("x-client-request-id").is_none());
    // A client id goes upstream unchanged and comes back beside the signed one.
    let (headers, body) = predict(&client, &router, "b", "/predict", "3", Some("client-7")).await;
    assert_eq!(body["label"], "4");
    assert_eq!(b.seen()[0].request_id.as_deref(), Some("client-7"));
    assert_eq!(headers["x-client-request-id"], "client-7");
    let on_b = token(&headers);
    assert_ne!(on_b, "client-7");
    let (headers, _) = predict(&client, &router, "a", "/predict/batch", "[1, 2, 3]", None).await;
    let batch = token(&headers);

    // The truth is 3 both times: a was right, b wrong; the batch was right twice.
    let answer = feedback(&client, &router, &json!({"requestId": on_a, "label": "3"})).await;
    assert_eq!(answer, json!({"accepted": 1, "rejected": []}));
    let answer = feedback(
        &client,
        &router,
        &json!({"feedback": [
            {"requestId": on_b, "label": "3"},
            {"requestId": batch, "labels": ["1", "2", "0"]},
        ]}),
    )
    .await;
    assert_eq!(answer, json!({"accepted": 2, "rejected": []}));
    let metrics = router.metrics().await;
    assert_eq!(feedback_count(&metrics, "a", "correct"), 3.0, "{metrics}");
    assert_eq!(feedback_count(&metrics, "a", "incorrect"), 1.0, "{metrics}");
    assert_eq!(feedback_count(&metrics, "b", "incorrect"), 1.0, "{metrics}");
    assert_eq!(feedback_count(&metrics, "b", "correct"), 0.0, "{metrics}");
    // Feedback is no request of any variant's.
    assert_eq!(sum(&metrics, "hone_router_requests_total{"), 3.0, "{metrics}");
    assert_eq!(sum(&metrics, "hone_router_other_requests_total{"), 0.0, "{metrics}");
    for backend in [&a, &b] {
        assert!(backend.seen().iter().all(|s| s.path.starts_with("/predict")), "{:?}", backend.seen());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_and_mismatched_feedback_is_refused() {
    let (router, a, b, _dir) = setup(true).await;
    let client = reqwest::Client::new();
    let (headers, _) = predict(&client, &router, "a", "/predict", "5", None).await;
    let good = token(&headers);
    // The same answer claimed for b: the variant name is inside the signed bytes.
    let mut bytes = URL_SAFE_NO_PAD.decode(&good).unwrap();
    let at = 1 + 8 + 16 + 2;
    assert_eq!(bytes[at], b'a', "layout: version, time, nonce, name length, name");
    bytes[at] = b'b';
    let renamed = URL_SAFE_NO_PAD.encode(&bytes);
    bytes[at] = b'a';
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    let bad_mac = URL_SAFE_NO_PAD.encode(&bytes);
    let answer = feedback(
        &client,
        &router,
        &json!({"feedback": [
            {"requestId": renamed, "label": "5"},
            {"requestId": bad_mac, "label": "5"},
            {"requestId": "made-up", "label": "5"},
            {"requestId": good, "labels": ["5", "5"]},
            {"requestId": good, "label": "5"},
            {"requestId": good, "label": "5"},
        ]}),
    )
    .await;
    assert_eq!(answer["accepted"], 1, "{answer}");
    assert_eq!(reasons(&answer), ["bad_id", "bad_id", "bad_id", "mismatch", "replayed"], "{answer}");
    let indices: Vec<u64> =
        answer["rejected"].as_array().unwrap().iter().map(|r| r["index"].as_u64().unwrap()).collect();
    assert_eq!(indices, [0, 1, 2, 3, 5]);
    assert!(answer.to_string().len() < 2000, "no input echoed: {answer}");
    // A replay in a later request is refused too.
    let answer = feedback(&client, &router, &json!({"requestId": good, "label": "5"})).await;
    assert_eq!(reasons(&answer), ["replayed"]);

    // Malformed and oversized bodies, and the wrong method.
    let r = client.post(router.url("/feedback")).body("{not json").send().await.unwrap();
    expect_error(r, 400, "bad_request").await;
    let r = client.post(router.url("/feedback")).json(&json!({"requestId": good})).send().await.unwrap();
    expect_error(r, 400, "bad_request").await;
    let huge = json!({"requestId": good, "label": "x".repeat(300 * 1024)});
    let r = client.post(router.url("/feedback")).json(&huge).send().await.unwrap();
    expect_error(r, 413, "payload_too_large").await;
    let r = client.get(router.url("/feedback")).send().await.unwrap();
    expect_error(r, 405, "method_not_allowed").await;

    let metrics = router.metrics().await;
    let rejected =
        |reason: &str| sum(&metrics, &format!("hone_router_feedback_rejected_total{{reason=\"{reason}\"}}"));
    assert_eq!(
        [rejected("bad_id"), rejected("mismatch"), rejected("replayed")],
        [3.0, 1.0, 2.0],
        "{metrics}"
    );
    assert_eq!(feedback_count(&metrics, "a", "correct"), 1.0, "{metrics}");
    assert_eq!(sum(&metrics, "hone_router_feedback_total{variant=\"b\""), 0.0, "{metrics}");
    assert_eq!(sum(&metrics, "hone_router_rejected_total{reason=\"bad_feedback\"}"), 2.0, "{metrics}");
    assert_eq!(sum(&metrics, "hone_router_rejected_total{reason=\"body_too_large\"}"), 1.0, "{metrics}");
    assert_eq!(sum(&metrics, "hone_router_rejected_total{reason=\"method_not_allowed\"}"), 1.0, "{metrics}");
    assert_eq!(sum(&metrics, "hone_router_requests_total{"), 1.0, "{metrics}");
    assert_eq!(a.seen().len() + b.seen().len(), 1, "feedback never reaches a backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_too_large_to_record_get_ids_that_feedback_cannot_use() {
    let (router, _a, _b, _dir) = setup(true).await;
    let client = reqwest::Client::new();
    let inputs: Vec<u64> = (0..33).collect();
    let (headers, body) =
        predict(&client, &router, "a", "/predict/batch", &serde_json::to_string(&inputs).unwrap(), None)
            .await;
    assert_eq!(body["predictions"].as_array().unwrap().len(), 33);
    let labels: Vec<String> = inputs.iter().map(|&n| last_digit(n)).collect();
    let answer = feedback(&client, &router, &json!({"requestId": token(&headers), "labels": labels})).await;
    assert_eq!(reasons(&answer), ["mismatch"], "more than 32 samples are not recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_ids_pass_through_and_feedback_is_not_found() {
    let (router, a, b, _dir) = setup(false).await;
    let client = reqwest::Client::new();
    let (headers, _) = predict(&client, &router, "a", "/predict", "1", Some("client-1")).await;
    assert_eq!(headers["x-request-id"], "client-1", "the backend's echo, untouched");
    assert!(headers.get("x-client-request-id").is_none());
    assert_eq!(a.seen()[0].request_id.as_deref(), Some("client-1"));
    let (headers, _) = predict(&client, &router, "a", "/predict", "1", None).await;
    assert!(headers.get("x-request-id").is_none(), "no id is issued");
    let r = client
        .post(router.url("/feedback"))
        .json(&json!({"requestId": "x", "label": "1"}))
        .send()
        .await
        .unwrap();
    let body = expect_error(r, 404, "not_found").await;
    assert_eq!(body["error"], "feedback is not enabled for this InferenceService");
    let metrics = router.metrics().await;
    assert_eq!(sum(&metrics, "hone_router_rejected_total{reason=\"feedback_disabled\"}"), 1.0, "{metrics}");
    assert_eq!(sum(&metrics, "hone_router_other_requests_total{"), 0.0, "{metrics}");
    assert_eq!(a.seen().len() + b.seen().len(), 2, "feedback never reaches a backend");
    // The config on the admin port says whether there is a key, never the key.
    let config: Value =
        client.get(format!("{}/router/config", router.admin)).send().await.unwrap().json().await.unwrap();
    assert!(config.get("feedbackKey").is_none(), "{config}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_port_never_shows_the_key() {
    let (router, _a, _b, _dir) = setup(true).await;
    let text = reqwest::get(format!("{}/router/config", router.admin)).await.unwrap().text().await.unwrap();
    assert!(!text.contains(KEY), "{text}");
    let config: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(config["feedbackKey"], "redacted");
}
