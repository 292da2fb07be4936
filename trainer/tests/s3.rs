//! Storage against a real S3 server: MinIO (built from its Go module by
//! hack/build-minio.sh) on loopback. The trainer inspects and trains on data
//! in a bucket and writes its whole output contract there.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{boto3, exported_data, file_uri, trainer_bin};
use hone_crds::contract::TerminationSummary;
use hone_storage::testing::Minio;

const BUCKET: &str = "hone-test";

fn trainer(minio: &Minio, args: &[&str], log: &Path) -> (bool, TerminationSummary) {
    let status = Command::new(trainer_bin())
        .args(args)
        .arg("--termination-log")
        .arg(log)
        .envs(minio.env())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    (status.success(), serde_json::from_slice(&std::fs::read(log).unwrap()).unwrap())
}

#[test]
fn inspect_and_train_on_s3() {
    let Some(minio) = Minio::start("unit-test") else { return };
    let iris = exported_data().join("iris.csv");
    boto3(
        &minio.endpoint,
        &format!(
            "s3.create_bucket(Bucket='{BUCKET}')\ns3.upload_file('{}', '{BUCKET}', 'data/iris.csv')\n",
            iris.display()
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");

    // The digest over S3 equals the digest of the same bytes on disk.
    let source = format!("s3://{BUCKET}/data/iris.csv");
    let (ok, s3_summary) = trainer(&minio, &["inspect", "--source", &source, "--format", "CSV"], &log);
    assert!(ok, "{s3_summary:?}");
    let (ok, local) = trainer(&minio, &["inspect", "--source", &file_uri(&iris), "--format", "CSV"], &log);
    assert!(ok);
    let (TerminationSummary::Inspect(a), TerminationSummary::Inspect(b)) = (&s3_summary, &local) else {
        panic!()
    };
    assert_eq!(a.digest, b.digest);

    let output = format!("s3://{BUCKET}/runs/iris-mlp/0");
    let args = [
        "train",
        "--source",
        &source,
        "--format",
        "CSV",
        "--architecture",
        "mlp",
        "--epochs",
        "5",
        "--output",
        &output,
    ];
    let (ok, summary) = trainer(&minio, &args, &log);
    assert!(ok, "{summary:?}");
    let TerminationSummary::Train(t) = summary else { panic!() };
    assert_eq!(t.artifact_uri, format!("{output}/model.pt"));

    let listed = boto3(
        &minio.endpoint,
        &format!(
            "for o in s3.list_objects_v2(Bucket='{BUCKET}', Prefix='runs/')['Contents']: print(o['Key'])"
        ),
    );
    for key in ["model.pt", "model.json", "metrics.jsonl", "report.png", "checkpoints/epoch-00005/COMMIT"] {
        assert!(listed.contains(&format!("runs/iris-mlp/0/{key}")), "{key} missing from {listed}");
    }

    // Images streamed from the bucket every epoch (no cache, 4 reads in
    // flight, each file checked against its hash) train exactly as the same
    // files held in memory from disk: the same split, batches and weights.
    let digits = exported_data().join("digits");
    boto3(
        &minio.endpoint,
        &format!(
            "import os\nroot = '{}'\nfor d, _, files in os.walk(root):\n    for f in files:\n        \
             p = os.path.join(d, f)\n        s3.upload_file(p, '{BUCKET}', 'digits/' + os.path.relpath(p, root))\n",
            digits.display()
        ),
    );
    let image_args = |source: &str, output: &str, mode: &str| -> Vec<String> {
        [
            "train",
            "--source",
            source,
            "--image-width",
            "16",
            "--image-height",
            "16",
            "--image-channels",
            "1",
            "--architecture",
            "mlp",
            "--epochs",
            "2",
            "--batch-size",
            "64",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--data-mode",
            mode,
            "--data-reads",
            "4",
            "--output",
            output,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, summary) = trainer(&minio, &args, &log);
        let TerminationSummary::Train(t) = summary else { panic!("{summary:?}") };
        assert!(ok);
        t
    };
    let out_dir = tempfile::tempdir().unwrap();
    let streamed =
        run(image_args(&format!("s3://{BUCKET}/digits"), &format!("s3://{BUCKET}/runs/digits/0"), "stream"));
    let in_memory = run(image_args(&file_uri(&digits), &file_uri(out_dir.path()), "memory"));
    assert_eq!(streamed.dataset_digest, in_memory.dataset_digest);
    assert_eq!(streamed.metrics, in_memory.metrics, "streaming from S3 changed what was trained");
    assert!(streamed.metrics["test_accuracy"] > 0.8, "{:?}", streamed.metrics);

    // Missing credentials are a clear storage error, not a crash.
    let status = Command::new(trainer_bin())
        .args(["inspect", "--source", &source, "--format", "CSV", "--termination-log"])
        .arg(&log)
        .env("AWS_ENDPOINT_URL", &minio.endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "wrong")
        .env("AWS_SECRET_ACCESS_KEY", "wrong")
        .env("AWS_REGION", "us-east-1")
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
    let TerminationSummary::Error(e) = serde_json::from_slice(&std::fs::read(&log).unwrap()).unwrap() else {
        panic!()
    };
    assert_eq!(e.reason, "Storage", "{}", e.message);
}
