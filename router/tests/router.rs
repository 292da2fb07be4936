//! The router over real HTTP on loopback: weighted split, sticky and
//! variant headers, reload without dropped requests, metrics, failures.
//! (Real predictors behind it: `predictor/tests/behind_router.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::echo_backend;
use serde_json::{Value, json};

/// Writes a config of `(name, url, weight)` backends, each pinnable by the
/// variant header (as the operator marks named variants with traffic).
fn write_config(path: &Path, variants: &[(&str, &str, u32)], sticky: bool) {
    let variants: Vec<Value> = variants
        .iter()
        .map(|(n, url, w)| json!({"name": n, "url": url, "weight": w, "pinnable": true}))
        .collect();
    let mut config = json!({"variants": variants});
    if sticky {
        config["stickyHeader"] = json!("x-user");
    }
    // Write-then-rename, as a ConfigMap update swaps files atomically.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_yaml::to_string(&config).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn counts(client: &reqwest::Client, url: &str, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let r = client.post(url).body("x").send().await.unwrap();
        assert_eq!(r.status(), 200);
        let variant = r.headers()["x-hone-variant"].to_str().unwrap().to_owned();
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["backend"], variant.as_str(), "the header names who answered");
        *counts.entry(variant).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splits_by_weight_and_forwards_path_query_and_body() {
    let (a, b) = (echo_backend("a").await, echo_backend("b").await);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("router.yaml");
    write_config(&config, &[("a", &a, 90), ("b", &b, 10)], false);
    let router = common::start_router(&config, &["--request-timeout-ms", "2000"]).await;
    let client = reqwest::Client::new();
    let got = counts(&client, &router.url("/v2/models/m/infer"), 1000).await;
    assert_eq!(got["a"], 900);
    assert_eq!(got["b"], 100);
    let body: Value =
        client.post(router.url("/predict?x=1")).body("payload").send().await.unwrap().json().await.unwrap();
    assert_eq!(body["path"], "/predict?x=1");
    assert_eq!(body["body"], "payload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_and_variant_headers() {
    let (a, b) = (echo_backend("a").await, echo_backend("b").await);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("router.yaml");
    write_config(&config, &[("a", &a, 50), ("b", &b, 50)], true);
    let router = common::start_router(&config, &["--request-timeout-ms", "2000"]).await;
    let client = reqwest::Client::new();
    let url = router.url("/predict");
    let mut seen = HashMap::new();
    for round in 0..3 {
        for user in 0..40 {
            let r = client.post(&url).header("x-user", format!("u{user}")).send().await.unwrap();
            let variant = r.headers()["x-hone-variant"].to_str().unwrap().to_owned();
            let first = seen.entry(user).or_insert_with(|| variant.clone());
            assert_eq!(*first, variant, "user {user} moved in round {round}");
        }
    }
    let on_b = seen.values().filter(|v| *v == "b").count();
    assert!((8..=32).contains(&on_b), "40 users split 50/50 by hash: {on_b} on b");
    for _ in 0..5 {
        let r = client.post(&url).header("x-hone-variant", "b").header("x-user", "u0").send().await.unwrap();
        assert_eq!(r.headers()["x-hone-variant"], "b", "the variant header beats stickiness");
    }
    let r = client.post(&url).header("x-hone-variant", "c").send().await.unwrap();
    common::expect_error(r, 400, "variant_not_selectable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_within_two_seconds_without_dropping_requests() {
    let (a, b) = (echo_backend("a").await, echo_backend("b").await);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("router.yaml");
    write_config(&config, &[("a", &a, 100), ("b", &b, 0)], false);
    let router = common::start_router(&config, &["--request-timeout-ms", "2000"]).await;
    let client = reqwest::Client::new();
    let url = router.url("/predict");
    // Traffic runs throughout the change; every request must succeed.
    let load = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let mut failures = 0;
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(3) {
                match client.post(&url).send().await {
                    Ok(r) if r.status() == 200 => {}
                    _ => failures += 1,
                }
            }
            failures
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    write_config(&config, &[("a", &a, 0), ("b", &b, 100)], false);
    let changed = Instant::now();
    loop {
        let r = client.post(&url).send().await.unwrap();
        if r.headers()["x-hone-variant"] == "b" {
            break;
        }
        assert!(changed.elapsed() < Duration::from_secs(2), "config change not applied within 2 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counts(&client, &url, 20).await["b"], 20);
    // A broken file keeps the last good config.
    // Written atomically too: a watcher could otherwise see the file empty
    // and then broken, and count two failed reloads.
    std::fs::write(config.with_extension("tmp"), "variants: [").unwrap();
    std::fs::rename(config.with_extension("tmp"), &config).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(counts(&client, &url, 10).await["b"], 10);
    assert_eq!(load.await.unwrap(), 0, "requests failed during the reload");
    let metrics = router.metrics().await;
    assert!(metrics.contains(r#"hone_router_config_reloads_total{result="success"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"hone_router_config_reloads_total{result="error"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"hone_router_variant_weight{variant="b"} 100"#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_variant_metrics_and_unreachable_backends() {
    let a = echo_backend("a").await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("router.json");
    write_config(&config, &[("a", &a, 50), ("down", &dead, 50)], false);
    let router = common::start_router(&config, &["--request-timeout-ms", "2000"]).await;
    let client = reqwest::Client::new();
    let mut statuses = HashMap::new();
    for _ in 0..10 {
        let r = client.post(router.url("/predict")).send().await.unwrap();
        let variant = r.headers()["x-hone-variant"].to_str().unwrap().to_owned();
        if variant == "down" {
            common::expect_error(r, 502, "backend_unreachable").await;
        }
        *statuses.entry(variant).or_insert(0) += 1;
    }
    assert_eq!(statuses["a"], 5);
    let metrics = router.metrics().await;
    for needle in [
        r#"hone_router_requests_total{variant="a",status_class="2xx"} 5"#,
        r#"hone_router_requests_total{variant="down",status_class="5xx"} 5"#,
        r#"hone_router_errors_total{variant="down",reason="connect"} 5"#,
        r#"hone_router_request_duration_seconds_count{variant="a"} 5"#,
    ] {
        assert!(metrics.contains(needle), "missing {needle}\n{metrics}");
    }
}
