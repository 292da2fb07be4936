//! `bench/operator-scale`: N TrainingJobs and N InferenceServices applied at
//! once against the running cluster; prints p50/p99 from apply to children
//! created, and the operator's peak RSS and CPU seconds.
//!
//! The operator is the real binary (release build, `HONE_OPERATOR_BIN`) under
//! the chart's RBAC. Apply time is when the create call returned; child time
//! is when the bench's watch saw the child (a Job for a TrainingJob, the first
//! Deployment for an InferenceService), both on this machine's clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use hone_cluster_tests::operator::{OperatorProcess, grant, revoke, write_termination_message};
use hone_cluster_tests::{TestNamespace, client, install_crds, wait_for};
use hone_crds::{Dataset, InferenceService, ModelVersion, TrainingJob};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;

const DIGEST: &str = "sha256:3f1a7b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f90";
const ARTIFACT_DIGEST: &str = "sha256:aa11bb22cc33dd44ee55ff66aa11bb22cc33dd44ee55ff66aa11bb22cc33dd44";

type Seen = Arc<Mutex<HashMap<String, Instant>>>;

/// Records when each child labelled `label` was first seen, keyed by the owner name in that label.
fn watch_children<K>(api: Api<K>, label: &'static str, seen: Seen) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    tokio::spawn(async move {
        let stream = watcher::watcher(api, watcher::Config::default().labels(label)).applied_objects();
        futures::pin_mut!(stream);
        while let Ok(Some(obj)) = stream.try_next().await {
            if let Some(owner) = obj.labels().get(label) {
                seen.lock().unwrap().entry(owner.clone()).or_insert_with(Instant::now);
            }
        }
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// (peak RSS in MiB, CPU seconds) of `pid` from /proc.
fn usage(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks: f64 =
        fields.get(11..13).map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()).unwrap_or(f64::NAN);
    (hwm_kb / 1024.0, ticks / 100.0)
}

