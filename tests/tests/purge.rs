//! ModelVersion deletion under `hone.dev/artifact-policy: Delete`, with the
//! real `hone-operator` binary (the chart's RBAC) and real MinIO: the purge
//! never reaches wider than the version's own files, a shared artifact is
//! kept, and a namespace with such versions is deleted without anyone
//! stripping a finalizer.
//!
//! KWOK completes the purge pod without running it: the test reads the purge
//! Job the operator created and runs its container arguments with
//! `purge-pod` (this crate's stand-in, calling `hone_storage::purge`, the
//! code `hone-trainer purge` runs) against MinIO, then checks what is left.
//!
//! The operator's ServiceAccount and leader-election Lease live in a
//! namespace of their own, so deleting the workload namespace cannot take the
//! operator's Lease with it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

use hone_cluster_tests::operator::{OperatorProcess, grant, revoke};
use hone_cluster_tests::{TestNamespace, client, install_crds, wait_for};
use hone_crds::ModelVersion;
use hone_storage::testing::{Minio, PASSWORD, USER};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);
const BUCKET: &str = "models";
const RESTRICTED: [(&str, &str); 2] = [
    ("pod-security.kubernetes.io/enforce", "restricted"),
    ("pod-security.kubernetes.io/enforce-version", "latest"),
];

/// MinIO with bucket `models`, or None (with a note) when its binary is
/// not built and this is not CI.
fn start_minio() -> Option<Minio> {
    let minio = Minio::start("cluster-test")?;
    // Accepting connections comes before serving requests: retry the bucket.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !boto3_ok(&minio, &format!("s3.create_bucket(Bucket='{BUCKET}')")) {
        assert!(Instant::now() < deadline, "MinIO did not serve requests");
        std::thread::sleep(Duration::from_millis(200));
    }
    Some(minio)
}

fn python() -> String {
    std::env::var("HONE_VENV").map(|v| format!("{v}/bin/python")).unwrap_or_else(|_| "python3".into())
}

fn boto3_run(minio: &Minio, code: &str) -> std::process::Output {
    let prelude = format!(
        "import boto3\ns3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id='{USER}', \
         aws_secret_access_key='{PASSWORD}', region_name='us-east-1')\n",
        minio.endpoint
    );
    Command::new(python()).args(["-c", &(prelude + code)]).output().unwrap()
}

fn boto3_ok(minio: &Minio, code: &str) -> bool {
    boto3_run(minio, code).status.success()
}

/// Writes one small object per key into the bucket.
fn put(minio: &Minio, keys: &[&str]) {
    let code: String =
        keys.iter().map(|k| format!("s3.put_object(Bucket='{BUCKET}', Key='{k}', Body=b'x')\n")).collect();
    let out = boto3_run(minio, &code);
    assert!(out.status.success(), "boto3: {}", String::from_utf8_lossy(&out.stderr));
}

/// Every key in the bucket, sorted.
fn keys(minio: &Minio) -> Vec<String> {
    let code = format!(
        "for page in s3.get_paginator('list_objects_v2').paginate(Bucket='{BUCKET}'):\n    \
         [print(o['Key']) for o in page.get('Contents', [])]\n"
    );
    let out = boto3_run(minio, &code);
    assert!(out.status.success(), "boto3: {}", String::from_utf8_lossy(&out.stderr));
    let mut keys: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect();
    keys.sort();
    keys
}

