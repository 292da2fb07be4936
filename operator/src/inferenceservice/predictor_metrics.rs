//! Canary analysis under `traffic.provider: GatewayAPI`: no router sees the
//! requests, so the counters come from the predictor pods themselves. Each
//! pod's `/metrics` (`hone_predictor_*`, labelled with the model `version`
//! it serves) is read and its inference requests, 5xx answers, latency
//! buckets and predictions are summed per backend: a pod of the rolling-out
//! variant serving the canary's ModelVersion counts for the canary backend
//! (`<variant>-v<version>`), any other pod for its variant's stable backend.
//! The result has the shape of the router's, so the same analysis runs on it.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;
use hone_crds::consts::{LABEL_MODEL_VERSION, LABEL_VARIANT};
use hone_crds::inferenceservice::RolloutStatus;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Pod;

use super::names::{METRICS_PATH, PORT, SCRAPE_MAX_BYTES, canary_backend, label_value};
use super::promtext::{BackendMetrics, RouterMetrics, parse, sum};
use super::scrape::fetch;

/// The predictor's routes that answer inference requests (its `route`
/// label: axum's matched path), the ones the router counts too.
const INFERENCE_ROUTES: [&str; 4] =
    ["/predict", "/predict/batch", "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"];

/// The counters of `version` on one predictor page, inference routes only.
pub fn page_metrics(text: &str, version: &str) -> BackendMetrics {
    let mut backend = BackendMetrics::default();
    for sample in parse(text) {
        if sample.label("version") != Some(version) {
            continue;
        }
        let inference = sample.label("route").is_some_and(|r| INFERENCE_ROUTES.contains(&r));
        let value = sample.value;
        match sample.name.as_str() {
            "hone_predictor_requests_total" if inference => {
                backend.requests += value;
                if sample.label("status_class") == Some("5xx") {
                    backend.server_errors += value;
                }
            }
            "hone_predictor_request_duration_seconds_bucket" if inference => {
                if let Some(le) = sample.label("le") {
                    *backend.buckets.entry(le.to_owned()).or_default() += value;
                }
            }
            "hone_predictor_predictions_total" => {
                if let Some(class) = sample.label("class") {
                    *backend.predictions.entry(class.to_owned()).or_default() += value;
                }
            }
            "hone_predictor_confidence_sum" => backend.confidence_sum += value,
            _ => {}
        }
    }
    backend
}

/// Which backend a predictor pod's requests count for, and the model
/// version its page labels them with; None for a pod that is not running
/// or not a predictor of a known ModelVersion.
fn pod_backend(
    pod: &Pod,
    rollout: &RolloutStatus,
    versions: &BTreeMap<String, i64>,
) -> Option<(String, i64)> {
    if pod.metadata.deletion_timestamp.is_some()
        || pod.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running")
    {
        return None;
    }
    let labels = pod.metadata.labels.as_ref()?;
    let variant = labels.get(LABEL_VARIANT)?;
    let model_version = labels.get(LABEL_MODEL_VERSION)?;
    let version = *versions.get(model_version)?;
    let canary = *variant == rollout.variant && *model_version == label_value(&rollout.to_version);
    let backend = if canary { canary_backend(variant, version) } else { variant.clone() };
    Some((backend, version))
}

