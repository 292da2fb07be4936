//! What the InferenceService controller reads: its children, the
//! namespace's ModelVersions, whether the Gateway API exists (all from the
//! watch caches), and (during a canary) the router's metrics from the router
//! pods in the cache, or under the GatewayAPI provider the predictor pods'
//! own. It makes no apiserver call.

use std::collections::{BTreeMap, BTreeSet};

use hone_crds::consts::LABEL_INFERENCE_SERVICE;
use hone_crds::inferenceservice::{ANNOTATION_ROUTER_METRICS_URL, RolloutStrategy, TrafficProvider};
use hone_crds::{InferenceService, ModelVersion};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::ResourceExt;
use kube::api::DynamicObject;
use kube::core::PartialObjectMeta;

use super::desired::router::router_selector;
use super::names::{COMPONENT_PREDICTOR, LABEL_COMPONENT, label_value};
use super::promtext::RouterMetrics;
use super::{predictor_metrics, scrape};
use crate::caches::{in_namespace, owned};
use crate::context::Context;

/// The InferenceService's world as it is.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Deployments it controls (predictors and router).
    pub deployments: Vec<Deployment>,
    /// Services it controls.
    pub services: Vec<PartialObjectMeta<Service>>,
    /// HPAs it controls.
    pub autoscalers: Vec<PartialObjectMeta<HorizontalPodAutoscaler>>,
    /// PodDisruptionBudgets it controls.
    pub disruption_budgets: Vec<PartialObjectMeta<PodDisruptionBudget>>,
    /// ConfigMaps it controls (the router config).
    pub config_maps: Vec<PartialObjectMeta<ConfigMap>>,
    /// ServiceAccounts it controls (the router's).
    pub service_accounts: Vec<PartialObjectMeta<ServiceAccount>>,
    /// Roles it controls (the router's).
    pub roles: Vec<PartialObjectMeta<Role>>,
    /// RoleBindings it controls (the router's).
    pub role_bindings: Vec<PartialObjectMeta<RoleBinding>>,
    /// HTTPRoutes it controls.
    pub routes: Vec<DynamicObject>,
    /// Whether HTTPRoutes exist in the cluster.
    pub gateway_api: bool,
    /// Every ModelVersion of the namespace.
    pub model_versions: Vec<ModelVersion>,
    /// The router's metrics during a canary rollout, or why they are unavailable.
    pub router_metrics: Option<Result<RouterMetrics, String>>,
}

impl Observed {
    /// Names of the Deployments with at least one ready replica.
    pub fn ready_deployments(&self) -> BTreeSet<String> {
        self.deployments
            .iter()
            .filter(|d| d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0) > 0)
            .filter_map(|d| d.metadata.name.clone())
            .collect()
    }
}

/// Reads everything one reconcile of `isvc` needs.
pub async fn observe(ctx: &Context, isvc: &InferenceService) -> Observed {
    let namespace = isvc.namespace().unwrap_or_default();
    let name = isvc.name_any();
    let uid = isvc.uid().unwrap_or_default();
    let serving = &ctx.caches.serving;
    let label = LABEL_INFERENCE_SERVICE;
    let gateway_api = serving.routes.is_some();
    let routes =
        serving.routes.as_ref().map(|r| owned(r, label, &name, &namespace, &uid)).unwrap_or_default();
    let model_versions = in_namespace(&ctx.caches.model_versions, &namespace);
    let canary = isvc.spec.rollout.as_ref().is_some_and(|r| r.strategy == RolloutStrategy::Canary);
    let rolling_out = isvc.status.as_ref().is_some_and(|s| s.rollout.is_some());
    // Only when the operator is told to: otherwise an object's author could
    // make it fetch any URL (validation then refuses the object).
    let url = isvc
        .annotations()
        .get(ANNOTATION_ROUTER_METRICS_URL)
        .map(String::as_str)
        .filter(|_| ctx.config.allow_router_metrics_url);
    let gateway_provider =
        isvc.spec.traffic.as_ref().is_some_and(|t| t.provider == TrafficProvider::GatewayApi);
    let rollout = isvc.status.as_ref().and_then(|s| s.rollout.as_ref());
    let router_metrics = match (canary && rolling_out, url, rollout) {
        (false, _, _) => None,
        // No router runs under the GatewayAPI provider: the predictors count
        // their own requests (an explicit URL still wins, as for the router).
        (true, None, Some(rollout)) if gateway_provider => {
            let pods = pods_of(&serving.router_pods, &namespace, &predictor_selector(&name));
            let versions: BTreeMap<String, i64> =
                model_versions.iter().map(|mv| (label_value(&mv.name_any()), mv.spec.version)).collect();
            let address = ctx.config.predictor_metrics_address;
            Some(predictor_metrics::predictor_metrics(&pods, rollout, &versions, address).await)
        }
        (true, url, _) => {
            let pods = pods_of(&serving.router_pods, &namespace, &router_selector(&name));
            Some(scrape::router_metrics(&pods, url).await)
        }
    };
    Observed {
        deployments: owned(&serving.deployments, label, &name, &namespace, &uid),
        services: owned(&serving.services, label, &name, &namespace, &uid),
        autoscalers: owned(&serving.autoscalers, label, &name, &namespace, &uid),
        disruption_budgets: owned(&serving.disruption_budgets, label, &name, &namespace, &uid),
        config_maps: owned(&serving.config_maps, label, &name, &namespace, &uid),
        service_accounts: owned(&serving.service_accounts, label, &name, &namespace, &uid),
        roles: owned(&serving.roles, label, &name, &namespace, &uid),
        role_bindings: owned(&serving.role_bindings, label, &name, &namespace, &uid),
        routes,
        gateway_api,
        model_versions,
        router_metrics,
    }
}

/// The predictor pods of the InferenceService `name`, any variant and version.
fn predictor_selector(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_INFERENCE_SERVICE.to_owned(), name.to_owned()),
        (LABEL_COMPONENT.to_owned(), COMPONENT_PREDICTOR.to_owned()),
    ])
}

/// The pods in `namespace` with every label of `selector` (the router's,
/// owned by its ReplicaSets, or the predictors'), from the cache.
fn pods_of(
    store: &kube::runtime::reflector::Store<Pod>,
    namespace: &str,
    selector: &BTreeMap<String, String>,
) -> Vec<Pod> {
    store
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
        .filter(|p| {
            let labels = p.metadata.labels.as_ref();
            selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        })
        .map(|p| (*p).clone())
        .collect()
}
