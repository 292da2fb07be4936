//! Hostile and oversized requests against the real `hone-predictor serve`
//! binary over real HTTP. Every case asserts the status and JSON body, then
//! that the server still answers its health checks and a normal request
//! within a second. The image server's peak RSS over its whole suite is read
//! from /proc and held to a budget.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{expect_error, gray_png, model};

const BIN: &str = env!("CARGO_BIN_EXE_hone-predictor");
/// How much the image server's peak resident memory may grow over its
/// hostile suite, above what it holds once ready (libtorch and the model):
/// the body budget plus the decode working set the limits allow
/// (docs/predictor.md has the formula; 256 MiB + 2 x 48 MiB here).
const RSS_GROWTH_BUDGET_MIB: u64 = 384;
/// How fast a server must answer its health checks after each case.
const RECOVERY: Duration = Duration::from_secs(1);

/// One server at a time: each test floods its own server on purpose, and on
/// two shared cores a neighbour's flood would be measured as this one's
/// recovery time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A `hone-predictor serve` process on a loopback port.
struct Server {
    child: Child,
    base: String,
    name: String,
    log: tempfile::NamedTempFile,
}

impl Server {
    fn spawn(model_name: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(BIN)
            .args(["serve", "--model", &model(model_name), "--model-name", model_name, "--addr", &addr])
            .args(["--torch-threads", "1", "--shutdown-grace-seconds", "2"])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        Self { child, base: format!("http://{addr}"), name: model_name.to_owned(), log }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn infer_url(&self) -> String {
        self.url(&format!("/v2/models/{}/infer", self.name))
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("server exited with {status} before it was ready:\n{}", self.log_text());
            }
            if let Ok(r) = reqwest::get(self.url("/v2/health/ready")).await
                && r.status() == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "not ready within 60 s:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Peak resident set size in MiB (VmHWM).
    fn peak_rss_mib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
    }

    /// Health checks and a normal request all answer 200 within a second.
    async fn still_serves(&self, normal: &reqwest::RequestBuilder, case: &str) {
        let client = reqwest::Client::builder().timeout(RECOVERY).build().unwrap();
        for path in ["/v2/health/live", "/v2/health/ready"] {
            let r = client.get(self.url(path)).send().await;
            assert!(r.as_ref().is_ok_and(|r| r.status() == 200), "after {case}: {path} answered {r:?}");
        }
        let started = Instant::now();
        let r = normal.try_clone().unwrap().timeout(RECOVERY).send().await;
        let r = r.unwrap_or_else(|e| panic!("after {case}: a normal request failed: {e}"));
        assert_eq!(r.status(), 200, "after {case}: {}", r.text().await.unwrap_or_default());
        assert!(started.elapsed() <= RECOVERY, "after {case}: a normal request took {:?}", started.elapsed());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A PNG whose header claims `width` x `height` (valid chunk CRCs, no pixels).
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut png = gray_png(1, 1, 0);
    // Signature (8), IHDR length (4), "IHDR" (4), then width and height.
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn oip_json(shape: Value, data: Value) -> Value {
    json!({"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": data}]})
}

/// An OIP body with one binary FP32 tensor of `shape` holding `values`.
fn oip_binary(shape: &[usize], values: &[f32]) -> (Vec<u8>, usize) {
    let head = json!({"inputs": [{"name": "input", "shape": shape, "datatype": "FP32",
        "parameters": {"binary_data_size": values.len() * 4}}]})
    .to_string();
    let mut body = head.clone().into_bytes();
    for v in values {
        body.extend_from_slice(&v.to_le_bytes());
    }
    (body, head.len())
}

