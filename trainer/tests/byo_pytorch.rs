//! The bring-your-own example (`examples/byo-pytorch/train.py`, plain
//! PyTorch) trains on iris with the variables a TrainingJob pod gets, once
//! as one process and once as two ranks under torchrun (gloo on loopback);
//! `hone-trainer check-output` passes both outputs with their termination
//! summaries and names what a broken one lacks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::Digest;

use common::{
    boto3, check_output, check_output_uri, exported_data, file_uri, inspected_digest, train_summary,
};
use hone_crds::contract::{ErrorSummary, TerminationSummary, env};
use hone_storage::testing::Minio;

/// The project's venv, or None (then the test says why it skips).
fn venv() -> Option<PathBuf> {
    match std::env::var("HONE_VENV") {
        Ok(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => {
            eprintln!(
                "SKIPPED: HONE_VENV is unset; run `eval \"$(hack/env.sh)\"` to test the PyTorch example"
            );
            None
        }
    }
}

fn train_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/byo-pytorch/train.py")
}

/// `command` with the environment the operator gives a TrainingJob pod
/// training iris into `out`, its termination log at `log`.
fn with_trainingjob_env(command: &mut Command, out: &Path, log: &Path, batch_size: u32) {
    let iris = file_uri(&exported_data().join("iris.csv"));
    command
        .env(env::DATASET_SOURCE, &iris)
        .env(env::DATASET_FORMAT, "CSV")
        .env(env::CSV_LABEL_COLUMN, "label")
        .env(env::SPLIT_VALIDATION, "0.1")
        .env(env::SPLIT_TEST, "0.1")
        .env(env::SPLIT_SEED, "42")
        .env(env::DATASET_DIGEST, inspected_digest(&iris))
        .env(env::OUTPUT, file_uri(out))
        .env(env::ARCHITECTURE, "mlp")
        .env(env::EPOCHS, "30")
        .env(env::BATCH_SIZE, batch_size.to_string())
        .env(env::LEARNING_RATE, "0.01")
        .env(env::OPTIMIZER, "adam")
        .env(env::SEED, "42")
        .env(env::DEVICE, "cpu")
        .env(env::THREADS, "1")
        .env(env::TERMINATION_LOG, log);
    for var in [env::WORLD_SIZE, env::RANK, env::LOCAL_RANK, env::MASTER_ADDR, env::MASTER_PORT] {
        command.env_remove(var);
    }
}

fn run(mut command: Command) -> Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Checks a run's output and summary and returns its test accuracy.
fn assert_contract(out: &Path, log: &Path) -> f64 {
    let summary = train_summary(log);
    assert_eq!((summary.epoch, summary.total_epochs), (30, 30));
    assert_eq!(summary.classes, ["setosa", "versicolor", "virginica"]);
    assert_eq!(summary.artifact_uri, format!("{}/model.pt", file_uri(out)));
    let (passed, report) = check_output(out, Some(log));
    assert!(passed, "check-output found problems:\n{report}");
    assert!(report.contains("ok      the output honours the training contract"), "{report}");
    summary.metrics["test_accuracy"]
}

#[test]
fn one_process_writes_an_output_check_output_passes() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (out, log) = (dir.path().join("run"), dir.path().join("termination-log"));
    let mut command = Command::new(venv.join("bin/python"));
    command.arg(train_script()).env("BYO_EXPORT_ONNX", "1");
    with_trainingjob_env(&mut command, &out, &log, 16);
    run(command);
    let accuracy = assert_contract(&out, &log);
    eprintln!("byo-pytorch iris, 1 worker: test accuracy {accuracy}");
    assert!(accuracy >= 0.9, "test accuracy {accuracy}");
    // BYO_EXPORT_ONNX=1: the same weights as ONNX, with a card of their own.
    let onnx = std::fs::read(out.join("onnx/model.onnx")).unwrap();
    let card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("onnx/model.json")).unwrap()).unwrap();
    let digest = format!("sha256:{:x}", sha2::Sha256::digest(&onnx));
    assert_eq!(card["artifactDigest"], digest.as_str());
    assert_eq!(card["signature"]["classes"], serde_json::json!(["setosa", "versicolor", "virginica"]));

    // A broken output names what it lacks.
    std::fs::remove_file(out.join("model.json")).unwrap();
    let (passed, report) = check_output(&out, Some(&log));
    assert!(!passed, "{report}");
    assert!(report.contains("FINDING model.json: missing"), "{report}");
    std::fs::write(out.join("model.pt"), b"not torchscript").unwrap();
    let (passed, report) = check_output(&out, Some(&log));
    assert!(!passed);
    for finding in ["FINDING model.pt: does not load as TorchScript", "FINDING summary: artifactDigest"] {
        assert!(report.contains(finding), "no {finding:?} in:\n{report}");
    }
}

