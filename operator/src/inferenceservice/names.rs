//! Every name, label, port, path and timing the InferenceService controller
//! uses, in one place, so builders never spell them out.

use std::time::Duration;

use crate::children::{MAX_NAME_LEN, child_name, sha256_hex};

/// Port every predictor and router listens on (`HONE_ADDR`'s default).
pub const PORT: i32 = 8080;
/// Name of that port in containers and Services.
pub const PORT_NAME: &str = "http";
/// Name of the admin port (`hone_crds::router::ADMIN_PORT`) in router and
/// predictor containers: metrics and config or drift; no Service exposes it.
pub const ADMIN_PORT_NAME: &str = "admin";
/// Name of the predictor container.
pub const PREDICTOR_CONTAINER: &str = "predictor";
/// Name of the router container.
pub const ROUTER_CONTAINER: &str = "router";
/// Standard label telling predictor pods from router pods.
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// [`LABEL_COMPONENT`] of predictor Deployments and pods.
pub const COMPONENT_PREDICTOR: &str = "predictor";
/// [`LABEL_COMPONENT`] of the router Deployment and pods.
pub const COMPONENT_ROUTER: &str = "router";

/// Readiness probe path (Open Inference Protocol v2).
pub const READY_PATH: &str = "/v2/health/ready";
/// Liveness probe path (Open Inference Protocol v2).
pub const LIVE_PATH: &str = "/v2/health/live";
/// Path of the router's Prometheus metrics (on its admin port).
pub const METRICS_PATH: &str = "/metrics";
/// Where the API key Secret is mounted in predictor pods.
pub const API_KEYS_DIR: &str = "/etc/hone/api-keys";
/// Where the router ConfigMap is mounted in router pods.
pub const ROUTER_CONFIG_DIR: &str = "/etc/hone/router";
/// Volume of the API key Secret.
pub const API_KEYS_VOLUME: &str = "api-keys";
/// Volume of the router ConfigMap.
pub const ROUTER_CONFIG_VOLUME: &str = "router-config";
/// Volume of a `pvc://` model artifact.
pub const MODEL_VOLUME: &str = "model";
/// GPU resource name.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// Pods metric of the requests-per-second autoscaling target (served by a metrics adapter).
pub const RPS_METRIC: &str = "hone_predictor_requests_per_second";
/// Router replicas: two, so a node drain or a crash never takes the endpoint down.
pub const ROUTER_REPLICAS: i32 = 2;

/// Predictor environment (see `predictor/src/config.rs`).
pub mod env {
    pub use hone_crds::predictor::env::{
        ADMIN_ADDR, API_KEYS_FILE, MAX_BATCH_SIZE, MAX_LATENCY_MS, MODEL_CARD_DIGEST, MODEL_DIGEST,
        MODEL_FORMAT, MODEL_NAME, MODEL_URI, MODEL_VERSION, SHUTDOWN_GRACE_SECONDS,
    };
    /// Every variable the operator sets itself; `spec.predictor.env` may not override them.
    pub const MANAGED: [&str; 12] = [
        MODEL_URI,
        MODEL_FORMAT,
        MODEL_DIGEST,
        MODEL_CARD_DIGEST,
        MODEL_NAME,
        MODEL_VERSION,
        MAX_BATCH_SIZE,
        MAX_LATENCY_MS,
        API_KEYS_FILE,
        SHUTDOWN_GRACE_SECONDS,
        ADMIN_ADDR,
        crate::labels::ENV_PVC_ROOT,
    ];
}

/// A preStop sleep keeps a terminating pod serving while Services and
/// routers stop sending to it (a distroless image has no `sleep` to exec).
pub const PRE_STOP_SLEEP_SECONDS: i64 = 5;
/// In-flight requests get this long after SIGTERM (`HONE_SHUTDOWN_GRACE_SECONDS`).
pub const SHUTDOWN_GRACE_SECONDS: i64 = 30;
/// Room for the preStop sleep plus the shutdown grace, with a margin.
pub const TERMINATION_GRACE_SECONDS: i64 = PRE_STOP_SLEEP_SECONDS + SHUTDOWN_GRACE_SECONDS + 5;

