//! `bench/operator-scale`: N TrainingJobs and N InferenceServices applied at
//! once against the running cluster, measured against kube-controller-manager
//! doing the same kind of work in the same run.
//!
//! Phases, one after the other (never overlapping):
//!
//! 1. Calibration, before the operator starts: the bench creates N plain
//!    Deployments (replicas 0) in a namespace of their own and times
//!    kube-controller-manager from "create returned" to "ReplicaSet first
//!    seen by the bench's watch".
//! 2. The operator phase: the real binary (`HONE_OPERATOR_BIN`, release build)
//!    under the chart's RBAC; N TrainingJobs and N InferenceServices created
//!    with 32 (`HONE_SCALE_CONCURRENCY`) creates in flight; apply time is when
//!    the create call returned, child time is when the bench's watch saw the
//!    child (a Job for a TrainingJob, the first Deployment for an
//!    InferenceService), both on this machine's clock. Then a settle window
//!    and a steady window (30 s each, `HONE_SCALE_SETTLE_S`,
//!    `HONE_SCALE_STEADY_S`) with no changes.
//!
//! Counted per window (burst = first create .. last child seen, settle,
//! steady): the operator's `hone_operator_reconciles_total` per controller,
//! and LIST calls. kube-apiserver labels `apiserver_request_total` by verb and
//! resource, not by client, so the operator's own LISTs are counted with
//! FlowSchemas that match only its ServiceAccount (one per resource, verb
//! `list`, the same priority level `workload-low` its requests get anyway) and
//! read from `apiserver_flowcontrol_dispatched_requests_total`; the
//! cluster-wide `apiserver_request_total{verb="LIST"}` is printed beside it.
//! The bench itself never LISTs inside the windows (its watches start before).
//!
//! Exits 0 when every object got its children (a benchmark, not a test: the
//! aims are printed as met or missed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use hone_cluster_tests::operator::{
    OperatorProcess, SERVICE_ACCOUNT, grant, revoke, write_termination_message,
};
use hone_cluster_tests::{TestNamespace, client, install_crds, wait_for};
use hone_crds::{Dataset, InferenceService, ModelVersion, TrainingJob};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::flowcontrol::v1::FlowSchema;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

const DIGEST: &str = "sha256:3f1a7b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f90";
const ARTIFACT_DIGEST: &str = "sha256:aa11bb22cc33dd44ee55ff66aa11bb22cc33dd44ee55ff66aa11bb22cc33dd44";
const CALIBRATION_LABEL: &str = "hone.dev/scale-calibration";

/// Resources the operator touches (plus leases and replicasets, for context),
/// by resource name: one FlowSchema each counts the operator's LISTs of it.
const RESOURCES: &[&str] = &[
    "datasets",
    "trainingjobs",
    "modelversions",
    "inferenceservices",
    "deployments",
    "replicasets",
    "services",
    "jobs",
    "pods",
    "configmaps",
    "serviceaccounts",
    "roles",
    "rolebindings",
    "horizontalpodautoscalers",
    "poddisruptionbudgets",
    "events",
    "leases",
];

type Seen = Arc<Mutex<HashMap<String, Instant>>>;

/// Records when each object was first seen, keyed by `key` (skipped when `None`).
fn watch_first_seen<K>(
    api: Api<K>,
    config: watcher::Config,
    key: fn(&K) -> Option<String>,
    seen: Seen,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    tokio::spawn(async move {
        let stream = watcher::watcher(api, config).applied_objects();
        futures::pin_mut!(stream);
        loop {
            match stream.try_next().await {
                Ok(Some(obj)) => {
                    if let Some(k) = key(&obj) {
                        seen.lock().unwrap().entry(k).or_insert_with(Instant::now);
                    }
                }
                Ok(None) => break,
                // The watcher retries by itself; keep reading.
                Err(e) => eprintln!("watch error (retrying): {e}"),
            }
        }
    })
}

fn label_of<K: kube::Resource>(obj: &K, label: &str) -> Option<String> {
    obj.labels().get(label).cloned()
}