/// Runs the purge Job's container arguments against MinIO, as its pod would.
fn run_purge_pod(minio: &Minio, args: &[String]) -> usize {
    let out = Command::new(env!("CARGO_BIN_EXE_purge-pod")).args(args).envs(minio.env()).output().unwrap();
    assert!(out.status.success(), "purge-pod {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
}

/// The operator (its own namespace) watching a workload namespace.
struct Env {
    client: Client,
    home: TestNamespace,
    work: Option<TestNamespace>,
    operator: OperatorProcess,
}

impl Env {
    async fn new(prefix: &str) -> Self {
        let client = client().await.unwrap();
        install_crds(&client).await.unwrap();
        let home = TestNamespace::create(&client, &format!("{prefix}-op"), &RESTRICTED).await.unwrap();
        grant(&client, &home.name).await.unwrap();
        let work = TestNamespace::create(&client, prefix, &RESTRICTED).await.unwrap();
        let operator = OperatorProcess::start(&home.name, "purge", &["--namespaces", &work.name]).unwrap();
        operator.wait_leader(WAIT).await.unwrap_or_else(|e| panic!("{e}\n{}", operator.log()));
        Self { client, home, work: Some(work), operator }
    }

    fn ns(&self) -> &str {
        &self.work.as_ref().expect("the workload namespace").name
    }

    fn mvs(&self) -> Api<ModelVersion> {
        Api::namespaced(self.client.clone(), self.ns())
    }

    /// Creates a ModelVersion by hand with the Delete policy; `status` in the
    /// body is what a user would try to set (the apiserver drops it).
    async fn model_version(&self, name: &str, uri: &str, labels: serde_json::Value) {
        let mv: ModelVersion = serde_json::from_value(json!({
            "apiVersion": "hone.dev/v1alpha1", "kind": "ModelVersion",
            "metadata": {"name": name, "labels": labels,
                "annotations": {"hone.dev/artifact-policy": "Delete"}},
            "spec": {"model": "digits", "version": 1 + name.len(), "artifact": {"uri": uri},
                "signature": {"inputShape": [1, 8, 8], "classes": ["0", "1"]}},
            "status": {"runFolder": format!("s3://{BUCKET}/")},
        }))
        .unwrap();
        self.mvs().create(&PostParams::default(), &mv).await.unwrap();
        // The operator has taken it in charge (its finalizer) before the test deletes it.
        wait_for(&format!("the finalizer on {name}"), WAIT, || async {
            let mv = self.mvs().get(name).await?;
            Ok(mv.finalizers().iter().any(|f| f == "hone.dev/model-version").then_some(mv))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.operator.log()));
    }

    /// The purge Job of `name`, once the operator created it.
    async fn purge_job(&self, name: &str) -> Job {
        let api: Api<Job> = Api::namespaced(self.client.clone(), self.ns());
        let selector = format!("hone.dev/modelversion={name}");
        wait_for(&format!("the purge Job of {name}"), WAIT, || {
            let (api, selector) = (api.clone(), selector.clone());
            async move {
                let jobs = api.list(&ListParams::default().labels(&selector)).await?.items;
                Ok(jobs.into_iter().find(|j| j.name_any().contains("-purge-")))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.operator.log()))
    }

    async fn purge_jobs(&self, name: &str) -> usize {
        let api: Api<Job> = Api::namespaced(self.client.clone(), self.ns());
        let selector = format!("hone.dev/modelversion={name}");
        let jobs = api.list(&ListParams::default().labels(&selector)).await.unwrap().items;
        jobs.iter().filter(|j| j.name_any().contains("-purge-")).count()
    }

    async fn gone(&self, name: &str) {
        wait_for(&format!("ModelVersion {name} to go"), WAIT, || async {
            Ok(self.mvs().get_opt(name).await?.is_none().then_some(()))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.operator.log()));
    }

    /// The note of the Event `reason` about `name`, once it is recorded.
    async fn event(&self, name: &str, reason: &str) -> String {
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), self.ns());
        wait_for(&format!("the {reason} Event of {name}"), WAIT, || {
            let api = api.clone();
            async move {
                Ok(api.list(&ListParams::default()).await?.items.into_iter().find_map(|e| {
                    let about = e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name);
                    (about && e.reason.as_deref() == Some(reason)).then(|| e.note.unwrap_or_default())
                }))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.operator.log()))
    }

    /// Cleans up while the operator runs, then stops it.
    async fn cleanup(mut self) {
        if let Some(work) = self.work.take() {
            work.delete_model_versions().await.unwrap_or_else(|e| panic!("{e}\n{}", self.operator.log()));
            work.cleanup().await.unwrap();
        }
        self.operator.stop().await.unwrap();
        revoke(&self.client, &self.home.name).await.unwrap();
        self.home.cleanup().await.unwrap();
    }
}

fn args(job: &Job) -> Vec<String> {
    job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].args.clone().unwrap()
}