#[test]
fn two_ranks_under_torchrun_write_one_output_check_output_passes() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (out, log) = (dir.path().join("run"), dir.path().join("termination-log"));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut command = Command::new(venv.join("bin/torchrun"));
    command
        .args(["--nproc-per-node", "2", "--master-addr", "127.0.0.1"])
        .arg(format!("--master-port={port}"))
        .arg(train_script());
    // Batch 8 per rank: the same 16 samples a step as the one-process run.
    with_trainingjob_env(&mut command, &out, &log, 8);
    let output = run(command);
    // Both ranks share the log path here; only rank 0 writes it, so it is the training summary.
    let accuracy = assert_contract(&out, &log);
    eprintln!("byo-pytorch iris, 2 workers (torchrun, gloo): test accuracy {accuracy}");
    assert!(accuracy >= 0.9, "test accuracy {accuracy}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let epochs = stdout.lines().filter(|l| l.contains("\"event\": \"epoch\"")).count();
    assert_eq!(epochs, 30, "rank 0 alone logs each epoch once:\n{stdout}");
}

/// The image's path in a cluster: the dataset and the output on S3 (MinIO on
/// loopback), read and written through boto3 with the pod's AWS_* variables.
#[test]
fn s3_dataset_and_output_through_boto3() {
    let Some(venv) = venv() else { return };
    let Some(minio) = Minio::start("unit-test") else { return };
    let iris = exported_data().join("iris.csv");
    boto3(
        &minio.endpoint,
        &format!(
            "s3.create_bucket(Bucket='byo')\ns3.upload_file('{}', 'byo', 'data/iris.csv')\n",
            iris.display()
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let (out, log) = (dir.path().join("unused"), dir.path().join("termination-log"));
    let mut command = Command::new(venv.join("bin/python"));
    command.arg(train_script()).env("TMPDIR", dir.path());
    with_trainingjob_env(&mut command, &out, &log, 16);
    // The digest over S3 is the digest of the same bytes on disk.
    command.env(env::DATASET_SOURCE, "s3://byo/data/iris.csv").env(env::OUTPUT, "s3://byo/models/run-1/");
    command.envs(minio.env());
    run(command);
    let summary = train_summary(&log);
    assert_eq!(summary.artifact_uri, "s3://byo/models/run-1/model.pt");
    let listed = boto3(
        &minio.endpoint,
        "print(sorted(o['Key'] for o in s3.list_objects_v2(Bucket='byo', Prefix='models/')['Contents']))",
    );
    assert_eq!(
        listed.trim(),
        "['models/run-1/metrics.jsonl', 'models/run-1/model.json', 'models/run-1/model.pt']"
    );
    let (passed, report) = check_output_uri("s3://byo/models/run-1", Some(&log), &minio.env());
    assert!(passed, "check-output found problems:\n{report}");

    // Wrong credentials: an error summary with the Storage reason, nothing written.
    let mut command = Command::new(venv.join("bin/python"));
    command.arg(train_script()).env("TMPDIR", dir.path());
    with_trainingjob_env(&mut command, &out, &log, 16);
    command.env(env::DATASET_SOURCE, "s3://byo/data/iris.csv").env(env::OUTPUT, "s3://byo/models/run-2/");
    command.envs(minio.env()).env("AWS_SECRET_ACCESS_KEY", "wrong");
    assert!(!command.output().unwrap().status.success());
    match serde_json::from_slice(&std::fs::read(&log).unwrap()).unwrap() {
        TerminationSummary::Error(ErrorSummary { reason, message }) => {
            assert_eq!(reason, "Storage", "{message}");
            assert!(message.contains("s3://byo/data/iris.csv"), "{message}");
        }
        other => panic!("unexpected summary {other:?}"),
    }
}

#[test]
fn failures_end_as_error_summaries() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (out, log) = (dir.path().join("run"), dir.path().join("termination-log"));
    for (var, value, reason) in [
        (env::CSV_LABEL_COLUMN, "species", "InvalidData"),
        (env::DATASET_DIGEST, "sha256:0000", "DatasetChanged"),
    ] {
        let mut command = Command::new(venv.join("bin/python"));
        command.arg(train_script());
        with_trainingjob_env(&mut command, &out, &log, 16);
        command.env(var, value);
        let status = command.output().unwrap().status;
        assert!(!status.success(), "{var}={value} should fail the run");
        match serde_json::from_slice(&std::fs::read(&log).unwrap()).unwrap() {
            TerminationSummary::Error(ErrorSummary { reason: found, message }) => {
                assert_eq!(found, reason, "{message}");
            }
            other => panic!("unexpected summary {other:?}"),
        }
        assert!(!out.join("model.pt").exists());
    }
}