fn owner_deployment(rs: &ReplicaSet) -> Option<String> {
    rs.owner_references().iter().find(|o| o.kind == "Deployment").map(|o| o.name.clone())
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
    concurrency: usize,
) -> HashMap<String, Instant> {
    futures::stream::iter(bodies)
        .map(|body| {
            let api = api.clone();
            async move {
                let name = body["metadata"]["name"].as_str().unwrap().to_owned();
                let obj: kube::api::DynamicObject = serde_json::from_value(body).unwrap();
                let mut tries = 0;
                loop {
                    match api.create(&PostParams::default(), &obj).await {
                        Ok(_) => break,
                        // Throttled or a transient apiserver error under load: try again.
                        Err(kube::Error::Api(e)) if [429, 500, 503, 504].contains(&e.code) && tries < 10 => {
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                        }
                        Err(e) => panic!("creating {name}: {e}"),
                    }
                }
                (name, Instant::now())
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Sorted latencies in ms from `applied` to `seen`, for the names in both.
fn latencies(applied: &HashMap<String, Instant>, seen: &Seen) -> Vec<f64> {
    let seen = seen.lock().unwrap();
    let mut l: Vec<f64> = applied
        .iter()
        .filter_map(|(name, at)| {
            seen.get(name).map(|s| s.saturating_duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect();
    l.sort_by(f64::total_cmp);
    l
}

fn report(what: &str, latencies: &[f64], of: usize) {
    println!(
        "  {what:<52} {:>5}/{:<5} p50 {:>7.0} ms   p99 {:>7.0} ms   max {:>7.0} ms",
        latencies.len(),
        of,
        percentile(latencies, 50.0),
        percentile(latencies, 99.0),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
}

/// Waits until `seen` holds `n` entries (or `deadline`); returns when the last one appeared.
async fn wait_all(seen: &[&Seen], n: usize, deadline: Instant) -> bool {
    while Instant::now() < deadline {
        if seen.iter().all(|s| s.lock().unwrap().len() >= n) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

fn env_num(name: &str, default: f64) -> f64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One sample of a Prometheus text page: (name, labels, value).
fn parse_sample(line: &str) -> Option<(&str, BTreeMap<String, String>, f64)> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let Some(open) = line.find('{') else {
        let mut parts = line.split_whitespace();
        return Some((parts.next()?, BTreeMap::new(), parts.next()?.parse().ok()?));
    };
    let mut labels = BTreeMap::new();
    let (mut key, mut value) = (String::new(), String::new());
    let (mut in_value, mut escaped) = (false, false);
    let mut close = None;
    for (i, c) in line[open + 1..].char_indices() {
        if in_value {
            match (escaped, c) {
                (true, c) => {
                    value.push(if c == 'n' { '\n' } else { c });
                    escaped = false;
                }
                (false, '\\') => escaped = true,
                (false, '"') => {
                    labels.insert(std::mem::take(&mut key), std::mem::take(&mut value));
                    in_value = false;
                }
                (false, c) => value.push(c),
            }
        } else {
            match c {
                '"' => in_value = true,
                '}' => {
                    close = Some(open + 1 + i);
                    break;
                }
                '=' | ',' | ' ' => {}
                c => key.push(c),
            }
        }
    }
    let value = line[close? + 1..].split_whitespace().next()?.parse().ok()?;
    Some((&line[..open], labels, value))
}

/// Counters read at one instant.
struct Snapshot {
    /// Operator reconciles per controller: (success, error).
    reconciles: BTreeMap<String, (f64, f64)>,
    /// `apiserver_request_total{verb="LIST"}` per resource, every client; or why not.
    lists_all: Result<BTreeMap<String, f64>, String>,
    /// The operator's LISTs per resource (FlowSchemas); `other` for the rest; `*all*` every other request it made.
    lists_operator: BTreeMap<String, f64>,
    cpu: f64,
}

async fn apiserver_metrics(client: &Client) -> Result<String, String> {
    let request =
        kube::core::Request::new("/metrics").list(&ListParams::default()).map_err(|e| e.to_string())?;
    client.request_text(request).await.map_err(|e| format!("GET /metrics on kube-apiserver: {e}"))
}

async fn snapshot(client: &Client, operator: &OperatorProcess, schemas: &FlowSchemas) -> Snapshot {
    let mut reconciles: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    if let Some(text) = operator.metrics_text().await {
        for (name, labels, value) in text.lines().filter_map(parse_sample) {
            if name == "hone_operator_reconciles_total" {
                let entry =
                    reconciles.entry(labels.get("controller").cloned().unwrap_or_default()).or_default();
                if labels.get("result").map(String::as_str) == Some("error") {
                    entry.1 += value;
                } else {
                    entry.0 += value;
                }
            }
        }
    }
    let mut lists_operator = BTreeMap::new();
    let lists_all = apiserver_metrics(client).await.map(|text| {
        let mut lists = BTreeMap::new();
        for (name, labels, value) in text.lines().filter_map(parse_sample) {
            if name == "apiserver_request_total" && labels.get("verb").map(String::as_str) == Some("LIST") {
                // Summed over group, version, scope, code, component, dry_run, subresource.
                let resource = labels.get("resource").cloned().unwrap_or_default();
                let resource = if RESOURCES.contains(&resource.as_str()) { resource } else { "other".into() };
                *lists.entry(resource).or_insert(0.0) += value;
            }
            if name == "apiserver_flowcontrol_dispatched_requests_total"
                && let Some(key) = labels.get("flow_schema").and_then(|fs| schemas.key_of(fs))
            {
                *lists_operator.entry(key).or_insert(0.0) += value;
            }
        }
        lists
    });
    Snapshot { reconciles, lists_all, lists_operator, cpu: usage(operator.pid()).1 }
}

/// The FlowSchemas that count the operator's requests (cluster-scoped, removed at the end).
struct FlowSchemas {
    prefix: String,
    names: Vec<String>,
}

impl FlowSchemas {
    /// One FlowSchema per resource matching the operator's LISTs of it, one for
    /// its LISTs of anything else, one for every other request it makes.
    async fn create(client: &Client, namespace: &str) -> anyhow::Result<Self> {
        let api: Api<FlowSchema> = Api::all(client.clone());
        let prefix = format!("{namespace}-");
        let subject = json!({"kind": "ServiceAccount", "serviceAccount": {"namespace": namespace, "name": SERVICE_ACCOUNT}});
        let mut schemas: Vec<(String, i32, serde_json::Value)> = RESOURCES
            .iter()
            .map(|r| {
                (format!("list-{r}"), 50, json!([{"verbs": ["list"], "apiGroups": ["*"], "resources": [r], "clusterScope": true, "namespaces": ["*"]}]))
            })
            .collect();
        schemas.push((
            "list-other".into(),
            51,
            json!([{"verbs": ["list"], "apiGroups": ["*"], "resources": ["*"], "clusterScope": true, "namespaces": ["*"]}]),
        ));
        schemas.push((
            "all".into(),
            52,
            json!([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "clusterScope": true, "namespaces": ["*"]}]),
        ));
        let mut names = Vec::new();
        for (key, precedence, resource_rules) in schemas {
            let name = format!("{prefix}{key}");
            let mut rule = json!({"subjects": [subject.clone()], "resourceRules": resource_rules});
            if key == "all" {
                rule["nonResourceRules"] = json!([{"verbs": ["*"], "nonResourceURLs": ["*"]}]);
            }
            let fs: FlowSchema = serde_json::from_value(json!({
                "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema",
                "metadata": {"name": name, "labels": {"hone.dev/bench": "operator-scale"}},
                "spec": {"priorityLevelConfiguration": {"name": "workload-low"}, "matchingPrecedence": precedence,
                         "distinguisherMethod": {"type": "ByUser"}, "rules": [rule]}
            }))?;
            api.create(&PostParams::default(), &fs).await?;
            names.push(name);
        }
        Ok(Self { prefix, names })
    }

    fn key_of(&self, flow_schema: &str) -> Option<String> {
        let key = flow_schema.strip_prefix(&self.prefix)?;
        Some(match key.strip_prefix("list-") {
            Some(resource) => resource.to_owned(),
            None => "*all*".to_owned(),
        })
    }

    async fn delete(self, client: &Client) {
        let api: Api<FlowSchema> = Api::all(client.clone());
        for name in self.names {
            let _ = api.delete(&name, &DeleteParams::default()).await;
        }
    }
}

fn diff(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>, key: &str) -> f64 {
    b.get(key).copied().unwrap_or(0.0) - a.get(key).copied().unwrap_or(0.0)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// Deletes every `K` of `namespace` in one call (best effort).
async fn delete_all<K>(client: &Client, namespace: &str, params: DeleteParams)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    if let Err(e) = api.delete_collection(&params, &ListParams::default()).await {
        println!("  cleanup: deleting every {}: {e}", K::kind(&K::DynamicType::default()));
    }
}

async fn delete_namespace_and_wait(client: &Client, name: &str, timeout: Duration) -> bool {
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::background()).await;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if matches!(api.get_opt(name).await, Ok(None)) {
            return true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    false
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(500);
    let concurrency = env_num("HONE_SCALE_CONCURRENCY", 32.0).max(1.0) as usize;
    let deadline_s = env_num("HONE_SCALE_DEADLINE_S", (300.0 + 0.6 * n as f64).max(600.0));
    let settle_s = env_num("HONE_SCALE_SETTLE_S", 30.0);
    let steady_s = env_num("HONE_SCALE_STEADY_S", 30.0);
    let client = client().await.unwrap();
    install_crds(&client).await.unwrap();
    let operator_bin = std::env::var("HONE_OPERATOR_BIN").unwrap_or_else(|_| "(debug build)".into());
    println!(
        "operator-scale: N = {n} ({n} TrainingJobs + {n} InferenceServices; {n} Deployments for the calibration), \
         one operator ({operator_bin}), tier 1 cluster (KWOK), {concurrency} creates in flight, \
         deadline {deadline_s:.0} s per phase, settle window {settle_s:.0} s, steady window {steady_s:.0} s"
    );

    // ---------------------------------------------------------------- calibration
    // Before the operator phase, with no operator running: kube-controller-manager's
    // Deployment -> ReplicaSet for N Deployments the bench creates itself.
    let cal_ns = TestNamespace::create(&client, "hone-scale-kcm", &[]).await.unwrap();
    let cal_rs_seen: Seen = Arc::default();
    let cal_watch = watch_first_seen(
        Api::<ReplicaSet>::namespaced(client.clone(), &cal_ns.name),
        watcher::Config::default().labels(CALIBRATION_LABEL),
        |rs| label_of(rs, CALIBRATION_LABEL),
        cal_rs_seen.clone(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let deployments: Vec<_> = (0..n)
        .map(|i| {
            let name = format!("cal-{i:04}");
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 0, "selector": {"matchLabels": {CALIBRATION_LABEL: name}},
                     "template": {"metadata": {"labels": {CALIBRATION_LABEL: name}},
                                  "spec": {"containers": [{"name": "c", "image": "hone.local/none"}]}}}})
        })
        .collect();
    let dep_ar = kube::api::ApiResource::erase::<Deployment>(&());
    let started = Instant::now();
    let cal_applied =
        create_all(Api::namespaced_with(client.clone(), &cal_ns.name, &dep_ar), deployments, concurrency)
            .await;
    let cal_created_s = started.elapsed().as_secs_f64();
    let cal_complete =
        wait_all(&[&cal_rs_seen], n, Instant::now() + Duration::from_secs_f64(deadline_s)).await;
    cal_watch.abort();
    let cal_latencies = latencies(&cal_applied, &cal_rs_seen);
    println!(
        "calibration (BEFORE the operator phase, no operator running): the bench created {n} Deployments \
         (replicas 0) in {} in {cal_created_s:.1} s",
        cal_ns.name
    );
    report("kube-controller-manager Deployment -> ReplicaSet", &cal_latencies, n);
    if !cal_complete {
        println!("  (not every calibration Deployment got a ReplicaSet within {deadline_s:.0} s)");
    }

    // The calibration objects go before the operator phase, which then starts
    // from the same cluster state.
    let cal_gone_at = Instant::now();
    let cal_gone = delete_namespace_and_wait(&client, &cal_ns.name, Duration::from_secs(300)).await;
    println!(
        "  calibration namespace {} in {:.0} s",
        if cal_gone { "deleted" } else { "still terminating (continuing)" },
        cal_gone_at.elapsed().as_secs_f64()
    );

    // ---------------------------------------------------------------- operator phase
    let ns =
        TestNamespace::create(&client, "hone-scale", &[("pod-security.kubernetes.io/enforce", "restricted")])
            .await
            .unwrap();
    grant(&client, &ns.name).await.unwrap();
    let schemas = match FlowSchemas::create(&client, &ns.name).await {
        Ok(s) => Some(s),
        Err(e) => {
            println!("  (FlowSchemas to count the operator's own requests could not be created: {e})");
            None
        }
    };
    let no_schemas = FlowSchemas { prefix: "\u{0}none".into(), names: vec![] };
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
        1,
    )
    .await;
    let summary = json!({"kind": "inspect", "digest": DIGEST, "samples": 10, "sizeBytes": 10, "classes": ["0"], "classCounts": {"0": 10}});
    write_termination_message(&client, &ns.name, "hone.dev/dataset=digits", "inspect", &summary.to_string())
        .await
        .unwrap();
    let mv_ar = kube::api::ApiResource::erase::<ModelVersion>(&());
    create_all(dyn_api(&mv_ar), vec![json!({"apiVersion": "hone.dev/v1alpha1", "kind": "ModelVersion", "metadata": {"name": "digits-v1"},
        "spec": {"model": "digits", "version": 1, "artifact": {"uri": "s3://m/run/model.pt", "format": "TorchScript", "digest": ARTIFACT_DIGEST},
                 "signature": {"inputShape": [1, 32, 32], "classes": ["0"]}}})], 1).await;
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
    let (rss_before, _) = usage(pid);

    // The bench's watches start (with their initial LIST) before the measured windows.
    let jobs_seen: Seen = Arc::default();
    let deployments_seen: Seen = Arc::default();
    let deployments_by_name: Seen = Arc::default();
    let rs_seen: Seen = Arc::default();
    let watches = [
        watch_first_seen(
            Api::<Job>::namespaced(client.clone(), &ns.name),
            watcher::Config::default().labels("hone.dev/trainingjob"),
            |j| label_of(j, "hone.dev/trainingjob"),
            jobs_seen.clone(),
        ),
        watch_first_seen(
            Api::<Deployment>::namespaced(client.clone(), &ns.name),
            watcher::Config::default().labels("hone.dev/inferenceservice"),
            |d| label_of(d, "hone.dev/inferenceservice"),
            deployments_seen.clone(),
        ),
        watch_first_seen(
            Api::<Deployment>::namespaced(client.clone(), &ns.name),
            watcher::Config::default(),
            |d| Some(d.name_any()),
            deployments_by_name.clone(),
        ),
        watch_first_seen(
            Api::<ReplicaSet>::namespaced(client.clone(), &ns.name),
            watcher::Config::default(),
            owner_deployment,
            rs_seen.clone(),
        ),
    ];
    // Let the operator's initial sync and the Ready transitions' reconciles finish.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let schemas_ref = schemas.as_ref().unwrap_or(&no_schemas);
    let s0 = snapshot(&client, &operator, schemas_ref).await;

    let tjs: Vec<_> = (0..n).map(|i| json!({"apiVersion": "hone.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": format!("tj-{i:04}")},
        "spec": {"datasetRef": {"name": "digits"}, "model": {"architecture": "simple-cnn"}, "output": {"uri": "s3://m/"},
                 "registerAs": {"model": format!("m{i}")}, "nodeSelector": {"hone.dev/none": "true"}}})).collect();
    let isvcs: Vec<_> = (0..n).map(|i| json!({"apiVersion": "hone.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": format!("svc-{i:04}")},
        "spec": {"variants": [{"name": "main", "modelVersion": "digits-v1", "weight": 100}]}})).collect();
    let started = Instant::now();
    let tj_ar = kube::api::ApiResource::erase::<TrainingJob>(&());
    let isvc_ar = kube::api::ApiResource::erase::<InferenceService>(&());
    // Each kind gets half the creates in flight, so both together keep `concurrency`.
    let half = (concurrency / 2).max(1);
    let (tj_applied, isvc_applied) =
        tokio::join!(create_all(dyn_api(&tj_ar), tjs, half), create_all(dyn_api(&isvc_ar), isvcs, half));
    let applied_s = started.elapsed().as_secs_f64();
    let complete =
        wait_all(&[&jobs_seen, &deployments_seen], n, Instant::now() + Duration::from_secs_f64(deadline_s))
            .await;
    let burst_s = started.elapsed().as_secs_f64();
    let s1 = snapshot(&client, &operator, schemas_ref).await;
    tokio::time::sleep(Duration::from_secs_f64(settle_s)).await;
    let s2 = snapshot(&client, &operator, schemas_ref).await;
    tokio::time::sleep(Duration::from_secs_f64(steady_s)).await;
    let s3 = snapshot(&client, &operator, schemas_ref).await;
    let (rss_peak, _) = usage(pid);
    for w in &watches {
        w.abort();
    }

    // ---------------------------------------------------------------- report
    println!(
        "operator phase (AFTER the calibration): created {n} TrainingJobs and {n} InferenceServices in {applied_s:.1} s; \
         {} {burst_s:.1} s after the first create",
        if complete { "every child existed" } else { "deadline passed" }
    );
    let tj_lat = latencies(&tj_applied, &jobs_seen);
    let isvc_lat = latencies(&isvc_applied, &deployments_seen);
    report("TrainingJob -> Job", &tj_lat, n);
    report("InferenceService -> Deployment", &isvc_lat, n);
    let dep_first_seen: HashMap<String, Instant> = deployments_by_name.lock().unwrap().clone();
    let kcm_under_load = latencies(&dep_first_seen, &rs_seen);
    report("  kcm Deployment seen -> ReplicaSet seen (operator's)", &kcm_under_load, dep_first_seen.len());

    println!(
        "reconciles per object (hone_operator_reconciles_total / {n}, success+error; burst = first create .. \
         last child seen, settle = next {settle_s:.0} s, steady = next {steady_s:.0} s; once-exist = settle+steady)"
    );
    println!(
        "  {:<18} {:>9} {:>9} {:>9} {:>11} {:>12}",
        "controller", "burst", "settle", "steady", "once-exist", "errors(all)"
    );
    let mut controllers: Vec<String> = s3.reconciles.keys().cloned().collect();
    controllers.sort();
    let per = |a: &Snapshot, b: &Snapshot, c: &str| {
        let (bs, be) = b.reconciles.get(c).copied().unwrap_or_default();
        let (as_, ae) = a.reconciles.get(c).copied().unwrap_or_default();
        ((bs + be) - (as_ + ae)) / n as f64
    };
    let mut once_exist_worst: f64 = 0.0;
    for c in &controllers {
        let once = per(&s1, &s3, c);
        if c == "trainingjob" || c == "inferenceservice" {
            once_exist_worst = once_exist_worst.max(once);
        }
        let errors = s3.reconciles.get(c).map_or(0.0, |r| r.1) - s0.reconciles.get(c).map_or(0.0, |r| r.1);
        println!(
            "  {c:<18} {:>9.2} {:>9.2} {:>9.2} {:>11.2} {:>12.0}",
            per(&s0, &s1, c),
            per(&s1, &s2, c),
            per(&s2, &s3, c),
            once,
            errors
        );
    }
    if controllers.is_empty() {
        println!("  (the operator's /metrics did not answer)");
    }

    let mut operator_steady_lists = None;
    if schemas.is_some() {
        println!(
            "LIST calls by the operator (apiserver_flowcontrol_dispatched_requests_total of FlowSchemas matching \
             only its ServiceAccount)"
        );
        println!("  {:<26} {:>9} {:>9} {:>9}", "resource", "burst", "settle", "steady");
        let mut steady_total = 0.0;
        let mut keys: Vec<&str> = RESOURCES.to_vec();
        keys.push("other");
        for r in keys {
            let (b, se, st) = (
                diff(&s0.lists_operator, &s1.lists_operator, r),
                diff(&s1.lists_operator, &s2.lists_operator, r),
                diff(&s2.lists_operator, &s3.lists_operator, r),
            );
            steady_total += st;
            println!("  {r:<26} {b:>9.0} {se:>9.0} {st:>9.0}");
        }
        let total = |s: &Snapshot| s.lists_operator.values().sum::<f64>();
        println!(
            "  {:<26} {:>9.0} {:>9.0} {:>9.0}",
            "(every request, all verbs)",
            total(&s1) - total(&s0),
            total(&s2) - total(&s1),
            total(&s3) - total(&s2)
        );
        if s3.lists_operator.is_empty() {
            println!(
                "  (no sample of these FlowSchemas in kube-apiserver's /metrics: the counts above are not measured)"
            );
        } else {
            operator_steady_lists = Some(steady_total);
        }
    }
    let mut all_steady_lists = None;
    match (&s0.lists_all, &s1.lists_all, &s2.lists_all, &s3.lists_all) {
        (Ok(a), Ok(b), Ok(c), Ok(d)) => {
            println!(
                "LIST calls by every client, cluster-wide (apiserver_request_total{{verb=\"LIST\"}} summed over \
                 group, version, scope, code, component, dry_run; includes kcm, scheduler, KWOK, other users of the \
                 shared cluster)"
            );
            println!("  {:<26} {:>9} {:>9} {:>9}", "resource", "burst", "settle", "steady");
            let mut keys: Vec<&str> = RESOURCES.to_vec();
            keys.push("other");
            let mut steady_total = 0.0;
            for r in keys {
                let st = diff(c, d, r);
                steady_total += st;
                println!("  {r:<26} {:>9.0} {:>9.0} {st:>9.0}", diff(a, b, r), diff(b, c, r));
            }
            all_steady_lists = Some(steady_total);
        }
        (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => {
            println!("LIST calls: kube-apiserver's /metrics could not be read: {e}");
        }
    }

    println!(
        "operator peak RSS {rss_peak:.0} MiB (before the burst {rss_before:.0} MiB); CPU {:.1} s in the burst, \
         {:.1} s settle, {:.1} s steady",
        s1.cpu - s0.cpu,
        s2.cpu - s1.cpu,
        s3.cpu - s2.cpu
    );

    // ---------------------------------------------------------------- aims
    println!("aims (issue 19):");
    let isvc_p99 = percentile(&isvc_lat, 99.0);
    let kcm_p99 = percentile(&cal_latencies, 99.0);
    let ratio = isvc_p99 / kcm_p99;
    println!(
        "  InferenceService -> Deployment p99 <= 2x kcm Deployment -> ReplicaSet p99: {isvc_p99:.0} ms / {kcm_p99:.0} ms \
         = {ratio:.2}x: {}",
        verdict(ratio <= 2.0)
    );
    println!(
        "  <= 3 reconciles per object once the objects exist (worst of trainingjob, inferenceservice; settle+steady): \
         {once_exist_worst:.2}: {}",
        verdict(!controllers.is_empty() && once_exist_worst <= 3.0)
    );
    match (operator_steady_lists, all_steady_lists) {
        (Some(l), _) => println!(
            "  0 LISTs in steady state (the operator's, {steady_s:.0} s window): {l:.0}: {}",
            verdict(l == 0.0)
        ),
        (None, Some(l)) => println!(
            "  0 LISTs in steady state (cluster-wide, every client, {steady_s:.0} s window; the operator's own could \
             not be isolated): {l:.0}: {}",
            verdict(l == 0.0)
        ),
        (None, None) => println!("  0 LISTs in steady state: not measured (see above)"),
    }
    println!("  peak RSS < 100 MiB: {rss_peak:.0} MiB: {}", verdict(rss_peak < 100.0));

    // ---------------------------------------------------------------- cleanup
    // Left to itself the namespace takes many minutes to go (kcm's namespace
    // controller deletes pods first, KWOK ends them gracefully, both client-rate
    // limited), so the bench deletes collections itself: the owners first, then
    // the ModelVersion while the operator still runs (it releases the finalizer
    // once no InferenceService serves it), then the children, pods at once.
    let cleanup_started = Instant::now();
    delete_all::<TrainingJob>(&client, &ns.name, DeleteParams::background()).await;
    delete_all::<InferenceService>(&client, &ns.name, DeleteParams::background()).await;
    delete_all::<ModelVersion>(&client, &ns.name, DeleteParams::background()).await;
    let released = wait_for("the ModelVersion to go", Duration::from_secs(120), || async {
        Ok(mvs.list(&ListParams::default()).await?.items.is_empty().then_some(()))
    })
    .await;
    if let Err(e) = released {
        // Last resort, so the shared cluster does not keep a stuck namespace.
        println!("  cleanup: {e}: removing the ModelVersion finalizer");
        let release = json!({"metadata": {"finalizers": null}});
        for mv in mvs.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() {
            let _ = mvs
                .patch(&mv.name_any(), &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&release))
                .await;
        }
    }
    delete_all::<Job>(&client, &ns.name, DeleteParams::background()).await;
    delete_all::<Deployment>(&client, &ns.name, DeleteParams::background()).await;
    delete_all::<ReplicaSet>(&client, &ns.name, DeleteParams::background()).await;
    delete_all::<k8s_openapi::api::core::v1::Pod>(
        &client,
        &ns.name,
        DeleteParams::background().grace_period(0),
    )
    .await;
    let gone = delete_namespace_and_wait(&client, &ns.name, Duration::from_secs(300)).await;
    println!(
        "cleanup: namespace {} {} after {:.0} s",
        ns.name,
        if gone { "deleted" } else { "still terminating" },
        cleanup_started.elapsed().as_secs_f64()
    );
    drop(operator);
    if let Some(s) = schemas {
        s.delete(&client).await;
    }
    revoke(&client, &ns.name).await.unwrap();
    if tj_lat.len() < n || isvc_lat.len() < n {
        eprintln!("not every object got its children within {deadline_s:.0} s");
        std::process::exit(1);
    }
}