#[tokio::test]
async fn a_hand_made_version_with_a_run_label_deletes_only_its_own_files() {
    let Some(minio) = start_minio() else { return };
    let env = Env::new("hone-purge-label").await;
    put(
        &minio,
        &[
            "shared/tj-uid/model.pt",
            "shared/tj-uid/model.json",
            "shared/tj-uid/checkpoints/epoch-1.ot",
            "shared/tj-uid-10/model.pt",
            "shared/notes.txt",
        ],
    );
    // The label the old rule trusted with a folder delete, and a URI that
    // ends in that "run" folder; a runFolder in the created body is dropped.
    let uri = format!("s3://{BUCKET}/shared/tj-uid/model.pt");
    env.model_version("hostile", &uri, json!({"hone.dev/trainingjob-uid": "tj-uid"})).await;
    let status = env.mvs().get("hostile").await.unwrap().status.unwrap_or_default();
    assert_eq!(status.run_folder, None, "a user cannot record a run folder");

    env.mvs().delete("hostile", &DeleteParams::default()).await.unwrap();
    let job = env.purge_job("hostile").await;
    let files = [uri.clone(), format!("s3://{BUCKET}/shared/tj-uid/model.json")];
    assert_eq!(args(&job), ["purge", "--uri", &files[0], "--uri", &files[1]], "files only, no --prefix");
    assert_eq!(job.spec.as_ref().unwrap().active_deadline_seconds, Some(600));
    assert_eq!(run_purge_pod(&minio, &args(&job)), 2);
    env.gone("hostile").await;
    assert_eq!(
        keys(&minio),
        ["shared/notes.txt", "shared/tj-uid-10/model.pt", "shared/tj-uid/checkpoints/epoch-1.ot"],
        "only the version's model and card are gone"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_shared_artifact_outlives_the_first_version_and_goes_with_the_last() {
    let Some(minio) = start_minio() else { return };
    let env = Env::new("hone-purge-shared").await;
    put(&minio, &["team/m/model.pt", "team/m/model.json", "team/keep.txt"]);
    let uri = format!("s3://{BUCKET}/team/m/model.pt");
    env.model_version("first", &uri, json!({})).await;
    env.model_version("second", &uri, json!({})).await;

    env.mvs().delete("first", &DeleteParams::default()).await.unwrap();
    env.gone("first").await;
    let note = env.event("first", "ArtifactKept").await;
    assert!(note.contains("second"), "the Event names who keeps the files: {note}");
    assert_eq!(env.purge_jobs("first").await, 0, "no purge while another version holds the files");
    assert_eq!(keys(&minio), ["team/keep.txt", "team/m/model.json", "team/m/model.pt"]);

    env.mvs().delete("second", &DeleteParams::default()).await.unwrap();
    let job = env.purge_job("second").await;
    assert_eq!(run_purge_pod(&minio, &args(&job)), 2);
    env.gone("second").await;
    assert_eq!(keys(&minio), ["team/keep.txt"]);
    env.cleanup().await;
}

#[tokio::test]
async fn deleting_a_namespace_with_delete_policy_versions_finishes() {
    let mut env = Env::new("hone-purge-ns").await;
    // One whose purge could never run (its Secret does not exist), one plain.
    let mv: ModelVersion = serde_json::from_value(json!({
        "apiVersion": "hone.dev/v1alpha1", "kind": "ModelVersion",
        "metadata": {"name": "no-secret", "annotations": {"hone.dev/artifact-policy": "Delete"}},
        "spec": {"model": "digits", "version": 1,
            "artifact": {"uri": "s3://models/a/model.pt", "secretRef": {"name": "gone"}},
            "signature": {"inputShape": [1, 8, 8], "classes": ["0", "1"]}},
    }))
    .unwrap();
    env.mvs().create(&PostParams::default(), &mv).await.unwrap();
    env.model_version("plain", "s3://models/b/model.pt", json!({})).await;
    wait_for("the finalizer on no-secret", WAIT, || async {
        let mv = env.mvs().get("no-secret").await?;
        Ok(mv.finalizers().iter().any(|f| f == "hone.dev/model-version").then_some(()))
    })
    .await
    .unwrap();

    // No finalizer is touched by the test: the operator releases both.
    let work = env.work.take().unwrap();
    work.delete_and_wait(Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", env.operator.log()));
    let log = env.operator.log();
    assert!(log.contains("left in storage"), "the operator says what it left: {log}");
    env.cleanup().await;
}
