//! The `GatewayAPI` traffic provider against the real Gateway API schema:
//! the standard-channel CRDs of Gateway API v1.6.3 (from its Go module,
//! hack/gateway-api-crds.sh) are installed, and the HTTPRoute the operator
//! emits for an A/B split is admitted by the apiserver with its rules intact
//! (a field the schema did not know would have been dropped). A sticky
//! header, which the Gateway API cannot honour, is refused at validation.

// Test code: a failed step fails the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use hone_cluster_tests::{
    TestNamespace, client, install_crds, isvc_status_where, ready_model_version, wait_for,
};
use hone_crds::InferenceService;
use hone_operator::config::OperatorConfig;
use hone_operator::context::Context;
use hone_operator::metrics::Metrics;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(90);

/// Installs the Gateway API's standard-channel HTTPRoute CRD (and the
/// Gateway and GatewayClass ones it refers to).
async fn install_gateway_api(client: &Client) -> anyhow::Result<()> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../hack/gateway-api-crds.sh");
    let out = std::process::Command::new(script).output()?;
    anyhow::ensure!(out.status.success(), "gateway-api-crds.sh: {}", String::from_utf8_lossy(&out.stderr));
    let dir = String::from_utf8(out.stdout)?.lines().last().unwrap_or_default().to_owned();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for kind in ["gatewayclasses", "gateways", "httproutes"] {
        let text = std::fs::read_to_string(format!("{dir}/gateway.networking.k8s.io_{kind}.yaml"))?;
        let crd: CustomResourceDefinition = serde_yaml::from_str(&text)?;
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &PatchParams::apply("hone-tests").force(), &Patch::Apply(&crd)).await?;
        wait_for(&format!("CRD {name} Established"), Duration::from_secs(60), || {
            let (api, name) = (api.clone(), name.clone());
            async move {
                let crd = api.get(&name).await?;
                let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
                Ok(conditions.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(()))
            }
        })
        .await?;
    }
    Ok(())
}

/// Runs `scenario` in a fresh namespace that enforces Pod Security
/// "restricted", with Hone's and the Gateway API's CRDs installed, and
/// removes the namespace afterwards.
async fn in_namespace<F, Fut>(prefix: &str, scenario: F) -> anyhow::Result<()>
where
    F: FnOnce(Client, String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let client = client().await?;
    install_crds(&client).await?;
    install_gateway_api(&client).await?;
    let restricted = [("pod-security.kubernetes.io/enforce", "restricted")];
    let ns = TestNamespace::create(&client, prefix, &restricted).await?;
    let result = scenario(client, ns.name.clone()).await;
    let cleanup = ns.cleanup().await;
    result?;
    cleanup
}

