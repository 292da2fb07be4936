//! Shared helpers for the trainer's integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The data the project's export script writes (digits ImageFolder, iris
/// CSV, ...), exported once into the target's temp dir, keyed by the
/// script's contents, and shared by every test process (nothing is left per
/// process under /tmp). A process that finds no export writes one into its
/// own folder and renames it into place; a lost race keeps the winner's.
pub fn exported_data() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/export-datasets.py");
        let source = std::fs::read(&script).expect("reading export-datasets.py");
        let key = source
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("trainer-data-{key:016x}"));
        if !dir.exists() {
            let scratch = dir.with_extension(format!("{}", std::process::id()));
            let status = Command::new(python())
                .arg(&script)
                .arg(&scratch)
                .status()
                .expect("running export-datasets.py");
            assert!(status.success(), "export-datasets.py failed");
            if std::fs::rename(&scratch, &dir).is_err() {
                let _ = std::fs::remove_dir_all(&scratch); // another process put its export there first
            }
        }
        dir
    })
}

/// The venv's Python (set up by hack/env.sh), or python3.
pub fn python() -> String {
    std::env::var("HONE_VENV").map(|v| format!("{v}/bin/python")).unwrap_or_else(|_| "python3".into())
}

/// `file://` URI of a path.
pub fn file_uri(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// The built `hone-trainer` binary.
pub fn trainer_bin() -> &'static str {
    env!("CARGO_BIN_EXE_hone-trainer")
}

/// The training summary a run wrote to the termination log at `log`.
pub fn train_summary(log: &Path) -> hone_crds::contract::TrainSummary {
    match serde_json::from_slice(&std::fs::read(log).unwrap()).unwrap() {
        hone_crds::contract::TerminationSummary::Train(s) => s,
        other => panic!("unexpected summary {other:?}"),
    }
}

/// The epochs a run logged in `<out>/metrics.jsonl`.
pub fn history(out: &Path) -> Vec<hone_crds::contract::EpochMetrics> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs a boto3 snippet against the server (bucket set-up and listing).
pub fn boto3(endpoint: &str, code: &str) -> String {
    use hone_storage::testing::{PASSWORD, USER};
    let prelude = format!(
        "import boto3, sys\ns3 = boto3.client('s3', endpoint_url='{endpoint}', aws_access_key_id='{USER}', \
         aws_secret_access_key='{PASSWORD}', region_name='us-east-1')\n"
    );
    let out = Command::new(python()).args(["-c", &(prelude + code)]).output().unwrap();
    assert!(out.status.success(), "boto3: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// What `hone-trainer inspect` says the digest of the CSV at `csv` is: the one a Dataset pins.
pub fn inspected_digest(csv: &str) -> String {
    let out = Command::new(trainer_bin())
        .args(["inspect", "--source", csv, "--format", "CSV", "--label-column", "label"])
        .args(["--termination-log", "/dev/null"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    match serde_json::from_slice(&out.stdout).unwrap() {
        hone_crds::contract::TerminationSummary::Inspect(s) => s.digest,
        other => panic!("unexpected summary {other:?}"),
    }
}

/// Runs `hone-trainer check-output` on `out`; returns (passed, stdout).
pub fn check_output(out: &Path, summary: Option<&Path>) -> (bool, String) {
    check_output_uri(&file_uri(out), summary, &[])
}

/// Runs `hone-trainer check-output` on `uri` with `envs`; returns (passed, stdout).
pub fn check_output_uri(uri: &str, summary: Option<&Path>, envs: &[(&str, String)]) -> (bool, String) {
    let mut command = Command::new(trainer_bin());
    command.arg("check-output").arg(uri).envs(envs.iter().map(|(k, v)| (k, v)));
    if let Some(summary) = summary {
        command.arg("--summary").arg(summary);
    }
    let result = command.output().unwrap();
    (result.status.success(), String::from_utf8_lossy(&result.stdout).into_owned())
}

/// `hone-trainer train` of simple-cnn on the exported digits for 5 epochs, writing to `out`.
pub fn digits_args(out: &Path) -> Vec<String> {
    let source = file_uri(&exported_data().join("digits"));
    let args = [
        "train",
        "--source",
        &source,
        "--image-width",
        "32",
        "--image-height",
        "32",
        "--image-channels",
        "1",
        "--architecture",
        "simple-cnn",
        "--epochs",
        "5",
        "--batch-size",
        "64",
        "--learning-rate",
        "0.002",
        "--optimizer",
        "adamw",
        "--weight-decay",
        "0.0001",
        "--scheduler",
        "cosine",
        "--warmup-epochs",
        "1",
        "--rotation-degrees",
        "8",
        "--seed",
        "7",
        "--threads",
        "2",
        "--device",
        "cpu",
    ];
    let mut v: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    v.extend([
        "--output".into(),
        file_uri(out),
        "--termination-log".into(),
        out.join("termination-log").display().to_string(),
    ]);
    v
}

/// `GET /metrics` at `addr`, over a plain socket; `None` once nothing answers.
pub fn scrape(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5))).ok()?;
    stream
        .write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    text.starts_with("HTTP/1.1 200").then_some(text)
}

/// The value of the unlabelled gauge `name` in a metrics page.
pub fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The JSON log lines a child writes on stderr, as they come.
pub fn log_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<serde_json::Value> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    rx
}

/// Starts [`digits_args`] with `/metrics` on a free loopback port; returns
/// the child, its log lines and the address it serves on (logged on stderr).
pub fn spawn_digits_with_metrics(
    out: &Path,
) -> (std::process::Child, std::sync::mpsc::Receiver<serde_json::Value>, String) {
    let mut child = Command::new(trainer_bin())
        .args(digits_args(out))
        .args(["--metrics-addr", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = log_lines(&mut child);
    let addr = loop {
        let line = lines.recv_timeout(std::time::Duration::from_secs(120)).expect("metrics_listening logged");
        if line["event"] == "metrics_listening" {
            break line["addr"].as_str().unwrap_or_default().to_owned();
        }
    };
    (child, lines, addr)
}