/// How long predictors that lost their traffic are kept: routers follow
/// their ConfigMap through the API within moments, but requests already
/// forwarded must finish, and a router whose watch dropped catches up only
/// when it reconnects (or, on an old image, at the kubelet's next sync).
pub const DRAIN_PERIOD: Duration = Duration::from_secs(90);
/// How often a rollout waiting on analysis (metrics, requests) looks again.
pub const ANALYSIS_POLL: Duration = Duration::from_secs(15);
/// How long one scrape of the router's metrics may take.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest metrics page read from a router.
pub const SCRAPE_MAX_BYTES: usize = 4 << 20;

/// `<isvc>-<variant>-v<version>`: the Deployment, Service, HPA and
/// PodDisruptionBudget of one variant's ModelVersion (hash-shortened past 63).
pub fn predictor_name(isvc: &str, variant: &str, version: i64) -> String {
    fit(isvc, &format!("{variant}-v{version}"))
}

/// `<isvc>-router`: the router Deployment, Service, PodDisruptionBudget and ConfigMap.
pub fn router_name(isvc: &str) -> String {
    fit(isvc, COMPONENT_ROUTER)
}

/// The HTTPRoute of the GatewayAPI provider: the InferenceService's own name.
pub fn route_name(isvc: &str) -> String {
    isvc.to_owned()
}

/// The router backend (and metrics `variant` label) of a canary:
/// `<variant>-v<version>`, so its counters start at zero and the variant
/// header can target it.
pub fn canary_backend(variant: &str, version: i64) -> String {
    format!("{variant}-v{version}")
}

/// In-cluster URL of a Service on [`PORT`].
pub fn service_url(service: &str, namespace: &str) -> String {
    format!("http://{service}.{namespace}.svc:{PORT}")
}

/// `text` as a label value: itself when it fits in 63 characters, else a
/// prefix and a hash (a ModelVersion name may have 253).
pub fn label_value(text: &str) -> String {
    if text.len() <= MAX_NAME_LEN {
        return text.to_owned();
    }
    let hash = sha256_hex(text.as_bytes());
    let head: String = text.chars().take(MAX_NAME_LEN - 11).collect();
    let head = head.trim_end_matches(['-', '.', '_']);
    format!("{head}-{}", &hash[..10])
}

/// `<base>-<suffix>` when it fits, else shortened by [`child_name`] with a
/// hash of the full name, so distinct names stay distinct.
fn fit(base: &str, suffix: &str) -> String {
    let full = format!("{base}-{suffix}");
    if full.len() <= MAX_NAME_LEN { full } else { child_name(base, suffix, &sha256_hex(full.as_bytes())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept_as_they_are() {
        assert_eq!(predictor_name("digits", "stable", 3), "digits-stable-v3");
        assert_eq!(router_name("digits"), "digits-router");
        assert_eq!(canary_backend("stable", 4), "stable-v4");
        assert_eq!(service_url("digits-router", "ml"), "http://digits-router.ml.svc:8080");
        assert_eq!(label_value("digits-classifier-v1"), "digits-classifier-v1");
    }

    #[test]
    fn long_names_are_hash_shortened_and_stay_distinct() {
        let isvc = "a".repeat(60);
        let v3 = predictor_name(&isvc, "stable", 3);
        let v4 = predictor_name(&isvc, "stable", 4);
        assert_eq!(v3.len(), MAX_NAME_LEN);
        assert!(v3.contains("-stable-v3-"), "{v3}");
        assert_ne!(v3, v4);
        assert!(router_name(&isvc).len() <= MAX_NAME_LEN);
        let label = label_value(&format!("{}.v1", "m".repeat(250)));
        assert!(label.len() <= MAX_NAME_LEN, "{label}");
        assert_ne!(label, label_value(&format!("{}.v2", "m".repeat(250))));
    }
}
