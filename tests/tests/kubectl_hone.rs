//! The `kubectl-hone` plugin, run as a real binary against the cluster in
//! `KUBECONFIG`, with the InferenceService controller in-process (as in
//! `inferenceservice.rs`): `status` prints the lineage tree of objects the
//! apiserver holds; `promote` and `rollback` end a canary in progress through
//! the `hone.dev/rollout-action` annotation, the controller honours each
//! request once, and both refuse when nothing is rolling out.

// Test code: a failed step fails the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hone_cluster_tests::{
    TestNamespace, client, install_crds, isvc_status_where, serve_text, wait_for, workspace_binary,
};
use hone_crds::inferenceservice::{
    HistoryOutcome, InferenceServicePhase, InferenceServiceStatus, RolloutActionOutcome,
};
use hone_crds::{Dataset, InferenceService, ModelVersion, TrainingJob};
use hone_operator::config::OperatorConfig;
use hone_operator::context::Context;
use hone_operator::metrics::Metrics;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(90);

/// The plugin binary: `HONE_KUBECTL_HONE_BIN`, else the workspace's debug build.
fn plugin() -> PathBuf {
    workspace_binary("kubectl-hone", "HONE_KUBECTL_HONE_BIN", "kubectl-hone").unwrap()
}

/// What one run of the plugin printed.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `kubectl-hone args...` (with this process's KUBECONFIG) off the async workers.
async fn hone(args: &[&str]) -> Run {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let output = tokio::task::spawn_blocking(move || Command::new(plugin()).args(&args).output())
        .await
        .unwrap()
        .unwrap();
    Run {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn create_with_status<K>(api: &Api<K>, object: Value, status: Value) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
    K::DynamicType: Default,
{
    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let kind = object["kind"].clone();
    api.create(&PostParams::default(), &serde_json::from_value(object)?).await?;
    let status = json!({"apiVersion": "hone.dev/v1alpha1", "kind": kind, "status": status});
    api.patch_status(&name, &PatchParams::apply("test-controller").force(), &Patch::Apply(&status)).await?;
    Ok(())
}

/// Dataset `digits` -> TrainingJob `digits-train` -> ModelVersion `digits-v1`,
/// plus `digits-v2` and `digits-v3` registered by hand; every status as the
/// other controllers would have written it.
async fn lineage(client: &Client, ns: &str) -> anyhow::Result<()> {
    let dataset = json!({"apiVersion": "hone.dev/v1alpha1", "kind": "Dataset", "metadata": {"name": "digits"},
        "spec": {"source": {"uri": "s3://data/digits/"}, "format": "ImageFolder"}});
    let ready = json!({"phase": "Ready", "samples": 1797, "classes": ["0", "1"],
        "digest": format!("sha256:{}", "b".repeat(64))});
    create_with_status(&Api::<Dataset>::namespaced(client.clone(), ns), dataset, ready).await?;
    let job = json!({"apiVersion": "hone.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "digits-train"},
        "spec": {"datasetRef": {"name": "digits"}, "model": {"architecture": "mlp"},
            "registerAs": {"model": "digits"}}});
    let succeeded = json!({"phase": "Succeeded", "modelVersion": "digits-v1",
        "metrics": {"val_accuracy": 0.9722, "test_accuracy": 0.9611}});
    create_with_status(&Api::<TrainingJob>::namespaced(client.clone(), ns), job, succeeded).await?;
    let versions = Api::<ModelVersion>::namespaced(client.clone(), ns);
    for version in 1..=3 {
        let name = format!("digits-v{version}");
        let mv = json!({"apiVersion": "hone.dev/v1alpha1", "kind": "ModelVersion", "metadata": {"name": name},
            "spec": {"model": "digits", "version": version,
                "artifact": {"uri": format!("s3://models/{name}/model.pt")},
                "signature": {"inputShape": [1, 8, 8], "classes": ["0", "1"]},
                "lineage": if version == 1 { json!({"trainingJob": "digits-train", "dataset": "digits"}) } else { json!({}) },
                "metrics": {"val_accuracy": 0.9722, "test_accuracy": 0.9611}}});
        let mut verified = json!({"phase": "Ready", "verifiedDigest": format!("sha256:{}", "a".repeat(64))});
        if version == 1 {
            verified["evaluation"] = json!({"dataset": "digits", "datasetDigest": format!("sha256:{}", "d".repeat(64)),
                "samples": 180, "metrics": {"accuracy": 0.9667, "macro_f1": 0.9655}});
        }
        create_with_status(&versions, mv, verified).await?;
    }
    Ok(())
}

async fn status_where(
    api: &Api<InferenceService>,
    what: &str,
    check: impl Fn(&InferenceServiceStatus) -> bool,
) -> anyhow::Result<InferenceServiceStatus> {
    isvc_status_where(api, "digits", what, TIMEOUT, check).await
}

async fn roll_out(api: &Api<InferenceService>, mv: &'static str) -> anyhow::Result<()> {
    let patch = json!({"spec": {"variants": [{"name": "a", "modelVersion": mv, "weight": 100}]}});
    api.patch("digits", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    status_where(api, &format!("the canary of {mv} at 20%"), |s| {
        s.rollout.as_ref().is_some_and(|r| r.to_version == mv && r.canary_weight == 20)
    })
    .await?;
    Ok(())
}

/// The Event with `reason` about `digits`, once the controller has published it.
async fn event(client: &Client, ns: &str, reason: &str) -> anyhow::Result<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    wait_for(&format!("an Event {reason}"), TIMEOUT, || {
        let events = events.clone();
        async move {
            let list = events.list(&Default::default()).await?;
            Ok(list.items.into_iter().find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("digits")
            }))
        }
    })
    .await
}

