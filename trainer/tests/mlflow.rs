//! Tracking against a real MLflow server (the PyPI package, on loopback):
//! parameters, per-epoch metrics and the output files arrive in one run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{exported_data, file_uri, python, trainer_bin};
use hone_storage::testing::MlflowServer;

#[test]
fn params_metrics_and_artifacts_reach_mlflow() {
    let Some(server) = MlflowServer::start() else { return };
    let uri = server.uri.clone();

    let out = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let status = Command::new(trainer_bin())
        .args(["train", "--source", &file_uri(&exported_data().join("iris.csv")), "--format", "CSV"])
        .args([
            "--architecture",
            "mlp",
            "--epochs",
            "4",
            "--mlflow-uri",
            &uri,
            "--mlflow-experiment",
            "hone-test",
        ])
        .args(["--run-name", "iris-mlp", "--output", &file_uri(out.path()), "--termination-log"])
        .arg(out.path().join("log"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(started.elapsed() < Duration::from_secs(300));

    let check = format!(
        "from mlflow.tracking import MlflowClient\nc = MlflowClient('{uri}')\n\
         exp = c.get_experiment_by_name('hone-test')\nruns = c.search_runs([exp.experiment_id])\n\
         assert len(runs) == 1, runs\nr = runs[0]\nassert r.info.run_name == 'iris-mlp', r.info.run_name\n\
         assert r.info.status == 'FINISHED', r.info.status\n\
         assert r.data.params['architecture'] == 'mlp' and r.data.params['epochs'] == '4', r.data.params\n\
         steps = [m.step for m in c.get_metric_history(r.info.run_id, 'val_accuracy')]\n\
         assert sorted(steps) == [1, 2, 3, 4], steps\nassert 'final_test_accuracy' in r.data.metrics\n\
         arts = {{a.path for a in c.list_artifacts(r.info.run_id)}}\n\
         assert {{'model.pt', 'model.json', 'metrics.jsonl', 'report.png'}} <= arts, arts\n\
         print(r.info.run_id)\n"
    );
    let result = Command::new(python()).args(["-c", &check]).output().unwrap();
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    // The summary names the run, so the operator can record it on the MLflow model version.
    let run_id = String::from_utf8_lossy(&result.stdout).trim().to_owned();
    let summary: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(out.path().join("log")).unwrap().trim()).unwrap();
    assert_eq!(summary["mlflowRunId"].as_str(), Some(run_id.as_str()), "{summary}");
}