async fn create_all(
    api: Api<kube::api::DynamicObject>,
    bodies: Vec<serde_json::Value>,
) -> HashMap<String, Instant> {
    futures::stream::iter(bodies)
        .map(|body| {
            let api = api.clone();
            async move {
                let name = body["metadata"]["name"].as_str().unwrap().to_owned();
                let obj: kube::api::DynamicObject = serde_json::from_value(body).unwrap();
                api.create(&PostParams::default(), &obj)
                    .await
                    .unwrap_or_else(|e| panic!("creating {name}: {e}"));
                (name, Instant::now())
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

fn report(what: &str, applied: &HashMap<String, Instant>, seen: &Seen) -> usize {
    let seen = seen.lock().unwrap();
    let mut latencies: Vec<f64> = applied
        .iter()
        .filter_map(|(name, at)| {
            seen.get(name).map(|s| s.saturating_duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    println!(
        "{what:<22} {:>5}/{:<5} children   p50 {:>8.0} ms   p99 {:>8.0} ms   max {:>8.0} ms",
        latencies.len(),
        applied.len(),
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    latencies.len()
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(500);
    let client = client().await.unwrap();
    install_crds(&client).await.unwrap();
    let ns =
        TestNamespace::create(&client, "hone-scale", &[("pod-security.kubernetes.io/enforce", "restricted")])
            .await
            .unwrap();
    grant(&client, &ns.name).await.unwrap();
    let operator = OperatorProcess::start(&ns.name, "scale", &[]).unwrap();
    operator.wait_leader(Duration::from_secs(60)).await.unwrap();
    let pid = operator.pid();

    // One Ready Dataset and one Ready ModelVersion for everything to use (the
    // bench writes the inspect and verify results, as the cluster tests do).
    let dyn_api = |ar: &kube::api::ApiResource| {
        Api::<kube::api::DynamicObject>::namespaced_with(client.clone(), &ns.name, ar)
    };
    let ds_ar = kube::api::ApiResource::erase::<Dataset>(&());
    create_all(
        dyn_api(&ds_ar),
        vec![json!({"apiVersion": "hone.dev/v1alpha1", "kind": "Dataset", "metadata": {"name": "digits"},
        "spec": {"source": {"uri": "s3://d/digits/"}, "format": "ImageFolder"}})],
    )
    .await;
    let summary = json!({"kind": "inspect", "digest": DIGEST, "samples": 10, "sizeBytes": 10, "classes": ["0"], "classCounts": {"0": 10}});
    write_termination_message(&client, &ns.name, "hone.dev/dataset=digits", "inspect", &summary.to_string())
        .await
        .unwrap();
    let mv_ar = kube::api::ApiResource::erase::<ModelVersion>(&());
    create_all(dyn_api(&mv_ar), vec![json!({"apiVersion": "hone.dev/v1alpha1", "kind": "ModelVersion", "metadata": {"name": "digits-v1"},
        "spec": {"model": "digits", "version": 1, "artifact": {"uri": "s3://m/run/model.pt", "format": "TorchScript", "digest": ARTIFACT_DIGEST},
                 "signature": {"inputShape": [1, 32, 32], "classes": ["0"]}}})]).await;
    let ok = json!({"ok": true, "model": "s3://m/run/model.pt", "digest": ARTIFACT_DIGEST});
    write_termination_message(
        &client,
        &ns.name,
        "hone.dev/modelversion=digits-v1",
        "verify",
        &ok.to_string(),
    )
    .await
    .unwrap();
    let datasets: Api<Dataset> = Api::namespaced(client.clone(), &ns.name);
    let mvs: Api<ModelVersion> = Api::namespaced(client.clone(), &ns.name);
    let ready = |c: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]| {
        c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
    };
    wait_for("Dataset Ready", Duration::from_secs(60), || async {
        Ok(datasets.get("digits").await?.status.filter(|s| ready(&s.conditions)).map(|_| ()))
    })
    .await
    .unwrap();
    wait_for("ModelVersion Ready", Duration::from_secs(60), || async {
        Ok(mvs.get("digits-v1").await?.status.filter(|s| ready(&s.conditions)).map(|_| ()))
    })
    .await
    .unwrap();
    let (rss_before, cpu_before) = usage(pid);

    let jobs_seen: Seen = Arc::default();
    let deployments_seen: Seen = Arc::default();
    let w1 = watch_children(
        Api::<Job>::namespaced(client.clone(), &ns.name),
        "hone.dev/trainingjob",
        jobs_seen.clone(),
    );
    let w2 = watch_children(
        Api::<Deployment>::namespaced(client.clone(), &ns.name),
        "hone.dev/inferenceservice",
        deployments_seen.clone(),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    let tjs: Vec<_> = (0..n).map(|i| json!({"apiVersion": "hone.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": format!("tj-{i:04}")},
        "spec": {"datasetRef": {"name": "digits"}, "model": {"architecture": "simple-cnn"}, "output": {"uri": "s3://m/"},
                 "registerAs": {"model": format!("m{i}")}, "nodeSelector": {"hone.dev/none": "true"}}})).collect();
    let isvcs: Vec<_> = (0..n).map(|i| json!({"apiVersion": "hone.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": format!("svc-{i:04}")},
        "spec": {"variants": [{"name": "main", "modelVersion": "digits-v1", "weight": 100}]}})).collect();
    let started = Instant::now();
    let tj_ar = kube::api::ApiResource::erase::<TrainingJob>(&());
    let isvc_ar = kube::api::ApiResource::erase::<InferenceService>(&());
    let (tj_applied, isvc_applied) =
        tokio::join!(create_all(dyn_api(&tj_ar), tjs), create_all(dyn_api(&isvc_ar), isvcs));
    println!(
        "applied {n} TrainingJobs and {n} InferenceServices in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        let done = jobs_seen.lock().unwrap().len() >= n && deployments_seen.lock().unwrap().len() >= n;
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the operator settle (status writes) before reading its CPU time.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (rss_peak, cpu_after) = usage(pid);
    println!("operator-scale: {n} TrainingJobs + {n} InferenceServices, one operator, tier 1 cluster (KWOK)");
    let jobs = report("TrainingJob -> Job", &tj_applied, &jobs_seen);
    let deps = report("InferenceService -> Deployment", &isvc_applied, &deployments_seen);
    println!(
        "operator peak RSS {rss_peak:.0} MiB (before the burst {rss_before:.0} MiB), CPU {:.1} s for the burst",
        cpu_after - cpu_before
    );
    if let Some(text) = operator.metrics_text().await {
        for line in text.lines().filter(|l| l.starts_with("hone_operator_reconciles_total{")) {
            println!("  {line}");
        }
    }
    w1.abort();
    w2.abort();
    drop(operator);
    revoke(&client, &ns.name).await.unwrap();
    ns.cleanup().await.unwrap();
    if jobs < n || deps < n {
        eprintln!("not every object got its children within 600 s");
        std::process::exit(1);
    }
}
