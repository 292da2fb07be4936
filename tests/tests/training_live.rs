//! A TrainingJob while it trains, with the real operator on a real
//! apiserver: a failed pod shows `Retrying` with the attempt number, and
//! `status.progress` follows a real trainer's `/metrics` page epoch by epoch.
//!
//! KWOK runs nothing inside pods. A `hone-trainer` process on this machine,
//! training digits for real, stands in for the pod's process: the operator
//! reads its page through `--trainer-metrics-address`, exactly as it reads
//! rank 0's pod IP on a real node (`make demo` shows that one).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use hone_cluster_tests::harness::{self, Env, WAIT};
use hone_cluster_tests::operator::{OperatorProcess, free_port};
use hone_cluster_tests::{wait_for, workspace_binary};
use hone_crds::TrainingJob;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

const DIGEST: &str = "sha256:3f1a7b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f90";

fn ready_reason(t: &TrainingJob) -> (String, String) {
    let c = t.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready").cloned());
    c.map(|c| (c.reason, c.message)).unwrap_or_default()
}

#[tokio::test]
async fn a_failed_pod_is_retrying_and_progress_follows_the_trainer() {
    let env = Env::new("hone-live").await;
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let args = ["--trainer-metrics-address", addr.as_str(), "--trainer-progress-seconds", "1"];
    let operator = OperatorProcess::start(&env.ns.name, "op", &args).unwrap();
    operator.wait_leader(WAIT).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    env.ready_dataset("digits", DIGEST).await;

    // No node matches, so the pod stays Pending and the test can fail it, as
    // the kubelet reports a container killed (OOM, a lost node).
    let extra = json!({"nodeSelector": {"hone.dev/none": "true"}, "runPolicy": {"backoffLimit": 3}});
    env.create(harness::training_job("live", "digits", extra)).await;
    let job = env.job("hone.dev/trainingjob", "live").await;
    let pods = env.api::<Pod>();
    let selector = format!("batch.kubernetes.io/job-name={}", job.name_any());
    let first = wait_for("the training pod", WAIT, || {
        let (pods, selector) = (pods.clone(), selector.clone());
        async move { Ok(pods.list(&ListParams::default().labels(&selector)).await?.items.into_iter().next()) }
    })
    .await
    .unwrap();
    let killed = json!({"status": {"phase": "Failed", "reason": "Killed", "message": "killed by the test"}});
    pods.patch_status(&first.name_any(), &PatchParams::default(), &Patch::Merge(&killed)).await.unwrap();
    let retrying = env.until::<TrainingJob>("live", "Retrying", |t| ready_reason(t).0 == "Retrying").await;
    let (_, message) = ready_reason(&retrying);
    assert!(message.contains("attempt 2") && message.contains("1 failed pod"), "{message}");
    assert_eq!(
        retrying.status.as_ref().and_then(|s| s.phase),
        Some(hone_crds::trainingjob::TrainingJobPhase::Running),
        "a retry is not Pending"
    );

    // The run goes on: a real trainer serves its figures where the operator reads them.
    let data = tempfile::tempdir().unwrap();
    let python = std::env::var("HONE_VENV").map_or("python3".into(), |v| format!("{v}/bin/python"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../hack/export-datasets.py");
    let exported = Command::new(python).arg(script).arg(data.path()).args(["--only", "digits"]).status();
    assert!(exported.unwrap().success(), "export-datasets.py failed");
    let trainer =
        workspace_binary("hone-trainer", "HONE_TRAINER_BIN", "hone-trainer (make unit-test builds it)")
            .unwrap();
    let source = format!("file://{}", data.path().join("digits").display());
    let output = format!("file://{}", data.path().join("out").display());
    let log = data.path().join("summary.json");
    let mut child = Command::new(trainer)
        .args(["train", "--source", &source, "--image-width", "32", "--image-height", "32"])
        .args([
            "--image-channels",
            "1",
            "--architecture",
            "simple-cnn",
            "--epochs",
            "12",
            "--batch-size",
            "32",
        ])
        .args(["--device", "cpu", "--threads", "1", "--output", &output, "--metrics-addr", &addr])
        .arg("--termination-log")
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let api = env.api::<TrainingJob>();
    let (mut epochs, mut steps, mut live_loss) = (BTreeSet::new(), BTreeSet::new(), false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while child.try_wait().unwrap().is_none() && tokio::time::Instant::now() < deadline {
        if let Some(status) = api.get("live").await.unwrap().status {
            if let Some(p) = &status.progress {
                epochs.insert(p.epoch);
                steps.extend(p.step);
                assert_eq!(p.total_epochs, 12, "{p:?}");
                assert!(p.total_steps.is_some_and(|t| t > 0), "{p:?}");
            }
            live_loss |= status.metrics.as_ref().is_some_and(|m| m.contains_key("loss"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let finished = child.try_wait().unwrap();
    let _ = child.kill();
    assert!(finished.is_some_and(|s| s.success()), "the trainer did not finish in time");
    // Epoch 0 (still loading) is not progress; the rest is read while it trains.
    epochs.remove(&0);
    assert!(epochs.len() >= 3, "status.progress showed epochs {epochs:?} (steps {steps:?})");
    assert!(steps.len() >= 3, "status.progress showed steps {steps:?}");
    assert!(live_loss, "status.metrics never showed the live loss");
    env.cleanup(operator).await;
}
