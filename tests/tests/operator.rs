//! The operator's controllers on a real apiserver: the real `hone-operator`
//! binary runs with exactly the chart's RBAC (impersonating its
//! ServiceAccount) in a namespace that enforces Pod Security "restricted".
//!
//! KWOK runs the pods and completes Job pods, but nothing runs inside them:
//! where a step needs the trainer's or the verifier's result, the test writes
//! that pod's termination message itself (as the kubelet would from
//! /dev/termination-log), and says so in the step.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use hone_cluster_tests::harness::{self, Env, WAIT, is_ready};
use hone_cluster_tests::operator::{OperatorProcess, write_termination_message};
use hone_cluster_tests::wait_for;
use hone_crds::{InferenceService, ModelVersion, TrainingJob};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

const DIGEST: &str = "sha256:3f1a7b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f90";
const ARTIFACT_DIGEST: &str = "sha256:aa11bb22cc33dd44ee55ff66aa11bb22cc33dd44ee55ff66aa11bb22cc33dd44";

#[tokio::test]
async fn lifecycle_dataset_to_training_to_registered_verified_model_and_deletion() {
    let env = Env::new("hone-op-life").await;
    let operator = OperatorProcess::start(&env.ns.name, "op-a", &[]).unwrap();
    operator.wait_leader(WAIT).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));

    let ds = env.ready_dataset("digits", DIGEST).await;
    assert_eq!(ds.status.as_ref().unwrap().digest.as_deref(), Some(DIGEST));

    // Training: the Job trains on the pinned digest, in a restricted pod.
    env.create(harness::training_job("cnn", "digits", json!({}))).await;
    let job = env.job("hone.dev/trainingjob", "cnn").await;
    let pod_spec = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let env_vars: Vec<(String, String)> = pod_spec.containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect();
    assert!(env_vars.contains(&("HONE_DATASET_DIGEST".into(), DIGEST.into())), "{env_vars:?}");
    assert!(env_vars.contains(&("HONE_EPOCHS".into(), "3".into())), "{env_vars:?}");
    let tj_uid = env.api::<TrainingJob>().get("cnn").await.unwrap().uid().unwrap();
    // The test writes the training summary hone-trainer would have written.
    let artifact = format!("s3://hone-models/cnn/{tj_uid}/model.pt");
    let summary = json!({"kind": "train", "epoch": 3, "totalEpochs": 3,
        "metrics": {"val_accuracy": 0.97, "test_accuracy": 0.96}, "artifactUri": artifact,
        "artifactDigest": ARTIFACT_DIGEST, "artifactSizeBytes": 4096, "datasetDigest": DIGEST,
        "inputShape": [1, 32, 32], "classes": ["0", "1"]});
    env.finish_pod(&job, "trainer", &summary.to_string()).await;
    let tj = env
        .until::<TrainingJob>("cnn", "Succeeded with a ModelVersion", |t| {
            t.status.as_ref().is_some_and(|s| s.model_version.is_some() && is_ready(&s.conditions))
        })
        .await;
    let status = tj.status.unwrap();
    assert_eq!(status.model_version.as_deref(), Some("digits-v1"));
    assert_eq!(status.dataset_digest.as_deref(), Some(DIGEST));
    assert_eq!(status.metrics.as_ref().and_then(|m| m.get("val_accuracy")).copied(), Some(0.97));

    // Registration: lineage, metrics, labels; then the verify Job.
    let mv = env.api::<ModelVersion>().get("digits-v1").await.unwrap();
    assert_eq!(mv.spec.version, 1);
    assert_eq!(mv.spec.artifact.uri, artifact);
    assert_eq!(mv.spec.artifact.digest.as_deref(), Some(ARTIFACT_DIGEST));
    let lineage = mv.spec.lineage.clone().unwrap();
    assert_eq!(
        (lineage.training_job.as_deref(), lineage.dataset_digest.as_deref()),
        (Some("cnn"), Some(DIGEST))
    );
    assert_eq!(mv.labels().get("team").map(String::as_str), Some("vision"));
    let verify = env.job("hone.dev/modelversion", "digits-v1").await;
    // Measured evaluation: an init container takes the held-out test split of
    // the Dataset it was trained on, at the digest it was trained on.
    let pod_spec = verify.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let split = &pod_spec.init_containers.as_ref().expect("an eval-split init container")[0];
    assert_eq!(split.args.as_deref(), Some(&["eval-split".to_owned()][..]));
    let split_env: Vec<(String, String)> =
        split.env.iter().flatten().map(|e| (e.name.clone(), e.value.clone().unwrap_or_default())).collect();
    assert!(split_env.contains(&("HONE_DATASET_DIGEST".into(), DIGEST.into())), "{split_env:?}");
    // The test writes the one-line summary `hone-predictor verify` would have
    // written, with what it measured on that split.
    let ok = json!({"ok": true, "model": artifact, "digest": ARTIFACT_DIGEST, "sizeBytes": 4096, "forwardMs": 2.0,
        "cardDigest": ARTIFACT_DIGEST,
        "evaluation": {"datasetDigest": DIGEST, "samples": 360, "metrics": {"accuracy": 0.9611, "macro_f1": 0.96},
            "perClass": [{"class": "0", "precision": 0.97, "recall": 0.95, "f1": 0.96, "support": 180},
                         {"class": "1", "precision": 0.95, "recall": 0.97, "f1": 0.96, "support": 180}],
            "confusionMatrix": [[171, 9], [5, 175]]}});
    env.finish_pod(&verify, "verify", &ok.to_string()).await;
    let mv = env
        .until::<ModelVersion>("digits-v1", "Ready", |m| {
            m.status.as_ref().is_some_and(|s| is_ready(&s.conditions))
        })
        .await;
    let status = mv.status.as_ref().unwrap();
    assert_eq!(status.verified_digest.as_deref(), Some(ARTIFACT_DIGEST));
    assert_eq!(status.verified_card_digest.as_deref(), Some(ARTIFACT_DIGEST));
    // The evaluation survives the apiserver's schema (no field pruned).
    let evaluation = status.evaluation.as_ref().expect("status.evaluation");
    assert_eq!(evaluation.dataset.as_deref(), Some("digits"));
    assert_eq!((evaluation.samples, evaluation.metrics["accuracy"]), (360, 0.9611));
    assert_eq!(evaluation.per_class.len(), 2);
    assert_eq!(evaluation.confusion_matrix.as_ref().unwrap()[0], [171, 9]);
    assert!(evaluation.evaluated_at.is_some());
    let evaluated = hone_crds::conditions::find_condition(&status.conditions, "Evaluated").unwrap();
    assert_eq!((evaluated.status.as_str(), evaluated.reason.as_str()), ("True", "Measured"));
    assert!(mv.finalizers().iter().any(|f| f == "hone.dev/model-version"));

    // A restarted operator (and a nudged TrainingJob) registers nothing twice.
    assert_eq!(operator.stop().await.unwrap(), Some(0), "a SIGTERM stop is clean");
    let operator = OperatorProcess::start(&env.ns.name, "op-b", &[]).unwrap();
    operator.wait_leader(WAIT).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    // Wait until the new operator has reconciled the TrainingJob twice (at
    // start and after the nudge), so the check below sees its decisions. The
    // nudge comes after the first: sent while the caches fill, the two would
    // be one reconcile.
    let series = r#"hone_operator_reconciles_total{controller="trainingjob",result="success"}"#;
    wait_for("a TrainingJob reconcile by the new operator", WAIT, || async {
        Ok(operator.metric(series).await.filter(|n| *n >= 1.0).map(|_| ()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let nudge = json!({"metadata": {"annotations": {"test.hone.dev/nudge": "1"}}});
    env.api::<TrainingJob>().patch("cnn", &PatchParams::default(), &Patch::Merge(&nudge)).await.unwrap();
    wait_for("two TrainingJob reconciles by the new operator", WAIT, || async {
        Ok(operator.metric(series).await.filter(|n| *n >= 2.0).map(|_| ()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let all = env.api::<ModelVersion>().list(&ListParams::default()).await.unwrap().items;
    assert_eq!(all.iter().map(|m| m.name_any()).collect::<Vec<_>>(), ["digits-v1"]);

    // A second run of the same model is version 2.
    env.create(harness::training_job("cnn-2", "digits", json!({}))).await;
    let job2 = env.job("hone.dev/trainingjob", "cnn-2").await;
    let uid2 = env.api::<TrainingJob>().get("cnn-2").await.unwrap().uid().unwrap();
    let mut summary2 = summary.clone();
    summary2["artifactUri"] = json!(format!("s3://hone-models/cnn-2/{uid2}/model.pt"));
    env.finish_pod(&job2, "trainer", &summary2.to_string()).await;
    env.until::<TrainingJob>("cnn-2", "registered as v2", |t| {
        t.status.as_ref().and_then(|s| s.model_version.as_deref()) == Some("digits-v2")
    })
    .await;

    // Deletion guard: served by an InferenceService, digits-v1 is not deleted.
    env.create(
        json!({"apiVersion": "hone.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": "web"},
        "spec": {"variants": [{"name": "main", "modelVersion": "digits-v1", "weight": 100}]}}),
    )
    .await;
    let predictor = env
        .until::<k8s_openapi::api::apps::v1::Deployment>("web-main-v1", "the predictor Deployment", |_| true)
        .await;
    let container = &predictor.spec.unwrap().template.spec.unwrap().containers[0];
    assert!(
        container.env.iter().flatten().any(|e| e.value.as_deref() == Some(artifact.as_str())),
        "{container:?}"
    );
    // The predictor loads only the card that was verified.
    assert!(
        container
            .env
            .iter()
            .flatten()
            .any(|e| e.name == "HONE_MODEL_CARD_DIGEST" && e.value.as_deref() == Some(ARTIFACT_DIGEST)),
        "{container:?}"
    );
    env.until::<ModelVersion>("digits-v1", "servedBy web", |m| {
        m.status.as_ref().is_some_and(|s| s.served_by == ["web"])
    })
    .await;
    env.api::<ModelVersion>().delete("digits-v1", &DeleteParams::default()).await.unwrap();
    // The operator has looked at the deletion and refused it (its Warning Event).
    wait_for("the DeletionBlocked Event", WAIT, || async {
        let events = env.api::<k8s_openapi::api::events::v1::Event>().list(&ListParams::default()).await?;
        Ok(events
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("DeletionBlocked")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("digits-v1")
            })
            .map(|_| ()))
    })
    .await
    .unwrap();
    let held = env.api::<ModelVersion>().get("digits-v1").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some(), "deletion is pending, not done");
    env.api::<InferenceService>().delete("web", &DeleteParams::default()).await.unwrap();
    env.gone::<ModelVersion>("digits-v1").await;

    // artifact-policy Delete: a purge Job (trainer image) runs before the ModelVersion goes.
    let annotate = json!({"metadata": {"annotations": {"hone.dev/artifact-policy": "Delete"}}});
    env.api::<ModelVersion>()
        .patch("digits-v2", &PatchParams::default(), &Patch::Merge(&annotate))
        .await
        .unwrap();
    env.api::<ModelVersion>().delete("digits-v2", &DeleteParams::default()).await.unwrap();
    let purge = wait_for("the purge Job", WAIT, || {
        let api = env.api::<Job>();
        async move {
            let jobs =
                api.list(&ListParams::default().labels("hone.dev/modelversion=digits-v2")).await?.items;
            Ok(jobs.into_iter().find(|j| j.name_any().contains("purge")))
        }
    })
    .await
    .unwrap();
    let args = purge.spec.unwrap().template.spec.unwrap().containers[0].args.clone().unwrap();
    assert_eq!(args, ["purge", "--uri", &format!("s3://hone-models/cnn-2/{uid2}"), "--prefix"]);
    env.gone::<ModelVersion>("digits-v2").await;

    // Cascade: deleting the TrainingJob removes its Job (garbage collector).
    env.api::<TrainingJob>().delete("cnn", &DeleteParams::background()).await.unwrap();
    env.gone::<Job>(&job.name_any()).await;

    env.cleanup(operator).await;
}

#[tokio::test]
async fn failed_training_reports_the_reason_and_what_to_do() {
    let env = Env::new("hone-op-fail").await;
    let operator = OperatorProcess::start(&env.ns.name, "op", &[]).unwrap();
    operator.wait_leader(WAIT).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    // A TrainingJob before its Dataset exists waits with a reason.
    env.create(harness::training_job("early", "later", json!({}))).await;
    let waiting = env
        .until::<TrainingJob>("early", "waiting for its Dataset", |t| {
            t.status.as_ref().is_some_and(|s| s.message.as_deref().unwrap_or("").contains("does not exist"))
        })
        .await;
    assert_eq!(waiting.status.unwrap().phase, Some(hone_crds::trainingjob::TrainingJobPhase::Pending));

    env.ready_dataset("digits", DIGEST).await;
    // No node matches, so the pod never starts and the deadline fails the Job.
    let extra = json!({"nodeSelector": {"hone.dev/none": "true"}, "runPolicy": {"activeDeadlineSeconds": 2, "backoffLimit": 0}});
    env.create(harness::training_job("slow", "digits", extra)).await;
    let tj = env
        .until::<TrainingJob>("slow", "Failed", |t| {
            t.status
                .as_ref()
                .is_some_and(|s| s.phase == Some(hone_crds::trainingjob::TrainingJobPhase::Failed))
        })
        .await;
    let status = tj.status.unwrap();
    assert_eq!(status.failure_reason, Some(hone_crds::trainingjob::FailureReason::DeadlineExceeded));
    assert!(status.message.unwrap().contains("activeDeadlineSeconds"));
    assert!(env.api::<ModelVersion>().list(&ListParams::default()).await.unwrap().items.is_empty());

    // A trainer error: the message from its summary reaches the status.
    env.create(harness::training_job("bad", "digits", json!({}))).await;
    let job = env.job("hone.dev/trainingjob", "bad").await;
    // The test writes the error summary hone-trainer would have written.
    let error = json!({"kind": "error", "reason": "InvalidData", "message": "train/3/x.png: not a PNG"});
    env.finish_pod(&job, "trainer", &error.to_string()).await;
    let tj = env
        .until::<TrainingJob>("bad", "Failed: TrainerError", |t| {
            t.status.as_ref().is_some_and(|s| {
                s.failure_reason == Some(hone_crds::trainingjob::FailureReason::TrainerError)
            })
        })
        .await;
    assert!(tj.status.unwrap().message.unwrap().contains("not a PNG"));

    env.cleanup(operator).await;
}

#[tokio::test]
async fn two_workers_make_an_indexed_job_and_rank_0_alone_registers() {
    let env = Env::new("hone-op-ddp").await;
    let operator = OperatorProcess::start(&env.ns.name, "op", &[]).unwrap();
    operator.wait_leader(WAIT).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    env.ready_dataset("digits", DIGEST).await;
    let extra = json!({"workers": 2, "resources": {"limits": {"cpu": "1500m"}}});
    env.create(harness::training_job("ddp", "digits", extra)).await;
    let job = env.job("hone.dev/trainingjob", "ddp").await;
    let name = job.name_any();
    let spec = job.spec.as_ref().unwrap();
    assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
    assert_eq!((spec.completions, spec.parallelism), (Some(2), Some(2)));
    assert_eq!(spec.backoff_limit, Some(12), "6 failed attempts of 2 workers each");
    let vars: Vec<(String, String)> = spec.template.spec.as_ref().unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect();
    for expected in [
        ("MASTER_ADDR", format!("{name}-0.{name}")),
        ("WORLD_SIZE", "2".into()),
        ("HONE_THREADS", "2".into()),
    ] {
        assert!(vars.contains(&(expected.0.to_owned(), expected.1.clone())), "{expected:?} not in {vars:?}");
    }
    let service = env.api::<k8s_openapi::api::core::v1::Service>().get(&name).await.unwrap();
    assert_eq!(
        service.spec.unwrap().cluster_ip.as_deref(),
        Some("None"),
        "a headless Service for rank 0's name"
    );

    // Rank 0 writes the training summary; rank 1, finishing after it, its
    // worker summary. The operator is stopped meanwhile, so its first look
    // sees both, the worker's the newer.
    operator.stop().await.unwrap();
    let tj_uid = env.api::<TrainingJob>().get("ddp").await.unwrap().uid().unwrap();
    let summary = json!({"kind": "train", "epoch": 3, "totalEpochs": 3,
        "metrics": {"val_accuracy": 0.95, "test_accuracy": 0.94},
        "artifactUri": format!("s3://hone-models/ddp/{tj_uid}/model.pt"),
        "artifactDigest": ARTIFACT_DIGEST, "artifactSizeBytes": 4096, "datasetDigest": DIGEST,
        "inputShape": [1, 32, 32], "classes": ["0", "1"]});
    let rank = |index: u32| {
        format!("batch.kubernetes.io/job-name={name},batch.kubernetes.io/job-completion-index={index}")
    };
    write_termination_message(&env.client, &env.ns.name, &rank(0), "trainer", &summary.to_string())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let worker = json!({"kind": "worker", "rank": 1, "worldSize": 2, "epoch": 3,
        "message": "worker 1 of 2 trained 3 epochs; rank 0 wrote the model and its summary"});
    write_termination_message(&env.client, &env.ns.name, &rank(1), "trainer", &worker.to_string())
        .await
        .unwrap();
    let operator = OperatorProcess::start(&env.ns.name, "op-2", &[]).unwrap();
    operator.wait_leader(WAIT).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let tj = env
        .until::<TrainingJob>("ddp", "Succeeded with a ModelVersion", |t| {
            t.status.as_ref().is_some_and(|s| s.model_version.is_some() && is_ready(&s.conditions))
        })
        .await;
    let status = tj.status.unwrap();
    assert_eq!(status.metrics.as_ref().and_then(|m| m.get("val_accuracy")).copied(), Some(0.95));
    assert_eq!(status.attempts, Some(1), "two pods are one attempt");
    assert_eq!(status.workers.map(|w| w.total), Some(2));
    let mv = env.api::<ModelVersion>().get(status.model_version.as_deref().unwrap()).await.unwrap();
    assert_eq!(mv.spec.artifact.digest.as_deref(), Some(ARTIFACT_DIGEST));

    env.cleanup(operator).await;
}

#[tokio::test]
async fn two_replicas_one_leader_and_a_takeover() {
    let env = Env::new("hone-op-ha").await;
    let a = OperatorProcess::start(&env.ns.name, "replica-a", &[]).unwrap();
    a.wait_leader(WAIT).await.unwrap_or_else(|e| panic!("{e}\n{}", a.log()));
    let b = OperatorProcess::start(&env.ns.name, "replica-b", &[]).unwrap();
    // b is up (serving metrics) but stands by.
    wait_for("replica-b's metrics", WAIT, || async { Ok(b.metric("hone_operator_leader").await) })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(b.metric("hone_operator_leader").await, Some(0.0));
    assert_eq!(a.metric("hone_operator_leader").await, Some(1.0));
    let lease = env.api::<Lease>().get("hone-operator").await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("replica-a"));
    env.create(harness::dataset("one")).await;
    env.job("hone.dev/dataset", "one").await;

    // The leader stops (rolling update): the standby takes over and reconciles.
    a.stop().await.unwrap();
    b.wait_leader(WAIT).await.unwrap_or_else(|e| panic!("{e}\n{}", b.log()));
    let lease = env.api::<Lease>().get("hone-operator").await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("replica-b"));
    env.create(harness::dataset("two")).await;
    env.job("hone.dev/dataset", "two").await;

    env.cleanup(b).await;
}

/// Creates ModelVersion `digits-v<version>` and plays its verify pod: Ready.
async fn ready_model_version(env: &Env, version: u32) {
    let name = format!("digits-v{version}");
    let uri = format!("s3://hone-models/{name}/model.pt");
    env.create(json!({"apiVersion": "hone.dev/v1alpha1", "kind": "ModelVersion", "metadata": {"name": name},
        "spec": {"model": "digits", "version": version, "artifact": {"uri": uri, "format": "TorchScript"},
                 "signature": {"inputShape": [1, 8, 8], "classes": ["0", "1"]}}}))
        .await;
    let verify = env.job("hone.dev/modelversion", &name).await;
    // The test writes the summary `hone-predictor verify` would have written.
    let ok = json!({"ok": true, "model": uri, "digest": ARTIFACT_DIGEST});
    env.finish_pod(&verify, "verify", &ok.to_string()).await;
    env.until::<ModelVersion>(&name, "Ready", |m| m.status.as_ref().is_some_and(|s| is_ready(&s.conditions)))
        .await;
}

/// Router metrics for `backend` with `requests` requests, all fast and successful.
fn healthy_router_page(backend: &str, requests: u64) -> String {
    format!(
        "hone_router_requests_total{{variant=\"{backend}\",status_class=\"2xx\"}} {requests}\n\
         hone_router_request_duration_seconds_bucket{{variant=\"{backend}\",le=\"0.01\"}} {requests}\n\
         hone_router_request_duration_seconds_bucket{{variant=\"{backend}\",le=\"+Inf\"}} {requests}\n"
    )
}

#[tokio::test]
async fn operator_restart_in_the_middle_of_a_canary_resumes_from_status() {
    use hone_crds::inferenceservice::InferenceServicePhase;
    use std::sync::{Arc, Mutex};

    let env = Env::new("hone-op-canary").await;
    // The canary's metrics page is named by the annotation: allowed for this test only.
    let operator = OperatorProcess::start(&env.ns.name, "op-1", &["--allow-router-metrics-url"]).unwrap();
    operator.wait_leader(WAIT).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    ready_model_version(&env, 1).await;
    ready_model_version(&env, 2).await;

    // The router's metrics: KWOK pods have no network, so the page is served
    // here and named by the annotation; its counters grow like live traffic.
    let body = Arc::new(Mutex::new(String::new()));
    let url = hone_cluster_tests::serve_text(body.clone());
    let traffic = {
        let body = body.clone();
        tokio::spawn(async move {
            for requests in (0u64..).step_by(5) {
                *body.lock().unwrap() = healthy_router_page("main-v2", requests);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    env.create(json!({"apiVersion": "hone.dev/v1alpha1", "kind": "InferenceService",
        "metadata": {"name": "web", "annotations": {"hone.dev/router-metrics-url": url}},
        "spec": {"variants": [{"name": "main", "modelVersion": "digits-v1", "weight": 100}],
                 "rollout": {"strategy": "Canary", "steps": [20, 50, 80], "stepInterval": "4s",
                             "analysis": {"minRequests": 10, "maxErrorRate": 0.05, "maxP99LatencyMs": 200}}}}))
    .await;
    env.until::<InferenceService>("web", "Ready on digits-v1", |s| {
        s.status.as_ref().is_some_and(|s| s.phase == Some(InferenceServicePhase::Ready))
    })
    .await;

    let patch = json!({"spec": {"variants": [{"name": "main", "modelVersion": "digits-v2", "weight": 100}]}});
    env.api::<InferenceService>().patch("web", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let mid = env
        .until::<InferenceService>("web", "the canary past its first step", |s| {
            s.status.as_ref().and_then(|s| s.rollout.as_ref()).is_some_and(|r| r.step >= 1)
        })
        .await;
    let before = mid.status.unwrap().rollout.unwrap();

    // Stop the operator mid-rollout and start another: the rollout goes on
    // from the step in status, never back to the first one.
    assert_eq!(operator.stop().await.unwrap(), Some(0));
    let operator = OperatorProcess::start(&env.ns.name, "op-2", &["--allow-router-metrics-url"]).unwrap();
    operator.wait_leader(WAIT).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
    let mut lowest_step = before.step;
    let deadline = tokio::time::Instant::now() + WAIT;
    let promoted = loop {
        let isvc = env.api::<InferenceService>().get("web").await.unwrap();
        let status = isvc.status.clone().unwrap_or_default();
        match &status.rollout {
            Some(r) => {
                assert_eq!(r.started_at, before.started_at, "the same rollout, not a new one");
                lowest_step = lowest_step.min(r.step);
            }
            None if status.variants.first().and_then(|v| v.model_version.as_deref()) == Some("digits-v2") => {
                break status;
            }
            None => {}
        }
        assert!(tokio::time::Instant::now() < deadline, "no promotion: {status:#?}\n{}", operator.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(lowest_step, before.step, "the restarted operator resumed at step {} ", before.step);
    assert_eq!(promoted.variants[0].weight, 100);
    traffic.abort();
    env.cleanup(operator).await;
}
