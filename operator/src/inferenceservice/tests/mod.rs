//! Unit tests of the InferenceService controller's pure stages, from YAML fixtures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod canary;
mod deadline;
mod desired;
mod history;
mod manual;
mod registry_alias;
mod rollback;
mod shadow;
mod status;
mod validate;

use std::collections::BTreeSet;

use hone_crds::inferenceservice::InferenceServiceStatus;
use hone_crds::{InferenceService, ModelVersion};
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;
use serde_json::json;

use super::promtext::{BackendMetrics, RouterMetrics};
use super::rollout::{self, Plan};
use super::validate::{ValidService, validate};

/// An InferenceService `ml/digits` (uid `uid-1`, generation 2) with the spec in `yaml`.
/// One variant `a` rolling out `digits-v2` as a canary: steps 10% and 50%,
/// a minute each, at most 5% errors and 100 ms p99 over at least 20 requests.
pub(crate) const CANARY: &str = "
variants: [{name: a, modelVersion: digits-v2, weight: 100}]
rollout:
  strategy: Canary
  steps: [10, 50]
  stepInterval: 1m
  analysis: {maxErrorRate: 0.05, maxP99LatencyMs: 100, minRequests: 20}
";

/// Router metrics where the canary backend `a-v2` answered `requests`,
/// `errors` of them 5xx, all under 10 ms.
pub(crate) fn canary_metrics(requests: f64, errors: f64) -> Result<RouterMetrics, String> {
    let canary = BackendMetrics {
        requests,
        server_errors: errors,
        transport_errors: 0.0,
        buckets: [("0.01".to_owned(), requests), ("+Inf".to_owned(), requests)].into_iter().collect(),
        ..Default::default()
    };
    Ok([("a-v2".to_owned(), canary)].into_iter().collect())
}

pub(crate) fn isvc(yaml: &str) -> InferenceService {
    let spec = serde_yaml::from_str(yaml).expect("fixture spec parses");
    let mut isvc = InferenceService::new("digits", spec);
    isvc.metadata = ObjectMeta {
        name: Some("digits".into()),
        namespace: Some("ml".into()),
        uid: Some("uid-1".into()),
        generation: Some(2),
        ..Default::default()
    };
    isvc
}

/// A ModelVersion `ml/<name>` of `model` at `version`, Ready or Verifying, with `metrics`.
pub(crate) fn model_version(
    name: &str,
    model: &str,
    version: i64,
    ready: bool,
    metrics: &[(&str, f64)],
) -> ModelVersion {
    serde_json::from_value(json!({
        "apiVersion": "hone.dev/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {
            "model": model,
            "version": version,
            "artifact": {"uri": format!("s3://models/{name}/model.pt"), "secretRef": {"name": "s3"}},
            "signature": {"inputShape": [1, 8, 8], "classes": ["0", "1"]},
        },
        // What Hone measured: the metrics gates read.
        "status": {
            "phase": if ready { "Ready" } else { "Verifying" },
            "verifiedDigest": format!("sha256:{}", "a".repeat(64)),
            "evaluation": {
                "datasetDigest": format!("sha256:{}", "d".repeat(64)),
                "samples": 180,
                "metrics": metrics.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
            },
        },
    }))
    .unwrap()
}

/// `digits-v1` .. `digits-v3`, all Ready, of model `digits`.
pub(crate) fn three_versions() -> Vec<ModelVersion> {
    (1..=3)
        .map(|v| {
            model_version(
                &format!("digits-v{v}"),
                "digits",
                v,
                true,
                &[("val_accuracy", 0.9 + v as f64 / 100.0)],
            )
        })
        .collect()
}

/// `seconds` after a fixed instant.
pub(crate) fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + seconds).unwrap()
}

/// The validated `yaml` against `mvs`.
pub(crate) fn valid(yaml: &str, mvs: &[ModelVersion]) -> ValidService {
    validate(&isvc(yaml), mvs, "hone.local/predictor:dev", "hone.local/router:dev", false).unwrap()
}

/// One run of the state machine without metrics.
pub(crate) fn plan_of(
    valid: &ValidService,
    previous: &InferenceServiceStatus,
    ready: &[&str],
    now: Timestamp,
) -> Plan {
    let ready: BTreeSet<String> = ready.iter().map(|s| (*s).to_owned()).collect();
    rollout::plan(&rollout::Input { valid, previous, ready: &ready, metrics: None, now })
}

/// One whole reconcile at `now` seconds without metrics: the plan, and the
/// status it writes when the Deployments named in `ready` (and the router)
/// have a ready replica.
pub(crate) fn reconcile(
    valid: &ValidService,
    previous: &InferenceServiceStatus,
    ready: &[&str],
    now: i64,
) -> (Plan, InferenceServiceStatus) {
    reconcile_with(valid, previous, ready, None, now)
}

/// [`reconcile`] with the router's `metrics`.
pub(crate) fn reconcile_with(
    valid: &ValidService,
    previous: &InferenceServiceStatus,
    ready: &[&str],
    metrics: Option<&Result<super::promtext::RouterMetrics, String>>,
    now: i64,
) -> (Plan, InferenceServiceStatus) {
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::desired;
    use super::status::{self, StatusInput};
    let ready_names: Vec<String> = ready.iter().map(|r| format!("digits-{r}")).collect();
    let ready_set: BTreeSet<String> = ready_names.iter().cloned().collect();
    let plan = rollout::plan(&rollout::Input { valid, previous, ready: &ready_set, metrics, now: at(now) });
    let desired = desired::build(valid, &plan, true);
    let deployments: Vec<_> = desired
        .deployments
        .iter()
        .cloned()
        .map(|mut d| {
            let name = d.metadata.name.clone().unwrap_or_default();
            let up = i32::from(name == "digits-router" || ready_names.contains(&name));
            d.status =
                Some(DeploymentStatus { replicas: Some(1), ready_replicas: Some(up), ..Default::default() });
            d
        })
        .collect();
    let input = StatusInput {
        valid,
        plan: &plan,
        desired: &desired,
        deployments: &deployments,
        route: None,
        gateway_api: true,
        draining: &[],
        previous,
    };
    let status = status::compute(input, &Time(at(now)));
    (plan, status)
}

/// A status serving `digits-v1` on variant `a`.
pub(crate) fn serving(variants: &[(&str, &str)]) -> InferenceServiceStatus {
    serde_json::from_value(json!({
        "variants": variants.iter().map(|(name, mv)| json!({"name": name, "modelVersion": mv, "weight": 0})).collect::<Vec<_>>(),
    }))
    .unwrap()
}

#[test]
fn model_versions_map_to_the_services_that_reference_them() {
    use super::references;
    let by_name = isvc("variants: [{name: a, modelVersion: digits-v2, weight: 100}]");
    let tracking = isvc("variants: [{name: a, track: {model: digits}, weight: 100}]");
    let v1 = model_version("digits-v1", "digits", 1, true, &[]);
    let v2 = model_version("digits-v2", "digits", 2, true, &[]);
    let other = model_version("iris-v1", "iris", 1, true, &[]);
    assert!(references(&by_name, &v2));
    assert!(!references(&by_name, &v1));
    assert!(references(&tracking, &v1) && references(&tracking, &v2));
    assert!(!references(&tracking, &other));
    let mut serving_v1 = by_name.clone();
    serving_v1.status = Some(serving(&[("a", "digits-v1")]));
    assert!(references(&serving_v1, &v1), "what status serves counts too");
    let mut elsewhere = v2.clone();
    elsewhere.metadata.namespace = Some("other".into());
    assert!(!references(&by_name, &elsewhere));
}
