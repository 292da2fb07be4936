//! Shared test harness: test models made once per test binary by
//! `fixtures/make_models.py`, and in-process servers on loopback.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use clap::Parser;
use hone_crds::modelversion::ArtifactFormat;
use hone_predictor::config::{ServeArgs, VerifyArgs};
use hone_router::RouterArgs;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The Python interpreter with torch (the build venv).
pub fn python() -> PathBuf {
    match std::env::var_os("HONE_VENV") {
        Some(venv) => Path::new(&venv).join("bin/python"),
        None => PathBuf::from("python3"),
    }
}

/// Folder with `cnn/`, `mlp/`, `slow/`, `poison/` models (made on first use).
pub fn models() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| make_models(&["cnn", "mlp", "slow", "poison"])).path()
}

/// A new folder with the `names` models of `fixtures/make_models.py`.
pub fn make_models(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(python())
        .arg(fixture("make_models.py"))
        .arg(dir.path())
        .args(names)
        .output()
        .expect("run make_models.py (is the venv on PATH? eval \"$(hack/env.sh)\")");
    assert!(out.status.success(), "make_models.py failed: {}", String::from_utf8_lossy(&out.stderr));
    dir
}

/// Path of a file in `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Folder of one test model.
pub fn model(name: &str) -> String {
    models().join(name).display().to_string()
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Parser)]
struct RouterCli {
    #[command(flatten)]
    router: RouterArgs,
}

/// A router (`hone-router`) running in this process.
pub struct RouterUrls {
    /// `http://127.0.0.1:PORT` of the client port (what `{router}` prints).
    pub base: String,
    /// `http://127.0.0.1:PORT` of the admin port (`/metrics`, `/router/config`).
    pub admin: String,
}

impl std::fmt::Display for RouterUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.base)
    }
}

/// Starts a router (`hone-router`, in this process) on `config` (reread
/// every 100 ms) with `extra` flags.
pub async fn start_router(config: &Path, extra: &[&str]) -> RouterUrls {
    let mut argv =
        vec!["hone-router", "--config", config.to_str().expect("UTF-8 path"), "--reload-ms", "100"];
    argv.extend_from_slice(extra);
    let args = RouterCli::try_parse_from(argv).expect("valid router flags").router;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let urls = RouterUrls {
        base: format!("http://{}", listener.local_addr().expect("local address")),
        admin: format!("http://{}", admin.local_addr().expect("local address")),
    };
    tokio::spawn(hone_router::run(args, listener, admin, std::future::pending()));
    urls
}

/// Serve args for `model` plus extra flags.
pub fn args(model_name: &str, extra: &[&str]) -> ServeArgs {
    args_at(&model(model_name), model_name, extra)
}

/// Serve args for the model in `folder` (a test model changed in a copy)
/// under `model_name`, plus extra flags.
pub fn args_at(folder: &str, model_name: &str, extra: &[&str]) -> ServeArgs {
    let mut argv = vec!["serve", "--model", folder, "--model-name", model_name, "--addr", "127.0.0.1:0"];
    argv.extend_from_slice(&["--torch-threads", "1", "--shutdown-grace-seconds", "5"]);
    argv.extend_from_slice(extra);
    Cli::try_parse_from(argv).expect("valid flags").serve
}

/// A server running in this process.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    stop: Option<oneshot::Sender<()>>,
    /// The server task; resolves when it stops.
    pub task: JoinHandle<Result<(), hone_predictor::serve::ServeError>>,
}

impl Server {
    /// URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends the shutdown signal (as SIGTERM would).
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts a server and waits until it is ready (or fails).
pub async fn start(args: ServeArgs) -> Server {
    let server = start_unready(args).await;
    wait_ready(&server).await;
    server
}

/// Starts a server without waiting for readiness.
pub async fn start_unready(args: ServeArgs) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = hone_predictor::serve::run(args, listener, async {
            let _ = stopped.await;
        })
        .await;
        if let Err(e) = &served {
            eprintln!("the server stopped: {e}");
        }
        served
    });
    Server { base, stop: Some(stop), task }
}

/// Polls readiness for up to 60 s.
pub async fn wait_ready(server: &Server) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            !server.task.is_finished(),
            "server stopped before it was ready (its error is printed above)"
        );
        if let Ok(r) = client.get(server.url("/v2/health/ready")).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "server not ready within 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A PNG of `width` x `height` gray pixels of `value`.
pub fn gray_png(width: u32, height: u32, value: u8) -> Vec<u8> {
    let img = image::GrayImage::from_pixel(width, height, image::Luma([value]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageLuma8(img).write_to(&mut out, image::ImageFormat::Png).expect("encode png");
    out.into_inner()
}

/// A JPEG of `width` x `height` RGB pixels.
pub fn rgb_jpeg(width: u32, height: u32) -> Vec<u8> {
    let img =
        image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x * 20) as u8, (y * 20) as u8, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img).write_to(&mut out, image::ImageFormat::Jpeg).expect("encode jpeg");
    out.into_inner()
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

/// POSTs `body` as JSON to `url` and returns the JSON answer (any status).
pub async fn post_json(client: &reqwest::Client, url: &str, body: &serde_json::Value) -> serde_json::Value {
    client.post(url).json(body).send().await.unwrap().json().await.unwrap()
}

/// `verify`'s arguments for the model in `folder`, nothing else checked.
pub fn verify_args(folder: &Path, format: ArtifactFormat, onnxruntime: Option<PathBuf>) -> VerifyArgs {
    VerifyArgs {
        model: folder.display().to_string(),
        format,
        onnxruntime,
        digest: None,
        card_digest: None,
        expected_signature: None,
        eval_dir: None,
        device: "cpu".into(),
        termination_log: None,
    }
}