/// The predictors' counters per backend, summed over `pods` (the predictor
/// pods of one InferenceService). `versions` maps each ModelVersion's pod
/// label to its version number. `address` replaces every pod's own IP and
/// port (tests: KWOK pods have no network). The error says why they are not
/// available, which makes the rollout wait rather than fail.
pub async fn predictor_metrics(
    pods: &[Pod],
    rollout: &RolloutStatus,
    versions: &BTreeMap<String, i64>,
    address: Option<SocketAddr>,
) -> Result<RouterMetrics, String> {
    let http: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut pages = Vec::new();
    for pod in pods {
        let Some((backend, version)) = pod_backend(pod, rollout, versions) else { continue };
        let url = match (address, pod.status.as_ref().and_then(|s| s.pod_ip.as_deref())) {
            (Some(address), _) => format!("http://{address}{METRICS_PATH}"),
            (None, Some(ip)) if ip.contains(':') => format!("http://[{ip}]:{PORT}{METRICS_PATH}"),
            (None, Some(ip)) => format!("http://{ip}:{PORT}{METRICS_PATH}"),
            (None, None) => continue,
        };
        let text = fetch(&http, &url, SCRAPE_MAX_BYTES).await.map_err(|e| {
            if e.contains("HTTP 401") {
                format!(
                    "{e}: the predictors ask for an API key on /metrics (predictor.apiKeySecretRef) and the \
                     operator holds none; canary analysis under traffic.provider GatewayAPI needs their \
                     metrics: use traffic.provider Router, or no API key"
                )
            } else {
                e
            }
        })?;
        // Every pod counts: a sum without one of them would look like a counter reset.
        pages.push(RouterMetrics::from([(backend, page_metrics(&text, &version.to_string()))]));
    }
    if pages.is_empty() {
        return Err("no predictor pod of this InferenceService is running".to_owned());
    }
    Ok(sum(pages))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;
    use kube::api::ObjectMeta;

    const PAGE: &str = r#"# HELP hone_predictor_requests HTTP requests by route and status class
hone_predictor_requests_total{model="digits",version="2",route="/predict",status_class="2xx"} 90
hone_predictor_requests_total{model="digits",version="2",route="/predict",status_class="5xx"} 4
hone_predictor_requests_total{model="digits",version="2",route="/v2/models/{name}/infer",status_class="2xx"} 6
hone_predictor_requests_total{model="digits",version="2",route="/metrics",status_class="2xx"} 500
hone_predictor_requests_total{model="digits",version="1",route="/predict",status_class="2xx"} 7
hone_predictor_request_duration_seconds_bucket{model="digits",version="2",route="/predict",le="0.01"} 80
hone_predictor_request_duration_seconds_bucket{model="digits",version="2",route="/predict",le="+Inf"} 94
hone_predictor_request_duration_seconds_bucket{model="digits",version="2",route="/metrics",le="+Inf"} 500
hone_predictor_predictions_total{model="digits",version="2",class="7"} 50
hone_predictor_confidence_sum{model="digits",version="2"} 41.5
"#;

    #[test]
    fn a_page_gives_the_inference_counters_of_its_version() {
        let m = page_metrics(PAGE, "2");
        assert_eq!(m.requests, 100.0, "scrapes of /metrics are not inference requests");
        assert_eq!(m.server_errors, 4.0);
        assert_eq!(m.buckets["+Inf"], 94.0);
        assert_eq!(m.predictions["7"], 50.0);
        assert_eq!(m.confidence_sum, 41.5);
        assert_eq!(page_metrics(PAGE, "1").requests, 7.0);
        assert_eq!(page_metrics(PAGE, "9"), BackendMetrics::default());
    }

    fn pod(variant: &str, model_version: &str, phase: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                labels: Some(
                    [(LABEL_VARIANT, variant), (LABEL_MODEL_VERSION, model_version)]
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                ),
                ..Default::default()
            },
            status: Some(PodStatus {
                phase: Some(phase.to_owned()),
                pod_ip: Some("10.0.0.1".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_canarys_pods_count_for_the_canary_backend() {
        let rollout = RolloutStatus {
            variant: "a".into(),
            from_version: "digits-v1".into(),
            to_version: "digits-v2".into(),
            ..Default::default()
        };
        let versions = BTreeMap::from([("digits-v1".to_owned(), 1), ("digits-v2".to_owned(), 2)]);
        let backend = |p: &Pod| pod_backend(p, &rollout, &versions);
        assert_eq!(backend(&pod("a", "digits-v2", "Running")), Some(("a-v2".into(), 2)));
        assert_eq!(backend(&pod("a", "digits-v1", "Running")), Some(("a".into(), 1)));
        assert_eq!(
            backend(&pod("b", "digits-v2", "Running")),
            Some(("b".into(), 2)),
            "another variant's stable"
        );
        assert_eq!(backend(&pod("a", "digits-v2", "Pending")), None);
        assert_eq!(backend(&pod("a", "unknown", "Running")), None);
    }
}
