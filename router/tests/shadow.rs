//! Prediction metrics and shadow traffic over real HTTP on loopback: the
//! router in this process, predictor-like backends. Clients only ever get
//! the source's answers; the mirrors' answers show up only in the router's
//! `shadow_*` and `predictions_*` series.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Backend, Predictor, Router, predictor_backend, start_router, sum, write_config};
use serde_json::{Value, json};

/// The stable model: the label of `n` is its last digit.
fn last_digit(n: u64) -> String {
    (n % 10).to_string()
}

/// The candidate: agrees with [`last_digit`] except on multiples of 4.
fn mostly_last_digit(n: u64) -> String {
    if n.is_multiple_of(4) { ((n + 1) % 10).to_string() } else { (n % 10).to_string() }
}

fn source() -> Predictor {
    Predictor { name: "stable", label: last_digit, confidence: 0.9, delay: Duration::ZERO }
}

fn candidate(delay: Duration) -> Predictor {
    Predictor { name: "candidate", label: mostly_last_digit, confidence: 0.5, delay }
}

/// `a` with all the traffic and its canary `a-v2` at weight 0, mirrored
/// from `a` at `percent` (none when 0).
fn write_mirrored(path: &Path, a: &Backend, canary: &Backend, percent: u32) {
    let mut config = json!({"variants": [
        {"name": "a", "url": a.url, "weight": 10000, "pinnable": true},
        {"name": "a-v2", "url": canary.url, "weight": 0, "canaryOf": "a"},
    ]});
    if percent > 0 {
        config["mirrors"] = json!([{"source": "a", "target": "a-v2", "percent": percent}]);
    }
    write_config(path, &config);
}

/// Mirrored requests by outcome, for target `a-v2`.
fn shadow(metrics: &str, outcome: &str) -> f64 {
    sum(metrics, &format!("hone_router_shadow_requests_total{{variant=\"a-v2\",outcome=\"{outcome}\"}}"))
}

/// Every mirrored request to `a-v2`, whatever its outcome.
fn shadow_total(metrics: &str) -> f64 {
    ["compared", "failed", "dropped", "skipped"].iter().map(|o| shadow(metrics, o)).sum()
}

