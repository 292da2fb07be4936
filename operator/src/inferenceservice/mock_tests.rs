//! Mock-API tests of whole InferenceService reconciles (tower-test): which
//! requests they make, with which bodies, and what they conclude.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use hone_crds::InferenceService;
use hone_crds::inferenceservice::{
    DrainingPredictor, InferenceServiceStatus, MetricsBaseline, RolloutStatus,
};
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::tests::{isvc, model_version, serving};
use crate::config::OperatorConfig;
use crate::context::Context;
use crate::metrics::Metrics;
use crate::testutil::serve_once;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// One request the reconcile made.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    body: Value,
}

/// Answers every request like an apiserver holding `lists` (path -> items):
/// lists from `lists`, the Gateway API group as missing, applies echoed back.
fn apiserver(mut handle: Handle, lists: BTreeMap<String, Vec<Value>>, isvc: Value) -> Arc<Mutex<Vec<Seen>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().clone();
            let path = request.uri().path().to_owned();
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let body: Value =
                if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
            let (status, reply) = match (&method, path.as_str()) {
                (&Method::GET, "/apis/gateway.networking.k8s.io/v1") => (
                    StatusCode::NOT_FOUND,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound", "message": "404 page not found"}),
                ),
                (&Method::GET, p) => (
                    StatusCode::OK,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": lists.get(p).cloned().unwrap_or_default()}),
                ),
                (&Method::PATCH, p) if p.ends_with("/status") => (StatusCode::OK, isvc.clone()),
                (&Method::PATCH, _) => (StatusCode::OK, body.clone()),
                (&Method::DELETE, _) => {
                    (StatusCode::OK, json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}))
                }
                _ => (StatusCode::OK, json!({})),
            };
            log.lock().unwrap().push(Seen { method, path, body });
            send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap(),
            );
        }
    });
    seen
}

fn context() -> (Arc<Context>, Handle) {
    // The canary tests name their metrics page with the annotation.
    context_with(OperatorConfig { allow_router_metrics_url: true, ..OperatorConfig::default() })
}

fn context_with(config: OperatorConfig) -> (Arc<Context>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    (Arc::new(Context::new(client, config, Arc::new(Metrics::new()), None)), handle)
}

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/ml/deployments";
const MODEL_VERSIONS: &str = "/apis/hone.dev/v1alpha1/namespaces/ml/modelversions";
const STATUS: &str = "/apis/hone.dev/v1alpha1/namespaces/ml/inferenceservices/digits/status";

fn owned_deployment(name: &str, ready: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "ml", "labels": {"hone.dev/inferenceservice": "digits"},
            "ownerReferences": [{"apiVersion": "hone.dev/v1alpha1", "kind": "InferenceService", "name": "digits", "uid": "uid-1", "controller": true}]},
        "spec": {"selector": {}, "template": {}},
        "status": {"replicas": ready, "readyReplicas": ready}
    })
}

fn find<'a>(seen: &'a [Seen], method: Method, path: &str) -> Option<&'a Seen> {
    seen.iter().find(|s| s.method == method && s.path == path)
}

async fn reconcile(isvc: InferenceService, lists: BTreeMap<String, Vec<Value>>) -> (Action, Vec<Seen>) {
    reconcile_with(context(), isvc, lists).await
}

async fn reconcile_with(
    (ctx, handle): (Arc<Context>, Handle),
    isvc: InferenceService,
    lists: BTreeMap<String, Vec<Value>>,
) -> (Action, Vec<Seen>) {
    // The reconcile reads what the watches cached; the apiserver sees writes only.
    let parse = |path: &str| -> Vec<Value> { lists.get(path).cloned().unwrap_or_default() };
    let caches = crate::caches::Caches::empty()
        .with_model_versions(
            parse(MODEL_VERSIONS).into_iter().map(|v| serde_json::from_value(v).unwrap()).collect(),
        )
        .with_deployments(
            parse(DEPLOYMENTS).into_iter().map(|v| serde_json::from_value(v).unwrap()).collect(),
        );
    let ctx = Arc::new(ctx.with_caches(caches));
    let seen = apiserver(handle, lists, serde_json::to_value(&isvc).unwrap());
    let action = super::reconcile(Arc::new(isvc), ctx).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    // Router pods too come from a cache (a canary's scrape reads them there).
    let reads: Vec<&str> = seen.iter().filter(|s| s.method == Method::GET).map(|s| s.path.as_str()).collect();
    assert!(reads.is_empty(), "a reconcile reads from the caches, not the apiserver: {reads:?}");
    (action, seen)
}

