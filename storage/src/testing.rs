//! Real servers on loopback for tests (feature `testing`): MinIO for tests
//! that need S3 (the trainer's storage tests, the cluster's purge tests),
//! its binary from `HONE_MINIO_BIN` (hack/build-minio.sh builds it; the
//! Makefile's test targets set it); and an MLflow tracking server with its
//! Model Registry, from the `mlflow` package in `HONE_VENV`.

#![allow(clippy::panic, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The root user of every test server.
pub const USER: &str = "hone-test";
/// Its password.
pub const PASSWORD: &str = "hone-test-secret";

/// A MinIO server on loopback with its data in a temporary folder; stopped
/// and removed on drop.
pub struct Minio {
    child: Child,
    data: PathBuf,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

impl Drop for Minio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl Minio {
    /// Starts MinIO and waits until it accepts connections; `None` (with a
    /// note on stderr) when `HONE_MINIO_BIN` is unset and this is not CI.
    /// `make_target` names the target that sets it, for the note.
    pub fn start(make_target: &str) -> Option<Self> {
        let bin = match std::env::var("HONE_MINIO_BIN") {
            Ok(bin) if Path::new(&bin).exists() => bin,
            _ if std::env::var_os("CI").is_some() => {
                panic!("HONE_MINIO_BIN is not set in CI: run the tests through make")
            }
            _ => {
                eprintln!(
                    "skipping: HONE_MINIO_BIN unset (hack/build-minio.sh builds MinIO; `make {make_target}` sets it)"
                );
                return None;
            }
        };
        let (port, console) = (free_port(), free_port());
        let data = std::env::temp_dir().join(format!("hone-minio-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&data).expect("a MinIO data folder");
        let child = Command::new(bin)
            .args(["server", "--quiet", "--address", &format!("127.0.0.1:{port}")])
            .args(["--console-address", &format!("127.0.0.1:{console}")])
            .arg(&data)
            .env("MINIO_ROOT_USER", USER)
            .env("MINIO_ROOT_PASSWORD", PASSWORD)
            .env("MINIO_BROWSER", "off")
            .stdout(Stdio::null())
            .spawn()
            .expect("starting MinIO");
        let minio = Self { child, data, endpoint: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "MinIO did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(minio)
    }

    /// The environment an object_store (or AWS SDK) client needs to reach it.
    pub fn env(&self) -> [(&'static str, String); 5] {
        [
            ("AWS_ACCESS_KEY_ID", USER.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", PASSWORD.to_owned()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
        ]
    }
}

/// An MLflow tracking server (`python -m mlflow server`, the PyPI package)
/// on loopback, with its SQLite store and proxied artifacts in a temporary
/// folder. It runs in a process group of its own (it starts uvicorn
/// workers), stopped on drop. [`MlflowServer::stop`] and
/// [`MlflowServer::restart`] take it down and bring it back on the same port
/// and store, for tests of a registry that is down.
pub struct MlflowServer {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    /// `http://127.0.0.1:<port>`.
    pub uri: String,
}

/// The venv's Python (`HONE_VENV`), else `python3`.
pub fn python() -> String {
    std::env::var("HONE_VENV").map(|v| format!("{v}/bin/python")).unwrap_or_else(|_| "python3".into())
}

impl MlflowServer {
    /// Starts a server and waits for `/health`; `None` (with a note on
    /// stderr) when the `mlflow` package is missing and this is not CI.
    pub fn start() -> Option<Self> {
        let installed = Command::new(python())
            .args(["-c", "import mlflow"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            assert!(
                std::env::var_os("CI").is_none(),
                "mlflow is not installed in the venv in CI (hack/requirements.txt)"
            );
            eprintln!("skipping: mlflow not installed (make setup installs it)");
            return None;
        }
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("hone-mlflow-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("an MLflow folder");
        let mut server = Self { child: None, dir, port, uri: format!("http://127.0.0.1:{port}") };
        server.restart();
        Some(server)
    }

    /// (Re)starts the server on its port and store; waits for `/health`.
    pub fn restart(&mut self) {
        use std::os::unix::process::CommandExt;
        self.stop();
        let log = std::fs::File::create(self.dir.join("server.log")).expect("an MLflow log file");
        let child = Command::new(python())
            .args(["-m", "mlflow", "server", "--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--workers", "1"])
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}/mlflow.db", self.dir.display()))
            .arg("--artifacts-destination")
            .arg(self.dir.join("artifacts"))
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("starting mlflow server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let request = format!("GET /health HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n", self.port);
                let mut answer = String::new();
                if stream.write_all(request.as_bytes()).is_ok()
                    && stream.read_to_string(&mut answer).is_ok()
                    && answer.starts_with("HTTP/1.")
                    && answer.contains(" 200 ")
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "mlflow server did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Stops the server (the whole process group) and waits for it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let group = format!("-{}", child.id());
        for signal in ["-TERM", "-KILL"] {
            let _ = Command::new("kill").args([signal, "--", &group]).stderr(Stdio::null()).status();
            std::thread::sleep(Duration::from_millis(300));
        }
        let _ = child.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The folder the server keeps its store, artifacts and log in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Runs `script` with the venv's Python, `MLFLOW_TRACKING_URI` set to this
    /// server; panics with its stderr when it fails; returns its stdout.
    pub fn python(&self, script: &str) -> String {
        let out = Command::new(python())
            .args(["-c", script])
            .env("MLFLOW_TRACKING_URI", &self.uri)
            .current_dir(&self.dir)
            .output()
            .expect("running python");
        assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Logs a folder holding `model_file` (random bytes) and a `model.json`
    /// for iris (4 features, classes a, b, c) to a new run, registers it as
    /// `name` version 1 with `alias` on it; returns the run id.
    pub fn register_iris(&self, name: &str, model_file: &str, alias: &str) -> String {
        let script = format!(
            r#"
import json, os, mlflow
from mlflow import MlflowClient
os.makedirs("model", exist_ok=True)
open("model/{model_file}", "wb").write(b"model-bytes-" + os.urandom(64))
json.dump({{"signature": {{"inputShape": [4], "classes": ["a", "b", "c"]}}}}, open("model/model.json", "w"))
with mlflow.start_run() as run:
    mlflow.log_artifacts("model", artifact_path="model")
c = MlflowClient()
c.create_registered_model("{name}")
mv = c.create_model_version("{name}", f"{{run.info.artifact_uri}}/model", run_id=run.info.run_id)
c.set_registered_model_alias("{name}", "{alias}", mv.version)
print(run.info.run_id)
"#
        );
        // The last line: MLflow prints links to the run before it.
        self.python(&script).lines().last().unwrap_or_default().trim().to_owned()
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