/// Sends raw bytes one at a time, `every` apart, until the server closes the
/// connection or answers; returns what it answered (empty when it closed).
async fn trickle(base: &str, bytes: &[u8], every: Duration, limit: Duration) -> String {
    let mut stream = TcpStream::connect(base.trim_start_matches("http://")).await.unwrap();
    let started = Instant::now();
    for &b in bytes {
        if stream.write_all(&[b]).await.is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        if let Ok(read) = tokio::time::timeout(every, stream.read(&mut buf)).await {
            return match read {
                Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
                Err(_) => String::new(),
            };
        }
        assert!(started.elapsed() < limit, "the server kept a trickling client for {:?}", started.elapsed());
    }
    let mut rest = String::new();
    let _ = tokio::time::timeout(limit, stream.read_to_string(&mut rest)).await;
    rest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_image_server_survives_hostile_requests_within_its_memory_budget() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut server = Server::spawn(
        "cnn",
        &["--header-read-timeout-ms", "1000", "--body-read-timeout-ms", "1000", "--max-batch-items", "64"],
        &[],
    );
    server.wait_ready().await;
    let client = reqwest::Client::new();
    let normal =
        client.post(server.url("/predict")).header("content-type", "image/png").body(gray_png(8, 8, 128));
    server.still_serves(&normal, "start").await;
    let baseline = server.peak_rss_mib();
    let infer = server.infer_url();

    // An oversized OIP batch, JSON: refused from the shape, before the data is parsed.
    let r =
        client.post(&infer).json(&oip_json(json!([100_000, 1, 8, 8]), json!([0.0]))).send().await.unwrap();
    let body = expect_error(r, 422, "too_many_items").await;
    assert!(body["error"].as_str().unwrap().contains("64"), "{body}");
    server.still_serves(&normal, "oversized JSON batch").await;

    // The same in binary: 16,000 samples in about 4 MB.
    let (body, head) = oip_binary(&[16_000, 1, 8, 8], &vec![0.5; 16_000 * 64]);
    let r = client
        .post(&infer)
        .header("inference-header-content-length", head)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    expect_error(r, 422, "too_many_items").await;
    server.still_serves(&normal, "oversized binary batch").await;

    // Thousands of outputs: at most one of each.
    let mut request = oip_json(json!([1, 1, 8, 8]), json!(vec![0.5; 64]));
    request["outputs"] = json!(vec![json!({"name": "probabilities"}); 5000]);
    let r = client.post(&infer).json(&request).send().await.unwrap();
    expect_error(r, 422, "too_many_items").await;
    server.still_serves(&normal, "thousands of outputs").await;

    // Deeply nested JSON: refused by the parser's depth limit, no stack overflow.
    let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
    let body =
        format!(r#"{{"inputs":[{{"name":"input","shape":[1,1,8,8],"datatype":"FP32","data":{deep}}}]}}"#);
    let r = client.post(&infer).header("content-type", "application/json").body(body).send().await.unwrap();
    expect_error(r, 400, "invalid_json").await;
    server.still_serves(&normal, "deeply nested JSON").await;

    // More values than the shape holds: parsing stops at the shape.
    let r = client
        .post(&infer)
        .json(&oip_json(json!([1, 1, 8, 8]), json!(vec![0.5; 500_000])))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "invalid_json").await;
    server.still_serves(&normal, "data longer than its shape").await;

    // NaN and infinity, JSON and binary.
    let r =
        client.post(&infer).json(&oip_json(json!([1, 1, 8, 8]), json!(vec![1e39; 64]))).send().await.unwrap();
    expect_error(r, 422, "non_finite").await;
    let (body, head) = oip_binary(&[1, 1, 8, 8], &[f32::NAN; 64]);
    let r =
        client.post(&infer).header("inference-header-content-length", head).body(body).send().await.unwrap();
    expect_error(r, 422, "non_finite").await;
    let (body, head) = oip_binary(&[1, 1, 8, 8], &[f32::INFINITY; 64]);
    let r =
        client.post(&infer).header("inference-header-content-length", head).body(body).send().await.unwrap();
    expect_error(r, 422, "non_finite").await;
    server.still_serves(&normal, "NaN and infinity").await;

    // A PNG whose header claims 65535 x 65535: refused from the header.
    let r = client
        .post(server.url("/predict"))
        .header("content-type", "image/png")
        .body(png_claiming(65535, 65535));
    let body = expect_error(r.send().await.unwrap(), 422, "image_too_large").await;
    assert!(body["error"].as_str().unwrap().contains("65535x65535"), "{body}");
    server.still_serves(&normal, "65535x65535 PNG header").await;

    // Many large images at once: each decodes to 4 MiB of pixels from a small
    // upload; the decode pool bounds how many are in memory.
    let large = gray_png(2048, 2048, 77);
    let sends = (0..24).map(|_| {
        client.post(server.url("/predict")).header("content-type", "image/png").body(large.clone()).send()
    });
    for r in futures::future::join_all(sends).await {
        let r = r.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert!(status == 200 || status == 429, "{status}: {text}");
    }
    server.still_serves(&normal, "24 concurrent 2048x2048 images").await;

    // Multipart: thousands of parts, and a boundary that never ends.
    let mut many = String::new();
    for i in 0..5000 {
        many.push_str(&format!("--xx\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\nv\r\n"));
    }
    many.push_str("--xx--\r\n");
    let r = client
        .post(server.url("/predict/batch"))
        .header("content-type", "multipart/form-data; boundary=xx")
        .body(many)
        .send()
        .await
        .unwrap();
    expect_error(r, 422, "too_many_items").await;
    let unterminated =
        "--xx\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\nPNG...";
    let r = client
        .post(server.url("/predict"))
        .header("content-type", "multipart/form-data; boundary=xx")
        .body(unterminated)
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "invalid_multipart").await;
    server.still_serves(&normal, "hostile multipart").await;

    // A chunked body over the limit (no Content-Length to refuse early).
    let chunks = futures::stream::iter((0..40).map(|_| Ok::<_, std::io::Error>(vec![0u8; 1 << 20])));
    let r = client
        .post(server.url("/predict"))
        .header("content-type", "image/png")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    // The server answers 413 as soon as the limit is passed, and may close
    // the connection while the client is still sending.
    if let Ok(r) = r {
        expect_error(r, 413, "payload_too_large").await;
    }
    server.still_serves(&normal, "chunked body over the limit").await;

    // A slow client: headers one byte at a time are cut off by the
    // header-read timeout (1 s here); a body one byte at a time gets 408.
    let answer = trickle(
        &server.base,
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n",
        Duration::from_millis(300),
        Duration::from_secs(10),
    )
    .await;
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    server.still_serves(&normal, "slow headers").await;
    let mut stream = TcpStream::connect(server.base.trim_start_matches("http://")).await.unwrap();
    stream
        .write_all(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100\r\n\r\n",
        )
        .await
        .unwrap();
    let mut slow_body = Vec::new();
    for _ in 0..4 {
        if stream.write_all(b"x").await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut slow_body)).await;
    let slow_body = String::from_utf8_lossy(&slow_body);
    assert!(slow_body.starts_with("HTTP/1.1 408"), "{slow_body}");
    assert!(slow_body.contains("\"code\":\"request_timeout\""), "{slow_body}");
    server.still_serves(&normal, "slow body").await;

    let peak = server.peak_rss_mib();
    println!(
        "image server peak RSS: {baseline} MiB once ready, {peak} MiB over the hostile suite \
         (+{} MiB; budget +{RSS_GROWTH_BUDGET_MIB} MiB)",
        peak.saturating_sub(baseline)
    );
    assert!(
        peak.saturating_sub(baseline) < RSS_GROWTH_BUDGET_MIB,
        "peak RSS grew from {baseline} to {peak} MiB, over the budget of +{RSS_GROWTH_BUDGET_MIB} MiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tabular_server_refuses_hostile_json() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut server = Server::spawn("mlp", &["--max-json-bytes", "65536"], &[]);
    server.wait_ready().await;
    let client = reqwest::Client::new();
    let normal = client.post(server.url("/predict")).json(&[5.1, 3.5, 1.4, 0.2]);
    let predict = server.url("/predict");

    let deep = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    let r = client.post(&predict).header("content-type", "application/json").body(deep).send().await.unwrap();
    expect_error(r, 400, "invalid_json").await;
    server.still_serves(&normal, "deeply nested row").await;

    let r = client.post(&predict).json(&vec![1.0; 100_000]).send().await.unwrap();
    expect_error(r, 413, "payload_too_large").await;
    server.still_serves(&normal, "JSON over its own limit").await;

    let r = client.post(server.url("/predict/batch")).json(&json!({"instances": vec![[1, 2, 3, 4]; 1000]}));
    expect_error(r.send().await.unwrap(), 422, "too_many_items").await;
    let r = client.post(&predict).json(&json!([1e39, 1, 1, 1])).send().await.unwrap();
    expect_error(r, 422, "non_finite").await;
    let r =
        client.post(&predict).header("content-type", "application/json").body("[NaN, 1, 1, 1]").send().await;
    expect_error(r.unwrap(), 400, "invalid_json").await;
    server.still_serves(&normal, "non-finite rows").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_decode_flood_beyond_the_pool_is_answered_429() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut server = Server::spawn("cnn", &["--decode-threads", "1", "--decode-queue", "1"], &[]);
    server.wait_ready().await;
    let client = reqwest::Client::new();
    let normal =
        client.post(server.url("/predict")).header("content-type", "image/png").body(gray_png(8, 8, 1));
    let large = gray_png(1500, 1500, 9);
    let sends = (0..16).map(|_| {
        client.post(server.url("/predict")).header("content-type", "image/png").body(large.clone()).send()
    });
    let (mut ok, mut refused) = (0, 0);
    for r in futures::future::join_all(sends).await {
        let r = r.unwrap();
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {
                assert_eq!(r.headers()["retry-after"], "1");
                expect_error(r, 429, "decode_overloaded").await;
                refused += 1;
            }
            other => panic!("{other}: {}", r.text().await.unwrap()),
        }
    }
    assert!(ok >= 1 && refused >= 1, "{ok} answered, {refused} refused");
    server.still_serves(&normal, "decode flood").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_input_fails_only_its_own_request() {
    let _serial = ONE_AT_A_TIME.lock().await;
    // A wide batching window, so the poison request shares a forward pass
    // even on a loaded machine (200 ms was not always enough for twelve sends).
    let mut server = Server::spawn("poison", &["--max-latency-ms", "2000", "--max-batch-size", "12"], &[]);
    server.wait_ready().await;
    let client = reqwest::Client::new();
    let infer = server.infer_url();
    let row = |first: f32| oip_json(json!([1, 4]), json!([first, 0.1, 0.2, 0.3]));
    let sends: Vec<_> = (0..12)
        .map(|i| {
            client
                .post(&infer)
                .header("x-request-id", format!("req-{i}"))
                .json(&row(if i == 5 { 666.0 } else { i as f32 }))
                .send()
        })
        .collect();
    let responses = futures::future::join_all(sends).await;
    for (i, r) in responses.into_iter().enumerate() {
        let r = r.unwrap();
        assert_eq!(r.headers()["x-request-id"], format!("req-{i}").as_str());
        if i == 5 {
            let body = expect_error(r, 500, "inference_failed").await;
            assert_eq!(body["request_id"], "req-5");
            let text = body.to_string();
            assert!(
                !text.contains("poison") && !text.contains("Traceback") && !text.contains("internal detail"),
                "{text}"
            );
        } else {
            let text = r.text().await.unwrap();
            assert!(text.contains("\"outputs\""), "request {i} failed with its poisoned neighbour: {text}");
        }
    }
    // The detail is in the log, under the request id.
    let log = server.log_text();
    assert!(log.contains("req-5") && log.contains("poison input"), "{log}");
    let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    let splits = metrics.lines().find(|l| l.starts_with("hone_predictor_batch_splits_total")).unwrap();
    assert!(!splits.ends_with(" 0"), "the poison request was never batched with others: {splits}");
    let normal = client.post(&infer).json(&row(1.0));
    server.still_serves(&normal, "poison input").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_inference_thread_fails_health_and_ends_the_process() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut server = Server::spawn("mlp", &[], &[("HONE_FAULT_INJECTION", "inference-panic-on=666")]);
    server.wait_ready().await;
    let client = reqwest::Client::new();
    let infer = server.infer_url();
    let ok = client.post(&infer).json(&oip_json(json!([1, 4]), json!([1, 2, 3, 4]))).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let r = client.post(&infer).json(&oip_json(json!([1, 4]), json!([666, 2, 3, 4]))).send().await.unwrap();
    expect_error(r, 503, "inference_unavailable").await;
    // The process exits with an error, and until then liveness fails.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        let live = client.get(server.url("/v2/health/live")).timeout(RECOVERY).send().await;
        assert!(live.as_ref().map_or(true, |r| r.status() == 503), "live answered {live:?} after the panic");
        assert!(Instant::now() < deadline, "the process did not exit after its inference thread died");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success(), "exit status {status}");
    let log = server.log_text();
    assert!(log.contains("inference thread died"), "{log}");
    let after = client.get(server.url("/v2/health/live")).timeout(RECOVERY).send().await;
    assert!(after.is_err(), "the health check still answers: {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_needs_the_key_on_the_client_port_and_lives_on_the_admin_port() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let keys = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(keys.path(), "k1\n").unwrap();
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let admin = format!("127.0.0.1:{admin_port}");
    let keys_file = keys.path().to_str().unwrap();
    let mut server = Server::spawn("mlp", &["--api-keys-file", keys_file, "--admin-addr", &admin], &[]);
    server.wait_ready().await;
    let client = reqwest::Client::new();
    for path in ["/metrics", "/drift", "/v2/models/mlp"] {
        let r = client.get(server.url(path)).send().await.unwrap();
        expect_error(r, 401, "unauthorized").await;
        let r = client.get(server.url(path)).header("x-api-key", "k1").send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} with the key");
    }
    // Prometheus scrapes the admin port, which takes no key and serves no model route.
    let metrics = client.get(format!("http://{admin}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.unwrap().contains("hone_predictor_requests_total"));
    assert_eq!(client.get(format!("http://{admin}/drift")).send().await.unwrap().status(), 200);
    let r = client.post(format!("http://{admin}/predict")).json(&[1, 2, 3, 4]).send().await.unwrap();
    expect_error(r, 404, "not_found").await;
    let normal = client.post(server.url("/predict")).header("x-api-key", "k1").json(&[5.1, 3.5, 1.4, 0.2]);
    server.still_serves(&normal, "introspection").await;
}
