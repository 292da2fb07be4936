//! Readiness, back-pressure, timeouts, API keys, rate limits, CORS,
//! graceful shutdown and refusing a model whose digest does not match.

use std::time::Duration;

use serde_json::json;

use crate::common::{args, expect_error, model, start, start_unready, wait_ready};

const ROW: [f32; 4] = [5.1, 3.5, 1.4, 0.2];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_loaded_and_warmed_up() {
    // The slow model's two warm-up passes take a while: long enough to look.
    let server = start_unready(args("slow", &[])).await;
    let client = reqwest::Client::new();
    let mut saw_unready = false;
    for _ in 0..100 {
        let live = client.get(server.url("/v2/health/live")).send().await;
        if let Ok(live) = live {
            assert_eq!(live.status(), 200);
            let ready = client.get(server.url("/v2/health/ready")).send().await.unwrap();
            if ready.status() == 503 {
                expect_error(ready, 503, "not_ready").await;
                let r = client.post(server.url("/predict")).json(&ROW).send().await.unwrap();
                expect_error(r, 503, "not_ready").await;
                saw_unready = true;
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(saw_unready, "the server reported ready before its warm-up could have finished");
    wait_ready(&server).await;
    let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"hone_predictor_model_loaded{model="slow""#) && metrics.contains("} 1\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_inference_times_out_with_504() {
    // The model's matmul loop takes tens of milliseconds; 1 ms never suffices.
    let server = start(args("slow", &["--request-timeout-ms", "1"])).await;
    let r = reqwest::Client::new().post(server.url("/predict")).json(&ROW).send().await.unwrap();
    expect_error(r, 504, "timeout").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_with_retry_after() {
    let server = start(args("slow", &["--queue-capacity", "1", "--max-batch-size", "1"])).await;
    let client = reqwest::Client::new();
    // One runs, one waits in the queue; the rest find it full.
    let requests = (0..6).map(|_| client.post(server.url("/predict")).json(&ROW).send());
    let responses = futures::future::join_all(requests).await;
    let mut statuses = Vec::new();
    for r in responses {
        let r = r.unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            assert_eq!(r.headers()["retry-after"], "1");
            expect_error(r, 429, "overloaded").await;
        }
    }
    assert!(statuses.iter().filter(|&&s| s == 429).count() >= 3, "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_and_per_key_rate_limits() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "alpha\nbeta\n").unwrap();
    let keys = keys.display().to_string();
    let server =
        start(args("mlp", &["--api-keys-file", &keys, "--rate-limit-rps", "0.5", "--rate-limit-burst", "2"]))
            .await;
    let client = reqwest::Client::new();
    let predict = || client.post(server.url("/predict")).json(&ROW);
    expect_error(predict().send().await.unwrap(), 401, "unauthorized").await;
    expect_error(predict().bearer_auth("gamma").send().await.unwrap(), 401, "unauthorized").await;
    assert_eq!(predict().bearer_auth("alpha").send().await.unwrap().status(), 200);
    assert_eq!(predict().header("x-api-key", "alpha").send().await.unwrap().status(), 200);
    let limited = predict().bearer_auth("alpha").send().await.unwrap();
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    expect_error(limited, 429, "rate_limited").await;
    assert_eq!(
        predict().bearer_auth("beta").send().await.unwrap().status(),
        200,
        "keys have their own budget"
    );
    let r = client.get(server.url("/v2/models/mlp")).send().await.unwrap();
    expect_error(r, 401, "unauthorized").await;
    // Probes need no key; metrics show what the key protects, so they need
    // it on the client port (Prometheus scrapes the admin port instead).
    for path in ["/v2/health/live", "/v2/health/ready", "/docs"] {
        assert_eq!(client.get(server.url(path)).send().await.unwrap().status(), 200, "{path}");
    }
    expect_error(client.get(server.url("/metrics")).send().await.unwrap(), 401, "unauthorized").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_configured_origins_only() {
    let server = start(args("mlp", &["--cors-origins", "http://app.example"])).await;
    let client = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, server.url("/predict"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let ok = preflight("http://app.example").await.unwrap();
    assert_eq!(ok.headers()["access-control-allow-origin"], "http://app.example");
    let other = preflight("http://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let r = client
        .post(server.url("/predict"))
        .header("origin", "http://app.example")
        .json(&ROW)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "http://app.example");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests_then_stops() {
    // One sample per forward pass: while the inference thread runs one slow
    // request, the others wait in the queue, which proves the server holds
    // them (a fixed sleep raced with the connection on a loaded machine, and
    // with batching all three could leave the queue at once).
    let mut server = start(args("slow", &["--max-batch-size", "1"])).await;
    let in_flight: Vec<_> = (0..3)
        .map(|_| {
            let url = server.url("/predict");
            tokio::spawn(async move { reqwest::Client::new().post(url).json(&ROW).send().await })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
        let queued = text
            .lines()
            .find(|l| l.starts_with("hone_predictor_queue_depth{"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if queued >= 1.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no request ever waited in the queue");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.shutdown();
    // A request still connecting at shutdown was never the server's: refused
    // is right for it. Every request the server held must finish with 200,
    // and at least one (the queued one) was held.
    let mut finished = 0;
    for request in in_flight {
        match request.await.unwrap() {
            Ok(response) => {
                assert_eq!(response.status(), 200, "an in-flight request finished");
                finished += 1;
            }
            Err(e) => assert!(e.is_connect(), "a held request was dropped: {e}"),
        }
    }
    assert!(finished >= 1, "the queued request finished");
    let result = tokio::time::timeout(Duration::from_secs(10), &mut server.task).await.unwrap().unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(reqwest::get(server.url("/v2/health/live")).await.is_err(), "no longer accepting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_mismatch_refuses_to_start() {
    let wrong = format!("sha256:{}", "0".repeat(64));
    let mut server = start_unready(args("mlp", &["--digest", &wrong])).await;
    let result = tokio::time::timeout(Duration::from_secs(10), &mut server.task).await.unwrap().unwrap();
    let message = result.unwrap_err().to_string();
    assert!(message.contains("digest mismatch"), "{message}");

    // A tampered model.pt fails against the card's artifactDigest too.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(format!("{}/model.json", model("mlp")), dir.path().join("model.json")).unwrap();
    let mut bytes = std::fs::read(format!("{}/model.pt", model("mlp"))).unwrap();
    bytes.push(0);
    std::fs::write(dir.path().join("model.pt"), bytes).unwrap();
    let mut a = args("mlp", &[]);
    a.model = dir.path().display().to_string();
    let mut server = start_unready(a).await;
    let result = tokio::time::timeout(Duration::from_secs(10), &mut server.task).await.unwrap().unwrap();
    assert!(result.unwrap_err().to_string().contains("digest mismatch"));
    let _ = json!({});
}