/// Polls the metrics until `done` holds (mirrors finish after their clients).
async fn metrics_when(router: &Router, done: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let metrics = router.metrics().await;
        if done(&metrics) {
            return metrics;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "never settled:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// POSTs `body` to `path`; asserts `a` answered 200 and returns the labels
/// it gave. The client claims to be a shadow copy, which the router must not
/// pass on.
async fn predict(client: &reqwest::Client, router: &Router, path: &str, body: String) -> Vec<String> {
    let r = client.post(router.url(path)).header("x-hone-shadow", "1").body(body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-hone-variant"], "a", "only the source answers clients");
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["model"].as_str().or(answer["predictions"][0]["model"].as_str()), Some("stable"));
    match answer.get("predictions") {
        Some(batch) => {
            batch.as_array().unwrap().iter().map(|p| p["label"].as_str().unwrap().to_owned()).collect()
        }
        None => vec![answer["label"].as_str().unwrap().to_owned()],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_are_compared_and_never_reach_clients() {
    let (a, canary) = (predictor_backend(source()).await, predictor_backend(candidate(Duration::ZERO)).await);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("router.yaml");
    write_mirrored(&config, &a, &canary, 100);
    let router = start_router(&config, &["--request-timeout-ms", "5000"]).await;
    let client = reqwest::Client::new();
    // 40 single predictions (10 of them, multiples of 4, disagree) and 5
    // batches of 4 over 0..20 (5 disagree): 45 requests, 60 samples, 45 agreeing.
    for n in 0..40u64 {
        assert_eq!(predict(&client, &router, "/predict", n.to_string()).await, [last_digit(n)]);
    }
    for b in 0..5u64 {
        let inputs: Vec<u64> = (4 * b..4 * b + 4).collect();
        let labels =
            predict(&client, &router, "/predict/batch", serde_json::to_string(&inputs).unwrap()).await;
        assert_eq!(labels, inputs.iter().map(|&n| last_digit(n)).collect::<Vec<_>>());
    }
    // Not comparable: the source refuses the input (so does the mirror), and
    // an OIP answer is tensors, never read.
    let r = client.post(router.url("/predict")).body("not a number").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = client.post(router.url("/v2/models/m/infer")).body("{}").send().await.unwrap();
    assert_eq!(r.headers()["x-hone-variant"], "a");
    let metrics = metrics_when(&router, |m| shadow_total(m) >= 47.0).await;
    assert_eq!(shadow(&metrics, "compared"), 45.0, "{metrics}");
    assert_eq!(shadow(&metrics, "skipped"), 2.0, "{metrics}");
    assert_eq!(shadow_total(&metrics), 47.0, "{metrics}");
    assert_eq!(sum(&metrics, "hone_router_shadow_samples_total{variant=\"a-v2\"}"), 60.0);
    assert_eq!(sum(&metrics, "hone_router_shadow_agreements_total{variant=\"a-v2\"}"), 45.0);
    let source_confidence =
        sum(&metrics, "hone_router_shadow_confidence_total{variant=\"a-v2\",side=\"source\"}");
    let shadow_confidence =
        sum(&metrics, "hone_router_shadow_confidence_total{variant=\"a-v2\",side=\"shadow\"}");
    assert!((source_confidence - 54.0).abs() < 1e-6 && (shadow_confidence - 30.0).abs() < 1e-6, "{metrics}");
    assert_eq!(sum(&metrics, "hone_router_shadow_duration_seconds_count{variant=\"a-v2\"}"), 47.0);
    // Both sides' predictions are counted, each under its own variant.
    assert_eq!(sum(&metrics, "hone_router_predictions_total{variant=\"a\","), 60.0, "{metrics}");
    assert_eq!(sum(&metrics, "hone_router_predictions_total{variant=\"a-v2\","), 60.0, "{metrics}");
    assert_eq!(sum(&metrics, "hone_router_predictions_total{variant=\"a\",class=\"0\"}"), 6.0, "{metrics}");
    assert_eq!(sum(&metrics, "hone_router_prediction_confidence_count{variant=\"a-v2\"}"), 60.0);
    // What clients saw: 47 requests of a; nothing of the canary.
    assert_eq!(sum(&metrics, "hone_router_requests_total{variant=\"a\""), 47.0, "{metrics}");
    assert_eq!(sum(&metrics, "hone_router_requests_total{variant=\"a-v2\""), 0.0, "{metrics}");
    assert_eq!(sum(&metrics, "hone_router_request_duration_seconds_count{variant=\"a-v2\""), 0.0);
    let (to_a, to_canary) = (a.seen(), canary.seen());
    assert_eq!(to_canary.len(), 47);
    assert!(to_canary.iter().all(|s| s.shadow), "copies say they are copies");
    assert!(to_a.iter().all(|s| !s.shadow), "a client's x-hone-shadow is not forwarded");
    let paths = |seen: &[common::Seen]| {
        let mut paths: Vec<String> = seen.iter().map(|s| s.path.clone()).collect();
        paths.sort();
        paths
    };
    assert_eq!(paths(&to_canary), paths(&to_a), "the same requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predictions_are_counted_from_small_json_answers_only() {
    let (a, canary) = (predictor_backend(source()).await, predictor_backend(candidate(Duration::ZERO)).await);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("router.yaml");
    write_mirrored(&config, &a, &canary, 0);
    let router = start_router(&config, &["--request-timeout-ms", "5000"]).await;
    let client = reqwest::Client::new();
    assert_eq!(predict(&client, &router, "/predict", "7".into()).await, ["7"]);
    // Returned unchanged and counted nowhere: a JSON answer that is no
    // prediction, a plain-text one, and one past 64 KiB.
    let r =
        client.post(router.url("/predict")).body(common::UNPARSABLE_INPUT.to_string()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"oops": true}));
    let r =
        client.post(router.url("/predict")).body(common::PLAIN_TEXT_INPUT.to_string()).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "8");
    let r = client.post(router.url("/predict")).body(common::LARGE_INPUT.to_string()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let large: Value = r.json().await.unwrap();
    assert_eq!((large["label"].as_str(), large["pad"].as_str().map(str::len)), (Some("9"), Some(70 * 1024)));
    let metrics = router.metrics().await;
    assert_eq!(sum(&metrics, "hone_router_predictions_total{variant=\"a\","), 1.0, "{metrics}");
    assert_eq!(sum(&metrics, "hone_router_predictions_total{variant=\"a\",class=\"7\"}"), 1.0, "{metrics}");
    assert_eq!(sum(&metrics, "hone_router_prediction_confidence_count{variant=\"a\"}"), 1.0, "{metrics}");
    assert_eq!(sum(&metrics, "hone_router_requests_total{variant=\"a\",status_class=\"2xx\"}"), 4.0);
    assert_eq!(shadow_total(&metrics), 0.0, "no mirror configured: {metrics}");
}

/// The 99th percentile of `samples`.
fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[(samples.len() * 99).div_ceil(100) - 1]
}

/// `n` sequential single predictions; each one's client-side latency.
async fn latencies(router: &Router, n: u64) -> Vec<Duration> {
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    for i in 0..n {
        let started = Instant::now();
        let r = client.post(router.url("/predict")).body(i.to_string()).send().await.unwrap();
        assert_eq!(r.headers()["x-hone-variant"], "a");
        r.bytes().await.unwrap();
        out.push(started.elapsed());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirroring_adds_no_client_visible_latency() {
    const SLEEP: Duration = Duration::from_millis(200);
    const REQUESTS: u64 = 400;
    let (a, slow) = (predictor_backend(source()).await, predictor_backend(candidate(SLEEP)).await);
    let dir = tempfile::tempdir().unwrap();
    let (plain, mirrored) = (dir.path().join("plain.yaml"), dir.path().join("mirrored.yaml"));
    write_mirrored(&plain, &a, &slow, 0);
    write_mirrored(&mirrored, &a, &slow, 100);
    // Room for every mirror: all 400 are really sent, and in flight while
    // their clients are answered.
    let flags = ["--request-timeout-ms", "5000", "--max-inflight-mirrors", "1000"];
    let (without, with) = (start_router(&plain, &flags).await, start_router(&mirrored, &flags).await);
    let baseline = p99(latencies(&without, REQUESTS).await);
    let mirrored_p99 = p99(latencies(&with, REQUESTS).await);
    let metrics = metrics_when(&with, |m| shadow_total(m) >= REQUESTS as f64).await;
    assert_eq!(shadow(&metrics, "compared"), REQUESTS as f64, "every request was mirrored: {metrics}");
    // A mirror waited for would add its 200 ms to every request; half of
    // that as the margin leaves room for a busy machine and none for that.
    println!(
        "client p99: {baseline:?} without a mirror, {mirrored_p99:?} with a 100% mirror sleeping {SLEEP:?}"
    );
    assert!(
        mirrored_p99 < baseline + SLEEP / 2,
        "p99 {mirrored_p99:?} with the mirror vs {baseline:?} without"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_are_dropped_under_pressure() {
    const REQUESTS: usize = 40;
    let (a, slow) =
        (predictor_backend(source()).await, predictor_backend(candidate(Duration::from_secs(1))).await);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("router.yaml");
    write_mirrored(&config, &a, &slow, 100);
    let router =
        start_router(&config, &["--request-timeout-ms", "5000", "--max-inflight-mirrors", "2"]).await;
    let client = reqwest::Client::new();
    let answers = futures::future::join_all((0..REQUESTS).map(|n| {
        let client = client.clone();
        let url = router.url("/predict");
        async move { client.post(url).body(n.to_string()).send().await.unwrap() }
    }))
    .await;
    for r in answers {
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-hone-variant"], "a");
        assert_eq!(r.json::<Value>().await.unwrap()["model"], "stable");
    }
    let metrics = metrics_when(&router, |m| shadow_total(m) >= REQUESTS as f64).await;
    assert_eq!(shadow_total(&metrics), REQUESTS as f64, "every mirrored request has one outcome: {metrics}");
    assert!(shadow(&metrics, "dropped") > 0.0, "{metrics}");
    assert!(shadow(&metrics, "compared") >= 2.0, "the two in flight were compared: {metrics}");
    assert_eq!(
        slow.seen().len() as f64,
        REQUESTS as f64 - shadow(&metrics, "dropped"),
        "dropped ones never left"
    );
    assert_eq!(
        sum(&metrics, "hone_router_requests_total{variant=\"a\",status_class=\"2xx\"}"),
        REQUESTS as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_bodies_have_their_own_byte_budget() {
    let (a, canary) = (predictor_backend(source()).await, predictor_backend(candidate(Duration::ZERO)).await);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("router.yaml");
    write_mirrored(&config, &a, &canary, 100);
    let router =
        start_router(&config, &["--request-timeout-ms", "5000", "--max-inflight-mirror-bytes", "1024"]).await;
    let client = reqwest::Client::new();
    for n in 0..5u64 {
        // Over the mirrors' budget: the client is answered, the copy is not sent.
        let padded = format!("{n}{}", " ".repeat(2048));
        assert_eq!(predict(&client, &router, "/predict", padded).await, [last_digit(n)]);
        assert_eq!(predict(&client, &router, "/predict", n.to_string()).await, [last_digit(n)]);
    }
    let metrics = metrics_when(&router, |m| shadow_total(m) >= 10.0).await;
    assert_eq!(shadow(&metrics, "dropped"), 5.0, "{metrics}");
    assert_eq!(shadow(&metrics, "compared"), 5.0, "{metrics}");
    assert_eq!(canary.seen().len(), 5);
}
