//! MinIO on loopback for tests that need a real S3 server (feature
//! `testing`): the trainer's storage tests and the cluster's purge tests.
//! The binary comes from `HONE_MINIO_BIN` (hack/build-minio.sh builds it;
//! the Makefile's test targets set it).

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