/// The InferenceService controller, in process, on one namespace.
struct Controller {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Controller {
    fn start(client: &Client, ns: &str, config: OperatorConfig) -> Self {
        let ctx = Arc::new(Context::new(client.clone(), config, Arc::new(Metrics::new()), None));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(hone_cluster_tests::operator::run_controllers(
            ctx,
            ns.to_owned(),
            &["InferenceService"],
            stopped,
        ));
        Self { stop, task }
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        tokio::time::timeout(TIMEOUT, self.task).await??;
        Ok(())
    }
}

#[tokio::test]
async fn http_routes_are_admitted_by_gateway_api_v1_6_3_and_sticky_headers_refused() -> anyhow::Result<()> {
    in_namespace("gateway", |client, ns| async move { scenario(&client, &ns).await }).await
}

async fn scenario(client: &Client, ns: &str) -> anyhow::Result<()> {
    for version in 1..=2 {
        ready_model_version(client, ns, version).await?;
    }
    let traffic = json!({"provider": "GatewayAPI",
        "gateway": {"parentRefs": [{"name": "public", "namespace": "gateways", "sectionName": "http"}],
                    "hostnames": ["digits.example.com"]}});
    let isvc = |name: &str, routing: Value| -> InferenceService {
        serde_json::from_value(json!({
            "apiVersion": "hone.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": name},
            "spec": {
                "variants": [{"name": "a", "modelVersion": "digits-v1", "weight": 90},
                             {"name": "b", "modelVersion": "digits-v2", "weight": 10}],
                "traffic": traffic, "routing": routing,
            },
        }))
        .unwrap()
    };
    let api: Api<InferenceService> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &isvc("digits", json!({}))).await?;
    api.create(&PostParams::default(), &isvc("sticky", json!({"stickyHeader": "x-user"}))).await?;

    let controller = Controller::start(client, ns, OperatorConfig::default());

    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    let routes: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk_with_plural(&gvk, "httproutes"));
    let route = wait_for("the HTTPRoute digits", TIMEOUT, || {
        let routes = routes.clone();
        async move { Ok(routes.get_opt("digits").await?) }
    })
    .await?;
    // What the apiserver stored under the v1.6.3 schema: nothing was pruned.
    let spec = &route.data["spec"];
    assert_eq!(spec["hostnames"], json!(["digits.example.com"]), "{spec:#}");
    assert_eq!(spec["parentRefs"][0]["sectionName"], "http", "{spec:#}");
    let rules = spec["rules"].as_array().cloned().unwrap_or_default();
    let weighted = rules.iter().find(|r| r.get("matches").is_none_or(|m| m[0].get("headers").is_none()));
    let weighted = weighted.unwrap_or_else(|| panic!("no weighted rule in {spec:#}"));
    let weights: Vec<(String, i64)> = weighted["backendRefs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["name"].as_str().unwrap().to_owned(), b["weight"].as_i64().unwrap()))
        .collect();
    let names: Vec<&str> = weights.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["digits-a-v1", "digits-b-v2"], "{spec:#}");
    // The weights keep the 90/10 split (the operator writes them in basis points).
    assert_eq!(weights[0].1, 9 * weights[1].1, "{spec:#}");
    let pinned: Vec<&Value> =
        rules.iter().filter_map(|r| r["matches"][0]["headers"].as_array().and_then(|h| h.first())).collect();
    assert!(
        pinned.iter().any(|h| h["name"] == "x-hone-variant" && h["value"] == "b" && h["type"] == "Exact"),
        "the variant-header rule for b is missing from {spec:#}"
    );

    // The sticky header would be ignored by a Gateway: refused, with what to do.
    let refused = isvc_status_where(&api, "sticky", "InvalidSpec on stickyHeader", TIMEOUT, |s| {
        s.conditions.iter().any(|c| c.reason == "InvalidSpec" && c.message.contains("stickyHeader"))
    })
    .await?;
    assert!(refused.conditions.iter().any(|c| c.message.contains("Router")), "{:?}", refused.conditions);
    assert!(routes.get_opt("sticky").await?.is_none(), "nothing is built for a refused spec");

    controller.stop().await
}

/// A predictor's page (as hone-predictor writes it) for model `version`.
fn predictor_page(version: u32, ok: u32, errors: u32) -> String {
    let all = ok + errors;
    format!(
        "hone_predictor_requests_total{{model=\"digits\",version=\"{version}\",route=\"/predict\",status_class=\"2xx\"}} {ok}\n\
         hone_predictor_requests_total{{model=\"digits\",version=\"{version}\",route=\"/predict\",status_class=\"5xx\"}} {errors}\n\
         hone_predictor_requests_total{{model=\"digits\",version=\"{version}\",route=\"/metrics\",status_class=\"2xx\"}} 999\n\
         hone_predictor_request_duration_seconds_bucket{{model=\"digits\",version=\"{version}\",route=\"/predict\",le=\"0.004\"}} {all}\n\
         hone_predictor_request_duration_seconds_bucket{{model=\"digits\",version=\"{version}\",route=\"/predict\",le=\"+Inf\"}} {all}\n"
    )
}

#[tokio::test]
async fn a_canary_under_gateway_api_is_judged_on_the_predictors_own_metrics() -> anyhow::Result<()> {
    in_namespace("gateway-canary", |client, ns| async move { canary(&client, &ns).await }).await
}

