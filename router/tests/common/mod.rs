//! Shared test harness: the router in this process on loopback, and small
//! real HTTP backends.
#![allow(dead_code)]

use std::path::Path;

use axum::body::Bytes;
use axum::http::{HeaderMap, Uri};
use clap::Parser;
use hone_router::RouterArgs;
use serde_json::json;
use tokio::net::TcpListener;

#[derive(Parser)]
struct RouterCli {
    #[command(flatten)]
    router: RouterArgs,
}

/// A router running in this process.
pub struct Router {
    /// `http://127.0.0.1:PORT` of the client port.
    pub base: String,
    /// `http://127.0.0.1:PORT` of the admin port.
    pub admin: String,
}

impl Router {
    /// URL of `path` on the client port.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The admin port's metrics page.
    pub async fn metrics(&self) -> String {
        let r = reqwest::get(format!("{}/metrics", self.admin)).await.expect("GET /metrics");
        assert_eq!(r.status(), 200);
        r.text().await.expect("metrics text")
    }
}

/// Starts a router on `config` (reread every 100 ms) with `extra` flags.
pub async fn start_router(config: &Path, extra: &[&str]) -> Router {
    let mut argv =
        vec!["hone-router", "--config", config.to_str().expect("UTF-8 path"), "--reload-ms", "100"];
    argv.extend_from_slice(extra);
    let args = RouterCli::try_parse_from(argv).expect("valid router flags").router;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let router = Router {
        base: format!("http://{}", listener.local_addr().expect("local address")),
        admin: format!("http://{}", admin.local_addr().expect("local address")),
    };
    tokio::spawn(hone_router::run(args, listener, admin, std::future::pending()));
    router
}

/// A backend that answers who it is and what it got.
pub async fn echo_backend(name: &'static str) -> String {
    let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| async move {
        let sticky = headers.get("x-user").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        axum::Json(json!({"backend": name, "path": uri.to_string(), "body": String::from_utf8_lossy(&body), "user": sticky}))
    });
    serve(app).await
}

/// Serves `app` on a loopback port; returns its base URL.
pub async fn serve(app: axum::Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("local address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Asserts a JSON error answer with `status` and `code`; returns the body.
pub async fn expect_error(response: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    let got = response.status().as_u16();
    let text = response.text().await.expect("body");
    assert_eq!(got, status, "body: {text}");
    let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    assert_eq!(body["code"], code, "body: {body}");
    assert_eq!(body["status"], status);
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "body: {body}");
    body
}

/// Writes a router config (as JSON, which is YAML) atomically, as a
/// ConfigMap update swaps files.
pub fn write_config(path: &Path, config: &serde_json::Value) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(config).expect("JSON")).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config");
}

/// The sum of the samples whose line starts with `series` (a name and the
/// first labels), 0 when there is none.
pub fn sum(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Input of a predictor backend answered with a JSON object that is no prediction.
pub const UNPARSABLE_INPUT: u64 = 997;
/// Input answered as `text/plain`.
pub const PLAIN_TEXT_INPUT: u64 = 998;
/// Input answered with a prediction padded past 64 KiB.
pub const LARGE_INPUT: u64 = 999;

/// How a predictor-like backend answers: inputs are integers.
#[derive(Clone, Copy)]
pub struct Predictor {
    /// Its name, in the `model` field.
    pub name: &'static str,
    /// The top-1 label of an input.
    pub label: fn(u64) -> String,
    /// The confidence of every answer.
    pub confidence: f64,
    /// How long it thinks before answering.
    pub delay: std::time::Duration,
}

/// What a backend saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Path and query.
    pub path: String,
    /// Its `x-request-id`, if any.
    pub request_id: Option<String>,
    /// Whether it carried `x-hone-shadow: 1`.
    pub shadow: bool,
}

/// A running predictor-like backend.
pub struct Backend {
    /// Its base URL.
    pub url: String,
    /// What it received, in order.
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
}

impl Backend {
    /// What it has received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

/// One prediction as the predictor writes it.
fn prediction(p: &Predictor, input: u64) -> serde_json::Value {
    let label = (p.label)(input);
    json!({"label": label, "classIndex": input % 10, "confidence": p.confidence,
           "top": [{"label": label, "classIndex": input % 10, "confidence": p.confidence}],
           "model": p.name, "version": "1"})
}

/// A backend answering `POST /predict` (an integer) and `POST /predict/batch`
/// (a JSON array of integers) as the predictor does, with its labels; it
/// echoes `x-request-id` as the predictor does, and 404s anything else.
pub async fn predictor_backend(p: Predictor) -> Backend {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
        let log = log.clone();
        async move {
            let request_id = headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let shadow = headers.get("x-hone-shadow").is_some_and(|v| v == "1");
            log.lock().expect("lock").push(Seen {
                path: uri.to_string(),
                request_id: request_id.clone(),
                shadow,
            });
            tokio::time::sleep(p.delay).await;
            let text = String::from_utf8_lossy(&body);
            let mut response = match uri.path() {
                "/predict" => match text.trim().parse::<u64>() {
                    Ok(UNPARSABLE_INPUT) => axum::Json(json!({"oops": true})).into_response(),
                    Ok(PLAIN_TEXT_INPUT) => (p.label)(PLAIN_TEXT_INPUT).into_response(),
                    Ok(LARGE_INPUT) => {
                        let mut answer = prediction(&p, LARGE_INPUT);
                        answer["pad"] = json!("x".repeat(70 * 1024));
                        axum::Json(answer).into_response()
                    }
                    Ok(n) => axum::Json(prediction(&p, n)).into_response(),
                    Err(_) => (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "not a number"})))
                        .into_response(),
                },
                "/predict/batch" => match serde_json::from_str::<Vec<u64>>(&text) {
                    Ok(inputs) => {
                        let predictions: Vec<_> = inputs.iter().map(|&n| prediction(&p, n)).collect();
                        axum::Json(json!({ "predictions": predictions })).into_response()
                    }
                    Err(_) => {
                        (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "not a batch"}))).into_response()
                    }
                },
                _ => (StatusCode::NOT_FOUND, axum::Json(json!({"error": "no such route"}))).into_response(),
            };
            if let Some(id) = request_id.and_then(|id| id.parse().ok()) {
                response.headers_mut().insert("x-request-id", id);
            }
            response
        }
    });
    Backend { url: serve(app).await, seen }
}
