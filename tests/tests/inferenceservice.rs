//! The InferenceService controller, run in-process against the cluster in
//! `KUBECONFIG`: its children pass server-side apply, the schemas and Pod
//! Security "restricted" (KWOK makes their pods Ready), and a canary
//! rollout promotes on good router metrics and aborts on bad ones. The
//! metrics come from a local page named by `hone.dev/router-metrics-url`,
//! because KWOK pods have no network.

// Test code: a failed step fails the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hone_cluster_tests::{
    TestNamespace, client, install_crds, isvc_status_where, ready_model_version, serve_text, wait_for,
};
use hone_crds::InferenceService;
use hone_crds::inferenceservice::{InferenceServicePhase, InferenceServiceStatus};
use hone_operator::config::OperatorConfig;
use hone_operator::context::Context;
use hone_operator::metrics::Metrics;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(90);

fn canary_page(backend: &str, requests: u32, errors: u32) -> String {
    format!(
        "hone_router_requests_total{{variant=\"{backend}\",status_class=\"2xx\"}} {}\n\
         hone_router_requests_total{{variant=\"{backend}\",status_class=\"5xx\"}} {errors}\n\
         hone_router_request_duration_seconds_bucket{{variant=\"{backend}\",le=\"0.01\"}} {requests}\n\
         hone_router_request_duration_seconds_bucket{{variant=\"{backend}\",le=\"+Inf\"}} {requests}\n",
        requests - errors
    )
}

async fn status_where(
    api: &Api<InferenceService>,
    what: &str,
    check: impl Fn(&InferenceServiceStatus) -> bool,
) -> anyhow::Result<InferenceServiceStatus> {
    isvc_status_where(api, "digits", what, TIMEOUT, check).await
}

/// Successful reconciles so far.
fn successes(metrics: &Metrics) -> u64 {
    let text = metrics.encode().unwrap_or_default();
    let line = text.lines().find(|l| {
        l.starts_with(r#"hone_operator_reconciles_total{controller="inferenceservice",result="success"}"#)
    });
    line.and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0)
}

async fn set_model_version(api: &Api<InferenceService>, mv: &str) -> anyhow::Result<()> {
    let patch = json!({"spec": {"variants": [{"name": "a", "modelVersion": mv, "weight": 100}]}});
    api.patch("digits", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

#[tokio::test]
async fn canary_promotes_on_good_metrics_and_aborts_on_bad() -> anyhow::Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let restricted = [("pod-security.kubernetes.io/enforce", "restricted")];
    let ns = TestNamespace::create(&client, "isvc", &restricted).await?;
    let result = scenario(&client, &ns.name).await;
    let cleanup = ns.cleanup().await;
    result?;
    cleanup
}

async fn scenario(client: &Client, ns: &str) -> anyhow::Result<()> {
    for version in 1..=3 {
        ready_model_version(client, ns, version).await?;
    }
    let body = Arc::new(Mutex::new(String::new()));
    let url = serve_text(body.clone());
    let isvc: InferenceService = serde_json::from_value(json!({
        "apiVersion": "hone.dev/v1alpha1", "kind": "InferenceService",
        "metadata": {"name": "digits", "annotations": {"hone.dev/router-metrics-url": url}},
        "spec": {
            "variants": [{"name": "a", "modelVersion": "digits-v1", "weight": 100}],
            "rollout": {"strategy": "Canary", "steps": [50], "stepInterval": "2s",
                "analysis": {"minRequests": 10, "maxErrorRate": 0.1, "maxP99LatencyMs": 100}},
        },
    }))?;
    let api: Api<InferenceService> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &isvc).await?;

    let metrics = Arc::new(Metrics::new());
    // The metrics page is named by the annotation, which the operator honours only when told to.
    let config = OperatorConfig { allow_router_metrics_url: true, ..OperatorConfig::default() };
    let ctx = Arc::new(Context::new(client.clone(), config, metrics.clone(), None));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(hone_cluster_tests::operator::run_controllers(
        ctx,
        ns.to_owned(),
        &["InferenceService"],
        stopped,
    ));

    let ready =
        status_where(&api, "Ready with digits-v1", |s| s.phase == Some(InferenceServicePhase::Ready)).await?;
    assert_eq!(ready.variants[0].model_version.as_deref(), Some("digits-v1"));
    assert_eq!(ready.url, Some(format!("http://digits-router.{ns}.svc:8080")));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let predictor = deployments.get("digits-a-v1").await?;
    assert_eq!(predictor.metadata.owner_references.unwrap()[0].kind, "InferenceService");
    let config = Api::<ConfigMap>::namespaced(client.clone(), ns).get("digits-router").await?;
    assert!(config.data.unwrap()["router.yaml"].contains(&format!("http://digits-a-v1.{ns}.svc:8080")));

    // Good canary: promoted after one step.
    set_model_version(&api, "digits-v2").await?;
    status_where(&api, "the canary at 50%", |s| s.rollout.as_ref().is_some_and(|r| r.canary_weight == 50))
        .await?;
    *body.lock().unwrap() = canary_page("a-v2", 20, 0);
    let promoted = status_where(&api, "digits-v2 promoted", |s| {
        s.rollout.is_none() && s.variants[0].model_version.as_deref() == Some("digits-v2")
    })
    .await?;
    assert!(promoted.draining.iter().any(|d| d.name == "digits-a-v1"), "{:?}", promoted.draining);
    assert!(deployments.get_opt("digits-a-v2").await?.is_some());

    // Bad canary: aborted, traffic back on digits-v2, the spec untouched.
    set_model_version(&api, "digits-v3").await?;
    status_where(&api, "the next canary at 50%", |s| {
        s.rollout.as_ref().is_some_and(|r| r.to_version == "digits-v3" && r.canary_weight == 50)
    })
    .await?;
    *body.lock().unwrap() = canary_page("a-v3", 20, 10);
    let aborted =
        status_where(&api, "digits-v3 aborted", |s| s.phase == Some(InferenceServicePhase::Degraded)).await?;
    assert_eq!(aborted.variants[0].model_version.as_deref(), Some("digits-v2"));
    assert_eq!(aborted.aborted_rollouts[0].to_version, "digits-v3");
    assert_eq!(api.get("digits").await?.spec.variants[0].model_version.as_deref(), Some("digits-v3"));
    let config = Api::<ConfigMap>::namespaced(client.clone(), ns).get("digits-router").await?;
    assert!(!config.data.unwrap()["router.yaml"].contains("a-v3"), "the canary has no traffic left");

    // A tracking service follows a newer ModelVersion without any change of
    // its own: the ModelVersion watch maps the new version to it.
    let tracker: InferenceService = serde_json::from_value(json!({
        "apiVersion": "hone.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": "tracker"},
        "spec": {"variants": [{"name": "t", "track": {"model": "digits"}, "weight": 100}]},
    }))?;
    api.create(&PostParams::default(), &tracker).await?;
    let tracking = |version: &'static str| {
        let api = api.clone();
        move || {
            let api = api.clone();
            async move {
                let status = api.get("tracker").await?.status.unwrap_or_default();
                Ok(status.variants.first().and_then(|v| v.model_version.clone()).filter(|mv| mv == version))
            }
        }
    };
    wait_for("tracker on digits-v3", TIMEOUT, tracking("digits-v3")).await?;
    ready_model_version(client, ns, 4).await?;
    wait_for("tracker on digits-v4", TIMEOUT, tracking("digits-v4")).await?;

    let settled = successes(&metrics);
    tokio::time::sleep(Duration::from_secs(5)).await;
    // An unchanged world writes no status, so nothing triggers another round
    // (a little slack for the HPA controller's own status writes).
    assert!(
        successes(&metrics) <= settled + 2,
        "reconciling in a loop: {settled} -> {}",
        successes(&metrics)
    );
    let _ = stop.send(());
    tokio::time::timeout(TIMEOUT, controller).await??;
    let counters = metrics.encode()?;
    assert!(!counters.contains("hone_operator_reconcile_errors_total{"), "no reconcile failed:\n{counters}");
    assert!(
        counters
            .contains(r#"hone_operator_reconciles_total{controller="inferenceservice",result="success"}"#)
    );
    Ok(())
}

