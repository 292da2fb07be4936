//! The try-it web page, served by real predictors, through the real router
//! and a sub-path proxy, driven in headless Chromium: what the page shows
//! must be what `/predict` answers over plain HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "webui/webdriver.rs"]
mod webdriver;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use webdriver::{Browser, Found, find_browser};

const KEY: &str = "webui-test-key-3f9a";
const VARIANTS: [(&str, &str); 2] = [("stable", "v1"), ("canary", "v2")];

fn write_router_config(path: &Path, variants: &[(&str, &str, u32)]) {
    let variants: Vec<Value> =
        variants.iter().map(|(n, url, w)| json!({"name": n, "url": url, "weight": w})).collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_yaml::to_string(&json!({ "variants": variants })).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A reverse proxy that serves `upstream` under `/hone/`, as an ingress
/// mounting the predictor on a sub-path would: the page must only use
/// relative URLs to work here.
async fn start_subpath_proxy(upstream: String) -> String {
    let client = reqwest::Client::new();
    let app = Router::new().fallback(move |request: Request| {
        let (client, upstream) = (client.clone(), upstream.clone());
        async move {
            let (parts, body) = request.into_parts();
            let path = parts.uri.path_and_query().map_or("", |p| p.as_str());
            let Some(rest) = path.strip_prefix("/hone/") else {
                return (StatusCode::NOT_FOUND, "outside /hone/").into_response();
            };
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let mut forwarded = client.request(parts.method, format!("{upstream}/{rest}")).body(body);
            for (name, value) in &parts.headers {
                if name != "host" && name != "content-length" {
                    forwarded = forwarded.header(name, value);
                }
            }
            let answer = forwarded.send().await.unwrap();
            let mut response = Response::builder().status(answer.status().as_u16());
            for (name, value) in answer.headers() {
                if name != "content-length" && name != "transfer-encoding" {
                    response = response.header(name, value);
                }
            }
            response.body(Body::from(answer.bytes().await.unwrap())).unwrap()
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/hone/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

/// A 64x64 grayscale PNG with a diagonal stroke, so the image is not uniform.
fn test_png(dir: &Path) -> (PathBuf, Vec<u8>) {
    let img = image::GrayImage::from_fn(64, 64, |x, y| {
        let d = (x as i32 - y as i32).abs();
        image::Luma([if d < 8 { 240 } else { (x * 2) as u8 }])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageLuma8(img).write_to(&mut out, image::ImageFormat::Png).unwrap();
    let path = dir.join("stroke.png");
    std::fs::write(&path, out.get_ref()).unwrap();
    (path, out.into_inner())
}

/// What `/predict` answers for `bytes` sent as a multipart file, as the page sends it.
async fn predict_over_http(base: &str, key: Option<&str>, name: &str, bytes: &[u8]) -> (u16, Value) {
    let part = reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(name.to_owned());
    let mut request = reqwest::Client::new()
        .post(format!("{base}/predict"))
        .multipart(reqwest::multipart::Form::new().part("file", part));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Chooses `file` in the page, clicks Predict and waits for a result or an error.
async fn predict_in_page(browser: &Browser, file: &Path) -> Value {
    browser
        .eval(
            "document.getElementById('result').hidden = true; document.getElementById('error').hidden = true",
        )
        .await;
    browser.type_into("#file", file.to_str().unwrap()).await;
    browser
        .wait_for("the Predict button to be enabled", "return !document.getElementById('predict').disabled")
        .await;
    browser.click("#predict").await;
    let script = "const t = (id) => document.getElementById(id).textContent;
        if (!document.getElementById('error').hidden) return {error: t('error')};
        if (document.getElementById('result').hidden) return null;
        return {label: t('label'), confidence: document.getElementById('confidence-bar').value,
                confidenceText: t('confidence'), variant: t('variant'), model: t('served-model'),
                latency: t('latency'), top: document.querySelectorAll('#top tbody tr').length};";
    browser.wait_for("a prediction or an error", script).await
}

/// Waits until the page has loaded the model's facts; returns them.
async fn model_facts(browser: &Browser) -> Value {
    let script = "const t = (id) => document.getElementById(id).textContent;
        if (!document.getElementById('model-error').hidden) return {error: t('model-error')};
        if (t('model-name') === '…') return null;
        return {name: t('model-name'), version: t('model-version'), input: t('model-input'), classes: t('model-classes')};";
    browser.wait_for("the model facts", script).await
}

fn assert_no_console_errors(messages: &[String]) {
    let bad: Vec<_> =
        messages.iter().filter(|m| m.contains("SEVERE") || m.contains("Content Security Policy")).collect();
    // The error case's 422 is logged by Chromium as a failed resource load; anything else is a page bug.
    let bad: Vec<_> = bad.into_iter().filter(|m| !m.contains("status of 422")).collect();
    assert!(bad.is_empty(), "browser console errors: {bad:#?}");
}

async fn start_browser() -> Option<Browser> {
    match find_browser() {
        Found::Binaries { chromium, chromedriver } => Some(Browser::start(&chromium, &chromedriver).await),
        Found::Skip => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_is_public_with_security_headers_and_model_facts_need_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, format!("{KEY}\n")).unwrap();
    let server = common::start(common::args("cnn", &["--api-keys-file", keys.to_str().unwrap()])).await;
    for (path, content_type) in [
        ("/", "text/html"),
        ("/ui", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
        ("/ui/icon.svg", "image/svg+xml"),
    ] {
        let r = reqwest::get(server.url(path)).await.unwrap();
        assert_eq!(r.status(), 200, "{path} must be public");
        let header = |name: &str| r.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
        assert!(header("content-type").unwrap().starts_with(content_type), "{path}");
        let csp = header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("default-src 'self'") && !csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"), "{path}");
        let text = r.text().await.unwrap();
        assert!(!text.contains(KEY) && !text.contains("cnn"), "{path} leaks the key or the model name");
    }
    // What the page shows about the model is behind the key, like /v2/models.
    common::expect_error(reqwest::get(server.url("/ui/model")).await.unwrap(), 401, "unauthorized").await;
    let r = reqwest::Client::new().get(server.url("/ui/model")).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let model: Value = r.json().await.unwrap();
    assert_eq!(model["name"], "cnn");
    assert_eq!(model["kind"], "image");
    assert_eq!(model["inputShape"], json!([1, 8, 8]));
    assert_eq!(model["classes"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_through_the_router_shows_what_predict_answers() {
    let Some(browser) = start_browser().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut backends = Vec::new();
    for (_, version) in VARIANTS {
        backends.push(common::start(common::args("cnn", &["--model-version", version])).await);
    }
    let config = dir.path().join("router.yaml");
    let [(stable, _), (canary, _)] = VARIANTS;
    write_router_config(&config, &[(stable, &backends[0].base, 50), (canary, &backends[1].base, 50)]);
    let router = common::start_router(&config, &[]).await;
    let (png, png_bytes) = test_png(dir.path());
    let (status, expected) = predict_over_http(&backends[0].base, None, "stroke.png", &png_bytes).await;
    assert_eq!(status, 200, "{expected}");

    browser.goto(&format!("{router}/ui")).await;
    let facts = model_facts(&browser).await;
    assert_eq!(facts["name"], "cnn", "{facts}");
    assert!(["v1", "v2"].contains(&facts["version"].as_str().unwrap()), "{facts}");
    assert_eq!(facts["input"], "image [1 × 8 × 8]");
    assert_eq!(facts["classes"], "3");

    let shown = predict_in_page(&browser, &png).await;
    assert_eq!(shown["label"], expected["label"], "page: {shown}\n/predict: {expected}");
    let confidence = expected["confidence"].as_f64().unwrap();
    assert!((shown["confidence"].as_f64().unwrap() - confidence).abs() < 1e-6, "{shown}");
    assert_eq!(shown["confidenceText"], format!("{:.1}%", confidence * 100.0));
    assert_eq!(shown["top"], 3, "every class of the 3-class model is listed");
    assert!(shown["latency"].as_str().unwrap().ends_with("ms (round trip)"));
    let variant = shown["variant"].as_str().unwrap();
    let version = VARIANTS.iter().find(|(n, _)| *n == variant).map(|(_, v)| *v);
    let version = version.unwrap_or_else(|| panic!("shown variant {variant:?} is not one of the router's"));
    assert_eq!(shown["model"], format!("cnn {version}"), "the version is the one of the variant shown");
    let screenshot = std::env::var_os("HONE_WEBUI_SCREENSHOT").map_or("/tmp/webui.png".into(), PathBuf::from);
    browser.screenshot(&screenshot).await;

    // All traffic to the canary: the page must now say so.
    write_router_config(&config, &[(stable, &backends[0].base, 0), (canary, &backends[1].base, 100)]);
    let client = reqwest::Client::new();
    let changed = Instant::now();
    while client.get(format!("{router}/ui")).send().await.unwrap().headers()["x-hone-variant"] != canary {
        assert!(changed.elapsed() < Duration::from_secs(5), "router did not reload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let shown = predict_in_page(&browser, &png).await;
    assert_eq!(
        (shown["variant"].as_str(), shown["model"].as_str()),
        (Some(canary), Some("cnn v2")),
        "{shown}"
    );
    assert_eq!(shown["label"], expected["label"]);

    // A file that is no image: the page shows the predictor's own error.
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "these are notes, not pixels\n").unwrap();
    let (status, error) =
        predict_over_http(&backends[1].base, None, "notes.txt", b"these are notes, not pixels\n").await;
    assert_eq!(status, 422, "{error}");
    let shown = predict_in_page(&browser, &notes).await;
    let message =
        format!("HTTP {status} {}: {}", error["code"].as_str().unwrap(), error["error"].as_str().unwrap());
    assert_eq!(shown["error"], message.as_str(), "{shown}");
    assert_no_console_errors(&browser.console().await);
    browser.quit();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_with_an_api_key_on_a_sub_path() {
    let Some(browser) = start_browser().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, format!("{KEY}\n")).unwrap();
    let server = common::start(common::args("cnn", &["--api-keys-file", keys.to_str().unwrap()])).await;
    let proxy = start_subpath_proxy(server.base.clone()).await;
    let (png, png_bytes) = test_png(dir.path());
    let (status, expected) = predict_over_http(&server.base, Some(KEY), "stroke.png", &png_bytes).await;
    assert_eq!(status, 200, "{expected}");

    browser.goto(&proxy).await;
    let facts = model_facts(&browser).await;
    let error = facts["error"].as_str().unwrap_or_else(|| panic!("no key, yet the model loaded: {facts}"));
    assert!(error.contains("needs an API key") && error.contains("HTTP 401"), "{error}");
    // Without the key, predicting is refused with the predictor's message.
    let shown = predict_in_page(&browser, &png).await;
    assert!(
        shown["error"].as_str().unwrap().starts_with("HTTP 401 unauthorized: missing or unknown API key"),
        "{shown}"
    );

    browser.type_into("#api-key", KEY).await;
    browser.click("#model-heading").await; // leaving the field is what commits it
    let name = "const n = document.getElementById('model-name').textContent; return n === '…' ? null : n;";
    assert_eq!(browser.wait_for("the model facts with the key", name).await, "cnn");
    assert!(browser.eval("return document.getElementById('model-error').hidden").await == true);
    let shown = predict_in_page(&browser, &png).await;
    assert_eq!(shown["label"], expected["label"], "page: {shown}\n/predict: {expected}");
    assert_eq!(shown["variant"], "this predictor (no router)");
    assert_eq!(shown["model"], format!("cnn {}", expected["version"].as_str().unwrap()));
    let console = browser.console().await;
    let console: Vec<String> = console.into_iter().filter(|m| !m.contains("status of 401")).collect();
    assert_no_console_errors(&console);
    browser.quit();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sends_a_feature_row_to_a_tabular_model() {
    let Some(browser) = start_browser().await else { return };
    let server = common::start(common::args("mlp", &[])).await;
    let row = "[5.1, 3.5, 1.4, 0.2]";
    let r = reqwest::Client::new()
        .post(server.url("/predict"))
        .body(row)
        .header("content-type", "application/json");
    let expected: Value = r.send().await.unwrap().json().await.unwrap();
    browser.goto(&server.url("/")).await;
    let facts = model_facts(&browser).await;
    assert_eq!(facts["input"], "tabular [4]", "{facts}");
    assert_eq!(browser.eval("return document.getElementById('image-input').hidden").await, true);
    browser.type_into("#row", row).await;
    browser.click("#predict").await;
    let label = "const r = document.getElementById('result');
        return r.hidden ? (document.getElementById('error').hidden ? null : document.getElementById('error').textContent)
                        : document.getElementById('label').textContent;";
    assert_eq!(browser.wait_for("a prediction", label).await, expected["label"]);
    assert_no_console_errors(&browser.console().await);
    browser.quit();
}