async fn canary(client: &Client, ns: &str) -> anyhow::Result<()> {
    for version in 1..=3 {
        ready_model_version(client, ns, version).await?;
    }
    let isvc: InferenceService = serde_json::from_value(json!({
        "apiVersion": "hone.dev/v1alpha1", "kind": "InferenceService", "metadata": {"name": "digits"},
        "spec": {
            "variants": [{"name": "a", "modelVersion": "digits-v1", "weight": 100}],
            "traffic": {"provider": "GatewayAPI", "gateway": {"parentRefs": [{"name": "public"}]}},
            "rollout": {"strategy": "Canary", "steps": [50], "stepInterval": "2s",
                "analysis": {"minRequests": 10, "maxErrorRate": 0.1, "maxP99LatencyMs": 100}},
        },
    }))?;
    let api: Api<InferenceService> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &isvc).await?;
    // Every predictor pod's page is read here (KWOK pods have no network);
    // each pod takes only the series of the version it serves.
    let body = Arc::new(std::sync::Mutex::new(String::new()));
    let url = hone_cluster_tests::serve_text(body.clone());
    let address = url.trim_start_matches("http://").split('/').next().unwrap_or_default().parse()?;
    let config = OperatorConfig { predictor_metrics_address: Some(address), ..OperatorConfig::default() };
    let controller = Controller::start(client, ns, config);

    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    let routes: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk_with_plural(&gvk, "httproutes"));
    wait_for("the HTTPRoute", TIMEOUT, || {
        let routes = routes.clone();
        async move { Ok(routes.get_opt("digits").await?) }
    })
    .await?;
    // The test plays the Gateway controller: it accepts the route.
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let accepted = json!({"status": {"parents": [{"parentRef": {"name": "public"}, "controllerName": "example.com/gateway",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "accepted",
                        "lastTransitionTime": now, "observedGeneration": 1}]}]}});
    routes.patch_status("digits", &PatchParams::default(), &Patch::Merge(&accepted)).await?;
    let ready = |s: &hone_crds::inferenceservice::InferenceServiceStatus| {
        s.phase == Some(hone_crds::inferenceservice::InferenceServicePhase::Ready)
    };
    isvc_status_where(&api, "digits", "Ready", TIMEOUT, ready).await?;

    // A good canary, judged on the canary predictor's own counters: promoted.
    let set = |mv: &str| json!({"spec": {"variants": [{"name": "a", "modelVersion": mv, "weight": 100}]}});
    api.patch("digits", &PatchParams::default(), &Patch::Merge(&set("digits-v2"))).await?;
    isvc_status_where(&api, "digits", "the canary at 50%", TIMEOUT, |s| {
        s.rollout.as_ref().is_some_and(|r| r.canary_weight == 50)
    })
    .await?;
    *body.lock().unwrap() = predictor_page(1, 40, 0) + &predictor_page(2, 20, 0);
    isvc_status_where(&api, "digits", "digits-v2 promoted", TIMEOUT, |s| {
        s.rollout.is_none() && s.variants[0].model_version.as_deref() == Some("digits-v2")
    })
    .await?;
    let route = routes.get("digits").await?;
    let backends: Vec<String> = route.data["spec"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["backendRefs"].as_array().cloned().unwrap_or_default())
        .filter(|b| b["weight"].as_i64().unwrap_or(0) > 0)
        .map(|b| b["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(backends.iter().all(|b| b == "digits-a-v2"), "after promotion the route sends {backends:?}");

    // A bad canary (half its answers 5xx): aborted, traffic back on digits-v2.
    api.patch("digits", &PatchParams::default(), &Patch::Merge(&set("digits-v3"))).await?;
    isvc_status_where(&api, "digits", "the next canary at 50%", TIMEOUT, |s| {
        s.rollout.as_ref().is_some_and(|r| r.to_version == "digits-v3" && r.canary_weight == 50)
    })
    .await?;
    *body.lock().unwrap() = predictor_page(2, 60, 0) + &predictor_page(3, 10, 10);
    let aborted = isvc_status_where(&api, "digits", "digits-v3 aborted", TIMEOUT, |s| {
        s.phase == Some(hone_crds::inferenceservice::InferenceServicePhase::Degraded)
    })
    .await?;
    assert_eq!(aborted.variants[0].model_version.as_deref(), Some("digits-v2"));
    assert_eq!(aborted.aborted_rollouts[0].to_version, "digits-v3");

    controller.stop().await
}
