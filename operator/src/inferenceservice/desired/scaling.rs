//! The shared pieces of every Deployment the controller makes: object
//! metadata, probes, the preStop sleep, the HPA and the PodDisruptionBudget.

use std::collections::BTreeMap;

use hone_crds::consts::LABEL_INFERENCE_SERVICE;
use hone_crds::inferenceservice::Autoscaling;
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricIdentifier,
    MetricSpec, MetricTarget, PodsMetricSource, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    ContainerPort, HTTPGetAction, Lifecycle, LifecycleHandler, Probe, Service, ServicePort, ServiceSpec,
    SleepAction,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use hone_crds::router::ADMIN_PORT;

use super::super::names::{ADMIN_PORT_NAME, PORT, PORT_NAME, PRE_STOP_SLEEP_SECONDS, RPS_METRIC};
use super::super::validate::ValidService;
use crate::children::child_labels;

/// Metadata of a child named `name` with the child labels plus `extra`.
pub fn meta(valid: &ValidService, name: &str, extra: &BTreeMap<String, String>) -> ObjectMeta {
    let mut labels = child_labels(LABEL_INFERENCE_SERVICE, &valid.name);
    labels.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(valid.namespace.clone()),
        labels: Some(labels),
        owner_references: Some(vec![valid.owner.clone()]),
        ..Default::default()
    }
}

/// A selector matching exactly `labels`.
pub fn selector(labels: &BTreeMap<String, String>) -> LabelSelector {
    LabelSelector { match_labels: Some(labels.clone()), match_expressions: None }
}

/// The client port `http` and the admin port `admin` of a predictor or
/// router container; Services expose only the first.
pub fn client_and_admin_ports() -> Vec<ContainerPort> {
    let port = |name: &str, number: i32| ContainerPort {
        name: Some(name.to_owned()),
        container_port: number,
        protocol: Some("TCP".to_owned()),
        ..Default::default()
    };
    vec![port(PORT_NAME, PORT), port(ADMIN_PORT_NAME, i32::from(ADMIN_PORT))]
}

/// An HTTP GET probe on the `http` port.
pub fn http_probe(path: &str, period_seconds: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(PORT_NAME.to_owned()),
            ..Default::default()
        }),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(2),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

/// Longest a predictor may take to fetch, check, load and warm up its model
/// before the kubelet restarts it. Liveness is not probed until then, so a
/// large model on slow storage never crash-loops; the predictor answers
/// `live` while it fetches anyway.
pub const STARTUP_SECONDS: i32 = 600;
/// How often the startup probe asks.
const STARTUP_PERIOD_SECONDS: i32 = 5;

/// A startup probe on `path` that allows [`STARTUP_SECONDS`].
pub fn startup_probe(path: &str) -> Probe {
    Probe {
        failure_threshold: Some(STARTUP_SECONDS / STARTUP_PERIOD_SECONDS),
        ..http_probe(path, STARTUP_PERIOD_SECONDS)
    }
}

/// A preStop sleep (Kubernetes 1.30+; the images are distroless, so there is
/// no `sleep` binary to exec): endpoints and routers stop sending first.
pub fn pre_stop_sleep() -> Lifecycle {
    Lifecycle {
        pre_stop: Some(LifecycleHandler {
            sleep: Some(SleepAction { seconds: PRE_STOP_SLEEP_SECONDS }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A ClusterIP Service on [`PORT`] for the pods matching `pod_selector`.
pub fn service(
    valid: &ValidService,
    name: &str,
    labels: &BTreeMap<String, String>,
    pod_selector: &BTreeMap<String, String>,
) -> Service {
    Service {
        metadata: meta(valid, name, labels),
        spec: Some(ServiceSpec {
            selector: Some(pod_selector.clone()),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.to_owned()),
                port: PORT,
                target_port: Some(IntOrString::String(PORT_NAME.to_owned())),
                protocol: Some("TCP".to_owned()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// The autoscaling/v2 HPA of Deployment `name`: CPU utilisation, plus the
/// per-pod requests-per-second metric when a target is set.
pub fn autoscaler(
    valid: &ValidService,
    name: &str,
    labels: &BTreeMap<String, String>,
    autoscaling: &Autoscaling,
) -> HorizontalPodAutoscaler {
    let mut metrics = vec![MetricSpec {
        type_: "Resource".to_owned(),
        resource: Some(ResourceMetricSource {
            name: "cpu".to_owned(),
            target: MetricTarget {
                type_: "Utilization".to_owned(),
                average_utilization: Some(autoscaling.target_cpu_utilization_percentage),
                ..Default::default()
            },
        }),
        ..Default::default()
    }];
    if let Some(rps) = autoscaling.target_requests_per_second {
        metrics.push(MetricSpec {
            type_: "Pods".to_owned(),
            pods: Some(PodsMetricSource {
                metric: MetricIdentifier { name: RPS_METRIC.to_owned(), selector: None },
                target: MetricTarget {
                    type_: "AverageValue".to_owned(),
                    average_value: Some(Quantity(rps.to_string())),
                    ..Default::default()
                },
            }),
            ..Default::default()
        });
    }
    HorizontalPodAutoscaler {
        metadata: meta(valid, name, labels),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name: name.to_owned(),
            },
            min_replicas: Some(autoscaling.min_replicas),
            max_replicas: autoscaling.max_replicas,
            metrics: Some(metrics),
            behavior: None,
        }),
        status: None,
    }
}

/// The PodDisruptionBudget of the pods matching `labels`: `maxUnavailable: 1`
/// whatever the replica count. `minAvailable: 1` would block every node
/// drain of a one-replica variant forever, and with more replicas it would
/// let all but one go at once; one at a time keeps capacity and lets drains
/// finish. Unhealthy pods may always be evicted, so a crash-looping pod
/// cannot block a drain either.
pub fn disruption_budget(
    valid: &ValidService,
    name: &str,
    labels: &BTreeMap<String, String>,
    pod_selector: &BTreeMap<String, String>,
) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(valid, name, labels),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(selector(pod_selector)),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_owned()),
            ..Default::default()
        }),
        status: None,
    }
}