#[tokio::test]
async fn a_new_service_gets_predictors_and_a_router_applied_server_side() {
    let isvc = isvc("variants: [{name: a, modelVersion: digits-v1, weight: 100}]");
    let mv = serde_json::to_value(model_version("digits-v1", "digits", 1, true, &[])).unwrap();
    let (action, seen) = reconcile(isvc, BTreeMap::from([(MODEL_VERSIONS.to_owned(), vec![mv])])).await;

    assert_eq!(action, Action::await_change());
    assert!(
        seen.iter().all(|s| s.method != Method::POST || s.path.contains("/events")),
        "no create, only apply"
    );
    let applies: Vec<&str> =
        seen.iter().filter(|s| s.method == Method::PATCH).map(|s| s.path.as_str()).collect();
    // Independent applies go out together, in two waves: the router's
    // ServiceAccount and Role, the Services and the router config before the
    // RoleBinding (checked against the Role) and the Deployments (whose pods
    // run as that identity and read that config).
    let set =
        |paths: &[&str]| paths.iter().map(|p| (*p).to_owned()).collect::<std::collections::BTreeSet<_>>();
    assert_eq!(applies.len(), 12, "{applies:?}");
    assert_eq!(
        set(&applies[..5]),
        set(&[
            "/api/v1/namespaces/ml/serviceaccounts/digits-router",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/ml/roles/digits-router",
            "/api/v1/namespaces/ml/services/digits-a-v1",
            "/api/v1/namespaces/ml/services/digits-router",
            "/api/v1/namespaces/ml/configmaps/digits-router",
        ])
    );
    assert_eq!(
        set(&applies[5..11]),
        set(&[
            "/apis/rbac.authorization.k8s.io/v1/namespaces/ml/rolebindings/digits-router",
            "/apis/apps/v1/namespaces/ml/deployments/digits-a-v1",
            "/apis/apps/v1/namespaces/ml/deployments/digits-router",
            "/apis/autoscaling/v2/namespaces/ml/horizontalpodautoscalers/digits-a-v1",
            "/apis/policy/v1/namespaces/ml/poddisruptionbudgets/digits-a-v1",
            "/apis/policy/v1/namespaces/ml/poddisruptionbudgets/digits-router",
        ])
    );
    assert_eq!(applies[11], STATUS);
    let config = &find(&seen, Method::PATCH, "/api/v1/namespaces/ml/configmaps/digits-router").unwrap().body;
    assert!(config["data"]["router.yaml"].as_str().unwrap().contains("http://digits-a-v1.ml.svc:8080"));
    let status = &find(&seen, Method::PATCH, STATUS).unwrap().body["status"];
    assert_eq!(status["phase"], "Pending");
    assert_eq!(status["variants"][0]["modelVersion"], "digits-v1");
    assert_eq!(status["url"], "http://digits-router.ml.svc:8080");
    assert_eq!(status["conditions"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn a_canary_step_reads_the_metrics_url_and_moves_traffic() {
    let url = serve_once(
        "200 OK",
        "hone_router_requests_total{variant=\"a-v2\",status_class=\"2xx\"} 30\n\
         hone_router_request_duration_seconds_bucket{variant=\"a-v2\",le=\"0.01\"} 30\n\
         hone_router_request_duration_seconds_bucket{variant=\"a-v2\",le=\"+Inf\"} 30\n",
    );
    let mut isvc = isvc(
        "variants: [{name: a, modelVersion: digits-v2, weight: 100}]\nrollout: {strategy: Canary, steps: [10, 50], stepInterval: 1m, analysis: {minRequests: 20}}",
    );
    isvc.metadata.annotations = Some([("hone.dev/router-metrics-url".to_owned(), url)].into_iter().collect());
    let long_ago = Timestamp::now().checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(120)).unwrap();
    let mut status: InferenceServiceStatus = serving(&[("a", "digits-v1")]);
    status.rollout = Some(RolloutStatus {
        variant: "a".into(),
        from_version: "digits-v1".into(),
        to_version: "digits-v2".into(),
        step: 0,
        canary_weight: 10,
        started_at: Some(Time(long_ago)),
        step_started_at: Some(Time(long_ago)),
        last_analysis: None,
        baseline: Some(MetricsBaseline::default()),
        ..Default::default()
    });
    // An old predictor whose drain is over.
    status.draining = vec![DrainingPredictor { name: "digits-a-v0".into(), until: Time(long_ago) }];
    isvc.status = Some(status);
    let mvs = (1..=2)
        .map(|v| {
            serde_json::to_value(model_version(&format!("digits-v{v}"), "digits", v, true, &[])).unwrap()
        })
        .collect();
    let deployments = vec![
        owned_deployment("digits-a-v0", 1),
        owned_deployment("digits-a-v1", 1),
        owned_deployment("digits-a-v2", 1),
    ];
    let lists = BTreeMap::from([(MODEL_VERSIONS.to_owned(), mvs), (DEPLOYMENTS.to_owned(), deployments)]);
    let (action, seen) = reconcile(isvc, lists).await;

    let config = &find(&seen, Method::PATCH, "/api/v1/namespaces/ml/configmaps/digits-router").unwrap().body;
    let router: hone_crds::router::RouterConfig =
        serde_yaml::from_str(config["data"]["router.yaml"].as_str().unwrap()).unwrap();
    let weights: Vec<_> = router.variants.iter().map(|v| (v.name.as_str(), v.weight)).collect();
    assert_eq!(weights, [("a", 5000), ("a-v2", 5000)]);
    assert!(
        find(&seen, Method::DELETE, "/apis/apps/v1/namespaces/ml/deployments/digits-a-v0").is_some(),
        "drained, then pruned"
    );
    assert!(
        find(&seen, Method::DELETE, "/apis/apps/v1/namespaces/ml/deployments/digits-a-v1").is_none(),
        "still stable"
    );
    let status = &find(&seen, Method::PATCH, STATUS).unwrap().body["status"];
    assert_eq!(
        (status["rollout"]["step"].as_i64(), status["rollout"]["canaryWeight"].as_i64()),
        (Some(1), Some(50))
    );
    assert_eq!(status["rollout"]["lastAnalysis"]["requests"], 30);
    assert_eq!(status["phase"], "Progressing");
    let event =
        seen.iter().find(|s| s.path.contains("/events") && s.body["reason"] == "RolloutStep").unwrap();
    assert!(event.body["note"].as_str().unwrap().contains("50%"));
    assert_ne!(action, Action::await_change(), "a canary step looks again");
}

#[tokio::test]
async fn an_invalid_spec_leaves_the_children_alone_and_waits() {
    let isvc =
        isvc("variants: [{name: a, modelVersion: digits-v1, weight: 100}]\nrollout: {stepInterval: soon}");
    let deployments = vec![owned_deployment("digits-a-v1", 1)];
    let (action, seen) = reconcile(isvc, BTreeMap::from([(DEPLOYMENTS.to_owned(), deployments)])).await;

    assert_eq!(action, Action::await_change());
    let writes: Vec<_> = seen
        .iter()
        .filter(|s| s.method != Method::GET)
        .map(|s| (s.method.clone(), s.path.as_str()))
        .collect();
    assert_eq!(writes.len(), 2, "{writes:?}");
    assert_eq!(writes[0], (Method::PATCH, STATUS), "no apply, no prune: traffic keeps flowing");
    assert_eq!(writes[1].0, Method::POST);
    let patch = &find(&seen, Method::PATCH, STATUS).unwrap().body["status"];
    assert_eq!(patch["conditions"][0]["reason"], "InvalidSpec");
    assert!(patch["conditions"][0]["message"].as_str().unwrap().contains("stepInterval"));
    let event = seen.iter().find(|s| s.path.contains("/events")).unwrap();
    assert_eq!(
        (event.body["reason"].as_str(), event.body["type"].as_str()),
        (Some("InvalidSpec"), Some("Warning"))
    );
}

#[tokio::test]
async fn without_the_flag_a_metrics_url_is_never_fetched_even_mid_rollout() {
    // A listener that only counts: the operator must never dial it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let mut isvc = isvc(
        "variants: [{name: a, modelVersion: digits-v2, weight: 100}]\nrollout: {strategy: Canary, steps: [10, 50], stepInterval: 1m}",
    );
    isvc.metadata.annotations = Some([("hone.dev/router-metrics-url".to_owned(), url)].into_iter().collect());
    let mut status: InferenceServiceStatus = serving(&[("a", "digits-v1")]);
    status.rollout = Some(RolloutStatus {
        variant: "a".into(),
        from_version: "digits-v1".into(),
        to_version: "digits-v2".into(),
        step: 0,
        canary_weight: 10,
        started_at: None,
        step_started_at: None,
        last_analysis: None,
        baseline: Some(MetricsBaseline::default()),
        ..Default::default()
    });
    isvc.status = Some(status);
    let mvs = (1..=2)
        .map(|v| {
            serde_json::to_value(model_version(&format!("digits-v{v}"), "digits", v, true, &[])).unwrap()
        })
        .collect();
    let lists = BTreeMap::from([(MODEL_VERSIONS.to_owned(), mvs)]);
    let (_, seen) = reconcile_with(context_with(OperatorConfig::default()), isvc, lists).await;

    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the operator connected to the URL an object's author named"
    );
    let status = &find(&seen, Method::PATCH, STATUS).unwrap().body["status"];
    let ready = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(ready["message"].as_str().unwrap().contains("--allow-router-metrics-url"), "{ready}");
    assert!(seen.iter().all(|s| s.method != Method::PATCH || s.path == STATUS), "nothing applied: {seen:?}");
}
