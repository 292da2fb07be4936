//! A router clients cannot steer, over real HTTP on loopback: the router in
//! this process, small real backends (a healthy echo, a broken one answering
//! 500). Each case checks the status and JSON body of what a hostile client
//! gets, that the per-backend series canary analysis reads did not move, and
//! that the router still answers a normal request and its health afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::Duration;

use axum::http::StatusCode;
use common::{Router, echo_backend, expect_error, start_router};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The variant header.
const PIN: &str = "x-hone-variant";

/// A backend that answers 500 to everything, as a broken canary would.
async fn broken_backend() -> String {
    let app = axum::Router::new().fallback(|| async {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": "broken", "code": "internal", "status": 500})),
        )
    });
    common::serve(app).await
}

/// A config as the operator writes it for `stable` (90%) with its canary
/// `stable-v2` (10%) and a variant `idle` at weight 0; `pin_all` is
/// `spec.routing.allowCanaryPinning`.
fn write_config(path: &Path, stable: &str, canary: &str, idle: &str, pin_all: bool) {
    let config = json!({"variants": [
        {"name": "stable", "url": stable, "weight": 9000, "pinnable": true},
        {"name": "stable-v2", "url": canary, "weight": 1000, "pinnable": pin_all, "canaryOf": "stable"},
        {"name": "idle", "url": idle, "weight": 0, "pinnable": pin_all},
    ]});
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_yaml::to_string(&config).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A router in front of a healthy `stable`, a broken canary and an idle variant.
async fn setup(pin_all: bool, extra: &[&str]) -> (Router, tempfile::TempDir) {
    let (stable, canary, idle) =
        (echo_backend("stable").await, broken_backend().await, echo_backend("idle").await);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("router.yaml");
    write_config(&config, &stable, &canary, &idle, pin_all);
    let mut args = vec!["--request-timeout-ms", "2000", "--max-body-bytes", "1024"];
    args.extend_from_slice(extra);
    (start_router(&config, &args).await, dir)
}

/// The sum of the samples whose line starts with `series` (a name and the
/// first labels), 0 when there is none.
fn sum(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What canary analysis reads about `variant`: requests, errors, latency samples.
fn analysed(metrics: &str, variant: &str) -> [f64; 3] {
    [
        sum(metrics, &format!("hone_router_requests_total{{variant=\"{variant}\"")),
        sum(metrics, &format!("hone_router_errors_total{{variant=\"{variant}\"")),
        sum(metrics, &format!("hone_router_request_duration_seconds_count{{variant=\"{variant}\"")),
    ]
}

/// The router still answers a normal request and its liveness, each within a second.
async fn still_serving(router: &Router) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().unwrap();
    let r = client.post(router.url("/predict")).header(PIN, "stable").body("[1]").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["backend"], "stable");
    let r = client.get(router.url("/v2/health/live")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// A chunked body (no Content-Length) of `chunks` pieces of `size` bytes,
/// then (when `stall`) a pause far longer than any test timeout.
fn chunked(chunks: usize, size: usize, stall: bool) -> reqwest::Body {
    let pieces = futures::stream::iter((0..chunks).map(move |_| Ok::<_, std::io::Error>(vec![b'x'; size])));
    let tail = futures::stream::unfold(stall, |stall| async move {
        if stall {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        None::<(Result<Vec<u8>, std::io::Error>, bool)>
    });
    reqwest::Body::wrap_stream(futures::StreamExt::chain(pieces, tail))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_cheap_requests_cannot_promote_a_broken_canary() {
    let (router, _dir) = setup(false, &[]).await;
    let client = reqwest::Client::new();
    let before = router.metrics().await;
    // 210 requests that are not inference, spread by weight: 21 reach the canary.
    let paths = ["/v2", "/docs", "/", "/ui", "/v2/models/digits", "/v2/models/digits/ready", "/openapi.json"];
    for i in 0..210 {
        let path = paths[i % paths.len()];
        let r = if i % 2 == 0 {
            client.get(router.url(path)).send().await.unwrap()
        } else {
            client.post(router.url(path)).body("{}").send().await.unwrap()
        };
        assert!(r.status() == 200 || r.status() == 500, "{path}: {}", r.status());
    }
    let after = router.metrics().await;
    assert_eq!(analysed(&after, "stable-v2"), analysed(&before, "stable-v2"), "{after}");
    assert_eq!(analysed(&after, "stable"), [0.0; 3], "{after}");
    assert_eq!(sum(&after, "hone_router_other_requests_total{variant=\"stable-v2\"}"), 21.0, "{after}");
    assert_eq!(sum(&after, "hone_router_other_requests_total{variant=\"stable\"}"), 189.0, "{after}");
    // Aiming the flood at the canary is refused outright.
    let r = client.get(router.url("/v2")).header(PIN, "stable-v2").send().await.unwrap();
    let body = expect_error(r, 400, "variant_not_selectable").await;
    assert!(body["error"].as_str().unwrap().contains("selectable: stable"), "{body}");
    // Inference still counts: the next 10 predictions give the canary its one.
    for _ in 0..10 {
        client.post(router.url("/predict")).body("[1]").send().await.unwrap();
    }
    let counted = router.metrics().await;
    assert_eq!(analysed(&counted, "stable-v2"), [1.0, 1.0, 1.0], "{counted}");
    assert_eq!(sum(&counted, "hone_router_requests_total{variant=\"stable-v2\",status_class=\"5xx\"}"), 1.0);
    still_serving(&router).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_cannot_abort_a_canary() {
    let (router, _dir) = setup(false, &[]).await;
    let client = reqwest::Client::new();
    let url = router.url("/v2/models/digits/infer");
    // At the canary by the header: not selectable, whatever the body.
    let r = client.post(&url).header(PIN, "stable-v2").body(vec![b'x'; 4096]).send().await.unwrap();
    expect_error(r, 400, "variant_not_selectable").await;
    // By weight: refused by the router before any backend, declared or chunked.
    for _ in 0..10 {
        let r = client.post(&url).body(vec![b'x'; 4096]).send().await.unwrap();
        expect_error(r, 413, "payload_too_large").await;
        let r = client.post(&url).body(chunked(3, 512, true)).send().await.unwrap();
        expect_error(r, 413, "payload_too_large").await;
    }
    let metrics = router.metrics().await;
    for variant in ["stable", "stable-v2"] {
        assert_eq!(analysed(&metrics, variant), [0.0; 3], "{variant}\n{metrics}");
        assert_eq!(sum(&metrics, &format!("hone_router_other_requests_total{{variant=\"{variant}\"")), 0.0);
    }
    assert_eq!(sum(&metrics, "hone_router_rejected_total{reason=\"body_too_large\"}"), 20.0, "{metrics}");
    assert_eq!(sum(&metrics, "hone_router_rejected_total{reason=\"variant_not_selectable\"}"), 1.0);
    still_serving(&router).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_canary_pinning_allowed_bad_bodies_still_count_against_no_backend() {
    let (router, _dir) = setup(true, &["--body-read-timeout-ms", "300"]).await;
    let client = reqwest::Client::new();
    let url = router.url("/predict");
    let r = client.post(&url).header(PIN, "stable-v2").body(vec![b'x'; 4096]).send().await.unwrap();
    expect_error(r, 413, "payload_too_large").await;
    let r = client.post(&url).header(PIN, "stable-v2").body(chunked(3, 512, true)).send().await.unwrap();
    expect_error(r, 413, "payload_too_large").await;
    // A body that stops halfway: the router's 408, not the canary's failure.
    let r = client.post(&url).header(PIN, "stable-v2").body(chunked(1, 10, true)).send().await.unwrap();
    expect_error(r, 408, "request_timeout").await;
    let metrics = router.metrics().await;
    assert_eq!(analysed(&metrics, "stable-v2"), [0.0; 3], "{metrics}");
    assert_eq!(sum(&metrics, "hone_router_rejected_total{reason=\"body_too_large\"}"), 2.0, "{metrics}");
    assert_eq!(sum(&metrics, "hone_router_rejected_total{reason=\"body_timeout\"}"), 1.0, "{metrics}");
    // A real prediction pinned to the broken canary is its own failure.
    let r = client.post(&url).header(PIN, "stable-v2").body("[1]").send().await.unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(r.headers()[PIN], "stable-v2");
    let metrics = router.metrics().await;
    assert_eq!(analysed(&metrics, "stable-v2"), [1.0, 1.0, 1.0], "{metrics}");
    still_serving(&router).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_named_variants_with_traffic_can_be_pinned_unless_allowed() {
    let (stable, canary, idle) =
        (echo_backend("stable").await, echo_backend("stable-v2").await, echo_backend("idle").await);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("router.yaml");
    write_config(&config, &stable, &canary, &idle, false);
    let router = start_router(&config, &[]).await;
    let client = reqwest::Client::new();
    for _ in 0..5 {
        let r = client.post(router.url("/predict")).header(PIN, "stable").send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[PIN], "stable");
        assert_eq!(r.json::<Value>().await.unwrap()["backend"], "stable");
    }
    for refused in ["stable-v2", "idle", "nope", "STABLE"] {
        let r = client.post(router.url("/predict")).header(PIN, refused).send().await.unwrap();
        let body = expect_error(r, 400, "variant_not_selectable").await;
        assert!(body["error"].as_str().unwrap().ends_with("selectable: stable"), "{body}");
    }
    // What the operator writes with spec.routing.allowCanaryPinning.
    write_config(&config, &stable, &canary, &idle, true);
    let admin = reqwest::Client::new();
    let reloaded = async {
        loop {
            let config: Value = admin
                .get(format!("{}/router/config", router.admin))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if config["variants"][1]["pinnable"] == true {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), reloaded).await.expect("config reloaded");
    for allowed in ["stable-v2", "idle"] {
        let r = client.post(router.url("/predict")).header(PIN, allowed).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap()["backend"], allowed);
    }
    still_serving(&router).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_and_huge_variant_headers_are_refused_without_echo() {
    let (router, _dir) = setup(false, &[]).await;
    let client = reqwest::Client::new();
    let binary = reqwest::header::HeaderValue::from_bytes(&[0xff, 0xfe, b's', 0x80]).unwrap();
    let r = client.post(router.url("/predict")).header(PIN, binary).send().await.unwrap();
    expect_error(r, 400, "variant_not_selectable").await;
    let huge = "s".repeat(64 * 1024);
    let r = client.post(router.url("/predict")).header(PIN, huge.as_str()).send().await.unwrap();
    let body = expect_error(r, 400, "variant_not_selectable").await;
    assert!(body["error"].as_str().unwrap().len() < 512, "the value is not echoed back whole");
    // A huge sticky value is just a sticky value.
    let r = client.post(router.url("/predict")).header("x-user", huge.as_str()).send().await.unwrap();
    assert!(r.status() == 200 || r.status() == 500, "{}", r.status());
    let metrics = router.metrics().await;
    assert_eq!(
        sum(&metrics, "hone_router_rejected_total{reason=\"variant_not_selectable\"}"),
        2.0,
        "{metrics}"
    );
    still_serving(&router).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_are_not_on_the_client_port() {
    let (router, _dir) = setup(false, &[]).await;
    let client = reqwest::Client::new();
    for path in ["/router/config", "/metrics", "/router"] {
        let r = client.get(router.url(path)).send().await.unwrap();
        assert!(r.headers().get(PIN).is_none(), "{path} was forwarded");
        expect_error(r, 404, "not_found").await;
    }
    let config: Value =
        client.get(format!("{}/router/config", router.admin)).send().await.unwrap().json().await.unwrap();
    assert_eq!(config["variants"][1]["name"], "stable-v2");
    let metrics = router.metrics().await;
    assert!(metrics.contains("hone_router_variant_weight{variant=\"stable-v2\"} 1000"), "{metrics}");
    assert_eq!(sum(&metrics, "hone_router_rejected_total{reason=\"reserved_path\"}"), 3.0, "{metrics}");
    // The admin port forwards nothing.
    let r = client.post(format!("{}/predict", router.admin)).body("[1]").send().await.unwrap();
    expect_error(r, 404, "not_found").await;
    still_serving(&router).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_headers_a_byte_a_second_is_cut_off() {
    let (router, _dir) = setup(false, &["--header-read-timeout-ms", "1000"]).await;
    let addr = router.base.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let request = b"GET /v2/health/live HTTP/1.1\r\nhost: router\r\nx-filler: 0123456789\r\n\r\n";
    let (mut read, mut write) = socket.split();
    let mut sent = 0;
    let closed = async {
        let mut answer = Vec::new();
        // EOF or a reset: either way the router has let go.
        let _ = read.read_to_end(&mut answer).await;
        answer
    };
    let trickle = async {
        for &byte in request {
            if write.write_all(&[byte]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let answer = tokio::select! {
        answer = closed => answer,
        () = trickle => panic!("the whole request went through at 1 byte/s without being cut off"),
    };
    // At 1 byte a second a 1 s header timeout lets a few bytes in, not the 30
    // hyper would allow by default, nor the whole request.
    assert!(sent <= 10, "cut off only after {sent} of {} bytes", request.len());
    let text = String::from_utf8_lossy(&answer);
    assert!(!text.contains("\"live\""), "a request that never finished was answered: {text}");
    still_serving(&router).await;
}
