//! A stock Open Inference Protocol v2 client from PyPI (tritonclient.http)
//! works unchanged against the server (`tests/requirements.txt`).

use std::path::Path;
use std::process::Command;

use crate::common::{args, model, python, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_tritonclient_works_unchanged() {
    let server = start(args("cnn", &[])).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oip_client.py");
    let host = server.base.trim_start_matches("http://").to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python()).arg(script).args([host.as_str(), "cnn", &model("cnn")]).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named 'tritonclient'"),
        "install the predictor's test requirements: pip install -r predictor/tests/requirements.txt"
    );
    assert!(
        output.status.success() && stdout.trim_end().ends_with("ok"),
        "stdout: {stdout}\nstderr: {stderr}"
    );
}