#[tokio::test]
async fn a_metrics_url_annotation_is_refused_without_the_flag() -> anyhow::Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let restricted = [("pod-security.kubernetes.io/enforce", "restricted")];
    let ns = TestNamespace::create(&client, "isvc-url", &restricted).await?;
    let result = refused_url(&client, &ns.name).await;
    let cleanup = ns.cleanup().await;
    result?;
    cleanup
}

async fn refused_url(client: &Client, ns: &str) -> anyhow::Result<()> {
    ready_model_version(client, ns, 1).await?;
    // Never fetched either (operator mock test without_the_flag_...): observe drops it first.
    let url = "http://127.0.0.1:9/metrics";
    let isvc: InferenceService = serde_json::from_value(json!({
        "apiVersion": "hone.dev/v1alpha1", "kind": "InferenceService",
        "metadata": {"name": "digits", "annotations": {"hone.dev/router-metrics-url": url}},
        "spec": {"variants": [{"name": "a", "modelVersion": "digits-v1", "weight": 100}],
            "rollout": {"strategy": "Canary", "steps": [50], "stepInterval": "2s"}},
    }))?;
    let api: Api<InferenceService> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &isvc).await?;
    // The operator as the chart runs it: the annotation is not honoured.
    let ctx =
        Arc::new(Context::new(client.clone(), OperatorConfig::default(), Arc::new(Metrics::new()), None));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(hone_cluster_tests::operator::run_controllers(
        ctx,
        ns.to_owned(),
        &["InferenceService"],
        stopped,
    ));
    let refused = status_where(&api, "InvalidSpec naming the flag", |s| {
        s.conditions.iter().any(|c| {
            c.type_ == "Ready"
                && c.reason == "InvalidSpec"
                && c.message.contains("--allow-router-metrics-url")
        })
    })
    .await?;
    assert_ne!(refused.phase, Some(InferenceServicePhase::Ready));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    assert!(deployments.get_opt("digits-router").await?.is_none(), "nothing is built for a refused spec");
    let _ = stop.send(());
    tokio::time::timeout(TIMEOUT, controller).await??;
    Ok(())
}