#[tokio::test]
async fn status_prints_the_lineage_and_promote_and_rollback_end_a_canary() -> anyhow::Result<()> {
    let _ = plugin();
    let client = client().await?;
    install_crds(&client).await?;
    let restricted = [("pod-security.kubernetes.io/enforce", "restricted")];
    let ns = TestNamespace::create(&client, "plugin", &restricted).await?;
    let result = scenario(&client, &ns.name).await;
    let cleanup = ns.cleanup().await;
    result?;
    cleanup
}

async fn scenario(client: &Client, ns: &str) -> anyhow::Result<()> {
    lineage(client, ns).await?;
    // Metrics readable but no canary request ever: without a hand, each
    // canary would wait at its first step for the whole (hour-long) interval.
    let url = serve_text(Arc::new(Mutex::new(String::new())));
    let isvc: InferenceService = serde_json::from_value(json!({
        "apiVersion": "hone.dev/v1alpha1", "kind": "InferenceService",
        "metadata": {"name": "digits", "annotations": {"hone.dev/router-metrics-url": url}},
        "spec": {
            "variants": [{"name": "a", "modelVersion": "digits-v1", "weight": 100}],
            "rollout": {"strategy": "Canary", "steps": [20, 50], "stepInterval": "1h",
                "analysis": {"minRequests": 10}},
        },
    }))?;
    let api: Api<InferenceService> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &isvc).await?;
    let ctx = Arc::new(Context::new(client.clone(), allow_metrics_url(), Arc::new(Metrics::new()), None));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(hone_cluster_tests::operator::run_controllers(
        ctx,
        ns.to_owned(),
        &["InferenceService"],
        stopped,
    ));
    status_where(&api, "Ready with digits-v1", |s| s.phase == Some(InferenceServicePhase::Ready)).await?;

    // status: the whole tree, with phases and metrics.
    let tree = hone(&["status", "-n", ns]).await;
    assert!(tree.ok, "{}", tree.stderr);
    for line in [
        format!("Namespace {ns}"),
        "Dataset/digits  Ready  samples=1797  classes=2".to_owned(),
        "└── TrainingJob/digits-train  Succeeded  val_accuracy=0.9722  test_accuracy=0.9611".to_owned(),
        "    └── ModelVersion/digits-v1  Ready  accuracy=0.9667  macro_f1=0.9655  val_accuracy=0.9722  test_accuracy=0.9611"
            .to_owned(),
        "evaluated: on 180 held-out samples of Dataset digits".to_owned(),
        "        └── InferenceService/digits  Ready".to_owned(),
        "ModelVersion/digits-v2  Ready".to_owned(),
    ] {
        assert!(tree.stdout.contains(&line), "no {line:?} in:\n{}", tree.stdout);
    }
    assert!(tree.stdout.contains("variant a: digits-v1, weight 100%"), "{}", tree.stdout);
    let missing = hone(&["status", "-n", ns, "no-such-object"]).await;
    assert!(!missing.ok && missing.stderr.contains("named no-such-object"), "{}", missing.stderr);

    // Nothing rolls out: both actions refuse, and nothing is annotated.
    let idle = hone(&["promote", "digits", "-n", ns]).await;
    assert!(!idle.ok, "{}", idle.stdout);
    assert!(idle.stderr.contains("has no rollout in progress (phase Ready)"), "{}", idle.stderr);
    assert!(
        !api.get("digits")
            .await?
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("hone.dev/rollout-action")
    );

    // promote: the canary at 20% of step 1 of 2 takes over at once.
    roll_out(&api, "digits-v2").await?;
    let json = hone(&["status", "-n", ns, "digits", "-o", "json"]).await;
    assert!(json.ok, "{}", json.stderr);
    let json: Value = serde_json::from_str(&json.stdout)?;
    let isvc = &json["namespaces"][0]["roots"][0]["children"][0]["children"][0]["children"][0];
    assert_eq!((isvc["name"].as_str(), isvc["phase"].as_str()), (Some("digits"), Some("Progressing")));
    assert!(
        isvc["details"].as_array().unwrap().contains(&json!({"name": "canaryWeight", "value": 20})),
        "{isvc}"
    );
    let promoted = hone(&["promote", "digits", "-n", ns, "--variant", "a"]).await;
    assert!(promoted.ok, "{}\n{}", promoted.stdout, promoted.stderr);
    assert!(
        promoted.stdout.contains("inferenceservice/digits promoted: promoted by hand"),
        "{}",
        promoted.stdout
    );
    let status = api.get("digits").await?.status.unwrap_or_default();
    assert_eq!(status.rollout, None);
    assert_eq!(status.variants[0].model_version.as_deref(), Some("digits-v2"));
    assert_eq!(status.variants[0].weight, 100);
    assert_eq!(status.last_rollout_action.as_ref().map(|a| a.outcome), Some(RolloutActionOutcome::Promoted));
    assert!(!event(client, ns, "ManualPromotion").await?.note.unwrap_or_default().is_empty());
    status_where(&api, "Ready on digits-v2", |s| s.phase == Some(InferenceServicePhase::Ready)).await?;

    // rollback: the next canary is aborted, all traffic back on digits-v2.
    roll_out(&api, "digits-v3").await?;
    let other = hone(&["rollback", "digits", "-n", ns, "--variant", "b"]).await;
    assert!(!other.ok && other.stderr.contains("rolling out variant a, not b"), "{}", other.stderr);
    let rolled_back = hone(&["rollback", "digits", "-n", ns]).await;
    assert!(rolled_back.ok, "{}\n{}", rolled_back.stdout, rolled_back.stderr);
    assert!(rolled_back.stdout.contains("inferenceservice/digits rolled back"), "{}", rolled_back.stdout);
    let status = status_where(&api, "Degraded after the rollback", |s| {
        s.phase == Some(InferenceServicePhase::Degraded)
    })
    .await?;
    assert_eq!(status.rollout, None);
    assert_eq!(status.variants[0].model_version.as_deref(), Some("digits-v2"));
    assert_eq!(status.aborted_rollouts[0].to_version, "digits-v3");
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!((degraded.status.as_str(), degraded.reason.as_str()), ("True", "ManualRollback"));
    event(client, ns, "ManualRollback").await?;
    let config = Api::<ConfigMap>::namespaced(client.clone(), ns).get("digits-router").await?;
    assert!(!config.data.unwrap()["router.yaml"].contains("a-v3"), "the canary has no traffic left");
    let tree = hone(&["status", "-n", ns, "digits"]).await;
    assert!(
        tree.stdout.contains("InferenceService/digits  Degraded (ManualRollback: rolled back by hand"),
        "{}",
        tree.stdout
    );
    assert!(tree.stdout.contains("lastAction: rollback"), "{}", tree.stdout);
    // rollback with no rollout in progress: back to the version served before
    // the promotion (status.history), once its predictors are ready again.
    let again = hone(&["rollback", "digits", "-n", ns]).await;
    assert!(again.ok, "{}\n{}", again.stdout, again.stderr);
    let status = status_where(&api, "serving digits-v1 again", |s| {
        s.variants.first().and_then(|v| v.model_version.as_deref()) == Some("digits-v1")
    })
    .await?;
    let outcome = |version: &str| {
        status
            .history
            .iter()
            .filter(|h| h.variant == "a" && h.version == version)
            .map(|h| h.outcome)
            .next_back()
    };
    assert_eq!(outcome("digits-v2"), Some(HistoryOutcome::RolledBack), "{:?}", status.history);
    assert_eq!(outcome("digits-v3"), Some(HistoryOutcome::Aborted), "{:?}", status.history);
    assert_eq!(outcome("digits-v1"), Some(HistoryOutcome::Serving), "{:?}", status.history);
    assert_eq!(
        status.last_rollout_action.as_ref().map(|a| a.outcome),
        Some(RolloutActionOutcome::RolledBack)
    );
    // Nothing older is good: digits-v1 has nothing to go back to.
    let nothing = hone(&["rollback", "digits", "-n", ns]).await;
    assert!(!nothing.ok && nothing.stderr.contains("no previous good version"), "{}", nothing.stderr);

    // A request annotated by hand with nothing rolling out: ignored, with a Warning, once.
    let by_hand = json!({"metadata": {"annotations": {"hone.dev/rollout-action": "promote",
        "hone.dev/rollout-action-id": "by-hand-1"}}});
    api.patch("digits", &PatchParams::default(), &Patch::Merge(&by_hand)).await?;
    let ignored = status_where(&api, "the stale request recorded", |s| {
        s.last_rollout_action.as_ref().is_some_and(|a| a.id == "by-hand-1")
    })
    .await?;
    let record = ignored.last_rollout_action.unwrap();
    assert_eq!(record.outcome, RolloutActionOutcome::Ignored);
    assert!(record.message.contains("no rollout is in progress"), "{}", record.message);
    let warning = event(client, ns, "RolloutActionIgnored").await?;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert_eq!(ignored.variants[0].model_version.as_deref(), Some("digits-v1"), "nothing else changed");

    let _ = stop.send(());
    tokio::time::timeout(TIMEOUT, controller).await??;
    Ok(())
}

/// The metrics page is named by the annotation, which the operator honours only when told to.
fn allow_metrics_url() -> OperatorConfig {
    OperatorConfig { allow_router_metrics_url: true, ..OperatorConfig::default() }
}
